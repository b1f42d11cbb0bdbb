"""The Dramatiq side of the peer comparison; runs only with ``bench/.venv-dramatiq/bin/python``.

- the broker (Redis at ``$BENCH_REDIS_URL``, Results middleware on the same Redis) and the actors, for
  ``dramatiq bench.peer_dramatiq --processes 2``;
- ``Adapter``, what bench/peer_driver.py calls: ``send()`` per task, ``group(...).run()`` for a batch
  (Dramatiq has no batch enqueue: the group enqueues its messages one by one), results read with
  ``Message.get_result()`` (polled: the blocking form writes to Redis).

Dramatiq is installed in its own virtualenv only, not in the one the type checker sees, so it is
imported by name and used untyped. Dramatiq has no way to abort a running task (that takes the
third-party dramatiq-abort middleware), so ``can_abort`` is False.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.peer_driver import monotonic_s

_dramatiq: Any = importlib.import_module("dramatiq")
_redis_broker: Any = importlib.import_module("dramatiq.brokers.redis")
_results: Any = importlib.import_module("dramatiq.results")
_backends: Any = importlib.import_module("dramatiq.results.backends")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
broker: Any = _redis_broker.RedisBroker(url=f"{REDIS_URL}/0")
broker.add_middleware(_results.Results(backend=_backends.RedisBackend(url=f"{REDIS_URL}/1")))
_dramatiq.set_broker(broker)


def _echo(value: object) -> object:
    """The same no-op as taskwire's ``echo`` handler: returns its input."""
    return value


def _timed(directory: str, key: str) -> None:
    """Writes the monotonic time it started to ``directory/key``."""
    (Path(directory) / key).write_text(repr(monotonic_s()))


echo: Any = _dramatiq.actor(actor_name="bench_echo", store_results=True, max_retries=0)(_echo)
timed: Any = _dramatiq.actor(actor_name="bench_timed", max_retries=0)(_timed)


class Adapter:
    batch_api = "group([...]).run(): one enqueue per message (Dramatiq has no batch enqueue)"
    can_abort = False

    def submit(self) -> Any:
        return echo.send(None)

    def submit_batch(self, count: int) -> list[Any]:
        messages = [echo.message(None) for _ in range(count)]
        _dramatiq.group(messages).run()
        return messages

    def wait_all(self, handles: Sequence[Any], timeout_s: float) -> None:
        # Not get_result(block=True): the backend's blocking read is BRPOPLPUSH, a write that Redis
        # fsyncs with appendfsync always, one per result. A plain read (LINDEX) polled costs none.
        deadline = monotonic_s() + timeout_s
        for message in handles:
            while True:
                try:
                    value = message.get_result()
                    break
                except _results.ResultMissing:
                    if monotonic_s() > deadline:
                        raise TimeoutError(f"no result for {message.message_id} within {timeout_s}s") from None
                    time.sleep(0.001)
            if value is not None:
                raise RuntimeError(f"expected the result None, got {value!r}")

    def submit_timed(self, directory: str, key: str) -> Any:
        return timed.send(directory, key)

    def submit_abortable(self, directory: str, key: str) -> Any:
        raise NotImplementedError("Dramatiq cannot abort a running task")

    def abort(self, handle: Any) -> None:
        raise NotImplementedError("Dramatiq cannot abort a running task")
