"""Replicas, on the engine's side: adopting executions, giving them away, idle handlers, following the
executions another replica holds, cancels routed to their holder, and schedules and retention only while
leading. Two engines share one in-memory store; a fake replica store keeps who holds what and the mail."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest

from taskwire.server._config import ServerConfig
from taskwire.server._history_wire import ProtoHistoryCodec
from taskwire.server._replicas import ReplicaLoops
from taskwire.server.domain import (
    AttemptOutcome,
    ExecutionSpec,
    NotFound,
    OverlapPolicy,
    RetryPolicy,
    ScheduleSpec,
    State,
)
from taskwire.server.engine import Engine, ManualClock, SubmitItem, WorkerHello, WorkerView
from taskwire.server.engine._directory import REFRESH_S
from taskwire.server.store import EventRecord, ExecutionSnapshot, Mail, MemoryStore, RecoveredState, StoreError
from tests.unit.engine.support import CONFIG, Drained, FakeLink, FakeWorker, Invoked, Rig, idle, task, until

LEASE_S = CONFIG.lease_timeout.total_seconds()
RETRY_ONCE = RetryPolicy(max_attempts=2, initial_interval=timedelta(seconds=1))


@dataclass(eq=False)
class Directory:
    """What the database keeps for replicas: who holds each execution, and the mail between them."""

    store: MemoryStore
    holders: dict[str, str] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)  # replicas whose lease lapsed
    mail: dict[int, tuple[str, Mail]] = field(default_factory=dict)  # id -> (recipient, mail)
    workers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # replica -> its workers, as published
    drains: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # replica -> the drains it keeps, as published

    def post(self, recipient: str, kind: str, body: dict[str, Any]) -> None:
        mail_id = len(self.mail) + 1
        self.mail[mail_id] = (recipient, Mail(mail_id, kind, body))

    def mail_of(self, recipient: str) -> list[tuple[str, dict[str, Any]]]:
        return [(mail.kind, mail.body) for to, mail in self.mail.values() if to == recipient]


class FakeReplicaStore:
    """A `ReplicaStore` over the directory: records the calls; `give` moves per the design."""

    def __init__(self, directory: Directory, replica: str) -> None:
        self.replica = replica
        self._directory = directory
        self.gives: list[tuple[list[str], list[str], str]] = []
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None  # when set, `give` waits for it
        self.lapsed: list[str] = []  # what the next `lapsed_replicas` returns
        # When set, `adopt` sets the first once it moved the executions, and waits for the second to load them.
        self.adopt_gate: tuple[asyncio.Event, asyncio.Event] | None = None
        self.mail_taken = asyncio.Event()  # set when `take_mail` has returned some
        self.publishes = 0

    async def lapsed_replicas(self) -> list[str]:
        lapsed, self.lapsed = self.lapsed, []
        return lapsed

    async def adopt(self, dead: str) -> RecoveredState | None:
        holders = self._directory.holders
        taken = [e for e, holder in holders.items() if holder == dead]
        for execution_id in taken:
            holders[execution_id] = self.replica
        if self.adopt_gate is not None:
            moved, load = self.adopt_gate
            moved.set()
            await load.wait()
        return await self.load(taken)

    async def claim(self, handlers: Sequence[str], limit: int) -> list[str]:
        return []

    async def give(self, given: Sequence[str], refused: Sequence[str], to: str) -> list[str]:
        self.gives.append((list(given), list(refused), to))
        if self.gate is not None:
            await self.gate.wait()
        holders = self._directory.holders
        alive = to not in self._directory.dead
        moved = [e for e in given if alive and holders.get(e) == self.replica]
        for execution_id in moved:
            holders[execution_id] = to
        rest = [e for e in [*given, *refused] if e not in moved]
        if moved:
            self._directory.post(to, "given", {"executions": moved})
        if rest:
            self._directory.post(to, "refused", {"executions": rest})
        return moved

    async def load(self, execution_ids: Sequence[str]) -> RecoveredState:
        mine = {e for e in execution_ids if self._directory.holders.get(e) == self.replica}
        state = await self._directory.store.recover()
        active = [s for s in state.active if s.execution.id in mine]
        runs = {t.id for s in active for t in s.task_runs}
        return RecoveredState(
            active=active,
            last_sequences={e: n for e, n in state.last_sequences.items() if e in mine},
            pending_order=[t for t in state.pending_order if t in runs],
            cold=[c for c in state.cold if c.execution_id in mine],
        )

    async def send(self, recipient: str, kind: str, body: dict[str, Any]) -> None:
        self.sent.append((recipient, kind, body))
        self._directory.post(recipient, kind, body)

    async def take_mail(self, limit: int = 500) -> list[Mail]:
        mail = [mail for to, mail in self._directory.mail.values() if to == self.replica][:limit]
        if mail:
            self.mail_taken.set()
        return mail

    async def done_mail(self, ids: Sequence[int]) -> None:
        for mail_id in ids:
            self._directory.mail.pop(mail_id, None)

    async def publish_workers(self, workers: Sequence[dict[str, Any]], drains: Sequence[dict[str, Any]]) -> None:
        self._directory.workers[self.replica] = json.loads(json.dumps(list(workers)))
        self._directory.drains[self.replica] = json.loads(json.dumps(list(drains)))
        self.publishes += 1

    async def workers_elsewhere(self) -> dict[str, list[dict[str, Any]]]:
        published = self._directory.workers.items()
        return {r: workers for r, workers in published if r != self.replica and r not in self._directory.dead}

    async def drains_elsewhere(self) -> dict[str, list[dict[str, Any]]]:
        published = self._directory.drains.items()
        return {r: drains for r, drains in published if drains and r != self.replica and r not in self._directory.dead}

    async def holder_of(self, execution_id: str) -> str:
        snapshot = await self._directory.store.get_execution(execution_id)
        if snapshot is None or snapshot.execution.state.is_terminal:
            return ""
        return self._directory.holders.get(execution_id, "")

    async def holders_of_task_runs(self, task_run_ids: Sequence[str]) -> dict[str, str]:
        state = await self._directory.store.recover()
        wanted = set(task_run_ids)
        ids = [s.execution.id for s in state.active if any(t.id in wanted for t in s.task_runs)]
        return {e: self._directory.holders.get(e, "") for e in ids}

    async def lead(self) -> bool:
        return True

    async def listen(self, on_notice: Callable[[str, str], None]) -> None:
        return None


@dataclass(eq=False)
class Replica:
    rig: Rig
    replica_store: FakeReplicaStore

    @property
    def engine(self) -> Engine:
        return self.rig.engine

    async def submit(self, *tasks: Any, **fields: object) -> str:
        """Submitted here: this replica holds it."""
        execution_id = await self.rig.submit(*tasks, **fields)
        self.replica_store._directory.holders[execution_id] = self.replica_store.replica
        return execution_id

    def queue_size(self) -> int:
        return self.engine.stats().queue.size


async def _replica(directory: Directory, name: str, config: ServerConfig) -> Replica:
    fake = FakeReplicaStore(directory, name)
    rig = Rig(directory.store, ManualClock(), config)
    rig.engine = Engine(store=directory.store, config=config, codec=ProtoHistoryCodec(), clock=rig.clock, replica=fake)
    await rig.engine.start()
    return Replica(rig, fake)


async def _pair(config: ServerConfig) -> AsyncIterator[tuple[Replica, Replica, Directory]]:
    store = MemoryStore()
    await store.open()
    directory = Directory(store)
    a = await _replica(directory, "a", config)
    b = await _replica(directory, "b", config)
    try:
        yield a, b, directory
    finally:
        await a.rig.close()
        await b.rig.close()
        await store.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Replica, Replica, Directory]]:
    async for replicas in _pair(CONFIG):
        yield replicas


@pytest.fixture
async def cold_pair() -> AsyncIterator[tuple[Replica, Replica, Directory]]:
    """Every durable, untouched queued execution leaves memory."""
    async for replicas in _pair(replace(CONFIG, hot_queue_size=0)):
        yield replicas


async def _running_on(replica: Replica) -> tuple[FakeWorker, str, Invoked]:
    """A worker "wa" (instance "i-1") of `replica`, and an execution submitted there whose attempt it runs."""
    worker = replica.rig.connect("wa", instance_id="i-1")
    execution_id = await replica.submit()
    (invoked,) = worker.invocations
    return worker, execution_id, invoked


async def _finished_on(replica: Replica) -> str:
    """An execution submitted to `replica` that a worker "wa" of it ran to SUCCESS."""
    worker = replica.rig.connect("wa")
    execution_id = await replica.submit()
    worker.complete(worker.invocations[0])
    assert await replica.rig.state(execution_id) is State.SUCCESS
    return execution_id


def _live(replica: Replica) -> set[str]:
    return set(replica.engine._executions.by_id)


# ---- Adopting ----------------------------------------------------------------------------------


async def test_adopted_executions_run_here_and_a_running_attempt_waits_for_its_worker_a_lease(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = pair
    worker_a = a.rig.connect("wa", slots=1)
    running = await a.submit(task(retry_policy=RETRY_ONCE))
    queued = await a.submit()
    (invoked,) = worker_a.invocations
    await a.rig.close()  # replica a dies; its attempt is still running on its worker

    state = await b.replica_store.adopt("a")
    assert state is not None
    assert b.engine.replicas.adopt(state) == 2
    assert b.queue_size() == 1
    assert b.engine.replicas.adopt(await b.replica_store.load([running, queued])) == 0  # held already
    assert b.queue_size() == 1
    worker_b = b.rig.connect("wb", slots=2)
    await until(lambda: worker_b.invocations, "the adopted queued execution dispatched here")
    assert [i.task_run.execution_id for i in worker_b.invocations] == [queued]
    assert b.queue_size() == 0

    b.rig.advance(LEASE_S - 5)
    assert (await b.rig.task_run(running)).state is State.RUNNING  # held for its worker meanwhile
    b.rig.advance(5)
    lost = await b.rig.task_run(running)
    assert lost.attempts[0].outcome is AttemptOutcome.LOST
    b.rig.advance(1)  # the retry's backoff
    await until(lambda: len(worker_b.invocations) == 2, "the lost attempt retried here")
    assert worker_b.invocations[1].key == (invoked.task_run.id, 2)


async def test_an_adopted_running_attempt_goes_on_when_its_worker_reconnects(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = pair
    _, running, invoked = await _running_on(a)
    await a.rig.close()

    state = await b.replica_store.adopt("a")
    assert state is not None
    b.engine.replicas.adopt(state)
    back = b.rig.connect("wa", instance_id="i-1", running=[invoked.key])
    assert back.welcome.adopted == (invoked.key,)
    back.complete(invoked)
    assert await b.rig.state(running) is State.SUCCESS


# ---- Giving away -------------------------------------------------------------------------------


async def test_movable_executions_are_given_and_the_others_refused(pair: tuple[Replica, Replica, Directory]) -> None:
    a, b, directory = pair
    worker = a.rig.connect("wa", slots=1)
    running = await a.submit()
    movable = await a.submit()
    keyed = await a.submit(task(concurrency_key="k", concurrency_limit=5))
    assert a.queue_size() == 2
    pending_before = a.engine._executions.figures.pending_by_handler["echo"]

    moved = await a.engine.replicas.give_away([movable, running, keyed, "no-such-execution"], "b")

    assert moved == [movable]
    assert a.replica_store.gives == [([movable], [running, keyed, "no-such-execution"], "b")]
    assert a.queue_size() == 1
    assert a.engine._executions.figures.pending_by_handler["echo"] == pending_before - 1
    assert movable not in _live(a)
    assert {running, keyed} <= _live(a)
    assert directory.holders[movable] == "b"
    assert directory.mail_of("b") == [
        ("given", {"executions": [movable]}),
        ("refused", {"executions": [running, keyed, "no-such-execution"]}),
    ]
    # The worker frees its slot: the keyed one goes, never the one given away.
    worker.complete(worker.invocations[0])
    await until(lambda: len(worker.invocations) == 2, "the next dispatch")
    worker.complete(worker.invocations[1])
    await idle()
    assert [i.task_run.execution_id for i in worker.invocations] == [running, keyed]
    assert a.queue_size() == 0

    # The new holder loads it (its `given` mail) and runs it.
    assert b.engine.replicas.adopt(await b.replica_store.load(moved)) == 1
    worker_b = b.rig.connect("wb")
    await until(lambda: worker_b.invocations, "the given execution dispatched on its new holder")
    worker_b.complete(worker_b.invocations[0])
    assert await b.rig.state(movable) is State.SUCCESS


async def test_nothing_given_is_dispatched_while_the_store_moves_it(pair: tuple[Replica, Replica, Directory]) -> None:
    a, _, _ = pair
    movable = await a.submit()
    await a.engine.flush()
    gate = a.replica_store.gate = asyncio.Event()
    giving = asyncio.ensure_future(a.engine.replicas.give_away([movable], "b"))
    await until(lambda: a.replica_store.gives, "the store asked to move it")
    worker = a.rig.connect("wa")
    await idle(30)
    assert worker.invocations == []
    gate.set()
    assert await giving == [movable]
    await idle(30)
    assert worker.invocations == []


async def test_cold_executions_are_given_with_their_queue_places(
    cold_pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = cold_pair
    cold = [await a.submit() for _ in range(3)]
    await a.engine.flush()
    await until(lambda: not _live(a), "the executions to go cold")
    assert a.queue_size() == 3

    assert await a.engine.replicas.give_away(cold[:2], "b") == cold[:2]

    assert a.queue_size() == 1
    worker = a.rig.connect("wa", slots=3)
    await until(lambda: worker.invocations, "the one kept dispatched")
    await idle(30)
    assert [i.task_run.execution_id for i in worker.invocations] == [cold[2]]
    assert b.engine.replicas.adopt(await b.replica_store.load(cold[:2])) == 2  # cold: only their places come
    assert not _live(b)
    assert b.queue_size() == 2
    worker_b = b.rig.connect("wb", slots=3)
    await until(lambda: len(worker_b.invocations) == 2, "both dispatched on their new holder")
    assert sorted(i.task_run.execution_id for i in worker_b.invocations) == sorted(cold[:2])


async def test_executions_the_store_did_not_move_stay_here(pair: tuple[Replica, Replica, Directory]) -> None:
    a, _, directory = pair
    movable = await a.submit()
    directory.dead.add("b")  # the claimer died meanwhile: the store moves nothing
    assert await a.engine.replicas.give_away([movable], "b") == []
    assert directory.holders[movable] == "a"
    assert a.queue_size() == 1
    worker = a.rig.connect("wa")
    await until(lambda: worker.invocations, "dispatched here after all")
    assert worker.invocations[0].task_run.execution_id == movable


# ---- Handing running attempts over to the replica their worker reconnected to -------------------


async def test_a_hand_over_gives_what_no_connected_worker_runs_and_refuses_the_rest(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, _, directory = pair
    gone = a.rig.connect("wa", instance_id="i-1")
    left = await a.submit(task(retry_policy=RETRY_ONCE))
    (invoked,) = gone.invocations
    staying = a.rig.connect("ws", instance_id="i-2")
    kept = await a.submit()
    await until(lambda: staying.invocations, "the second execution dispatched")
    await a.engine.flush()
    gone.disconnect()  # its worker went to replica b
    assert a.engine._executions.figures.in_flight_by_handler["echo"] == 2

    assert await a.engine.replicas.hand_over([left, kept, "no-such-execution"], "b") == [left]

    assert directory.holders == {left: "b", kept: "a"}
    assert directory.mail_of("b") == [
        ("given", {"executions": [left]}),
        ("refused", {"executions": [kept, "no-such-execution"]}),
    ]
    assert _live(a) == {kept}
    assert a.engine._executions.figures.in_flight_by_handler["echo"] == 1
    assert gone.session.session_id not in a.engine._pool.sessions  # it held nothing more
    a.rig.advance(LEASE_S + 1)  # the gone session's lease would have run out: it fails nothing here
    await idle()
    handed = await a.rig.task_run(left)
    assert handed.state is State.RUNNING
    assert [attempt.number for attempt in handed.attempts] == [invoked.attempt.number]


async def test_an_adopted_attempt_is_handed_over_once_its_recovery_session_holds_it(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = pair
    worker = a.rig.connect("wa", instance_id="i-1")
    running = await a.submit()
    await a.engine.flush()
    await a.rig.close()  # replica a dies; b adopts it: a session without a stream holds the attempt
    state = await b.replica_store.adopt("a")
    assert state is not None
    b.engine.replicas.adopt(state)
    assert await b.engine.replicas.hand_over([running], "c") == [running]
    assert directory.holders[running] == "c"
    assert not _live(b)
    assert not [s for s in b.engine._pool.sessions.values() if s.held]
    assert worker.invocations


@pytest.fixture
async def mailing_pair(
    pair: tuple[Replica, Replica, Directory],
) -> AsyncIterator[tuple[Replica, Replica, Directory]]:
    """Both replicas read their mail (polling)."""
    a, b, directory = pair
    loops = [ReplicaLoops(engine=r.engine, store=r.replica_store, lease_s=3.0, notify=False) for r in (a, b)]
    for replica_loops in loops:
        await replica_loops.start()
    try:
        yield a, b, directory
    finally:
        for replica_loops in loops:
            await replica_loops.close()


async def test_a_worker_that_reconnects_to_another_replica_keeps_its_attempt_there(
    mailing_pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = mailing_pair
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()
    worker_a.disconnect()  # its replica went away: it comes back to b

    async with asyncio.timeout(10):
        await b.engine.replicas.take_over([invoked.key], within_s=10)
    back = b.rig.connect("wa", instance_id="i-1", running=[invoked.key])

    assert back.welcome.adopted == (invoked.key,)
    assert back.welcome.rejected == ()
    assert b.replica_store.sent == [("a", "hand_over", {"by": "b", "executions": [running]})]
    assert directory.holders[running] == "b"
    assert running not in _live(a)
    back.complete(invoked)
    snapshot = await b.rig.snapshot(running)
    assert snapshot.execution.state is State.SUCCESS
    assert len(snapshot.task_runs[0].attempts) == 1


async def test_a_worker_back_on_another_replica_while_its_old_stream_looks_open_keeps_its_attempt(
    mailing_pair: tuple[Replica, Replica, Directory],
) -> None:
    """A half-open stream to replica a: the worker noticed first and connected to b. Its instance has one stream, the
    new one: a ends its session there, which no longer holds the attempt back, and hands the execution over."""
    a, b, directory = mailing_pair
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()

    async with asyncio.timeout(10):
        await b.engine.replicas.take_over([invoked.key], within_s=10, instance_id="i-1")
    back = b.rig.connect("wa", instance_id="i-1", running=[invoked.key])

    assert back.welcome.adopted == (invoked.key,)
    hello_at = b.rig.clock.now().isoformat()
    assert b.replica_store.sent == [
        (
            "a",
            "hand_over",
            {"by": "b", "executions": [running], "instance": "i-1", "identity": "", "hello_at": hello_at},
        )
    ]
    assert worker_a.link.closed
    assert a.engine.workers() == []
    assert directory.holders[running] == "b"
    back.complete(invoked)
    assert (await b.rig.snapshot(running)).execution.state is State.SUCCESS


async def test_a_hand_over_asked_by_a_hello_the_worker_gave_up_leaves_its_newer_session_alone(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """The worker's hello on b waited for a's answer, so it gave that stream up and came back to a. The hand over,
    read late, names a hello older than the session now connected on a: that session stands and keeps its attempt."""
    a, b, _ = pair
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()
    hello_at = b.rig.clock.now()  # the hello read on b
    _advance(1, a, b)
    again = a.rig.connect("wa", instance_id="i-1", running=[invoked.key])
    assert again.welcome.adopted == (invoked.key,)

    assert await a.engine.replicas.hand_over([running], "b", instance_id="i-1", hello_at=hello_at) == []
    assert a.engine.workers() == [again.session]
    assert running in _live(a)
    assert worker_a.link.closed  # ended by the newer hello here, as before

    later = b.rig.clock.now()  # a hello read after that session connected: the session ends, and gives it
    assert await a.engine.replicas.hand_over([running], "b", instance_id="i-1", hello_at=later) == [running]
    assert a.engine.workers() == []


async def test_a_hand_over_ends_a_session_whose_hello_was_read_before_though_it_connected_after(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """a read a hello and waited on it; meanwhile the worker gave that stream up and said hello to b, which asks a
    for a hand over. The session a opened last, on the stream the worker gave up, is the older: it ends."""
    a, b, _ = pair
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()
    worker_a.disconnect()
    ticket = a.engine.hello_read()  # a's hello, waiting (on a third replica's answer, say)
    _advance(1, a, b)
    hello_at = b.rig.clock.now()  # the worker's next hello, read on b
    _advance(1, a, b)
    hello = WorkerHello(
        name="wa", instance_id="i-1", handlers=frozenset({"echo"}), slots=1, running_attempts=(invoked.key,)
    )
    stale, welcome = a.engine.connect_worker(hello, FakeLink(), ticket=ticket)
    assert welcome.adopted == (invoked.key,)

    assert await a.engine.replicas.hand_over([running], "b", instance_id="i-1", hello_at=hello_at) == [running]
    assert not stale.connected


async def test_a_worker_whose_attempt_another_connected_worker_holds_is_rejected_as_before(
    mailing_pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = mailing_pair
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()

    async with asyncio.timeout(10):  # the refusal ends the wait
        await b.engine.replicas.take_over([invoked.key], within_s=60)
    other = b.rig.connect("wa", instance_id="i-2", running=[invoked.key])

    assert other.welcome.rejected == (invoked.key,)
    assert directory.holders[running] == "a"
    assert running in _live(a)
    worker_a.complete(invoked)
    assert await a.rig.state(running) is State.SUCCESS


async def _asked_of_a(a: Replica, b: Replica) -> tuple[str, Invoked, asyncio.Task[None]]:
    """a's worker comes back to b, whose hello asks a for the attempt (the take-over still waiting)."""
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()
    worker_a.disconnect()
    taking = asyncio.create_task(b.engine.replicas.take_over([invoked.key], within_s=30))
    await until(lambda: b.replica_store.sent, "b's hand-over to a")
    return running, invoked, taking


