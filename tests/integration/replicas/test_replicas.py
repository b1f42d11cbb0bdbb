"""Three active replicas on one PostgreSQL database: work, cancels, watches and schedules cross replicas; a replica
killed or paused past its lease loses nothing and changes nothing.

Each replica is a real `taskwire-server --replica NAME` on its own port; workers are real processes, each
connected to one replica (or given all three, in turn, so that they spread and fail over). The fault tests end
with the checker's lost, duplicated, stuck and leaked counts at zero.
"""

from __future__ import annotations

import functools
import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from taskwire.client import OverlapPolicy
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import types_pb2 as pb
from tests.faults.checker import Fault, check
from tests.faults.journal import journal_worker, read_journal
from tests.faults.observe import STORED_STATE_SQL, database_query, slots_in_use, stored_executions
from tests.faults.proxy import StallingProxy
from tests.faults.scenario import Load, quiesce
from tests.harness import BIN, POSTGRESQL_ONLY, Cluster, ServerProcess, spawn, start_worker, wait_for
from tests.integration.schedules.support import sdk, started_by, wait_for_fires
from tests.integration.server.support import Client, diamond, sleeper, spec, task
from tests.postgres import PostgresCluster

pytestmark = POSTGRESQL_ONLY

STORE_LEASE_S = 2.0
OPTIONS = (
    *("--lease-timeout", "4", "--heartbeat-interval", "0.5", "--cancel-grace", "2"),
    *("--store-lease", str(STORE_LEASE_S)),
)
KEEPALIVE = ("--keepalive", "1")


def _replicas(procs: Cluster, *extra: str, count: int = 3) -> list[ServerProcess]:
    return [procs.server(*OPTIONS, *extra, "--replica", f"r{number}") for number in range(1, count + 1)]


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


def _client(clients: list[Client], server: ServerProcess) -> Client:
    client = Client.of(server)
    clients.append(client)
    return client


@pytest.mark.parametrize("notify", ["on", "off"])
def test_work_submitted_to_one_replica_runs_on_a_worker_of_another_and_a_third_watches_it(
    procs: Cluster, clients: list[Client], notify: str
) -> None:
    """With notifications, and polling only (`--store-notify off`, as behind a pooler in transaction mode)."""
    r1, r2, r3 = _replicas(procs, "--store-notify", notify)
    procs.worker(r2, slots=4)
    submitter, watcher = _client(clients, r1), _client(clients, r3)
    ids = [submitter.submit(spec(task("echo", input={"n": n}))).execution.id for n in range(20)]
    ids.append(submitter.submit(diamond()).execution.id)
    for execution_id in ids:
        # A watch on r3, which holds none of them, follows each to its end, in order, from r1's and r2's commits.
        try:
            events = watcher.history(execution_id, timeout_s=30)
        except grpc.RpcError as error:
            # Say where the execution was, as each replica sees it: late on r2 (the claim), or ended but unseen on r3.
            seen = {f"r{n}": _state_on(clients, server, execution_id) for n, server in enumerate((r1, r2, r3), 1)}
            raise AssertionError(
                f"the watch of {execution_id} on r3 failed ({error.code()}); its state on each replica: {seen}"
            ) from None
        sequences = [event.sequence for event in events]
        assert sequences == list(range(1, len(events) + 1))
        assert events[-1].execution_transition.to_state == pb.EXECUTION_STATE_SUCCESS
        assert watcher.get(execution_id).state == pb.EXECUTION_STATE_SUCCESS


def _state_on(clients: list[Client], server: ServerProcess, execution_id: str) -> str:
    try:
        return pb.ExecutionState.Name(_client(clients, server).get(execution_id).state)
    except grpc.RpcError as error:
        return f"unknown ({error.code()})"


def test_a_watch_that_began_on_the_holder_follows_its_execution_to_another_replica(
    procs: Cluster, clients: list[Client]
) -> None:
    r1, r2 = _replicas(procs, count=2)
    submitter = _client(clients, r1)
    ids = [submitter.submit(spec(task("echo", input={"n": n}))).execution.id for n in range(5)]
    # Watching on r1, which holds them while no worker is connected anywhere: each watch has read the
    # execution's first event (so it follows it live) before r2's worker makes r2 claim them.
    watches = []
    for execution_id in ids:
        watch = submitter.tasks.WatchExecution(tpb.WatchExecutionRequest(execution_id=execution_id), timeout=30)
        assert next(watch).event.sequence == 1
        watches.append(watch)
    procs.worker(r2, slots=4)
    for execution_id, watch in zip(ids, watches, strict=True):
        events = [response.event for response in watch]
        assert [event.sequence for event in events] == list(range(2, len(events) + 2))
        assert events[-1].execution_transition.to_state == pb.EXECUTION_STATE_SUCCESS, execution_id
    assert _client(clients, r2).stats().queue.size == 0


