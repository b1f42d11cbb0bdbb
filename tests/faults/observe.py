"""Read what the checker compares from a running server, through the public API only.

Works against any server the API reaches (SQLite today, any replica later), and builds the checker's
plain records from the protobuf messages, so a scenario needs nothing but an address.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.harness import Cluster
from tests.postgres import PostgresCluster

from .checker import StoredExecution, StoredTaskRun

OP_KEY = "op"  # the metadata key a scenario puts each submit's unique op under


def _name(enum: object, value: int, prefix: str) -> str:
    name: str = enum.Name(value)  # type: ignore[attr-defined]
    return name.removeprefix(prefix)


def _listed(address: str, timeout_s: float) -> Iterator[pb.Execution]:
    """Every execution the server holds, paged through ListExecutions."""
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        token = ""
        while True:
            page: tpb.ListExecutionsResponse = stub.ListExecutions(
                tpb.ListExecutionsRequest(page_size=200, page_token=token), timeout=timeout_s
            )
            yield from page.executions
            token = page.next_page_token
            if not token:
                return


def stored_executions(address: str, *, timeout_s: float = 30.0) -> list[StoredExecution]:
    """Every execution the server holds, as the checker reads them."""
    return [_execution(message) for message in _listed(address, timeout_s)]


def attempt_workers(address: str, *, timeout_s: float = 30.0) -> dict[str, list[str]]:
    """The worker of each attempt, in order, by task run id."""
    return {
        task_run.id: [attempt.worker_id for attempt in task_run.attempts]
        for message in _listed(address, timeout_s)
        for task_run in message.task_runs
    }


def _execution(message: pb.Execution) -> StoredExecution:
    return StoredExecution(
        execution_id=message.id,
        op=message.metadata.get(OP_KEY, ""),
        state=_name(pb.ExecutionState, message.state, "EXECUTION_STATE_"),
        task_runs=tuple(
            StoredTaskRun(
                task_run_id=task_run.id,
                state=_name(pb.TaskRunState, task_run.state, "TASK_RUN_STATE_"),
                attempts=tuple(
                    (attempt.number, _name(pb.AttemptOutcome, attempt.outcome, "ATTEMPT_OUTCOME_"))
                    for attempt in task_run.attempts
                ),
            )
            for task_run in message.task_runs
        ),
    )


def slots_in_use(address: str, *, replica: str = "", timeout_s: float = 10.0) -> dict[str, int]:
    """Each connected worker's in-flight count, as the server sees it; of a replica, those connected to it (it lists
    those of the other replicas too, as they published them a moment ago)."""
    with grpc.insecure_channel(address) as channel:
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        response: tpb.ListWorkersResponse = stub.ListWorkers(tpb.ListWorkersRequest(), timeout=timeout_s)
    return {
        f"{worker.name}/{worker.session_id}": worker.in_flight
        for worker in response.workers
        if worker.replica == replica
    }


# Every row the servers write, summed up: equal before and after a paused server ran again.
STORED_STATE_SQL = (
    "SELECT (SELECT count(*) FROM executions) || '/' || (SELECT count(*) FROM events) || '/' || "
    "(SELECT coalesce(max(updated_at), 0) FROM executions) || '/' || "
    "(SELECT coalesce(sum(updated_at), 0) FROM task_runs) || '/' || "
    "(SELECT md5(coalesce(string_agg(id || state || attempts, ',' ORDER BY id), '')) FROM task_runs)"
)


def database_query(postgres: PostgresCluster, procs: Cluster, query: str) -> str:
    """`query` run by psql on the PostgreSQL database of `procs`' servers (their default database name)."""
    assert procs.store_url is not None
    return postgres.psql(query, database=procs.store_url("taskwire.db").rsplit("/", 1)[1])
