"""The engine's loop-cost harness drives every task to a durable completion, on either store."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bench import engine_loop


def _states(folder: Path) -> dict[str, int]:
    [database] = folder.glob("*.db")
    with sqlite3.connect(database) as conn:
        return dict(conn.execute("SELECT state, count(*) FROM executions GROUP BY state").fetchall())


@pytest.mark.parametrize("memory", [True, False], ids=["memory", "sqlite"])
async def test_each_round_completes_every_task_and_reports_its_cost(tmp_path: Path, memory: bool) -> None:
    cpu, wall = await engine_loop.per_task(tmp_path, 800, memory=memory)
    assert cpu > 0
    assert wall > 0
    if not memory:
        assert await asyncio.to_thread(_states, tmp_path) == {"SUCCESS": 800}
