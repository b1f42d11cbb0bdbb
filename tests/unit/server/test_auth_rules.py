"""Every RPC has an authorization rule; a method without one is refused to everyone.

The walk covers every method of every service the server serves (taskwire.v1, health, reflection), from
their descriptors: a new RPC fails here until its rule is written in `_auth_policy.RULES`.
"""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from taskwire.common.bearer import ROLES
from taskwire.server._auth_policy import OPEN, RULES, Role, Scope, TokenBucket, authorize
from taskwire.v1 import task_service_pb2, types_pb2, worker_service_pb2

FILES = [task_service_pb2, worker_service_pb2, types_pb2, health_pb2, reflection_pb2]
METHODS = sorted(
    f"/{service.full_name}/{method.name}"
    for module in FILES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
)
TASK = "/taskwire.v1.TaskService/"

# Who may call what, as docs/security.md tells it (OWN: only the caller's own executions).
EXPECTED: dict[str, dict[Role, Scope] | str] = {
    TASK + "SubmitExecution": {Role.SUBMITTER: Scope.OWN, Role.ADMIN: Scope.ALL},
    TASK + "SubmitExecutions": {Role.SUBMITTER: Scope.OWN, Role.ADMIN: Scope.ALL},
    TASK + "StreamSubmits": {Role.SUBMITTER: Scope.OWN, Role.ADMIN: Scope.ALL},
    TASK + "GetExecution": {Role.SUBMITTER: Scope.OWN, Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "ListExecutions": {Role.SUBMITTER: Scope.OWN, Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "WatchExecution": {Role.SUBMITTER: Scope.OWN, Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "WaitExecutions": {Role.SUBMITTER: Scope.OWN, Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "CancelExecution": {Role.SUBMITTER: Scope.OWN, Role.ADMIN: Scope.ALL},
    TASK + "GetStats": {Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "WatchEvents": {Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "GetIdentity": dict.fromkeys(Role, Scope.ALL),
    TASK + "ListWorkers": {Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "DrainWorker": {Role.ADMIN: Scope.ALL},
    TASK + "DeleteExecution": {Role.ADMIN: Scope.ALL},
    TASK + "RerunExecution": {Role.SUBMITTER: Scope.OWN, Role.ADMIN: Scope.ALL},
    TASK + "CancelExecutions": {Role.ADMIN: Scope.ALL},
    TASK + "DeleteExecutions": {Role.ADMIN: Scope.ALL},
    TASK + "CreateSchedule": {Role.ADMIN: Scope.ALL},
    TASK + "PauseSchedule": {Role.ADMIN: Scope.ALL},
    TASK + "ResumeSchedule": {Role.ADMIN: Scope.ALL},
    TASK + "DeleteSchedule": {Role.ADMIN: Scope.ALL},
    TASK + "TriggerSchedule": {Role.ADMIN: Scope.ALL},
    TASK + "ListSchedules": {Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    TASK + "GetSchedule": {Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL},
    "/taskwire.v1.WorkerService/Connect": {Role.WORKER: Scope.ALL, Role.ADMIN: Scope.ALL},
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.health.v1.Health/List": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
}


def test_the_walk_finds_the_services() -> None:
    assert len(METHODS) == len(EXPECTED)
    assert TASK + "SubmitExecution" in METHODS
    assert "/grpc.health.v1.Health/Check" in METHODS


@pytest.mark.parametrize("method", METHODS)
def test_every_method_has_a_rule(method: str) -> None:
    assert method in RULES, f"{method} has no authorization rule: add one to taskwire.server._auth_policy.RULES"


def test_no_rule_names_a_method_that_does_not_exist() -> None:
    assert set(RULES) <= set(METHODS)


def test_the_rules_are_the_documented_table() -> None:
    assert RULES == EXPECTED


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("method", METHODS)
def test_authorize_follows_the_rule(role: Role, method: str) -> None:
    decision = authorize(role, method)
    rule = EXPECTED[method]
    if rule == OPEN:
        assert decision.scope is Scope.ALL
        return
    assert isinstance(rule, dict)
    assert decision.scope is rule.get(role)
    if decision.scope is None:
        assert decision.status == "PERMISSION_DENIED"
        name = method.rsplit("/", 1)[1]
        assert f"role {role} may not call {name}" in decision.message
        assert "it needs " in decision.message
        assert all(str(needed) in decision.message for needed in rule)


@pytest.mark.parametrize("role", list(Role))
def test_a_method_without_a_rule_is_denied_to_every_role(role: Role) -> None:
    decision = authorize(role, "/taskwire.v1.TaskService/SomethingNew")
    assert decision.scope is None
    assert decision.status == "PERMISSION_DENIED"
    assert "SomethingNew has no authorization rule" in decision.message


def test_the_roles_the_cli_offers_are_the_servers() -> None:
    assert tuple(role.value for role in Role) == ROLES


def test_a_token_bucket_gives_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(1, 0.0) == pytest.approx(0.5)
    assert bucket.take(1, 0.25) == pytest.approx(0.25)  # a refusal takes nothing
    assert bucket.take(1, 0.5) == 0.0
    assert bucket.take(10, 10.0) == 0.0  # a batch larger than the burst costs a full bucket
    assert bucket.take(1, 10.0) == pytest.approx(0.5)
