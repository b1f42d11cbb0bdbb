"""Hot standby on PostgreSQL: an active server's death loses nothing, and a paused one that comes back changes
nothing.

Workers and submitters are given both addresses; the standby binds its port only once it holds the database,
so they find whichever server is active. The checker's lost, duplicated, stuck and leaked counts end at zero.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.faults.checker import Fault, Outcome, check
from tests.faults.journal import journal_worker, read_journal
from tests.faults.observe import STORED_STATE_SQL, database_query, slots_in_use, stored_executions
from tests.faults.scenario import Load, final_report, quiesce
from tests.harness import BIN, POSTGRESQL_ONLY, READY, Cluster, ServerProcess, free_port, spawn
from tests.postgres import PostgresCluster

pytestmark = POSTGRESQL_ONLY

STORE_LEASE_S = 2.0
OPTIONS = (
    *("--lease-timeout", "4", "--heartbeat-interval", "0.5", "--cancel-grace", "2"),
    *("--store-lease", str(STORE_LEASE_S)),
)
KEEPALIVE = ("--keepalive", "1")  # workers notice a server that stopped answering within about two seconds


def _pair(procs: Cluster) -> tuple[ServerProcess, ServerProcess]:
    active = procs.server(*OPTIONS)
    return active, procs.standby(*OPTIONS, port=free_port())


def _failover_setup(procs: Cluster, journal: Path, *, slots: int) -> tuple[ServerProcess, ServerProcess, str]:
    """An active server, its standby, and two journal workers given both addresses; returns the gRPC target of
    both for submitters."""
    active, standby = _pair(procs)
    both = f"{active.address},{standby.address}"
    for index in range(2):
        journal_worker(procs, both, journal, *KEEPALIVE, name=f"w{index}", slots=slots)
    return active, standby, f"ipv4:{both}"


def _holder(server: ServerProcess) -> str:
    return f"{socket.gethostname()}/{server.process.popen.pid}"


def _refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


@pytest.mark.slow
def test_the_standby_takes_over_from_a_killed_server_under_load(procs: Cluster, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    active, standby, both = _failover_setup(procs, journal, slots=8)
    load = Load(both, threads=4, per_thread=60, seconds=0.02, keepalive_s=1.0).start()
    load.wait_acknowledged(40)
    active.process.kill()
    standby.process.wait_for_line(READY, timeout_s=30)
    load.join()

    report = final_report(standby.address, load, journal, {Fault.SERVER_CRASH})
    assert report.ok, str(report) + "\n" + standby.process.output[-4000:]
    assert report.acknowledged >= 40
    states = {e.execution_id: e.state for e in stored_executions(standby.address)}
    acknowledged = [s.execution_id for s in load.submissions if s.outcome is Outcome.ACKNOWLEDGED]
    assert {states[execution_id] for execution_id in acknowledged} == {"SUCCESS"}
    assert "took over the database postgresql://taskwire@127.0.0.1:" in standby.process.output
    assert f"from {_holder(active)} (epoch 1)" in standby.process.output


@pytest.mark.slow
def test_a_paused_server_that_comes_back_after_a_takeover_changes_nothing(
    procs: Cluster, tmp_path: Path, postgres: PostgresCluster
) -> None:
    journal = tmp_path / "journal.jsonl"
    active, standby, both = _failover_setup(procs, journal, slots=4)
    # Paced, so that both loads still have submits to make when the server is paused.
    load = Load(both, threads=2, per_thread=10, seconds=0.5, pace_s=0.1, keepalive_s=1.0).start()
    sdk_load = Load(
        both.removeprefix("ipv4:"), threads=1, per_thread=10, seconds=0.5, pace_s=0.1, streamed=True, ops="sdk"
    ).start()
    load.wait_acknowledged(6)
    sdk_load.wait_acknowledged(3)
    before = (load.acknowledged, sdk_load.acknowledged)
    active.process.signal(signal.SIGSTOP)
    standby.process.wait_for_line(READY, timeout_s=30)  # once the paused server's lease lapsed
    load.join()
    sdk_load.join()
    # The submitters moved on to the new server (its port answers, the paused one's accepts and is silent): the
    # SDK, as shipped, and gRPC channels set up as the SDK sets up its own.
    assert load.acknowledged > before[0], "no gRPC submitter reached the new server"
    assert sdk_load.acknowledged > before[1], "no SDK submit reached the new server"
    quiesce(standby.address)
    made = database_query(postgres, procs, STORED_STATE_SQL)

    active.process.signal(signal.SIGCONT)
    active.process.wait_for_line("fenced:", timeout_s=30)
    assert active.process.wait(timeout_s=30) != 0, active.process.output[-4000:]
    fenced = [line for line in active.process.output.splitlines() if "fenced:" in line]
    assert fenced == [
        f"taskwire-server: fenced: another taskwire server took over the database: {_holder(standby)} holds it "
        "at epoch 2 (this server held epoch 1); stopping"
    ], active.process.output[-4000:]
    assert database_query(postgres, procs, STORED_STATE_SQL) == made  # exactly what the new server made
    assert (
        database_query(postgres, procs, "SELECT holder || ' ' || epoch FROM taskwire_owner") == f"{_holder(standby)} 2"
    )

    report = check(
        submissions=load.submissions + sdk_load.submissions,
        stored=stored_executions(standby.address),
        runs=read_journal(journal),
        # Fenced, the paused server ends as a crashed one does: what it dispatched before its submit's commit (never
        # acknowledged) is taken back.
        faults={Fault.SERVER_PAUSE, Fault.SERVER_CRASH},
        slots_in_use=slots_in_use(standby.address),
    )
    assert report.ok, str(report)
    assert report.acknowledged >= 6


def test_a_second_server_refuses_and_a_standby_names_the_holder_and_binds_nothing(
    procs: Cluster, postgres: PostgresCluster
) -> None:
    active = procs.server(*OPTIONS)
    assert procs.store_url is not None
    second = spawn([str(BIN / "taskwire-server"), "--listen", "127.0.0.1:0", "--store", procs.store_url("taskwire.db")])
    procs.processes.append(second)
    assert second.wait() == 1
    assert "another taskwire server uses the database" in second.output
    assert f"{_holder(active)} (epoch 1" in second.output

    standby = procs.standby(*OPTIONS, port=free_port())
    assert f"held by {_holder(active)} (epoch 1); waiting to take over" in standby.process.output
    assert _refused(standby.address), "a waiting standby must not listen"

    assert active.process.stop() == 0  # a graceful stop: the standby takes over and serves
    standby.process.wait_for_line(READY)
    assert not _refused(standby.address)
    standby.stats()  # it serves
    assert database_query(postgres, procs, "SELECT epoch FROM taskwire_owner") == "2"


def test_a_waiting_standby_stops_on_sigterm_and_leaves_the_database_to_its_holder(
    procs: Cluster, postgres: PostgresCluster
) -> None:
    active = procs.server(*OPTIONS)
    standby = procs.standby(*OPTIONS, port=free_port())
    standby.process.signal(signal.SIGTERM)
    assert standby.process.wait(timeout_s=30) == 0, standby.process.output[-2000:]
    assert "taskwire-server stopped before it served" in standby.process.output
    assert (
        database_query(postgres, procs, "SELECT holder || ' ' || epoch FROM taskwire_owner") == f"{_holder(active)} 1"
    )
    active.stats()  # still serving
