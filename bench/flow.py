"""Scenario 8: what flow control costs the dispatcher, beside plain FIFO, in one run.

The engine runs in this process on the in-memory store (no gRPC, no SQLite: what is left is the
engine's own work), with one fake worker of `flow_slots` slots that completes every invocation as soon
as the dispatch pass that sent it returns. `flow_tasks` single-task executions are queued first, then
the worker connects and the queue drains. Two figures per variant: the time spent in dispatch passes
per task dispatched (the ready queue's choice, the transition, the send), and the engine's whole
time per task from the worker's connect to the last completion (dispatch, completion, history,
commit); and, apart, the time of one pop of the ready queue alone, filled the same way (the part
priorities and fairness keys change).

Variants: `fifo` (every task at the default priority: one FIFO per handler), `priority` (priorities
spread over 1..9, aging on), `keys` (100 concurrency keys with a limit of 10 each: most tasks wait
WAITING(CONCURRENCY_LIMIT) and are admitted one by one as places free), `fairness` (100 fairness keys,
taken in turns), `rate` (every task names a rate limit that never runs dry: the cost of taking a token).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench._common import Bench, ScenarioResult
from taskwire.server._config import RateLimit, ServerConfig
from taskwire.server._history_wire import ProtoHistoryCodec
from taskwire.server.domain import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Attempt,
    ExecutionSpec,
    Payload,
    Reason,
    TaskRun,
    TaskSpec,
    TaskSucceeded,
)
from taskwire.server.engine import AttemptEnd, Engine, WorkerHello
from taskwire.server.engine._ready import ReadyQueues
from taskwire.server.store import MemoryStore

NAME = "flow"
TITLE = "9. Flow control: dispatch cost of each rule beside plain FIFO (in-process engine)"

OUTPUT = Payload(b"null")


@dataclass(eq=False)
class RecordingLink:
    """A worker link that only remembers what it was sent."""

    sent: list[tuple[str, int]] = field(default_factory=list)

    def invoke(self, task_run: TaskRun, attempt: Attempt, dispatch: int, **_: object) -> None:
        self.sent.append((task_run.id, attempt.number))

    def cancel(self, task_run_id: str, attempt: int, reason: Reason) -> None:
        pass

    def drain(self, grace: object, reason: str) -> None:
        pass

    def going_away(self, reconnect_within: object, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


def _fifo(number: int, rng: random.Random) -> TaskSpec:
    return TaskSpec("echo", priority=DEFAULT_PRIORITY)


def _priority(number: int, rng: random.Random) -> TaskSpec:
    return TaskSpec("echo", priority=rng.randint(MIN_PRIORITY, MAX_PRIORITY))


def _keys(number: int, rng: random.Random) -> TaskSpec:
    return TaskSpec("echo", concurrency_key=f"customer-{number % 100}", concurrency_limit=10)


def _fairness(number: int, rng: random.Random) -> TaskSpec:
    return TaskSpec("echo", fairness_key=f"tenant-{rng.randrange(100)}")


def _rate(number: int, rng: random.Random) -> TaskSpec:
    return TaskSpec("echo", rate_limit=_UNTHROTTLED.name)


# A rate limit that never runs dry: what a token costs a dispatch, not how long a wait is.
_UNTHROTTLED = RateLimit("bench", rate=1e9, burst=10**9)


VARIANTS: dict[str, tuple[str, Callable[[int, random.Random], TaskSpec]]] = {
    "fifo": ("plain FIFO (default priority)", _fifo),
    "priority": ("priorities 1..9, aging on", _priority),
    "keys": ("100 concurrency keys, limit 10 each", _keys),
    "fairness": ("100 fairness keys in turns", _fairness),
    "rate": ("a rate limit (never empty)", _rate),
}


async def _drain(tasks: int, slots: int, make: Callable[[int, random.Random], TaskSpec]) -> tuple[float, float]:
    """(seconds in dispatch passes, seconds from connect to the last completion)."""
    store = MemoryStore()
    await store.open()
    config = ServerConfig(queue_capacity=tasks + 1, hot_queue_size=tasks + 1, rate_limits=(_UNTHROTTLED,))
    engine = Engine(store=store, config=config, codec=ProtoHistoryCodec())
    await engine.start()
    rng = random.Random(7)
    try:
        for number in range(tasks):
            spec = ExecutionSpec(tasks=(make(number, rng),))
            await engine.submit(spec, fingerprint="", wait_for_room=False, timeout_s=None)
        await engine.flush()
        dispatcher = engine._dispatcher  # the pass is what is measured
        pump = dispatcher.pump
        in_pump = 0.0

        def timed_pump() -> None:
            nonlocal in_pump
            started = time.perf_counter()
            pump()
            in_pump += time.perf_counter() - started

        dispatcher.pump = timed_pump  # type: ignore[method-assign]
        link = RecordingLink()
        started = time.perf_counter()
        session, _ = engine.connect_worker(
            WorkerHello(name="bench", instance_id="bench-1", handlers=frozenset({"echo"}), slots=slots), link
        )
        done = 0
        while done < tasks:
            await asyncio.sleep(0)
            sent, link.sent = link.sent, []
            if sent:
                engine.on_worker_frame(
                    session, [AttemptEnd(task_run_id, TaskSucceeded(number, OUTPUT)) for task_run_id, number in sent]
                )
                done += len(sent)
        await engine.flush()
        return in_pump, time.perf_counter() - started
    finally:
        await engine.close()
        await store.close()


def _pops(tasks: int, make: Callable[[int, random.Random], TaskSpec]) -> float:
    """Seconds to take `tasks` task runs out of a ready queue alone (priority and fairness key as made)."""
    rng = random.Random(7)
    ready = ReadyQueues(now=time.monotonic, aging_s=60.0)
    for number in range(tasks):
        spec = make(number, rng)
        ready.push("echo", str(number), spec.priority, spec.fairness_key)
    started = time.perf_counter()
    while ready.popleft("echo") is not None:
        pass
    return time.perf_counter() - started


def run(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(name=NAME, title=TITLE)
    result.params = {"tasks": sizes.flow_tasks, "slots": sizes.flow_slots, "variants": list(VARIANTS)}
    for number in range(1, bench.runs + 1):
        for key, (label, make) in VARIANTS.items():
            bench.log(f"{NAME} run {number}/{bench.runs}: {key}, {sizes.flow_tasks:,} tasks")
            in_pump, wall = asyncio.run(_drain(sizes.flow_tasks, sizes.flow_slots, make))
            result.add(f"{key}.dispatch_us", f"{label}: dispatch pass per task", "µs", 1e6 * in_pump / sizes.flow_tasks)
            result.add(f"{key}.engine_us", f"{label}: engine time per task", "µs", 1e6 * wall / sizes.flow_tasks)
            popped = _pops(sizes.flow_tasks, make)
            result.add(f"{key}.pop_us", f"{label}: ready queue pop alone", "µs", 1e6 * popped / sizes.flow_tasks)
    result.notes.append(
        f"{sizes.flow_tasks:,} queued single-task executions drained by one in-process fake worker of "
        f"{sizes.flow_slots} slots; in-memory store; no gRPC"
    )
    return result


__all__ = ["NAME", "TITLE", "run"]
