"""A peer that is not installed is reported as skipped, with the reason, and measures nothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bench._common import QUICK, Bench
from bench.dramatiq_peer import PEER
from bench.peers import run_peer


def test_a_peer_without_its_virtualenv_is_skipped(tmp_path: Path) -> None:
    # Its server program is one every machine has: the missing virtualenv is what is reported.
    absent = dataclasses.replace(PEER, venv=".venv-not-installed", commands=("python3",))
    result = run_peer(Bench(sizes=QUICK, runs=1, quick=True, root=tmp_path), absent)
    assert result.skipped == "bench/.venv-not-installed does not exist (make bench-deps)"
    assert not result.metrics
    assert "skipped: bench/.venv-not-installed" in result.table()


def test_a_peer_without_its_server_program_is_skipped(tmp_path: Path) -> None:
    absent = dataclasses.replace(PEER, commands=("no-such-redis-server",))
    result = run_peer(Bench(sizes=QUICK, runs=1, quick=True, root=tmp_path), absent)
    assert result.skipped == "no-such-redis-server is not installed (make bench-deps)"
