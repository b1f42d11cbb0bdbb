"""Who may call what: roles, the rule of every RPC, and the per-identity submit rate. Pure: no gRPC, no I/O,
no clock (time is an argument).

The identities themselves, and how a credential finds one, are `_auth_file`.

Every method the server serves has a rule in `RULES`, keyed by its full gRPC name. A method without a rule
is refused to everyone but nobody: `authorize` denies it, and `tests/unit/server/test_auth_rules.py` walks
the descriptor pool so a new RPC fails the suite until its rule is written.

A rule gives each role that may call the method its scope: ALL, or OWN (only the caller's own executions:
a submitter sees, watches and cancels what it submitted, and nothing else exists for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from taskwire.v1 import task_service_pb2, worker_service_pb2


class Role(StrEnum):
    WORKER = "worker"
    SUBMITTER = "submitter"
    READER = "reader"
    ADMIN = "admin"


class Scope(Enum):
    ALL = "all"
    OWN = "own"  # only the caller's own executions


OPEN = "open"  # a method anyone may call, with or without a credential (health checks, reflection)

_TASK = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
_WORKER = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
_HEALTH = "grpc.health.v1.Health"

Rule = dict[Role, Scope] | str

_SUBMITTERS: Rule = {Role.SUBMITTER: Scope.OWN, Role.ADMIN: Scope.ALL}
_READERS: Rule = {Role.SUBMITTER: Scope.OWN, Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL}
_OBSERVERS: Rule = {Role.READER: Scope.ALL, Role.ADMIN: Scope.ALL}
_ADMINS: Rule = {Role.ADMIN: Scope.ALL}
_EVERYONE: Rule = dict.fromkeys(Role, Scope.ALL)

RULES: dict[str, Rule] = {
    f"/{_TASK}/SubmitExecution": _SUBMITTERS,
    f"/{_TASK}/SubmitExecutions": _SUBMITTERS,
    f"/{_TASK}/StreamSubmits": _SUBMITTERS,
    f"/{_TASK}/GetExecution": _READERS,
    f"/{_TASK}/ListExecutions": _READERS,
    f"/{_TASK}/WatchExecution": _READERS,
    f"/{_TASK}/WaitExecutions": _READERS,
    f"/{_TASK}/CancelExecution": _SUBMITTERS,
    f"/{_TASK}/GetStats": _OBSERVERS,
    f"/{_TASK}/ListWorkers": _OBSERVERS,
    f"/{_TASK}/DrainWorker": _ADMINS,
    # Every execution's events, whoever submitted it: for those who may read them all.
    f"/{_TASK}/WatchEvents": _OBSERVERS,
    # Any identity may ask who it is.
    f"/{_TASK}/GetIdentity": _EVERYONE,
    f"/{_TASK}/DeleteExecution": _ADMINS,
    f"/{_TASK}/RerunExecution": _SUBMITTERS,
    # Bulk actions reach across identities: an operator's.
    f"/{_TASK}/CancelExecutions": _ADMINS,
    f"/{_TASK}/DeleteExecutions": _ADMINS,
    # Schedules start work on their own, for no one in particular: an operator's.
    f"/{_TASK}/CreateSchedule": _ADMINS,
    f"/{_TASK}/PauseSchedule": _ADMINS,
    f"/{_TASK}/ResumeSchedule": _ADMINS,
    f"/{_TASK}/DeleteSchedule": _ADMINS,
    f"/{_TASK}/TriggerSchedule": _ADMINS,
    f"/{_TASK}/ListSchedules": _OBSERVERS,
    f"/{_TASK}/GetSchedule": _OBSERVERS,
    f"/{_WORKER}/Connect": {Role.WORKER: Scope.ALL, Role.ADMIN: Scope.ALL},
    # Probes must work without a credential.
    f"/{_HEALTH}/Check": OPEN,
    f"/{_HEALTH}/Watch": OPEN,
    f"/{_HEALTH}/List": OPEN,
    # The schema is public (it ships with every client); reflection reveals nothing else, and keeps
    # grpcurl and `buf curl` working without proto files.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
}

# The calls written to the audit trail whether they succeed or not.
AUDITED = frozenset(
    f"/{_TASK}/{method}"
    for method in (
        "CancelExecution",
        "DeleteExecution",
        "DrainWorker",
        "CancelExecutions",
        "DeleteExecutions",
        "CreateSchedule",
        "PauseSchedule",
        "ResumeSchedule",
        "DeleteSchedule",
        "TriggerSchedule",
    )
)
SUBMITS = frozenset({f"/{_TASK}/SubmitExecution", f"/{_TASK}/SubmitExecutions"})
SUBMIT_STREAM = f"/{_TASK}/StreamSubmits"  # each submit it carries is charged to the submit rate on its own
WORKER_STREAM = f"/{_WORKER}/Connect"


def short_name(method: str) -> str:
    """`CancelExecution` for `/taskwire.v1.TaskService/CancelExecution`."""
    return method.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one call: allowed with a scope, or refused with a status name and a message."""

    scope: Scope | None
    status: str = ""
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.scope is not None


def authorize(role: Role, method: str) -> Decision:
    """May an identity with `role` call `method`? PERMISSION_DENIED names the method and the roles it needs."""
    rule = RULES.get(method)
    name = short_name(method)
    if rule is None:
        return Decision(None, "PERMISSION_DENIED", f"{name} has no authorization rule: nobody may call it")
    if rule == OPEN:
        return Decision(Scope.ALL)
    assert isinstance(rule, dict)
    scope = rule.get(role)
    if scope is None:
        needed = " or ".join(sorted(str(r) for r in rule))
        return Decision(None, "PERMISSION_DENIED", f"role {role} may not call {name}; it needs {needed}")
    return Decision(scope)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up. Time (monotonic seconds) is passed in."""

    def __init__(self, *, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def take(self, cost: float, now: float) -> float:
        """Take `cost` tokens (at most a full bucket) and return 0, or take none and return the seconds
        until there will be enough."""
        self._tokens = min(self.burst, self._tokens + max(now - self._at, 0.0) * self.rate)
        self._at = now
        cost = min(cost, self.burst)
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate
