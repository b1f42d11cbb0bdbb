"""SqliteStore.recover() on cold against active executions, and the codec's cost per record.

    python -m bench.store_recover [--count 100000] [--rounds 3] [--dir PATH]

Two databases of `count` single-task PENDING executions each, as Submit writes
them: in one they are cold (no deadline: recovery returns only their queue
entries), in the other each carries a deadline, which makes it active (recovery
builds every record). Each round reopens the store and times `recover()` alone;
the best round is shown. Then the codec alone, per record, on rows read back
from the database: decode (`execution_from_row`, `task_run_from_row`) and encode
(`execution_to_row`, `task_run_to_row`).
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._store import add_dir_argument, pending_execution, run_in_folder
from taskwire.server.domain import RetryPolicy
from taskwire.server.store import NewExecution, SqliteStore, WriteBatch
from taskwire.server.store import _sqlite_codec as codec
from taskwire.server.store import _sqlite_queries as queries

_BATCH = 2_000
_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def new_execution(n: int, *, deadline: datetime | None) -> NewExecution:
    return pending_execution(
        n,
        _NOW,
        bench="store_recover",
        deadline=deadline,
        timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(max_attempts=3),
    )


async def populate(path: Path, count: int, *, cold: bool) -> None:
    deadline = None if cold else _NOW + timedelta(days=1)
    async with SqliteStore(path) as store:
        for start in range(0, count, _BATCH):
            news = [new_execution(n, deadline=deadline) for n in range(start, min(count, start + _BATCH))]
            [refusal] = await store.commit([WriteBatch(new_executions=news)])
            assert refusal is None, refusal


async def time_recover(path: Path, rounds: int) -> tuple[float, int, int]:
    """(best seconds, executions built, cold task runs)."""
    best = float("inf")
    built = cold = 0
    for _ in range(rounds):
        async with SqliteStore(path) as store:
            started = time.perf_counter()
            state = await store.recover()
            best = min(best, time.perf_counter() - started)
            built, cold = len(state.active), len(getattr(state, "cold", ()))
            del state
    return best, built, cold


def per_record_us(function: Callable[[Any], object], values: list[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for value in values:
            function(value)
        best = min(best, time.perf_counter() - started)
    return best / len(values) * 1e6


def codec_figures(path: Path, sample: int, rounds: int) -> list[tuple[str, float]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        execution_rows = conn.execute(
            f"SELECT seq, {', '.join(codec.EXECUTION_COLUMNS)} FROM executions LIMIT ?", (sample,)
        ).fetchall()
        task_run_rows = conn.execute(f"{queries.TASK_RUN_SELECT} LIMIT ?", (sample,)).fetchall()
    finally:
        conn.close()
    executions = [codec.execution_from_row(row) for row in execution_rows]
    task_runs = [codec.task_run_from_row(row) for row in task_run_rows]
    return [
        ("decode execution (execution_from_row)", per_record_us(codec.execution_from_row, execution_rows, rounds)),
        ("decode task run (task_run_from_row)", per_record_us(codec.task_run_from_row, task_run_rows, rounds)),
        ("encode execution (execution_to_row)", per_record_us(codec.execution_to_row, executions, rounds)),
        ("encode task run (task_run_to_row)", per_record_us(codec.task_run_to_row, task_runs, rounds)),
    ]


async def main_async(count: int, rounds: int, folder: Path) -> None:
    cold_path, active_path = folder / "cold.sqlite3", folder / "active.sqlite3"
    started = time.perf_counter()
    await populate(cold_path, count, cold=True)
    await populate(active_path, count, cold=False)
    print(f"SQLite {sqlite3.sqlite_version}; {count:,} single-task PENDING executions per database")
    print(f"(populated in {time.perf_counter() - started:.1f} s, files in {folder})")
    cold = await time_recover(cold_path, rounds)
    active = await time_recover(active_path, rounds)
    header = f"{'recover()':<40} {'seconds':>8} {'µs/exec':>8} {'active':>8} {'cold':>8}"
    print()
    print(header)
    print("-" * len(header))
    for label, (seconds, built, cold_runs) in (("cold executions (no deadline)", cold), ("active (deadline)", active)):
        print(f"{label:<40} {seconds:>8.3f} {seconds / count * 1e6:>8.2f} {built:>8} {cold_runs:>8}")
    print()
    header = f"{'codec, per record':<40} {'µs':>8}"
    print(header)
    print("-" * len(header))
    for label, micros in codec_figures(active_path, min(count, 20_000), rounds):
        print(f"{label:<40} {micros:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_recover", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="executions per database (default 100000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, best shown (default 3)")
    add_dir_argument(parser)
    args = parser.parse_args()
    run_in_folder(args.dir, lambda folder: main_async(args.count, args.rounds, folder))


if __name__ == "__main__":
    main()
