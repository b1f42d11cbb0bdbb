"""The tests' PostgreSQL (`tests.postgres`): a cluster is ready only when it is its own that answers."""

from __future__ import annotations

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
