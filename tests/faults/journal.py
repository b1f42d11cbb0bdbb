"""Handlers that keep their own record of every run, for the checker.

Each run appends one JSON line when it starts and one when it ends to the file named by
`TASKWIRE_JOURNAL` (one `write` of a short line on an `O_APPEND` file: lines from several worker processes
never interleave, and a line written survives a `kill -9` of its process). Serve them with
`taskwire-worker --handlers tests.faults.journal` from the repository root.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from taskwire.worker import TaskContext, handler

from .checker import HandlerRun

if TYPE_CHECKING:  # workers import this module for its handlers: they need no test harness
    from tests.harness import Cluster, Process, ServerProcess

JOURNAL_ENV = "TASKWIRE_JOURNAL"
HANDLERS = "tests.faults.journal"


def journal_env(journal: Path) -> dict[str, str]:
    """The environment of a worker whose handlers write to `journal`."""
    return {JOURNAL_ENV: str(journal)}


def journal_worker(
    procs: Cluster, server: ServerProcess | str, journal: Path, *extra_args: str, name: str, slots: int = 6
) -> Process:
    """A real worker serving `journal.work` on `server` (or on the addresses given), writing to `journal`; torn
    down with `procs`."""
    return procs.worker(server, *extra_args, handlers=HANDLERS, slots=slots, name=name, env=journal_env(journal))


def _append(entry: dict[str, object]) -> None:
    line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
    fd = os.open(os.environ[JOURNAL_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class _Run:
    """One run's two journal lines: its start on entering, its end and `result` on leaving."""

    def __init__(self, ctx: TaskContext) -> None:
        self.abort = ctx.abort
        self.key = {
            "e": ctx.execution_id,
            "t": ctx.task_run_id,
            "a": ctx.attempt,
            "d": ctx.dispatch_id,
            "w": str(os.getpid()),
        }
        params = ctx.input if isinstance(ctx.input, dict) else {}
        self.seconds = float(params.get("seconds", 0.0))
        self.output: dict[str, object] = {"task_run": ctx.task_run_id, "attempt": ctx.attempt}
        self.result = "error"

    def __enter__(self) -> _Run:
        _append({**self.key, "ev": "start", "at": time.time()})
        return self

    def __exit__(self, *exc_info: object) -> None:
        _append({**self.key, "ev": "end", "at": time.time(), "result": self.result})

    def ended(self, aborted: bool) -> dict[str, object]:
        """Its output once its wait ended, `aborted` or not (an abort raises)."""
        if aborted:
            self.result = "aborted"
            self.abort.raise_if_aborted()
        self.result = "ok"
        return self.output


@handler("journal.work")
async def work(ctx: TaskContext) -> dict[str, object]:
    """Input ``{"seconds": s}``: records its start, waits s seconds (stopping at once on abort), records its end."""
    with _Run(ctx) as run:
        return run.ended(bool(run.seconds) and await ctx.abort.wait(run.seconds))


@handler("journal.work_sync")
def work_sync(ctx: TaskContext) -> dict[str, object]:
    """`journal.work` as a plain function, so that it runs in the worker's handler threads."""
    with _Run(ctx) as run:
        return run.ended(bool(run.seconds) and bool(ctx.abort.wait(run.seconds)))


def read_journal(path: Path) -> list[HandlerRun]:
    """Every run in the journal, its start joined with its end (a run whose process died has no end)."""
    starts: dict[tuple[str, int, str, str], dict[str, object]] = {}
    ends: dict[tuple[str, int, str, str], dict[str, object]] = {}
    runs: list[HandlerRun] = []
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        key = (str(entry["t"]), int(entry["a"]), str(entry.get("d", "")), str(entry["w"]))
        if entry["ev"] == "start":
            if key in starts:  # the same attempt started twice in one process: keep both as separate runs
                runs.append(_run(starts.pop(key), ends.pop(key, None)))
            starts[key] = entry
        else:
            ends[key] = entry
    runs.extend(_run(start, ends.get(key)) for key, start in starts.items())
    return runs


def _run(start: dict[str, object], end: dict[str, object] | None) -> HandlerRun:
    return HandlerRun(
        execution_id=str(start["e"]),
        task_run_id=str(start["t"]),
        attempt=int(str(start["a"])),
        worker=str(start["w"]),
        dispatch=str(start.get("d", "")),
        started=float(str(start["at"])),
        ended=float(str(end["at"])) if end else None,
        result=str(end["result"]) if end else "",
    )


def running_in(journal: Path, processes: set[int]) -> int | None:
    """One of `processes` whose handler has started and not yet ended, as the journal shows."""
    running = {int(run.worker) for run in read_journal(journal) if run.ended is None} & processes
    return min(running, default=None)
