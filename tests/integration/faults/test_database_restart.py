"""A PostgreSQL restart under load, with a standby waiting: the active server stops (its session is gone), and
the standby, whose own connection was cut too, connects again and takes over. The checker's lost, duplicated,
stuck and leaked counts end at zero."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.checker import Fault
from tests.faults.scenario import Load, final_report
from tests.harness import READY, Cluster
from tests.integration.faults.test_standby import _failover_setup, _holder
from tests.postgres import PostgresCluster


@pytest.mark.slow
def test_a_database_restart_under_load_ends_the_active_server_and_the_waiting_standby_takes_over(
    tmp_path: Path,
) -> None:
    """The standby's own connection is cut too: it connects again and waits on, and takes the database that came
    back without its holder (whose session ended with the restart)."""
    postgres = PostgresCluster.start()  # its own: restarted here
    url = postgres.new_database()
    procs = Cluster(tmp_path, store_url=lambda _name: url)
    try:
        journal = tmp_path / "journal.jsonl"
        active, standby, both = _failover_setup(procs, journal, slots=8)
        load = Load(both, threads=2, per_thread=60, seconds=0.02, keepalive_s=1.0).start()
        load.wait_acknowledged(20)
        postgres.restart()
        assert active.process.wait(timeout_s=30) == 1, active.process.output[-4000:]
        standby.process.wait_for_line(READY, timeout_s=30)
        load.join()

        report = final_report(standby.address, load, journal, {Fault.SERVER_CRASH})
        assert report.ok, str(report) + "\n" + standby.process.output[-4000:]
        assert report.acknowledged >= 20
        assert "standby: lost the database" in standby.process.output
        assert f"from {_holder(active)} (epoch 1)" in standby.process.output
    finally:
        procs.close()
        postgres.stop()
