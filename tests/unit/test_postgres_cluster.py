"""The tests' PostgreSQL (`tests.postgres`): a cluster is ready only when it is its own that answers; clusters
left behind by killed runs are removed."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from tests import postgres as fixture
from tests.postgres import PostgresCluster


def test_a_cluster_whose_port_another_cluster_holds_starts_on_another_port(
    postgres: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    picked = iter([postgres.port])  # as when another test process picked the same free port a moment before
    free_port = fixture._free_port
    monkeypatch.setattr(fixture, "_free_port", lambda: next(picked, 0) or free_port())
    second = PostgresCluster.start()
    try:
        assert second.port != postgres.port
        assert second.psql("SHOW data_directory") == str(second.data)  # its own cluster answers, not the other one
    finally:
        second.stop()


def test_clusters_left_by_killed_runs_are_removed_and_live_or_young_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    old = time.time() - 3600

    def cluster(name: str, *, pid: int | None, age: float) -> Path:
        root = tmp_path / f"taskwire-pg-{name}"
        (root / "data").mkdir(parents=True)
        if pid is not None:
            (root / "data" / "postmaster.pid").write_text(f"{pid}\n/data\n")
        os.utime(root, (age, age))
        return root

    abandoned = cluster("dead", pid=2**22 + 7, age=old)  # no such process
    never_served = cluster("never", pid=None, age=old)
    live = cluster("live", pid=os.getpid(), age=old)
    young = cluster("young", pid=None, age=time.time())
    fixture._remove_abandoned()
    assert not abandoned.exists()
    assert not never_served.exists()
    assert live.exists()
    assert young.exists()
