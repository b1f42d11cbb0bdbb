"""The procrastinate side of the peer comparison; runs only with ``bench/.venv-procrastinate/bin/python``.

- ``app`` (async psycopg connector to ``$BENCH_PG_URL``) and its tasks, for
  ``procrastinate --app=bench.peer_procrastinate.app worker`` (and ``... schema --apply``);
- ``Adapter``, what bench/peer_driver.py calls, through a synchronous connector (a thread-safe
  psycopg pool): ``defer()`` per task, ``batch_defer()`` for a batch (one INSERT of many
  rows). procrastinate keeps no results: a set of tasks has completed when every one of its jobs is
  ``succeeded`` in the ``procrastinate_jobs`` table, which ``wait_all`` polls every
  10 ms (as taskwire's own end-to-end measurement polls its server).
- abort: ``cancel_job_by_id(abort=True)``; the worker hears it through LISTEN/NOTIFY and cancels the
  asyncio task of an async job, whose handler notes the time in its ``CancelledError``.

procrastinate is installed in its own virtualenv only, not in the one the type checker sees, so it is
imported by name and used untyped.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peer_driver import monotonic_s

_procrastinate: Any = importlib.import_module("procrastinate")

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql:///postgres")
# The workers use the async connector; the benchmark's client (BENCH_PROCRASTINATE_CLIENT=1), which
# submits from threads, a synchronous one over a thread-safe psycopg pool.
CLIENT = os.environ.get("BENCH_PROCRASTINATE_CLIENT") == "1"
app: Any = _procrastinate.App(
    connector=_procrastinate.SyncPsycopgConnector(conninfo=PG_URL, min_size=4, max_size=64)
    if CLIENT
    else _procrastinate.PsycopgConnector(conninfo=PG_URL)
)


async def _echo(value: object = None) -> object:
    """The same no-op as taskwire's ``echo`` handler."""
    return value


async def _timed(directory: str, key: str) -> None:
    """Writes the monotonic time it started to ``directory/key``."""
    (Path(directory) / key).write_text(repr(monotonic_s()))


async def _abortable(directory: str, key: str) -> None:
    """Writes ``directory/key.started``, then waits; on abort writes the time to ``directory/key.abort``."""
    (Path(directory) / f"{key}.started").write_text(repr(monotonic_s()))
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        (Path(directory) / f"{key}.abort").write_text(repr(monotonic_s()))
        raise


echo: Any = app.task(name="bench.echo")(_echo)
timed: Any = app.task(name="bench.timed")(_timed)
abortable: Any = app.task(name="bench.abortable")(_abortable)

# The open jobs of a set, through procrastinate's partial indexes on todo/doing; then the unsuccessful ones.
_OPEN = "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing') AND id = ANY(%(ids)s)"
_BAD = "SELECT count(*) AS n FROM procrastinate_jobs WHERE status <> 'succeeded' AND id = ANY(%(ids)s)"
_POLL_S = 0.01


class Adapter:
    batch_api = "batch_defer(): one INSERT of every job of the batch"
    can_abort = True

    def __init__(self) -> None:
        if not CLIENT:
            raise RuntimeError("the client runs with BENCH_PROCRASTINATE_CLIENT=1")
        self.app: Any = app.open()

    def submit(self) -> Any:
        return self.app.configure_task("bench.echo").defer(value=None)

    def submit_batch(self, count: int) -> list[Any]:
        ids: list[Any] = self.app.configure_task("bench.echo").batch_defer(*({"value": None} for _ in range(count)))
        return ids

    def wait_all(self, handles: Sequence[Any], timeout_s: float) -> None:
        deadline = monotonic_s() + timeout_s
        ids = list(handles)
        while (left := self.app.connector.execute_query_one(_OPEN, ids=ids)["n"]) > 0:
            if monotonic_s() > deadline:
                raise TimeoutError(f"{left} jobs still todo or doing after {timeout_s}s")
            time.sleep(_POLL_S)
        if bad := self.app.connector.execute_query_one(_BAD, ids=ids)["n"]:
            raise RuntimeError(f"{bad} jobs did not succeed")

    def submit_timed(self, directory: str, key: str) -> Any:
        return self.app.configure_task("bench.timed").defer(directory=directory, key=key)

    def submit_abortable(self, directory: str, key: str) -> Any:
        return self.app.configure_task("bench.abortable").defer(directory=directory, key=key)

    def abort(self, handle: Any) -> None:
        if not self.app.job_manager.cancel_job_by_id(handle, abort=True):
            raise RuntimeError(f"job {handle} could not be aborted")