def test_a_cancel_asked_on_one_replica_aborts_the_handler_on_a_worker_of_another(
    procs: Cluster, clients: list[Client]
) -> None:
    # A cancel grace longer than the test's wait: the cancel ends only because the handler was aborted.
    r1, r2, r3 = _replicas(procs, "--cancel-grace", "120")
    procs.worker(r2, slots=2)
    execution_id = _client(clients, r1).submit(sleeper(60)).execution.id
    watcher = _client(clients, r3)
    wait_for(
        lambda: watcher.get(execution_id).state == pb.EXECUTION_STATE_RUNNING, what="the sleeper to run on r2's worker"
    )
    response = watcher.cancel(execution_id, "asked on r3")
    assert response.execution.id == execution_id
    final = watcher.wait_until_terminal(execution_id, timeout_s=20)
    assert final.state == pb.EXECUTION_STATE_CANCELLED
    assert _client(clients, r2).stats().in_flight == 0


@pytest.mark.slow
def test_kill_9_of_a_replica_under_load_loses_nothing(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    replicas = _replicas(procs)
    addresses = [replica.address for replica in replicas]
    for index in range(3):
        rotated = ",".join(addresses[index:] + addresses[:index])  # each worker first tries its own replica
        journal_worker(procs, rotated, journal, *KEEPALIVE, name=f"w{index}", slots=6)
    # Submitters use the first replica while it lives, then the next: it is the one killed.
    load = Load(f"ipv4:{','.join(addresses)}", threads=4, per_thread=60, seconds=0.02, keepalive_s=1.0).start()
    load.wait_acknowledged(40)
    replicas[0].process.kill()
    load.join()
    survivor = replicas[1].address
    wait_for(
        lambda: _adopted(replicas[1:], "r1"), timeout_s=30, what="a surviving replica to take over r1's executions"
    )
    quiesce(survivor)
    report = check(
        submissions=load.submissions,
        stored=stored_executions(survivor),
        runs=read_journal(journal),
        faults={Fault.SERVER_CRASH},
        slots_in_use=_slots(replicas[1:]),
    )
    assert report.ok, str(report) + "\n" + "\n".join(r.process.output[-3000:] for r in replicas[1:])
    assert report.acknowledged >= 40


def _adopted(replicas: list[ServerProcess], name: str) -> bool:
    return any(f"replica {name} stopped renewing its lease" in replica.process.output for replica in replicas)


def _name(replica: ServerProcess) -> str:
    args = replica.process.args
    return args[args.index("--replica") + 1]


def _slots(replicas: list[ServerProcess]) -> dict[str, int]:
    """Each replica's own workers, as it sees them."""
    return {
        key: value
        for replica in replicas
        for key, value in slots_in_use(replica.address, replica=_name(replica)).items()
    }


@pytest.mark.slow
def test_a_replica_paused_past_its_lease_changes_nothing_when_it_resumes(
    procs: Cluster, tmp_path: Path, postgres: PostgresCluster
) -> None:
    journal = tmp_path / "journal.jsonl"
    r1, r2, r3 = _replicas(procs)
    journal_worker(procs, f"{r2.address},{r3.address}", journal, *KEEPALIVE, name="w2", slots=4)
    journal_worker(procs, f"{r3.address},{r1.address}", journal, *KEEPALIVE, name="w3", slots=4)
    load = Load(f"ipv4:{r2.address},{r3.address}", threads=2, per_thread=10, seconds=0.5, keepalive_s=1.0).start()
    load.wait_acknowledged(6)
    r2.process.signal(signal.SIGSTOP)
    wait_for(lambda: _adopted([r1, r3], "r2"), timeout_s=30, what="r2's executions to be taken over")
    load.join()
    quiesce(r3.address)
    made = database_query(postgres, procs, STORED_STATE_SQL)

    r2.process.signal(signal.SIGCONT)
    # Who holds the database now, if it can read that within a third of its lease; that it could not renew, if not.
    r2.process.wait_for_line("fenced:|could not renew the lease on the database before it ran out", timeout_s=30)
    assert r2.process.wait(timeout_s=30) != 0, r2.process.output[-4000:]
    assert database_query(postgres, procs, STORED_STATE_SQL) == made  # nothing of what r2 had under way landed
    assert database_query(postgres, procs, "SELECT count(*) FROM executions WHERE holder = 'r2'") == "0"

    report = check(
        submissions=load.submissions,
        stored=stored_executions(r3.address),
        runs=read_journal(journal),
        faults={Fault.SERVER_PAUSE, Fault.SERVER_CRASH},
        slots_in_use=_slots([r1, r3]),
    )
    assert report.ok, str(report)
    assert report.acknowledged >= 6


def test_a_second_replica_under_a_name_in_use_is_refused(procs: Cluster) -> None:
    procs.server(*OPTIONS, "--replica", "r1")
    assert procs.store_url is not None
    store = procs.store_url("taskwire.db")
    second = spawn([str(BIN / "taskwire-server"), "--listen", "127.0.0.1:0", "--store", store, "--replica", "r1"])
    procs.processes.append(second)
    assert second.wait() == 1
    assert "r1" in second.output


@pytest.mark.parametrize("notify", ["on", "off"])
def test_a_schedule_created_and_deleted_through_replicas_that_do_not_lead_fires_on_the_leader_until_deleted(
    procs: Cluster, notify: str
) -> None:
    """With notifications, and polling only (`--store-notify off`)."""
    replicas = _replicas(procs, "--store-notify", notify)
    leader = wait_for(
        lambda: next((r for r in replicas if "this replica is now the leader" in r.process.output), None),
        what="a replica to lead",
    )
    creator, deleter = [r for r in replicas if r is not leader]
    procs.worker(leader, slots=4)
    with sdk(creator) as through_creator, sdk(deleter) as through_deleter, sdk(leader) as through_leader:
        every_second = functools.partial(
            through_creator.create_schedule, cron="* * * * * *", handler="echo", overlap=OverlapPolicy.ALLOW_ALL
        )
        every_second("tick", input={"n": 1})
        # The counts every replica shows are the leader's fires, as stored.
        wait_for_fires(through_creator, "tick", 3)
        wait_for_fires(through_deleter, "tick", 3)
        assert len(started_by(through_leader, "tick")) >= 3

        through_deleter.delete_schedule("tick")
        wait_for(lambda: through_leader.schedules() == [], what="the leader to drop the schedule")
        fired = len(started_by(through_leader, "tick"))
        # Time passes while the leader fires (another schedule fires three times): tick fires no more.
        every_second("tock", input={"n": 2})
        wait_for_fires(through_creator, "tock", 3)
        assert len(started_by(through_leader, "tick")) == fired
        assert [info.name for info in through_creator.schedules()] == ["tock"]


@pytest.mark.parametrize("stop", ["SIGTERM", "kill -9"])
def test_a_worker_whose_replica_stops_goes_on_with_its_running_attempt_on_the_next_replica(
    procs: Cluster, clients: list[Client], tmp_path: Path, postgres: PostgresCluster, stop: str
) -> None:
    """r1 stops (a rolling restart, or killed): its worker reconnects to r2, which takes the running attempt over from
    its holder (r1 itself, or the leader that adopted r1's executions) and adopts it; the handler is neither aborted
    nor run again."""
    journal = tmp_path / "journal.jsonl"
    # A worker lease long enough to wait, on r2, for r1 to be adopted (when r1 led: after the leader's lease too).
    r1, r2, r3 = _replicas(procs, "--lease-timeout", "10")
    worker = journal_worker(procs, f"{r1.address},{r2.address}", journal, *KEEPALIVE, name="w1", slots=1)
    execution_id = _client(clients, r1).submit(spec(task("journal.work", input={"seconds": 6}))).execution.id
    wait_for(lambda: read_journal(journal), what="the handler to start on r1's worker")
    if stop == "kill -9":
        r1.process.kill()
    else:
        r1.process.signal(signal.SIGTERM)

    final = _client(clients, r3).wait_until_terminal(execution_id, timeout_s=30)
    logs = "\n\n".join(process.output[-3000:] for process in (r2.process, r3.process, worker))
    assert final.state == pb.EXECUTION_STATE_SUCCESS, logs
    assert [attempt.number for attempt in final.task_runs[0].attempts] == [1], logs
    assert [(run.attempt, run.result) for run in read_journal(journal)] == [(1, "ok")]
    assert database_query(postgres, procs, f"SELECT holder FROM executions WHERE id = '{execution_id}'") == "r2"


def test_a_worker_whose_stream_to_its_replica_goes_half_open_goes_on_with_its_attempt_on_the_next(
    procs: Cluster, clients: list[Client], tmp_path: Path
) -> None:
    """The worker's stream to r1 goes silent without closing; the worker notices within seconds (keepalive) and
    connects to r2, while r1, with a 60 s lease, still sees its session connected. r1 ends that session when asked
    to hand the attempt over (the same worker instance has a new stream now): no wait for its lease, no second run."""
    journal = tmp_path / "journal.jsonl"
    r1, r2, _ = _replicas(procs, "--lease-timeout", "60")
    with StallingProxy(r1.address) as proxy:
        worker = journal_worker(procs, f"{proxy.address},{r2.address}", journal, *KEEPALIVE, name="w1", slots=1)
        execution_id = _client(clients, r1).submit(spec(task("journal.work", input={"seconds": 4}))).execution.id
        wait_for(lambda: read_journal(journal), what="the handler to start on r1's worker")
        assert proxy.stall() == 1
        final = _client(clients, r2).wait_until_terminal(execution_id, timeout_s=30)
    logs = "\n\n".join(process.output[-3000:] for process in (r1.process, r2.process, worker))
    assert final.state == pb.EXECUTION_STATE_SUCCESS, logs
    assert [attempt.number for attempt in final.task_runs[0].attempts] == [1], logs
    assert [(run.attempt, run.result) for run in read_journal(journal)] == [(1, "ok")]


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "taskwire"), "--server", server.address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_any_replica_lists_every_replicas_workers_and_drains_one_connected_to_another(procs: Cluster) -> None:
    r1, r2 = _replicas(procs, count=2)
    procs.worker(r1, name="near")
    far = procs.worker(r2, name="far", slots=3)

    def listed() -> list[tuple[str, str, int]]:
        shown = json.loads(_cli(r1, "workers", "--json").stdout)["workers"]
        return [(worker["name"], worker["replica"], worker["slots"]) for worker in shown]

    wait_for(lambda: listed() == [("far", "r2", 3), ("near", "r1", 4)], what="r2's worker listed by r1")
    table = _cli(r1, "workers").stdout
    assert "REPLICA" in table
    assert any(line.split()[:1] == ["far"] and line.split()[-1] == "r2" for line in table.splitlines()), table

    drained = _cli(r1, "workers", "drain", "far", "--reason", "rolling upgrade")
    assert drained.returncode == 0, drained.stderr
    assert "far" in drained.stdout
    assert "draining" in drained.stdout
    assert far.wait(timeout_s=30) == 0  # told by r2, through the database's mail: it drained and exited
    far.wait_for_line("rolling upgrade")
    wait_for(lambda: listed() == [("near", "r1", 4)], what="the drained worker gone from every list")

    missing = _cli(r2, "workers", "drain", "far")
    assert missing.returncode == 4, missing.stderr  # NOT_FOUND: no replica has it now
    assert "far" in missing.stderr


def test_a_drain_lost_with_its_stream_reaches_the_worker_that_comes_back_to_another_replica(procs: Cluster) -> None:
    """The Drain goes down r1's stream just as it stops forwarding; the worker, running nothing, notices the dead
    stream and connects to r2, the next address it knows. r2 learns the drain r1 keeps for it, so it still drains
    and exits 0."""
    r1, r2 = _replicas(procs, count=2)
    with StallingProxy(r1.address) as proxy:
        behind = start_worker(f"{proxy.address},{r2.address}", "--keepalive", "3", name="behind")
        procs.processes.append(behind)
        assert proxy.stall() == 1
        drained = _cli(r1, "workers", "drain", "behind", "--grace", "20", "--reason", "moving to new hardware")
        assert drained.returncode == 0, drained.stderr
        assert behind.wait(timeout_s=40) == 0
    connected = [line for line in behind.output.splitlines() if "taskwire.worker: connected to" in line]
    assert [r2.address in line for line in connected] == [False, True], connected
    assert "moving to new hardware" in behind.output
    r2.process.wait_for_line(r"worker instance \S+ was asked to drain on replica r1: told here", timeout_s=5)
