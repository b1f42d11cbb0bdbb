"""The Celery side of the peer comparison; runs only with ``bench/.venv-peers/bin/python``.

- the Celery app (Redis broker and result backend at ``$BENCH_REDIS_URL``) and its no-op task, for
  ``celery -A bench.celery_tasks worker``;
- the producer: ``python -m bench.celery_tasks --count N`` sends N ``.delay()`` calls, waits for every
  result, and prints ``celery-peer: {json}`` with the timings.

Celery is installed in bench/.venv-peers only, not in the virtualenv the type checker sees, so it is
imported by name and used untyped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

READY = "bench-celery-worker-ready"
RESULT_PREFIX = "celery-peer: "

_celery: Any = importlib.import_module("celery")
_signals: Any = importlib.import_module("celery.signals")
_result: Any = importlib.import_module("celery.result")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
app: Any = _celery.Celery("bench", broker=f"{REDIS_URL}/0", backend=f"{REDIS_URL}/1")
app.conf.update(broker_connection_retry_on_startup=True, worker_redirect_stdouts=False)


def echo(value: object) -> object:
    """The same no-op as taskwire's ``echo`` handler: returns its input."""
    return value


echo_task: Any = app.task(name="bench.echo")(echo)


def _announce_ready(**_: object) -> None:
    print(READY, flush=True)


_signals.worker_ready.connect(_announce_ready, weak=False)


def produce(count: int) -> dict[str, float]:
    """Send `count` tasks, then wait for all their results; timings in seconds."""
    echo_task.delay(None).get(timeout=60)  # one round trip first: connections up, worker warm
    started = time.monotonic()
    results = [echo_task.delay(None) for _ in range(count)]
    sent = time.monotonic()
    values = _result.ResultSet(results).join_native(timeout=900)
    done = time.monotonic()
    if len(values) != count or any(value is not None for value in values):
        raise RuntimeError(f"expected {count} results of None, got {len(values)}")
    return {"tasks": count, "send_s": sent - started, "total_s": done - started}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_tasks", description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args(argv)
    print(RESULT_PREFIX + json.dumps(produce(args.count)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
