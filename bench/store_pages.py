"""Which pages each commit of a real server writes: WAL frames per commit, by table and index.

    python -m bench.store_pages [--prefill 2000] [--tasks 30] [--rate 100]

A real taskwire-server (SQLite, durable settings as shipped) with two taskwire-workers. `--prefill`
echo tasks go through `SubmitExecutions` first, so the tables and indexes have the depth of a store
in use; then the WAL is restarted (a `wal_checkpoint(RESTART)` from a connection of this process, so
the next commit writes its frames from the start of the file) and `--tasks` echo tasks are submitted
one `SubmitExecution` each, paced at `--rate` per second. Every WAL frame written since is read back
from the file, grouped by commit (the frame that carries the database size ends one), and each page
is named by the table or index that owns it (SQLite's `dbstat`). Printed: frames per commit, the
commits by their shape (how many pages of each b-tree), and pages per task by b-tree. The measured
tasks must fit in one WAL generation (SQLite checkpoints at 1,000 frames); the tool says when not.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import struct
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench._common import FULL, Bench, channel, echo_execution, pace, task_stub, taskwire, wait_drained
from taskwire.v1 import task_service_pb2 as tpb

_WAL_HEADER = 32
_FRAME_HEADER = 24


@dataclass(frozen=True, slots=True)
class Commit:
    pages: tuple[int, ...]  # in the order written


def read_commits(wal: bytes) -> list[Commit]:
    """The commits of the WAL's current generation (frames whose salts match its header), in order."""
    if len(wal) < _WAL_HEADER:
        return []
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts = wal[16:24]
    commits: list[Commit] = []
    pages: list[int] = []
    offset = _WAL_HEADER
    while offset + _FRAME_HEADER + page_size <= len(wal):
        page, size_after = struct.unpack(">II", wal[offset : offset + 8])
        if wal[offset + 8 : offset + 16] != salts:
            break  # a frame of an earlier generation: the current one ends here
        pages.append(page)
        if size_after:
            commits.append(Commit(tuple(pages)))
            pages = []
        offset += _FRAME_HEADER + page_size
    return commits


def page_owners(path: Path) -> dict[int, str]:
    """Page number → the table or index it belongs to, as of now (page 1 is `sqlite_schema`)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {pageno: name for name, pageno in conn.execute("SELECT name, pageno FROM dbstat")}
    finally:
        conn.close()


def restart_wal(path: Path) -> int:
    """Checkpoint and restart the WAL; returns its checkpoint sequence number, which the next commit raises by one."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        if busy:
            raise RuntimeError("the WAL could not be restarted (a reader or writer held it)")
    finally:
        conn.close()
    return checkpoint_sequence(Path(f"{path}-wal").read_bytes())


def checkpoint_sequence(wal: bytes) -> int:
    return int(struct.unpack(">I", wal[12:16])[0])


async def _prefill(address: str, count: int) -> None:
    async with channel(address) as chan:
        stub = task_stub(chan)
        request = tpb.SubmitExecutionsRequest(executions=[echo_execution()] * 100)
        for _ in range(0, count, 100):
            await stub.SubmitExecutions(request, timeout=60)
        await wait_drained(stub)


async def _paced(address: str, count: int, rate: float) -> None:
    async with channel(address) as chan:
        stub = task_stub(chan)
        request = tpb.SubmitExecutionRequest(execution=echo_execution())

        async def one(_index: int) -> None:
            await stub.SubmitExecution(request, timeout=60)

        await pace(rate, count, one)
        await wait_drained(stub)


def report(commits: list[Commit], owners: dict[int, str], tasks: int) -> str:
    lines = [f"{len(commits)} commits, {sum(len(c.pages) for c in commits)} frames, {tasks} tasks"]
    sizes = Counter(len(commit.pages) for commit in commits)
    lines.append("frames per commit: " + ", ".join(f"{n} ×{count}" for n, count in sorted(sizes.items())))
    shapes: Counter[tuple[tuple[str, int], ...]] = Counter()
    per_tree: Counter[str] = Counter()
    for commit in commits:
        names = Counter(owners.get(page, "(free or gone)") for page in commit.pages)
        per_tree.update(names)
        shapes[tuple(sorted(names.items()))] += 1
    lines.append("")
    lines.append("commits by shape (pages of each b-tree), most common first:")
    for shape, count in shapes.most_common(8):
        total = sum(n for _, n in shape)
        lines.append(f"  ×{count:<4} {total:>3} pages: " + ", ".join(f"{name} {n}" for name, n in shape))
    lines.append("")
    lines.append("pages per task, by b-tree:")
    for name, count in per_tree.most_common():
        lines.append(f"  {count / tasks:6.2f}  {name}")
    lines.append(f"  {sum(per_tree.values()) / tasks:6.2f}  in all")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_pages", description=__doc__.splitlines()[0])
    parser.add_argument("--prefill", type=int, default=2000, help="tasks submitted in batches first (default 2000)")
    parser.add_argument("--tasks", type=int, default=30, help="tasks submitted one at a time, measured (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="submits per second of the measured tasks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskwire-pages-") as root:
        bench = Bench(sizes=FULL, runs=1, quick=False, root=Path(root))
        with taskwire(bench, workers=2, slots=50) as running:
            db = running.server.db_path
            asyncio.run(_prefill(running.address, args.prefill))
            restarted = restart_wal(db)
            asyncio.run(_paced(running.address, args.tasks, args.rate))
            wal = Path(f"{db}-wal").read_bytes()
            owners = page_owners(db)
        if checkpoint_sequence(wal) != restarted + 1:
            print("the WAL was checkpointed during the run: pass fewer --tasks", file=sys.stderr)
            return 1
        print(report(read_commits(wal), owners, args.tasks))
        return 0


if __name__ == "__main__":
    sys.exit(main())
