"""Watching all executions: live from the moment of the call, filtered by handler and by state, and a watcher
that falls behind is dropped rather than buffered without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from taskwire.server.domain import ShuttingDown, State, WatcherFellBehind
from taskwire.server.engine._bus import EventBus, EventFilter
from taskwire.server.store import EventRecord, EventScope
from taskwire.v1 import types_pb2 as pb
from tests.unit.engine.support import Rig, task, until


class Watcher:
    """Collects what `watch_all` yields in the background; subscribed once `started` is set."""

    def __init__(self, source: AsyncIterator[EventRecord]) -> None:
        self.records: list[EventRecord] = []
        self.error: BaseException | None = None
        self._source = source
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for record in self._source:
                self.records.append(record)
        except Exception as error:
            self.error = error

    def described(self) -> list[tuple[str, str]]:
        """(execution id, what happened) per event: the kind, with the state a transition went to."""
        seen: list[tuple[str, str]] = []
        for record in self.records:
            event = pb.ExecutionEvent.FromString(record.body)
            kind: str = event.WhichOneof("body") or ""
            if kind == "execution_transition":
                state = pb.ExecutionState.Name(event.execution_transition.to_state)
                kind += ":" + state.removeprefix("EXECUTION_STATE_")
            seen.append((record.execution_id, kind))
        return seen


async def watching(rig: Rig, **filters: object) -> Watcher:
    watcher = Watcher(rig.engine.watch_all(**filters))  # type: ignore[arg-type]
    await until(lambda: rig.engine.bus.watching_all, "the watcher subscribed")
    return watcher


async def test_an_unfiltered_watcher_sees_every_execution_from_now_on_in_order(rig: Rig) -> None:
    worker = rig.connect(handlers=("echo",), slots=3)
    before = await rig.submit()
    await rig.engine.flush()
    watcher = await watching(rig)
    first, second = await rig.submit(), await rig.submit()
    for invoked in worker.invocations[1:]:
        worker.complete(invoked)
    await rig.engine.flush()
    await until(lambda: len({e for e, k in watcher.described() if k.endswith("SUCCESS")}) == 2, "both ends")
    ids = {execution_id for execution_id, _ in watcher.described()}
    assert ids == {first, second}, "nothing of the execution submitted before the watch"
    assert before not in ids
    for execution_id in (first, second):
        sequences = [r.sequence for r in watcher.records if r.execution_id == execution_id]
        assert sequences == sorted(sequences)
        assert sequences[0] == 1
    watcher.task.cancel()


async def test_the_handler_filter_keeps_the_executions_with_a_task_of_that_handler(rig: Rig) -> None:
    rig.connect(handlers=("echo", "other"), slots=4)
    watcher = await watching(rig, handler="other")
    await rig.submit(task("echo"))
    mixed = await rig.submit(task("echo", task_id="a"), task("other", task_id="b"))
    await rig.engine.flush()
    await until(lambda: len(watcher.records) >= 3, "the mixed execution's events")
    assert {execution_id for execution_id, _ in watcher.described()} == {mixed}
    watcher.task.cancel()


async def test_the_state_filter_matches_the_state_before_or_after_each_event(rig: Rig) -> None:
    worker = rig.connect(handlers=("echo",), slots=1)
    watcher = await watching(rig, states=[State.RUNNING])
    execution_id = await rig.submit()
    (invoked,) = worker.invocations
    worker.progress(invoked, 0.5, "half way")
    worker.complete(invoked)
    await rig.engine.flush()
    await until(lambda: "execution_transition:SUCCESS" in [k for _, k in watcher.described()], "the end")
    kinds = [kind for _, kind in watcher.described()]
    # Not the creation (PENDING), nor the dispatch made while PENDING; the start, what happens while RUNNING,
    # and the transition that leaves RUNNING.
    assert kinds == [
        "execution_transition:RUNNING",
        "progress",
        "task_run_transition",
        "execution_transition:SUCCESS",
    ], execution_id
    watcher.task.cancel()


async def test_a_watcher_that_falls_behind_is_dropped_with_watcher_fell_behind(rig: Rig) -> None:
    rig.engine.bus._max_all_backlog = 2  # what a slow reader reaches sooner or later
    worker = rig.connect(handlers=("echo",), slots=1)
    watcher = await watching(rig)
    await rig.submit()
    (invoked,) = worker.invocations
    for step in range(1, 6):
        worker.progress(invoked, step / 10)  # one commit of many events: more than the buffer holds
    await rig.engine.flush()
    await watcher.task
    assert isinstance(watcher.error, WatcherFellBehind)
    assert "fell too far behind" in watcher.error.message
    assert not rig.engine.bus.watching_all, "the dropped watcher holds nothing"


async def test_a_watcher_ends_with_shutting_down_when_the_server_stops(rig: Rig) -> None:
    watcher = await watching(rig)
    rig.engine.bus.close()
    await watcher.task
    assert isinstance(watcher.error, ShuttingDown)


def record(scope: EventScope | None) -> EventRecord:
    return EventRecord("e1", 1, datetime(2026, 1, 1, tzinfo=UTC), "progress", b"", scope)


RUNNING_ECHO = EventScope(frozenset({"echo"}), frozenset({State.RUNNING}))


@pytest.mark.parametrize(
    ("event_filter", "scope", "matches"),
    [
        (EventFilter(), None, True),
        (EventFilter(), RUNNING_ECHO, True),
        (EventFilter(handler="echo"), RUNNING_ECHO, True),
        (EventFilter(handler="other"), RUNNING_ECHO, False),
        (EventFilter(states=frozenset({State.RUNNING, State.FAILED})), RUNNING_ECHO, True),
        (EventFilter(states=frozenset({State.PENDING})), RUNNING_ECHO, False),
        (EventFilter(handler="echo", states=frozenset({State.PENDING})), RUNNING_ECHO, False),
        (EventFilter(handler="echo"), None, False),  # staged before anyone watched: no scope to match
    ],
)
def test_filters(event_filter: EventFilter, scope: EventScope | None, matches: bool) -> None:
    assert event_filter.matches(scope) is matches


async def test_the_bus_gives_each_watcher_only_what_its_filter_matches() -> None:
    bus = EventBus(max_all_backlog=10)
    everything = bus.subscribe_all(EventFilter())
    echo_only = bus.subscribe_all(EventFilter(handler="other"))
    bus.publish([record(RUNNING_ECHO), record(None)])
    assert everything.queue.qsize() == 2
    assert echo_only.queue.empty()
    bus.unsubscribe_all(everything)
    bus.unsubscribe_all(echo_only)
    assert not bus.watching_all
