"""The Celery side of the peer comparison; runs only with ``bench/.venv-celery/bin/python``.

- the Celery app (Redis broker and result backend at ``$BENCH_REDIS_URL``) and its tasks, for
  ``celery -A bench.celery_tasks worker``;
- ``Adapter``, what bench/peer_driver.py calls: ``.delay()`` per task, ``group(...).apply_async()``
  for a batch (Celery has no batch enqueue: the group publishes its messages one by one), results
  collected with ``ResultSet.join_native``; abort with ``revoke(terminate=True, signal="SIGUSR1")``,
  which the worker delivers to the pool process running the task.

Celery is installed in its own virtualenv only, not in the one the type checker sees, so it is
imported by name and used untyped.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.peer_driver import monotonic_s

READY = "bench-celery-worker-ready"

_celery: Any = importlib.import_module("celery")
_signals: Any = importlib.import_module("celery.signals")
_result: Any = importlib.import_module("celery.result")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
app: Any = _celery.Celery("bench", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(broker_connection_retry_on_startup=True, worker_redirect_stdouts=False)


def echo(value: object) -> object:
    """The same no-op as taskwire's ``echo`` handler: returns its input."""
    return value


def timed(directory: str, key: str) -> None:
    """Writes the monotonic time it started to ``directory/key``."""
    (Path(directory) / key).write_text(repr(monotonic_s()))


class Aborted(Exception):
    """Raised in the task when the worker delivers the revoke's signal."""


def abortable(directory: str, key: str) -> None:
    """Writes ``directory/key.started``, then waits; on SIGUSR1 writes the time to ``directory/key.abort``."""

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        (Path(directory) / f"{key}.abort").write_text(repr(monotonic_s()))
        raise Aborted(key)

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        (Path(directory) / f"{key}.started").write_text(repr(monotonic_s()))
        time.sleep(3600)
    finally:
        signal.signal(signal.SIGUSR1, previous)


echo_task: Any = app.task(name="bench.echo")(echo)
timed_task: Any = app.task(name="bench.timed", ignore_result=True)(timed)
abortable_task: Any = app.task(name="bench.abortable", ignore_result=True)(abortable)


def _announce_ready(**_: object) -> None:
    print(READY, flush=True)


_signals.worker_ready.connect(_announce_ready, weak=False)


class Adapter:
    batch_api = "group([...]).apply_async(): one publish per message (Celery has no batch enqueue)"
    can_abort = True

    # Handles are task ids: Celery's result backend is per thread, and a result is awaited by the
    # backend of the thread that builds its AsyncResult, so wait_all builds them in its own thread.
    def submit(self) -> Any:
        return echo_task.delay(None).id

    def submit_batch(self, count: int) -> list[Any]:
        group = _celery.group(echo_task.s(None) for _ in range(count)).apply_async()
        return [result.id for result in group.results]

    def wait_all(self, handles: Sequence[Any], timeout_s: float) -> None:
        results = [app.AsyncResult(task_id) for task_id in handles]
        values = _result.ResultSet(results).join_native(timeout=timeout_s)
        if len(values) != len(handles) or any(value is not None for value in values):
            raise RuntimeError(f"expected {len(handles)} results of None, got {len(values)}")

    def submit_timed(self, directory: str, key: str) -> Any:
        return timed_task.delay(directory, key)

    def submit_abortable(self, directory: str, key: str) -> Any:
        return abortable_task.delay(directory, key)

    def abort(self, handle: Any) -> None:
        app.control.revoke(handle.id, terminate=True, signal="SIGUSR1")
