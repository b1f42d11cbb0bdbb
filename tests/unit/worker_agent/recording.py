"""A recording AttemptSink and attempt builders for executor tests."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TypeVar

from taskwire.worker import LogLine, Outcome, Payload, ProgressUpdate
from taskwire.worker._context import AttemptInfo
from taskwire.worker._executor import AttemptKey, AttemptSpec

Event = tuple[str, AttemptKey, object]
T = TypeVar("T")


class RecordingSink:
    """Keeps every event in order; ``await outcome(key)`` waits for an attempt's end."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._outcomes: dict[AttemptKey, asyncio.Future[Outcome]] = {}
        self._started: dict[AttemptKey, asyncio.Future[None]] = {}

    def attempt_started(self, key: AttemptKey) -> None:
        self.events.append(("started", key, None))
        _resolve(self._future(self._started, key), None)

    def attempt_progress(self, key: AttemptKey, update: ProgressUpdate) -> None:
        self.events.append(("progress", key, update))

    def attempt_log(self, key: AttemptKey, line: LogLine) -> None:
        self.events.append(("log", key, line))

    def attempt_finished(self, key: AttemptKey, outcome: Outcome) -> None:
        self.events.append(("finished", key, outcome))
        _resolve(self._future(self._outcomes, key), outcome)

    async def outcome(self, key: AttemptKey, timeout_s: float = 10.0) -> Outcome:
        return await asyncio.wait_for(asyncio.shield(self._future(self._outcomes, key)), timeout_s)

    async def started(self, key: AttemptKey, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(asyncio.shield(self._future(self._started, key)), timeout_s)

    def kinds(self, key: AttemptKey) -> list[str]:
        return [kind for kind, event_key, _ in self.events if event_key == key]

    @staticmethod
    def _future(table: dict[AttemptKey, asyncio.Future[T]], key: AttemptKey) -> asyncio.Future[T]:
        if key not in table:
            table[key] = asyncio.get_running_loop().create_future()
        return table[key]


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def make_spec(
    handler: str,
    input: object = None,
    *,
    task_run_id: str | None = None,
    attempt: int = 1,
    timeout_s: float | None = None,
) -> AttemptSpec:
    info = AttemptInfo(
        task_run_id=task_run_id or f"run-{uuid.uuid4().hex[:8]}",
        attempt=attempt,
        handler=handler,
        input=Payload(data=json.dumps(input).encode(), content_type="application/json"),
        execution_id="exec-1",
        task_id=handler,
    )
    return AttemptSpec(info=info, timeout_s=timeout_s)
