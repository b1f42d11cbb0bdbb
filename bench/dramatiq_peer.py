"""The peer: Dramatiq with a Redis broker and its Results middleware (bench/peers.py runs it).

Each run starts its own ``redis-server`` with ``appendonly yes`` and ``appendfsync always`` (an
acknowledged message is on disk, as in taskwire), and ``dramatiq bench.peer_dramatiq`` with 2 worker
processes × 8 threads (Dramatiq's default threads). The client is bench/peer_driver.py with
bench/peer_dramatiq.py, from bench/.venv-dramatiq. Dramatiq cannot abort a running task.
"""

from __future__ import annotations

import contextlib

from bench._common import Bench, ScenarioResult, wait_for
from bench.peers import Peer, System, redis_system, run_peer
from tests.harness import Process

NAME = "dramatiq"
TITLE = "Peer: Dramatiq + Redis (appendfsync always), no-op task"
THREADS = 8
_READY = "is ready for action"


def _start(bench: Bench, peer: Peer) -> contextlib.AbstractContextManager[System]:
    processes = bench.sizes.workers
    args = ["-m", "dramatiq", "bench.peer_dramatiq", "--processes", str(processes), "--threads", str(THREADS)]

    def ready(process: Process) -> None:
        wait_for(
            lambda: process.output.count(_READY) >= processes or None,
            timeout_s=120,
            what=f"{processes} Dramatiq worker processes",
        )

    return redis_system(bench, peer, args, ready)


PEER = Peer(
    name=NAME,
    title=TITLE,
    label="Dramatiq + Redis",
    venv=".venv-dramatiq",
    adapter="bench.peer_dramatiq",
    commands=("redis-server",),
    can_abort=False,
    start=_start,
    notes=(
        f"dramatiq --processes 2 --threads {THREADS}; Redis with appendonly yes, appendfsync always; results "
        "through the Results middleware (Redis backend), read with get_result() polled every millisecond "
        "(its blocking form is a BRPOPLPUSH, a write Redis would fsync once per result)",
    ),
)


def run(bench: Bench) -> ScenarioResult:
    return run_peer(bench, PEER)


__all__ = ["NAME", "PEER", "TITLE", "run"]
