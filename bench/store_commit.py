"""Inserts per second into the SQLite store: one commit per write against group commit.

    python -m bench.store_commit [--seconds 1] [--rounds 3] [--dir PATH]

Every configuration has its own database with the durable settings as shipped
(WAL, synchronous=FULL). A write is what a Submit costs: one execution, one
task run and its first event. Writers loop for the same wall time: "group
commit" writers stage their write in the committer, as the engine does, and
wait until it is durable; "one commit per write" offers the same load as the
busiest group-commit row but each writer commits its batch alone
(`store.commit([batch])`). The configurations take turns, round after round,
so that a disk whose fsync latency drifts during the run weighs on all of them
alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench._store import add_dir_argument, pending_execution, run_in_folder
from taskwire.server.store import Committer, EventRecord, SqliteStore, WriteBatch


@dataclass(frozen=True, slots=True)
class Config:
    label: str
    writers: int
    grouped: bool


@dataclass(frozen=True, slots=True)
class Result:
    config: Config
    writes: int
    commits: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.writes / self.seconds

    def __add__(self, other: Result) -> Result:
        assert other.config == self.config
        return Result(
            self.config, self.writes + other.writes, self.commits + other.commits, self.seconds + other.seconds
        )


CONFIGS = (
    Config("one commit per write", 100, False),
    Config("group commit", 1, True),
    Config("group commit", 10, True),
    Config("group commit", 100, True),
)

_ids = itertools.count()


def submit(now: datetime) -> WriteBatch:
    n = next(_ids)
    event = EventRecord(f"bench-{n:09d}", 1, now, "execution_transition", b"\x08\x01")
    return WriteBatch(new_executions=[pending_execution(n, now, bench="store_commit")], events=[event])


class _Discard:
    """The committer's event sink: nobody watches here."""

    def publish(self, events: list[EventRecord]) -> None:
        pass


async def run(config: Config, folder: Path, seconds: float) -> Result:
    path = folder / f"{config.writers}-{'grouped' if config.grouped else 'alone'}.sqlite3"
    async with SqliteStore(path) as store:
        committer = Committer(store=store, bus=_Discard(), on_fatal=lambda error: None)
        committer.start()

        async def write(batch: WriteBatch) -> None:
            if config.grouped:
                for new in batch.new_executions:
                    committer.stage_new(new)
                for event in batch.events:
                    committer.stage_event(event)
                await committer.durable()
            else:
                [refusal] = await store.commit([batch])
                assert refusal is None, refusal

        await write(submit(datetime.now(UTC)))  # warm up: schema, caches
        start_stats = store.stats()
        deadline = time.perf_counter() + seconds
        counts = [0] * config.writers

        async def writer(index: int) -> None:
            while time.perf_counter() < deadline:
                await write(submit(datetime.now(UTC)))
                counts[index] += 1

        started = time.perf_counter()
        await asyncio.gather(*(writer(i) for i in range(config.writers)))
        elapsed = time.perf_counter() - started
        commits = store.stats().commits - start_stats.commits
        await committer.close()
    return Result(config, sum(counts), commits, elapsed)


def table(results: list[Result]) -> str:
    baseline = results[0].per_second
    header = (
        f"{'mode':<22} {'writers':>7} {'writes':>8} {'commits':>8} {'writes/commit':>13} "
        f"{'ms/commit':>9} {'inserts/s':>10} {'ratio':>7}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        commits = max(result.commits, 1)
        lines.append(
            f"{result.config.label:<22} {result.config.writers:>7} {result.writes:>8} {result.commits:>8} "
            f"{result.writes / commits:>13.1f} {result.seconds / commits * 1000:>9.2f} "
            f"{result.per_second:>10.0f} {result.per_second / baseline:>6.1f}x"
        )
    return "\n".join(lines)


async def main_async(seconds: float, rounds: int, folder: Path) -> None:
    results = [await run(config, folder, seconds) for config in CONFIGS]
    for _ in range(rounds - 1):
        results = [total + await run(total.config, folder, seconds) for total in results]
    print(
        f"SQLite {sqlite3.sqlite_version}, WAL + synchronous=FULL, {rounds} rounds of {seconds:g} s per row, "
        f"files in {folder}"
    )
    print(table(results))
    print("ratio: inserts/s relative to one commit per write")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store_commit", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="wall time of each row in each round (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="turns each configuration takes (default 3)")
    add_dir_argument(parser)
    args = parser.parse_args()
    run_in_folder(args.dir, lambda folder: main_async(args.seconds, args.rounds, folder))


if __name__ == "__main__":
    main()