@pytest.fixture
def quick_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("taskwire.server.engine._replicas._RECHECK_HOLDERS_S", 0.05)


@pytest.mark.usefixtures("quick_recheck")
async def test_a_hand_over_asked_of_a_replica_that_is_adopted_meanwhile_is_taken_from_its_adopter(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """The worker's hello reaches b just as a stops: b asks a, which never reads its mail; b then adopts a (as the
    leader does) and holds the execution. b looks again before the wait is over and takes the attempt itself."""
    a, b, directory = pair  # nobody reads mail: a's answer never comes
    running, invoked, taking = await _asked_of_a(a, b)
    assert b.replica_store.sent == [("a", "hand_over", {"by": "b", "executions": [running]})]
    directory.holders[running] = "b"  # b adopted a after asking it
    async with asyncio.timeout(5):  # not the 30 s the hello may wait
        await taking
    back = b.rig.connect("wa", instance_id="i-1", running=[invoked.key])

    assert back.welcome.adopted == (invoked.key,)
    back.complete(invoked)
    snapshot = await b.rig.snapshot(running)
    assert snapshot.execution.state is State.SUCCESS
    assert len(snapshot.task_runs[0].attempts) == 1


@pytest.mark.usefixtures("quick_recheck")
async def test_a_hand_over_follows_the_execution_to_the_replica_that_adopted_the_one_asked(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """As above, but a third replica adopted a: b asks it in turn."""
    a, b, directory = pair
    running, _, taking = await _asked_of_a(a, b)
    asked_again = asyncio.Event()
    send = b.replica_store.send

    async def send_and_tell(recipient: str, kind: str, body: dict[str, Any]) -> None:
        await send(recipient, kind, body)
        asked_again.set()

    b.replica_store.send = send_and_tell  # type: ignore[method-assign]
    directory.holders[running] = "c"
    async with asyncio.timeout(5):
        await asked_again.wait()
    assert b.replica_store.sent[1] == ("c", "hand_over", {"by": "b", "executions": [running]})
    taking.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await taking


async def test_a_hand_over_asked_of_a_leader_still_adopting_the_holder_waits_for_the_adoption(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """a stops. The leader b moves a's executions to itself in the store; before it has loaded them, the
    worker's hello at a third replica c reads their new holder and asks b. b's mail waits for the adoption,
    then gives the attempt to c, where it goes on: it is never retried."""
    a, b, directory = pair
    c = await _replica(directory, "c", CONFIG)
    loops = [ReplicaLoops(engine=r.engine, store=r.replica_store, lease_s=3.0, notify=False) for r in (b, c)]
    try:
        worker_a, running, invoked = await _running_on(a)
        await a.engine.flush()
        worker_a.disconnect()
        await a.rig.close()
        moved, load = asyncio.Event(), asyncio.Event()
        b.replica_store.lapsed = ["a"]
        b.replica_store.adopt_gate = (moved, load)
        mail_taken = b.replica_store.mail_taken
        for replica_loops in loops:
            await replica_loops.start()
        async with asyncio.timeout(5):
            await moved.wait()
        taking = asyncio.create_task(c.engine.replicas.take_over([invoked.key], within_s=30))
        async with asyncio.timeout(5):
            await mail_taken.wait()  # b has c's hand over while its adoption is under way
        await idle()
        assert not taking.done()
        load.set()
        async with asyncio.timeout(5):
            await taking
        back = c.rig.connect("wa", instance_id="i-1", running=[invoked.key])

        assert back.welcome.adopted == (invoked.key,)
        assert directory.holders[running] == "c"
        back.complete(invoked)
        snapshot = await c.rig.snapshot(running)
        assert snapshot.execution.state is State.SUCCESS
        assert len(snapshot.task_runs[0].attempts) == 1
    finally:
        for replica_loops in loops:
            await replica_loops.close()
        await c.rig.close()


async def test_a_single_server_asks_nobody_for_attempts_it_does_not_know(rig: Rig) -> None:
    async with asyncio.timeout(1):
        await rig.engine.replicas.take_over([("no-such-task-run", 1)], within_s=60)
    worker = rig.connect("w", running=[("no-such-task-run", 1)])
    assert worker.welcome.rejected == (("no-such-task-run", 1),)


# ---- Idle handlers -----------------------------------------------------------------------------


async def test_idle_handlers_are_those_with_free_slots_and_nothing_queued(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, _, _ = pair
    await a.submit()  # queued: no worker yet
    both = a.rig.connect("w1", handlers=("echo", "other"), slots=2)
    assert a.engine.replicas.idle_handlers() == {"other": 2}  # echo has a task run queued here
    await until(lambda: both.invocations, "the queued one dispatched")
    assert a.engine.replicas.idle_handlers() == {"echo": 1, "other": 1}
    draining = a.rig.connect("w2", handlers=("echo",), slots=3)
    assert a.engine.replicas.idle_handlers() == {"echo": 4, "other": 1}
    draining.drain()
    assert a.engine.replicas.idle_handlers() == {"echo": 1, "other": 1}
    both.disconnect()
    assert a.engine.replicas.idle_handlers() == {}


# ---- Following the executions another replica holds --------------------------------------------


@dataclass(eq=False)
class Watching:
    events: list[EventRecord] = field(default_factory=list)
    ended: bool = False


def _watch(engine: Engine, execution_id: str) -> Watching:
    watching = Watching()

    async def run() -> None:
        async for event in engine.watch(execution_id, 0):
            watching.events.append(event)
        watching.ended = True

    task_ = asyncio.ensure_future(run())
    _background.add(task_)
    task_.add_done_callback(_background.discard)
    return watching


_background: set[asyncio.Future[None]] = set()


def _waiting(engine: Engine, execution_id: str) -> list[list[ExecutionSnapshot]]:
    batches: list[list[ExecutionSnapshot]] = []

    async def run() -> None:
        async for batch in engine.wait_ends([execution_id]):
            batches.append(batch)

    task_ = asyncio.ensure_future(run())
    _background.add(task_)
    task_.add_done_callback(_background.discard)
    return batches


async def test_a_wait_after_another_replica_deleted_an_execution_finds_none(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    # Each replica keeps no recent ends: one deleted by another replica is read from the store, and gone.
    a, b, _ = pair
    execution_id = await _finished_on(a)
    await a.engine.flush()
    assert execution_id not in _live(a)
    await b.engine.delete(execution_id)
    with pytest.raises(NotFound, match=execution_id):
        async for _ in a.engine.wait_ends([execution_id]):
            pass


async def test_watchers_and_waiters_of_an_execution_held_elsewhere_follow_it(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = pair
    worker = a.rig.connect("wa")
    execution_id = await a.submit()
    (invoked,) = worker.invocations
    await a.engine.flush()
    watching = _watch(b.engine, execution_id)
    ends = _waiting(b.engine, execution_id)
    await until(lambda: watching.events and ends, "the replay and the first batch of the wait")
    replayed = len(watching.events)
    await b.engine.replicas.follow_remote(None)  # nothing new: nothing published, nothing ends
    await idle(30)
    assert len(watching.events) == replayed
    assert not watching.ended
    assert ends == [[]]

    worker.progress(invoked, 0.5)
    await a.engine.flush()
    await b.engine.replicas.follow_remote([execution_id])
    await until(lambda: len(watching.events) > replayed, "the progress event")
    assert not watching.ended
    assert ends == [[]]

    worker.complete(invoked)
    await a.engine.flush()
    await b.engine.replicas.follow_remote(None)
    await until(lambda: watching.ended, "the watch to end with the terminal event")
    stored = await directory.store.read_events(execution_id, 0)
    assert [e.sequence for e in watching.events] == [e.sequence for e in stored]
    await until(lambda: len(ends) == 2, "the final snapshot to the waiter")
    ((snapshot,),) = ends[1:]
    assert snapshot.execution.state is State.SUCCESS


async def test_events_between_the_replay_and_the_first_follow_are_not_lost(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = pair
    worker = a.rig.connect("wa")
    execution_id = await a.submit()
    await a.engine.flush()
    watching = _watch(b.engine, execution_id)
    await until(lambda: watching.events, "the replay")
    for fraction in (0.1, 0.2, 0.3):
        worker.progress(worker.invocations[0], fraction)
    worker.complete(worker.invocations[0])
    await a.engine.flush()
    await b.engine.replicas.follow_remote(None)  # the first time: from the last stored event on
    await until(lambda: watching.ended, "the watch to end")
    stored = await directory.store.read_events(execution_id, 0)
    assert [e.sequence for e in watching.events] == [e.sequence for e in stored]


async def test_executions_held_here_are_not_read_from_the_store(pair: tuple[Replica, Replica, Directory]) -> None:
    a, _, directory = pair
    execution_id = await a.submit()
    await a.engine.flush()
    watching = _watch(a.engine, execution_id)
    await until(lambda: watching.events, "the replay")
    reads: list[str] = []
    read_events = directory.store.read_events

    async def counted(execution_id: str, after_sequence: int, limit: int = 1000) -> list[EventRecord]:
        reads.append(execution_id)
        return await read_events(execution_id, after_sequence, limit)

    directory.store.read_events = counted  # type: ignore[method-assign]
    await a.engine.replicas.follow_remote(None)
    assert reads == []


# ---- Cancels -----------------------------------------------------------------------------------


async def test_a_cancel_of_an_execution_held_elsewhere_is_mailed_to_its_holder(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = pair
    worker = a.rig.connect("wa")
    execution_id = await a.submit()
    await a.engine.flush()

    snapshot, already_terminal = await b.engine.cancel(execution_id, "stop it")

    assert not already_terminal
    assert snapshot.execution.id == execution_id
    assert snapshot.execution.state is State.RUNNING
    assert b.replica_store.sent == [("a", "cancel", {"execution_id": execution_id, "reason": "stop it"})]
    assert directory.mail_of("a") == [("cancel", {"execution_id": execution_id, "reason": "stop it"})]
    # The holder cancels it as it would a local cancel: its worker is told.
    await a.engine.cancel(execution_id, "stop it")
    await until(lambda: worker.cancels, "the cancel on the worker's stream")
    worker.acknowledge(worker.cancels[0])
    assert await a.rig.state(execution_id) is State.CANCELLED
    # Once it has finished, a cancel anywhere answers it as finished, and mails nothing.
    snapshot, already_terminal = await b.engine.cancel(execution_id, "again")
    assert already_terminal
    assert snapshot.execution.state is State.CANCELLED
    assert len(b.replica_store.sent) == 1


async def test_a_cancel_of_an_execution_given_here_but_not_loaded_yet_is_applied_here(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = pair
    movable = await a.submit()
    assert await a.engine.replicas.give_away([movable], "b") == [movable]
    assert await b.engine.cancel_many([movable], "no longer needed") == 1
    assert await b.rig.state(movable) is State.CANCELLED
    assert b.replica_store.sent == []


# ---- Leading -----------------------------------------------------------------------------------


async def test_only_the_leading_replica_fires_schedules(pair: tuple[Replica, Replica, Directory]) -> None:
    a, b, directory = pair
    tasks = (task(),)
    spec = ScheduleSpec(
        name="tick", cron="*/10 * * * * *", execution=ExecutionSpec(tasks), overlap=OverlapPolicy.ALLOW_ALL
    )
    assert not a.engine.replicas.leading
    assert not b.engine.replicas.leading
    await a.engine.schedules.create(spec)
    await a.engine.flush()
    for _ in range(25):
        a.rig.advance(1)
        b.rig.advance(1)
        await idle(30)
    page = await directory.store.list_executions(states=[], handler="", page_size=100, page_token="")
    assert page.snapshots == []

    b.engine.replicas.leading = True  # b loads the schedule a made, and catches up what fell due
    await until(lambda: b.engine.schedules.all(), "the schedules loaded")
    await until(lambda: b.engine.schedules.get("tick").fired == 2, "the catch-up of the two fire times")
    await b.engine.flush()
    page = await directory.store.list_executions(states=[], handler="", page_size=100, page_token="")
    assert len(page.snapshots) == 2


@pytest.fixture
async def retaining_pair() -> AsyncIterator[tuple[Replica, Replica, Directory]]:
    """Finished executions are deleted an hour after they end."""
    async for replicas in _pair(replace(CONFIG, retention=timedelta(hours=1))):
        yield replicas


async def test_only_the_leading_replica_deletes_by_retention(
    retaining_pair: tuple[Replica, Replica, Directory],
) -> None:
    a, _, directory = retaining_pair
    execution_id = await _finished_on(a)
    a.rig.advance(2 * 3600)
    await idle(30)
    assert await directory.store.get_execution(execution_id) is not None
    a.engine.replicas.leading = True
    a.rig.advance(a.engine.retention.interval_s)
    await until(lambda: a.engine.retention.deleted == 1, "the sweep")
    assert await directory.store.get_execution(execution_id) is None


async def test_a_single_server_always_leads_and_gives_nothing_away(rig: Rig) -> None:
    assert rig.engine.replicas.replica_store is None
    rig.engine.replicas.leading = False
    assert rig.engine.replicas.leading
    execution_id = await rig.submit()
    with pytest.raises(RuntimeError, match="not a replica"):
        await rig.engine.replicas.give_away([execution_id], "b")
    assert rig.engine.stats().queue.size == 1


# ---- Failures while giving away and taking mail ---------------------------------------------------


async def test_a_give_that_fails_before_the_store_moves_anything_keeps_every_execution_here(
    pair: tuple[Replica, Replica, Directory], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _, directory = pair
    movable = await a.submit()
    await a.engine.flush()
    queue_before = a.queue_size()
    store = directory.store
    reads = store.get_executions

    async def failing(execution_ids: Sequence[str]) -> dict[str, ExecutionSnapshot]:
        monkeypatch.setattr(store, "get_executions", reads)  # fails once
        raise StoreError("the database is unreachable for a moment")

    monkeypatch.setattr(store, "get_executions", failing)
    with pytest.raises(StoreError):
        await a.engine.replicas.give_away([movable, "held-elsewhere"], "b")

    assert directory.holders[movable] == "a"
    assert movable in _live(a)  # still held here, in memory: dispatched here
    assert a.queue_size() == queue_before
    worker = a.rig.connect("wa")
    await until(lambda: worker.invocations, "dispatched here after all")
    assert worker.invocations[0].task_run.execution_id == movable


async def test_given_mail_that_cannot_be_loaded_yet_is_applied_again_not_dropped(
    pair: tuple[Replica, Replica, Directory], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, directory = pair
    movable = await a.submit()
    await a.engine.flush()
    assert await a.engine.replicas.give_away([movable], "b") == [movable]
    assert directory.mail_of("b") == [("given", {"executions": [movable]})]
    load = b.replica_store.load

    async def failing(execution_ids: Sequence[str]) -> RecoveredState:
        monkeypatch.setattr(b.replica_store, "load", load)  # fails once
        raise StoreError("reading the database failed for a moment")

    monkeypatch.setattr(b.replica_store, "load", failing)
    done_mail = b.replica_store.done_mail
    emptied = asyncio.Event()

    async def done(ids: Sequence[int]) -> None:
        await done_mail(ids)
        if not directory.mail_of("b"):
            emptied.set()

    monkeypatch.setattr(b.replica_store, "done_mail", done)
    loops = ReplicaLoops(engine=b.engine, store=b.replica_store, lease_s=3.0, notify=False)
    await loops.start()
    try:
        async with asyncio.timeout(10):
            await emptied.wait()
    finally:
        await loops.close()
    worker = b.rig.connect("wb")
    await until(lambda: worker.invocations, "the given execution dispatched on its new holder")
    assert worker.invocations[0].task_run.execution_id == movable


async def _gives_all_away_without_workers(a: Replica, b: Replica) -> None:
    given = [await a.submit() for _ in range(20)]
    await a.engine.flush()
    kept = await a.submit()
    assert await a.engine.replicas.give_away(given, "b") == given
    # No worker of a serves the handler: nothing would ever drop their places in its queue.
    assert a.engine._ready.size("echo") <= 2
    assert b.engine.replicas.adopt(await b.replica_store.load(given)) == 20
    worker = a.rig.connect("wa", slots=5)
    await until(lambda: worker.invocations, "the one kept dispatched")
    await idle(30)
    assert [i.task_run.execution_id for i in worker.invocations] == [kept]


async def test_a_replica_without_workers_keeps_no_queue_places_of_what_it_gave_away(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = pair
    await _gives_all_away_without_workers(a, b)


async def test_a_replica_without_workers_keeps_no_queue_places_of_the_cold_executions_it_gave_away(
    cold_pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = cold_pair
    await _gives_all_away_without_workers(a, b)


async def test_claims_ask_no_handler_for_more_than_its_workers_free_slots(
    pair: tuple[Replica, Replica, Directory], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, b, _ = pair
    asked: list[tuple[list[str], int]] = []
    claimed = asyncio.Event()

    async def claim(handlers: Sequence[str], limit: int) -> list[str]:
        asked.append((list(handlers), limit))
        if len(asked) >= 2:
            claimed.set()
        return [f"x-{len(asked)}"] if handlers == ["wide"] else []

    monkeypatch.setattr(b.replica_store, "claim", claim)
    b.rig.connect("narrow", handlers=("narrow",), slots=1)
    b.rig.connect("wide", handlers=("wide",), slots=5)
    loops = ReplicaLoops(engine=b.engine, store=b.replica_store, lease_s=3.0, notify=False)
    await loops.start()
    try:
        async with asyncio.timeout(10):
            await claimed.wait()
    finally:
        await loops.close()
    # One handler at a time, the most free slots first; never the 6 free slots in all for the one with 1.
    assert asked[:2] == [(["wide"], 5), (["narrow"], 1)]


async def test_a_claim_answered_before_it_returns_does_not_hold_the_free_slots(
    pair: tuple[Replica, Replica, Directory], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder may answer a claim (its mail read here) before the claim's own commit has returned here."""
    _, b, directory = pair
    asked: list[int] = []
    answer_taken = b.replica_store.mail_taken
    asked_again = asyncio.Event()

    async def claim(handlers: Sequence[str], limit: int) -> list[str]:
        asked.append(limit)
        if len(asked) == 1:
            directory.post("b", "given", {"executions": ["x-1"]})
            await answer_taken.wait()  # the mail loop has the answer, and applies it while this claim returns
            return ["x-1"]
        asked_again.set()
        return []

    monkeypatch.setattr(b.replica_store, "claim", claim)
    b.rig.connect("w", slots=1)
    loops = ReplicaLoops(engine=b.engine, store=b.replica_store, lease_s=3.0, notify=False)
    await loops.start()
    try:
        async with asyncio.timeout(10):
            await asked_again.wait()  # the answered claim no longer counts against the one free slot
    finally:
        await loops.close()
    assert asked[:2] == [1, 1]


# ---- Workers across replicas -----------------------------------------------------------------------


def _listed(workers: Sequence[WorkerView]) -> list[tuple[str, str, int, bool]]:
    assert [(view.name, view.session_id) for view in workers] == sorted(
        (view.name, view.session_id) for view in workers
    )
    return sorted((view.name, view.replica, view.in_flight, view.draining) for view in workers)


async def test_a_replica_lists_the_workers_the_other_live_replicas_published(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, directory = pair
    a.rig.connect("wa")
    await _running_on(b)  # "wb"'s twin: a worker "wa" of b that runs one attempt
    b.rig.connect("wb", labels={"zone": "eu"})
    assert _listed(await a.engine.list_workers()) == [("wa", "a", 0, False)]  # b has published nothing yet

    await b.engine.directory.publish(0.0)
    assert _listed(await a.engine.list_workers()) == [
        ("wa", "a", 0, False),
        ("wa", "b", 1, False),
        ("wb", "b", 0, False),
    ]
    listed = {view.name: view for view in await a.engine.list_workers() if view.replica == "b"}
    here = {view.name: view for view in b.engine.directory.here()}
    assert listed == {name: replace(view, replica="b") for name, view in here.items()}  # every field, as published

    directory.dead.add("b")  # its lease lapsed: what it published is not listed
    assert _listed(await a.engine.list_workers()) == [("wa", "a", 0, False)]


async def test_a_replica_publishes_its_workers_when_they_change_and_every_few_seconds(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    _, b, _ = pair
    publish = b.engine.directory.publish
    await publish(0.0)
    await publish(1.0)
    assert b.replica_store.publishes == 1
    worker = b.rig.connect("wb")
    await publish(1.5)
    assert b.replica_store.publishes == 2
    b.rig.clock.advance(0.5)
    worker.heartbeat()  # its last-seen time moves: not worth a write of its own
    await publish(2.0)
    assert b.replica_store.publishes == 2
    await b.submit()  # its attempts in flight change
    assert worker.invocations
    await publish(2.5)
    assert b.replica_store.publishes == 3
    await publish(2.5 + REFRESH_S)
    assert b.replica_store.publishes == 4
    await b.engine.drain_worker(name="wb")
    await publish(2.5 + REFRESH_S + 0.5)
    assert b.replica_store.publishes == 5


async def test_a_worker_connected_to_another_replica_is_drained_through_its_mail(
    mailing_pair: tuple[Replica, Replica, Directory],
) -> None:
    a, b, _ = mailing_pair
    here = a.rig.connect("w")
    there = b.rig.connect("w", instance_id="i-2")
    other = b.rig.connect("other")
    await b.engine.directory.publish(0.0)
    grace = timedelta(seconds=30)

    told = await a.engine.drain_worker(name="w", grace=grace, reason="rolling upgrade")

    assert _listed(told) == [("w", "a", 0, True), ("w", "b", 0, True)]
    assert here.session.draining
    async with asyncio.timeout(10):
        await b.replica_store.mail_taken.wait()  # b's mail loop polls
    await until(lambda: there.session.draining, "b's worker told to drain")
    assert [sent for sent in there.link.sent if isinstance(sent, Drained)] == [Drained(grace, "rolling upgrade")]
    assert not other.session.draining
    mailed = {
        "workers": [{"instance": "i-2", "identity": ""}],
        "grace_us": 30_000_000,
        "reason": "rolling upgrade",
        "asked_at": a.rig.clock.now().isoformat(),
    }
    assert a.replica_store.sent == [("b", "drain", mailed)]


async def test_a_mailed_drain_reaches_the_instance_on_its_next_stream_when_the_named_one_is_gone(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """The worker's stream to b broke before b read the mail: its session there is gone, and the drain is told to
    the instance's next stream, whichever it is, within the drain's grace and a lease."""
    a, b, directory = pair
    there = b.rig.connect("w", instance_id="i-2", identity="team-w")
    await b.engine.directory.publish(0.0)
    await a.engine.drain_worker(name="w", grace=timedelta(seconds=30), reason="rolling upgrade")
    there.disconnect()
    b.rig.clock.advance(5)

    for kind, body in directory.mail_of("b"):
        assert kind == "drain"
        b.engine.directory.drain_here(body)  # as b's mail loop applies it
    other = b.rig.connect("w", instance_id="i-3", identity="team-w")  # another instance of that name: not this
    back = b.rig.connect("w", instance_id="i-2", identity="team-w")
    assert [sent for sent in back.link.sent if isinstance(sent, Drained)] == [
        Drained(timedelta(seconds=25), "rolling upgrade")  # counted from when it was asked
    ]
    assert back.session.draining
    assert not other.session.draining

    b.rig.clock.advance(25 + LEASE_S + 1)  # its grace and a lease later, a new stream of it is not told
    later = b.rig.connect("w", instance_id="i-2", identity="team-w")
    assert not later.session.draining


async def test_a_drain_asked_here_goes_with_the_worker_that_comes_back_on_another_replica(
    mailing_pair: tuple[Replica, Replica, Directory],
) -> None:
    """The Drain went down a's stream as it died; the worker comes back to b with its running attempt. a hands the
    attempt over and mails b the drain, so the worker's new session there drains."""
    a, b, _ = mailing_pair
    worker_a, _, invoked = await _running_on(a)
    await a.engine.flush()
    await a.engine.drain_worker(name="wa", grace=timedelta(seconds=60), reason="kernel upgrade")
    worker_a.disconnect()

    async with asyncio.timeout(10):
        await b.engine.replicas.take_over([invoked.key], within_s=10, instance_id="i-1")
    back = b.rig.connect("wa", instance_id="i-1", running=[invoked.key])

    assert back.welcome.adopted == (invoked.key,)
    assert back.session.draining
    assert [sent for sent in back.link.sent if isinstance(sent, Drained)] == [
        Drained(timedelta(seconds=60), "kernel upgrade")  # no time passed on a's clock
    ]
    assert ("b", "drain") in [(to, kind) for to, kind, _ in a.replica_store.sent]


def _drains_sent(worker: FakeWorker) -> list[Drained]:
    return [sent for sent in worker.link.sent if isinstance(sent, Drained)]


def _advance(seconds: float, *replicas: Replica) -> None:
    for replica in replicas:
        replica.rig.clock.advance(seconds)


async def test_a_drain_kept_on_one_replica_reaches_its_worker_that_comes_back_idle_on_another(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """The Drain went down a's stream as it died, and the worker, running nothing, comes back to b: nothing is
    handed over, so b learns the drain from what a published, with what is left of its grace."""
    a, b, _ = pair
    gone = a.rig.connect("w", instance_id="i-1", identity="team-w")
    await a.engine.drain_worker(name="w", grace=timedelta(seconds=30), reason="rolling upgrade")
    gone.disconnect()
    await a.engine.directory.look(0.0)
    _advance(5, a, b)

    other = b.rig.connect("w", instance_id="i-9", identity="team-w")  # another instance of the name: not this
    impostor = b.rig.connect("w2", instance_id="i-1", identity="team-x")  # the instance id, another credential
    back = b.rig.connect("w", instance_id="i-1", identity="team-w")
    assert _drains_sent(back) == []  # b has not looked yet
    await b.engine.directory.look(0.0)

    assert _drains_sent(back) == [Drained(timedelta(seconds=25), "rolling upgrade")]
    assert back.session.draining
    assert not other.session.draining
    assert not impostor.session.draining
    await b.engine.directory.look(0.5)
    assert len(_drains_sent(back)) == 1  # looked for once per session

    _advance(25 + LEASE_S + 1, a, b)  # its grace and a lease later, a new stream of it is not told
    later = b.rig.connect("w", instance_id="i-1", identity="team-w")
    await b.engine.directory.look(1.0)
    assert not later.session.draining


async def test_a_drain_finished_on_another_replica_is_forgotten_where_it_was_asked(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """The worker learned its drain on b, finished and ended its stream; restarted under the same instance id, it
    is not drained again, on b or on a."""
    a, b, directory = pair
    gone = a.rig.connect("w", instance_id="i-1")
    await a.engine.drain_worker(name="w", grace=timedelta(seconds=30), reason="rolling upgrade")
    gone.disconnect()
    await a.engine.directory.look(0.0)
    back = b.rig.connect("w", instance_id="i-1")
    await b.engine.directory.look(0.0)
    assert back.session.draining

    b.engine.disconnect_worker(back.session, closed_by_worker=True)  # drained: it ended its stream itself
    again = b.rig.connect("w", instance_id="i-1")  # before a heard of it, a's row still keeps the drain
    await b.engine.directory.look(0.5)
    assert not again.session.draining
    finished_at = b.rig.clock.now().isoformat()
    assert ("a", "drain_done", {"instance": "i-1", "identity": "", "finished_at": finished_at}) in b.replica_store.sent

    for kind, body in directory.mail_of("a"):
        assert kind == "drain_done"
        a.engine.directory.drain_done_here(body)  # as a's mail loop applies it
    on_a = a.rig.connect("w", instance_id="i-1")
    assert not on_a.session.draining
    await a.engine.directory.look(0.5)
    assert directory.drains["a"] == []


async def _finished_then_restarted(
    finisher: Replica, worker: FakeWorker, told: Replica, directory: Directory
) -> tuple[FakeWorker, dict[str, Any]]:
    """`worker` finishes its drain on `finisher` (it ends its stream), which tells the other replicas; `told` applies
    that mail, and a process restarted under the worker's instance id connects to it. That worker, and the mail."""
    finisher.engine.disconnect_worker(worker.session, closed_by_worker=True)
    await finisher.engine.directory.look(0.5)
    (done,) = [body for kind, body in directory.mail_of(told.replica_store.replica) if kind == "drain_done"]
    told.engine.directory.drain_done_here(done)
    return told.rig.connect(worker.session.name, instance_id=worker.session.instance_id), done


async def test_a_drain_handed_over_with_its_worker_is_forgotten_where_it_was_asked_once_the_worker_finishes(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """a hands the worker's attempt over to b with its drain; the worker finishes there. a, which still keeps and
    publishes the drain, is told, so a process restarted under that instance id is not drained on a. A drain asked
    again later is not undone by that news."""
    a, b, directory = pair
    worker_a, running, invoked = await _running_on(a)
    await a.engine.flush()
    await a.engine.drain_worker(name="wa", grace=timedelta(seconds=60), reason="kernel upgrade")
    worker_a.disconnect()
    await a.engine.directory.look(0.0)

    assert await a.engine.replicas.hand_over([running], "b", instance_id="i-1") == [running]
    for kind, body in directory.mail_of("b"):  # as b's mail loop applies them
        if kind == "drain":
            b.engine.directory.drain_here(body)
        elif kind == "given":
            b.engine.replicas.adopt(await b.replica_store.load(body["executions"]))
    back = b.rig.connect("wa", instance_id="i-1", running=[invoked.key])
    assert back.welcome.adopted == (invoked.key,)
    assert back.session.draining
    back.complete(invoked)
    restarted, done = await _finished_then_restarted(b, back, a, directory)
    assert _drains_sent(restarted) == []

    _advance(1, a, b)
    await a.engine.drain_worker(name="wa", grace=timedelta(seconds=60), reason="asked again")
    restarted.disconnect()
    a.engine.directory.drain_done_here(done)  # the same news again, late: older than this drain
    again = a.rig.connect("wa", instance_id="i-1")
    assert _drains_sent(again) == [Drained(timedelta(seconds=60), "asked again")]


async def test_a_drain_copied_to_another_replica_goes_when_its_worker_finishes_where_it_was_asked(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    """A replica of an earlier version mailed b a drain without saying when it was asked, which b keeps from when
    it read it; the worker then finished on a. b's copy, asked before that finish, goes too."""
    a, b, directory = pair
    worker = a.rig.connect("w", instance_id="i-1")
    await a.engine.drain_worker(name="w", grace=timedelta(seconds=60), reason="kernel upgrade")
    _advance(1, a, b)
    copy = {"workers": [{"instance": "i-1", "identity": ""}], "grace_us": 59_000_000, "reason": "kernel upgrade"}
    b.engine.directory.drain_here(copy)
    await b.engine.directory.publish(0.0)
    _advance(1, a, b)
    restarted, _ = await _finished_then_restarted(a, worker, b, directory)
    assert _drains_sent(restarted) == []


async def test_a_drain_asked_again_after_the_worker_finished_elsewhere_stands_though_the_earlier_ends_first(
    pair: tuple[Replica, Replica, Directory],
) -> None:
    _, b, _ = pair
    worker = b.rig.connect("w", instance_id="i-1")
    asked = {"workers": [{"instance": "i-1", "identity": ""}], "grace_us": 600_000_000, "reason": "first"}
    b.engine.directory.drain_here(asked)
    finished_at = b.rig.clock.now() + timedelta(seconds=1)  # on another replica, before the next drain
    b.rig.clock.advance(2)
    await b.engine.drain_worker(name="w", grace=timedelta(seconds=1000), reason="again")  # the first ends first
    b.engine.directory.drain_done_here({"instance": "i-1", "identity": "", "finished_at": finished_at.isoformat()})
    worker.disconnect()
    back = b.rig.connect("w", instance_id="i-1")
    assert _drains_sent(back) == [Drained(timedelta(seconds=598), "first")]

    with pytest.raises(ValueError, match="finished_at: '2030-01-01T00:00:00' has no UTC offset"):
        b.engine.directory.drain_done_here({"instance": "i-1", "identity": "", "finished_at": "2030-01-01T00:00:00"})


async def test_a_drain_found_on_no_replica_is_not_found(pair: tuple[Replica, Replica, Directory]) -> None:
    a, b, _ = pair
    b.rig.connect("wb")
    await b.engine.directory.publish(0.0)
    with pytest.raises(NotFound, match="'ghost'"):
        await a.engine.drain_worker(name="ghost")
    with pytest.raises(NotFound, match="'nope'"):
        await a.engine.drain_worker(name="wb", session_id="nope")
    assert a.replica_store.sent == []
    told = await a.engine.drain_worker(name="wb", grace=None)
    assert _listed(told) == [("wb", "b", 0, True)]
    assert a.replica_store.sent[-1][2]["grace_us"] is None  # the worker's own drain timeout


async def test_a_published_worker_that_is_not_understood_is_left_out_of_the_list(
    pair: tuple[Replica, Replica, Directory], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, directory = pair
    b.rig.connect("wb")
    await b.engine.directory.publish(0.0)
    directory.workers["b"].append({"name": "from a newer version", "slots": "many"})
    assert _listed(await a.engine.list_workers()) == [("wb", "b", 0, False)]
    assert "a worker replica b published is not understood" in caplog.text


# ---- One idempotency key on two replicas ----------------------------------------------------------


@pytest.mark.parametrize("batched", [False, True])
async def test_a_key_submitted_to_two_replicas_at_once_makes_one_execution_and_stops_neither(
    pair: tuple[Replica, Replica, Directory], batched: bool
) -> None:
    # Both replicas find the key free and stage an execution for it before either commits (a client that timed
    # out on one replica and retried on the other): the commit that comes second lets its execution go, never
    # dispatched, and its submit is answered with the first one's, as a repeat.
    a, b, directory = pair
    workers = [a.rig.connect("wa"), b.rig.connect("wb")]
    release = a.rig.hold_commits()  # the store is shared: both replicas' commits wait
    spec = ExecutionSpec(tasks=(task(),), idempotency_key="order-7")

    async def submit(replica: Replica) -> tuple[str, bool]:
        if batched:
            [item] = await replica.engine.submit_many(
                [SubmitItem(spec, "f")], wait_for_room=False, timeout_s=None, submitted_by=""
            )
            assert item.error is None
            return item.execution_id, item.deduplicated
        result = await replica.engine.submit(spec, fingerprint="f", wait_for_room=False, timeout_s=None)
        return result.snapshot.execution.id, result.deduplicated

    first = asyncio.ensure_future(submit(a))
    await until(lambda: a.queue_size() == 1, "a's execution staged")
    second = asyncio.ensure_future(submit(b))
    await until(lambda: b.queue_size() == 1, "b's execution staged")
    assert all(worker.invocations == [] for worker in workers), "nothing keyed is dispatched before its commit"
    release.set()
    answers = await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    (made, _), (taken, _) = answers
    assert made == taken
    assert sorted(repeat for _, repeat in answers) == [False, True], "one made it, the other is its repeat"
    await until(lambda: sum(len(worker.invocations) for worker in workers) == 1, "the one execution dispatched")
    assert [w.invocations[0].task_run.execution_id for w in workers if w.invocations] == [made]
    assert (await directory.store.find_idempotency_key("order-7")).execution_id == made  # type: ignore[union-attr]
    assert sorted([_live(a), _live(b)], key=len) == [set(), {made}], "the one let go of left memory"
    assert (a.queue_size(), b.queue_size()) == (0, 0), "and its room in the queue"
    for replica in (a, b):
        assert replica.engine._committer._failure is None, "neither replica stopped"
    again = await b.engine.submit(spec, fingerprint="f", wait_for_room=False, timeout_s=None)
    assert (again.snapshot.execution.id, again.deduplicated) == (made, True)
