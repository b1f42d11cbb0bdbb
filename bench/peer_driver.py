"""The client side of every peer measurement; runs in a peer's own virtualenv (standard library only).

``python -m bench.peer_driver --adapter bench.peer_dramatiq --mode single --count N ...`` imports the
peer's module (its ``Adapter`` class speaks to the peer), warms the peer up with one task end to end,
measures one phase, and prints ``peer-driver: {json}``. The phases are the same for every peer:

- ``single``: N one-task submits from `callers` threads, then wait until every task has completed;
- ``batched``: the same N through the peer's batch API, `batch` tasks a call, `callers` calls at once;
- ``latency``: submits paced open loop at `rate`/s for `seconds`; each task's handler writes the
  CLOCK_MONOTONIC time it started to a file; reported per task: the submit call's time (the peer's
  acknowledgement) and submit → handler start;
- ``cancel``: one abortable task at a time; once its handler has written that it runs, t0, the peer's
  abort call, and the time the handler saw the abort (written by the handler).

CPU: the driver reads /proc for the process trees given with ``--pid`` (broker, database, workers)
and for itself, just before and just after the measured phase, so start-up and warm-up are left out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

RESULT_PREFIX = "peer-driver: "
_TICKS = os.sysconf("SC_CLK_TCK")
_WARMUP = 20
_CANCEL_WARMUP = 2


class Adapter(Protocol):
    """What a peer's module offers the driver (``Adapter()`` is built once the environment is set)."""

    batch_api: str  # what the batched phase calls, for the notes
    can_abort: bool

    def submit(self) -> Any: ...  # one no-op task; returns what wait_all needs
    def submit_batch(self, count: int) -> list[Any]: ...
    def wait_all(self, handles: Sequence[Any], timeout_s: float) -> None: ...  # every task completed
    def submit_timed(self, directory: str, key: str) -> Any: ...  # handler writes its start time to dir/key
    def submit_abortable(self, directory: str, key: str) -> Any: ...  # writes dir/key.started, waits
    def abort(self, handle: Any) -> None: ...  # the handler then writes dir/key.abort


def monotonic_s() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _tree(pid: int) -> list[int]:
    pids = [pid]
    index = 0
    while index < len(pids):
        try:
            children = Path(f"/proc/{pids[index]}/task/{pids[index]}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(child) for child in children]
        index += 1
    return pids


def tree_cpu_s(roots: Sequence[int]) -> float:
    """User plus system CPU of processes and their descendants, from /proc/<pid>/stat."""
    ticks = 0
    for root in roots:
        for pid in _tree(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICKS


def wait_for_file(path: Path, timeout_s: float = 30.0) -> str:
    deadline = monotonic_s() + timeout_s
    while True:
        if path.exists() and (text := path.read_text()):
            return text
        if monotonic_s() > deadline:
            raise TimeoutError(f"{path} was not written within {timeout_s}s")
        time.sleep(0.0005)


def _from_callers(calls: int, callers: int, call: Callable[[], list[Any]]) -> tuple[float, float, list[Any]]:
    """`calls` calls of `call` from `callers` threads; (first start, last answer, every handle)."""
    handles: list[Any] = []
    lock = threading.Lock()
    numbers = iter(range(calls))

    def caller() -> None:
        mine = []
        while True:
            with lock:
                if next(numbers, None) is None:
                    break
            mine += call()
        with lock:
            handles.extend(mine)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    first = monotonic_s()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return first, monotonic_s(), handles


def _latency(adapter: Adapter, directory: Path, rate: float, seconds: float) -> dict[str, list[float]]:
    def one(key: str) -> tuple[float, float]:
        sent = monotonic_s()
        adapter.submit_timed(str(directory), key)
        return sent, monotonic_s()

    for index in range(_WARMUP):
        one(f"warm{index}")
    count = max(1, round(rate * seconds))
    start = monotonic_s() + 0.01
    with ThreadPoolExecutor(max_workers=32) as pool:
        futures = []
        for index in range(count):
            delay = start + index / rate - monotonic_s()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, str(index)))
        calls = [future.result() for future in futures]
    acks, starts = [], []
    for index, (sent, answered) in enumerate(calls):
        started = float(wait_for_file(directory / str(index)))
        acks.append(1000 * (answered - sent))
        starts.append(1000 * (started - sent))
    return {"ack_ms": acks, "start_ms": starts}


def _cancel(adapter: Adapter, directory: Path, samples: int) -> dict[str, list[float]]:
    aborts = []
    for index in range(_CANCEL_WARMUP + samples):
        key = f"c{index}"
        handle = adapter.submit_abortable(str(directory), key)
        wait_for_file(directory / f"{key}.started")
        cancelled = monotonic_s()
        adapter.abort(handle)
        fired = float(wait_for_file(directory / f"{key}.abort"))
        if index >= _CANCEL_WARMUP:
            aborts.append(1000 * (fired - cancelled))
    return {"abort_ms": aborts}


def measure(adapter: Adapter, args: argparse.Namespace) -> dict[str, Any]:
    adapter.wait_all([adapter.submit()], 120)  # connections up, workers warm
    directory = Path(args.dir) if args.dir else None
    roots = [*args.pid, os.getpid()]
    cpu_before, own_before = tree_cpu_s(roots), tree_cpu_s([os.getpid()])
    out: dict[str, Any] = {"batch_api": adapter.batch_api}
    if args.mode in ("single", "batched"):
        if args.mode == "single":
            first, submitted, handles = _from_callers(args.count, args.callers, lambda: [adapter.submit()])
        else:
            calls = -(-args.count // args.batch)
            first, submitted, handles = _from_callers(calls, args.callers, lambda: adapter.submit_batch(args.batch))
        adapter.wait_all(handles, 900)
        done = monotonic_s()
        out.update(tasks=len(handles), submit_s=submitted - first, total_s=done - first)
    elif args.mode == "latency":
        assert directory is not None, "--dir is required"
        out.update(_latency(adapter, directory, args.rate, args.seconds))
    else:
        assert directory is not None, "--dir is required"
        if not adapter.can_abort:
            raise SystemExit("this peer cannot abort a running task")
        out.update(_cancel(adapter, directory, args.count))
    out.update(cpu_s=tree_cpu_s(roots) - cpu_before, client_cpu_s=tree_cpu_s([os.getpid()]) - own_before)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_driver", description=__doc__)
    parser.add_argument("--adapter", required=True, help="module with an Adapter class, e.g. bench.peer_dramatiq")
    parser.add_argument("--mode", choices=("single", "batched", "latency", "cancel"), required=True)
    parser.add_argument("--count", type=int, default=1000, help="tasks (single, batched) or cancels")
    parser.add_argument("--callers", type=int, default=1, help="threads submitting at once")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dir", default="", help="where handlers write their times")
    parser.add_argument("--pid", type=int, action="append", default=[], help="a process tree whose CPU counts")
    args = parser.parse_args(argv)
    factory: Callable[[], Adapter] = importlib.import_module(args.adapter).Adapter
    print(RESULT_PREFIX + json.dumps(measure(factory(), args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
