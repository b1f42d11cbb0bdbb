"""The event loop's CPU per task of the engine alone: no gRPC, no worker process.

    python -m bench.engine_loop [--tasks 20000] [--rounds 3] [--memory] [--dir PATH]

The engine runs in this process on a real SQLite store (its writer process apart, as in the
server; `--memory`: the in-memory store), with one fake worker of 100 slots that completes every
invocation in the loop turn after the dispatch pass that sent it. Executions of one echo task are
submitted 100 at a time, 4 calls in flight, as the throughput scenario's batched phase sends them.
Printed per round: the thread CPU of the event loop per task, from the first submit to the last
completion made durable, and the wall time per task. The garbage collector is set as in the server.

What the server's loop does per task beyond this is gRPC's: reading and answering the calls and the
worker streams' frames. So a change to the engine, the domain or the row encoding shows here without
the noise of five processes sharing two cores; compare alternating rounds of two versions.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from bench._store import add_dir_argument, run_in_folder
from bench.flow import RecordingLink
from taskwire.server._config import ServerConfig
from taskwire.server._history_wire import ProtoHistoryCodec
from taskwire.server._main import collect_as_a_server
from taskwire.server.domain import Attempt, ExecutionSpec, Payload, TaskRun, TaskSpec, TaskSucceeded
from taskwire.server.engine import AttemptEnd, Engine, SubmitItem, WorkerHello
from taskwire.server.store import MemoryStore, SqliteStore, Store

BATCH = 100
IN_FLIGHT = 4
SLOTS = 100
INPUT = Payload(b'{"x":1}')
OUTPUT = Payload(b"null")


class _CompletingLink(RecordingLink):
    """A worker that completes what it was sent in the loop turn after the dispatch pass that sent it."""

    def __init__(self, complete: Callable[[list[tuple[str, int]]], None]) -> None:
        super().__init__()
        self._complete = complete

    def invoke(self, task_run: TaskRun, attempt: Attempt, dispatch: int, **details: object) -> None:
        if not self.sent:  # the first of a pass: its completions go in the next loop turn
            asyncio.get_running_loop().call_soon(self._send_completions)
        super().invoke(task_run, attempt, dispatch, **details)

    def _send_completions(self) -> None:
        sent, self.sent = self.sent, []
        self._complete(sent)


async def per_task(folder: Path, tasks: int, *, memory: bool) -> tuple[float, float]:
    """(loop CPU seconds, wall seconds) per task for `tasks` executions through a fresh engine and store."""
    store: Store = MemoryStore() if memory else SqliteStore(folder / f"engine-{time.monotonic_ns()}.db")
    await store.open()
    engine = Engine(
        store=store, config=ServerConfig(queue_capacity=tasks + 1, hot_queue_size=tasks + 1), codec=ProtoHistoryCodec()
    )
    await engine.start()
    calls_each = tasks // (BATCH * IN_FLIGHT)
    total = calls_each * BATCH * IN_FLIGHT
    finished = asyncio.Event()
    done = 0

    def complete(sent: list[tuple[str, int]]) -> None:
        nonlocal done
        engine.on_worker_frame(session, [AttemptEnd(run, TaskSucceeded(number, OUTPUT)) for run, number in sent])
        done += len(sent)
        if done >= total:
            finished.set()

    session, _ = engine.connect_worker(
        WorkerHello(name="bench", instance_id="bench-1", handlers=frozenset({"echo"}), slots=SLOTS),
        _CompletingLink(complete),
    )

    async def submits() -> None:
        for _ in range(calls_each):
            items = [SubmitItem(ExecutionSpec(tasks=(TaskSpec("echo", input=INPUT),)), "") for _ in range(BATCH)]
            await engine.submit_many(items, wait_for_room=False, timeout_s=None)

    try:
        cpu, wall = time.thread_time(), time.perf_counter()
        await asyncio.gather(*(submits() for _ in range(IN_FLIGHT)))
        await finished.wait()
        await engine.flush()
        return (time.thread_time() - cpu) / total, (time.perf_counter() - wall) / total
    finally:
        await engine.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks per round (a multiple of 400)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="the in-memory store instead of SQLite")
    add_dir_argument(parser)
    args = parser.parse_args()
    collect_as_a_server()

    async def rounds(folder: Path) -> None:
        store = "memory" if args.memory else "SQLite"
        for number in range(1, args.rounds + 1):
            cpu, wall = await per_task(folder, args.tasks, memory=args.memory)
            figures = f"loop CPU {1e6 * cpu:.1f} µs/task, wall {1e6 * wall:.1f} µs/task"
            print(f"round {number} ({store}, {args.tasks:,} tasks): {figures}")

    run_in_folder(args.dir, rounds)


if __name__ == "__main__":
    main()
