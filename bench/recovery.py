"""Scenario 7: recovery, from `taskwire-server` start to serving, with `pending` tasks in the store.

The store is prepared by submitting through a real server that is then stopped cleanly (the memory
scenario's stores are reused when it ran first). Each run starts ``taskwire-server`` on it and
times: process start → its "listening" line (recovery runs before the server listens) → the first
GetStats that succeeds, which must count every pending task. For reference, the same is timed on an
empty store: what any start costs (interpreter, imports, gRPC) whatever the store holds.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from bench._common import Bench, ScenarioResult, rss_bytes
from bench.memory import STORES_KEY, prepare_store
from tests.harness import ServerProcess, start_server

NAME = "recovery"
TITLE = "7. Recovery: server start → serving, with pending tasks in the store"


def _first_stats(server: ServerProcess, expected: int) -> None:
    while True:
        try:
            stats = server.stats()
        except grpc.RpcError:
            time.sleep(0.002)
            continue
        if stats.queue.size != expected:
            raise RuntimeError(f"recovered {stats.queue.size} queued tasks, expected {expected}")
        return


def start_to_serving(db_path: Path, expected: int, capacity: int) -> tuple[float, float, int]:
    """(start → listening line, start → first successful GetStats) in seconds, and RSS once serving."""
    started = time.monotonic()
    server = start_server(db_path, "--queue-capacity", str(capacity))
    try:
        listening = time.monotonic()
        _first_stats(server, expected)
        serving = time.monotonic()
        rss = rss_bytes(server.process.popen.pid)
        server.process.stop(timeout_s=60)
    finally:
        server.process.kill()
    return listening - started, serving - started, rss


def run(bench: Bench) -> ScenarioResult:
    count = bench.sizes.pending
    capacity = 2 * count
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {"pending": count}
    stores: list[Path] = list(bench.shared.get(STORES_KEY, []))
    if not stores:
        bench.log(f"{NAME}: preparing a store with {count:,} pending tasks")
        stores.append(prepare_store(bench, bench.scratch("recovery"), count)[0])
    for number in range(1, bench.runs + 1):
        bench.log(f"{NAME} run {number}/{bench.runs}: empty store, then {count:,} pending")
        empty = bench.scratch("recovery-empty") / "taskwire.db"
        _, empty_ready, empty_rss = start_to_serving(empty, 0, capacity)
        result.add("empty_ready", "empty store: start → first GetStats", "s", empty_ready)
        to_listen, to_ready, rss = start_to_serving(stores[(number - 1) % len(stores)], count, capacity)
        result.add("listening", f"{count:,} pending: start → listening line", "s", to_listen)
        result.add("ready", f"{count:,} pending: start → first GetStats", "s", to_ready)
        result.add("rss_per_task", f"{count:,} pending: RSS per task after recovery", "B", (rss - empty_rss) / count)
    result.notes.append(
        f"{len(stores)} store(s) prepared by submitting through a server that was then stopped cleanly; "
        "warm OS page cache"
    )
    return result


__all__ = ["NAME", "TITLE", "run", "start_to_serving"]
