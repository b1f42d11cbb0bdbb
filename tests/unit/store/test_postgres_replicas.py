"""Active-active replicas on one PostgreSQL database, store side: holders, claims, giving, mail, adoption of a dead
replica, the leader's row and notifications. Several `PostgresStore`s with different replica names share one real
database, as several servers do.

A paused replica is played in-process by stopping its store's renewals: to the database it is then exactly a
server that stopped answering while its session stays open; a killed one by ending its sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import tenacity

from taskwire.server.store import (
    DuplicateIdempotencyKey,
    Mail,
    NewExecution,
    PostgresStore,
    ReplicaStore,
    StoreError,
    StoreFenced,
    StoreInUse,
    WriteBatch,
    _postgres,
    store_from_url,
)
from taskwire.server.store._postgres_writes import apply_rows
from tests.unit.store.records import (
    T0,
    event,
    execution_running,
    execution_succeeded,
    pending_execution,
    running,
    submit_batch,
    succeeded,
)
from tests.unit.store.support import cold_entries, write
from tests.unit.store.test_behaviour_schedules import schedule

pytestmark = pytest.mark.timeout(60)

LEASE_S = 2.0  # short, yet long enough for renewals on a busy machine
AT = T0 + timedelta(seconds=1)

Open = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def replica(postgres_url: str) -> AsyncIterator[Open]:
    """Open a replica of the test's database by name; every one is closed at the end."""
    opened: list[PostgresStore] = []

    async def open_replica(name: str, **options: Any) -> PostgresStore:
        options = {"holder": f"process-{name}", "lease_s": LEASE_S, **options}
        store = PostgresStore(postgres_url, replica=name, **options)
        opened.append(store)
        await store.open()
        return store

    yield open_replica
    for store in opened:
        await store.close()


async def _sql(url: str, query: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def _holders(url: str) -> dict[str, tuple[str, str]]:
    """Each execution's (holder, claimed_by)."""
    return {row[0]: (row[1], row[2]) for row in await _sql(url, "SELECT id, holder, claimed_by FROM executions")}


async def _submit(store: PostgresStore, *, handlers: tuple[str, ...] = ("h:1",)) -> NewExecution:
    new = pending_execution(handlers=handlers)
    await write(store, submit_batch(new))
    return new


async def _start(store: PostgresStore, new: NewExecution) -> None:
    """Dispatch its first task run: the execution is active, not movable any more."""
    await write(
        store,
        WriteBatch(executions=[execution_running(new.execution, AT)], task_runs=[running(new.task_runs[0], AT)]),
    )


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    """Wait until `check()` holds: for what only the passing of time brings about (a lease lapsing)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while not await check():
        assert loop.time() < give_up, f"never happened: {what}"
        await asyncio.sleep(0.05)


def _pause(store: PostgresStore) -> None:
    """Stop renewing, as a SIGSTOPped server does; its connections stay open."""
    assert store._renewing is not None
    store._renewing.cancel()


async def test_a_replica_holds_what_it_submits_and_recovers_only_that(replica: Open, postgres_url: str) -> None:
    a, b = await replica("a"), await replica("b")
    cold_a, cold_b, active_b = await _submit(a), await _submit(b), await _submit(b)
    await _start(b, active_b)
    holders = await _holders(postgres_url)
    assert holders[cold_a.execution.id] == ("a", "")
    assert holders[cold_b.execution.id] == holders[active_b.execution.id] == ("b", "")

    state_a, state_b = await a.recover(), await b.recover()
    assert (state_a.active, state_a.cold) == ([], cold_entries(cold_a))
    assert [snapshot.execution.id for snapshot in state_b.active] == [active_b.execution.id]
    assert state_b.cold == cold_entries(cold_b)
    assert await b.holder_of(cold_a.execution.id) == "a"
    assert await a.holder_of("unknown") == ""
    await write(
        b,
        WriteBatch(
            executions=[execution_succeeded(execution_running(active_b.execution, AT), AT)],
            task_runs=[succeeded(running(active_b.task_runs[0], AT), AT)],
        ),
    )
    assert await a.holder_of(active_b.execution.id) == ""  # finished: no one holds it
    task_runs = [cold_a.task_runs[0].id, cold_b.task_runs[0].id, active_b.task_runs[0].id, "unknown"]
    assert await a.holders_of_task_runs(task_runs) == {cold_a.execution.id: "a", cold_b.execution.id: "b"}


async def test_a_store_that_is_not_a_replica_holds_nothing_and_is_no_replica_store(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as single:
        new = await _submit(single)
        assert (await single.recover()).cold == cold_entries(new)
        assert (await _holders(postgres_url))[new.execution.id] == ("", "")
        with pytest.raises(StoreError, match="not a replica"):
            await single.claim(["h:1"], 10)
    with pytest.raises(ValueError, match="cannot be a standby"):
        PostgresStore(postgres_url, replica="a", standby=True)


async def test_a_live_replicas_name_is_refused_naming_it(replica: Open) -> None:
    await replica("a")
    with pytest.raises(StoreInUse, match=r"replica 'a' of the database .*: process-a \(epoch 1.*another --replica"):
        await replica("a", holder="process-a2", lock_wait_s=0.2)
    assert (await replica("b")).lease.epoch == 1  # each name a row of its own


async def test_two_concurrent_claimers_never_get_the_same_execution(replica: Open, postgres_url: str) -> None:
    a, b, c = await replica("a"), await replica("b"), await replica("c")
    held = [await _submit(a) for _ in range(20)]
    by_b, by_c = await asyncio.gather(b.claim(["h:1"], 15), c.claim(["h:1"], 15))
    assert len(by_b) + len(by_c) == 20
    assert set(by_b).isdisjoint(by_c)
    holders = await _holders(postgres_url)
    assert sorted(claimer for holder, claimer in holders.values()) == ["b"] * len(by_b) + ["c"] * len(by_c)
    assert {holder for holder, claimer in holders.values()} == {"a"}  # claimed, not moved
    mail = await a.take_mail()
    assert {m.kind for m in mail} == {"claim"}
    by = {m.body["by"]: m.body["executions"] for m in mail}
    assert sorted(by) == ["b", "c"]
    assert set(by["b"]).isdisjoint(by["c"])
    assert sorted(by["b"] + by["c"]) == sorted(new.execution.id for new in held)
    assert len(await c.claim(["h:1"], 15)) == 0  # every one is claimed already


async def test_a_claim_skips_executions_another_transaction_holds_without_waiting(
    replica: Open, postgres_url: str
) -> None:
    a, b = await replica("a"), await replica("b")
    first, second = await _submit(a), await _submit(a)
    side = await asyncpg.connect(postgres_url)
    try:
        async with side.transaction():
            await side.execute("SELECT 1 FROM executions WHERE id = $1 FOR UPDATE", first.execution.id)
            assert len(await asyncio.wait_for(b.claim(["h:1"], 10), 10)) == 1
    finally:
        await side.close()
    assert (await _holders(postgres_url))[second.execution.id] == ("a", "b")


async def test_a_claim_takes_only_movable_executions_of_other_live_replicas_oldest_first(
    replica: Open, postgres_url: str
) -> None:
    a, b, dead = await replica("a"), await replica("b"), await replica("dead")
    started = await _submit(a)
    await _start(a, started)
    with_deadline = pending_execution()
    with_deadline = replace(with_deadline, execution=replace(with_deadline.execution, deadline=AT))
    await write(a, submit_batch(with_deadline))
    keyed = pending_execution()
    keyed.task_runs = [replace(keyed.task_runs[0], concurrency_key="tenant", concurrency_limit=1)]
    await write(a, submit_batch(keyed))
    await _submit(a, handlers=("h:2",))
    oldest, newer, newest = await _submit(a), await _submit(a), await _submit(a)
    await _submit(b)  # its own
    of_the_dead = await _submit(dead)
    _pause(dead)
    await _sql(postgres_url, "UPDATE taskwire_replicas SET lease_until = now() WHERE name = 'dead'")  # lapsed

    assert len(await b.claim(["h:1"], 2)) == 2
    assert len(await b.claim([], 10)) == 0
    assert len(await b.claim(["h:1"], 10)) == 1
    holders = await _holders(postgres_url)
    assert {i for i, (holder, claimer) in holders.items() if claimer} == {
        oldest.execution.id,
        newer.execution.id,
        newest.execution.id,
    }
    [first, second] = await a.take_mail()
    assert (first.body, second.body) == (
        {"by": "b", "executions": [oldest.execution.id, newer.execution.id]},
        {"by": "b", "executions": [newest.execution.id]},
    )
    assert len(await b.claim(["h:1", "h:2"], 10)) == 1  # the other handler's, once asked for
    assert holders[of_the_dead.execution.id] == ("dead", "")


async def test_give_moves_what_is_still_held_refuses_the_rest_and_mails_the_claimer(
    replica: Open, postgres_url: str
) -> None:
    a, b = await replica("a"), await replica("b")
    one, two, three = await _submit(a), await _submit(a), await _submit(a)
    assert len(await b.claim(["h:1"], 10)) == 3
    ids = [new.execution.id for new in (one, two, three)]
    assert await a.give([ids[0], ids[1], "unknown"], [ids[2]], "b") == ids[:2]
    holders = await _holders(postgres_url)
    assert [holders[i] for i in ids] == [("b", ""), ("b", ""), ("a", "")]
    mail = await b.take_mail()
    assert [(m.kind, m.body) for m in mail] == [
        ("given", {"executions": ids[:2]}),
        ("refused", {"executions": ["unknown", ids[2]]}),
    ]
    loaded = await b.load(ids)
    assert (loaded.active, loaded.cold) == ([], cold_entries(one) + cold_entries(two))
    assert (await b.recover()).cold == cold_entries(one) + cold_entries(two)
    assert (await a.recover()).cold == cold_entries(three)
    assert await a.give(ids[:2], [], "b") == []  # not a's any more

    # To a replica that is not alive, nothing moves.
    assert len(await b.claim(["h:1"], 10)) == 1
    _pause(b)
    await _sql(postgres_url, "UPDATE taskwire_replicas SET lease_until = now() WHERE name = 'b'")
    assert await a.give([ids[2]], [], "b") == []
    assert (await _holders(postgres_url))[ids[2]] == ("a", "")


async def test_mail_is_read_oldest_first_until_it_is_done(replica: Open) -> None:
    a, b = await replica("a"), await replica("b")
    await a.send("b", "cancel", {"execution_id": "exe-1", "reason": "asked"})
    await a.send("b", "cancel", {"execution_id": "exe-2", "reason": "asked"})
    await b.send("a", "refused", {"executions": ["exe-3"]})
    mail = await b.take_mail()
    assert [(m.kind, m.body["execution_id"]) for m in mail] == [("cancel", "exe-1"), ("cancel", "exe-2")]
    assert mail[0].id < mail[1].id
    assert await b.take_mail(limit=1) == mail[:1]
    await b.done_mail([mail[0].id])
    assert await b.take_mail() == mail[1:]  # at least once: what is not done stays
    await b.done_mail([m.id for m in await a.take_mail()])  # not b's: nothing happens
    [theirs] = await a.take_mail()
    assert theirs == Mail(theirs.id, "refused", {"executions": ["exe-3"]})


async def test_mail_workers_and_drains_keep_any_text_a_caller_chose(replica: Open) -> None:
    # PostgreSQL's jsonb refuses U+0000, which a reason, a worker's name or its labels may hold.
    a, b = await replica("a"), await replica("b")
    odd = "nul\x00 and \ue000 mark"
    await a.send("b", "drain", {"reason": odd, odd: [odd]})
    [mail] = await b.take_mail()
    assert mail.body == {"reason": odd, odd: [odd]}
    await a.publish_workers([{"name": odd, "labels": {odd: odd}}], [{"instance": "i-1", "reason": odd}])
    assert await b.workers_elsewhere() == {"a": [{"name": odd, "labels": {odd: odd}}]}
    assert await b.drains_elsewhere() == {"a": [{"instance": "i-1", "reason": odd}]}


async def test_each_replica_reads_the_workers_the_other_live_replicas_published_last(replica: Open) -> None:
    a, b, c = await replica("a"), await replica("b"), await replica("c")
    assert await a.workers_elsewhere() == {}
    await b.publish_workers([{"name": "w1", "labels": {"zone": "eu"}}, {"name": "w2"}], [])
    await c.publish_workers([{"name": "w3"}], [])
    await a.publish_workers([{"name": "mine"}], [])
    assert await a.workers_elsewhere() == {
        "b": [{"name": "w1", "labels": {"zone": "eu"}}, {"name": "w2"}],
        "c": [{"name": "w3"}],
    }
    await b.publish_workers([], [])  # replaced whole
    assert await c.workers_elsewhere() == {"a": [{"name": "mine"}], "b": []}
    await b.close()  # its lease let go: what it published is not read
    assert await a.workers_elsewhere() == {"c": [{"name": "w3"}]}


async def test_each_replica_reads_the_drains_the_other_live_replicas_keep(replica: Open) -> None:
    a, b, c = await replica("a"), await replica("b"), await replica("c")
    assert await a.drains_elsewhere() == {}
    await b.publish_workers([{"name": "w1"}], [{"instance": "i-1", "identity": ""}])
    await c.publish_workers([{"name": "w3"}], [])  # none kept: not listed
    await a.publish_workers([], [{"instance": "mine", "identity": ""}])
    assert await a.drains_elsewhere() == {"b": [{"instance": "i-1", "identity": ""}]}
    assert await c.drains_elsewhere() == {
        "a": [{"instance": "mine", "identity": ""}],
        "b": [{"instance": "i-1", "identity": ""}],
    }
    await b.publish_workers([{"name": "w1"}], [])  # replaced whole
    assert await c.drains_elsewhere() == {"a": [{"instance": "mine", "identity": ""}]}
    assert await c.workers_elsewhere() == {"a": [], "b": [{"name": "w1"}]}
    await a.close()
    assert await c.drains_elsewhere() == {}


async def test_one_replica_leads_until_it_stops(replica: Open, postgres_url: str) -> None:
    a, b = await replica("a"), await replica("b")
    assert await a.lead()
    assert not await b.lead()
    assert await a.lead()  # renewed
    [(holder, epoch)] = await _sql(postgres_url, "SELECT holder, epoch FROM taskwire_leader")
    assert (holder, epoch) == ("a", 1)
    await a.close()  # steps down
    assert await b.lead()
    assert not await (await replica("c")).lead()
    assert [tuple(row) for row in await _sql(postgres_url, "SELECT holder, epoch FROM taskwire_leader")] == [("b", 2)]


async def test_a_lapsed_replica_is_adopted_by_one_replica_and_then_changes_nothing(
    replica: Open, postgres_url: str
) -> None:
    a, b, c = await replica("a"), await replica("b"), await replica("c", lease_s=1.0)
    lost: list[StoreError] = []
    c.on_lost = lost.append
    cold, active, finished = await _submit(c), await _submit(c), await _submit(c)
    await _start(c, active)
    await write(c, WriteBatch(executions=[execution_succeeded(finished.execution, AT)]))
    await a.send("c", "cancel", {"execution_id": active.execution.id, "reason": "asked"})
    of_b = await _submit(b)
    assert len(await c.claim(["h:1"], 1)) == 1  # c's claim on b's execution
    await c.publish_workers([{"name": "worker-of-c"}], [{"instance": "i-c", "identity": ""}])
    assert await a.lapsed_replicas() == []

    _pause(c)

    async def c_lapsed() -> bool:
        return await a.lapsed_replicas() == ["c"]

    await _eventually(c_lapsed, "c's lease lapsed")
    adopted = await asyncio.gather(a.adopt("c"), b.adopt("c"))
    [state] = [found for found in adopted if found is not None]
    winner = a if adopted[0] is not None else b
    assert [snapshot.execution.id for snapshot in state.active] == [active.execution.id]
    assert state.cold == cold_entries(cold)
    holders = await _holders(postgres_url)
    assert holders[cold.execution.id] == holders[active.execution.id] == (winner.replica, "")
    assert holders[finished.execution.id] == ("c", "")  # finished: it stays where it was
    assert holders[of_b.execution.id] == ("b", "")  # the dead replica's claim is cleared
    assert "cancel" in [m.kind for m in await winner.take_mail()]
    assert await _sql(postgres_url, "SELECT id FROM taskwire_mail WHERE recipient = 'c'") == []
    assert await _sql(postgres_url, "SELECT replica FROM taskwire_workers WHERE replica = 'c'") == []
    assert await a.lapsed_replicas() == []
    assert await a.adopt("c") is None

    # Its next write, whichever it is, is refused and stops it; every later one too.
    with pytest.raises(StoreFenced, match=rf"took over replica 'c' of the database: {winner.replica} holds it"):
        await c.claim(["h:1"], 10)
    assert [type(error) for error in lost] == [StoreFenced]
    with pytest.raises(StoreFenced):
        await write(c, submit_batch(pending_execution()))
    with pytest.raises(StoreFenced):
        await c.publish_workers([], [])

    again = await replica("c", holder="process-c2")  # a restart under the name: taken afresh, holding nothing
    assert again.lease.epoch == 3
    assert (await again.recover()).cold == []
    [row] = await _sql(postgres_url, "SELECT holder, adopted_by FROM taskwire_replicas WHERE name = 'c'")
    assert tuple(row) == ("process-c2", "")


async def test_a_replica_whose_session_ended_is_listed_at_once(replica: Open, postgres_url: str) -> None:
    a, b = await replica("a", lease_s=30), await replica("b", lease_s=30)
    _pause(b)
    assert await a.lapsed_replicas() == []
    # b's writer holds its epoch's advisory lock: ending that session is what a kill -9 does. With a timeout the
    # call returns once the session has ended (its locks released), not as soon as it was signalled.
    await _sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 "
        "AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        b.lease.row.lock_class,
    )
    assert await a.lapsed_replicas() == ["b"]  # long before its 30 s lease ends
    assert await a.adopt("b") is not None


async def test_listen_hears_mail_ready_work_history_schedules_and_a_lost_connection(
    replica: Open, postgres_url: str
) -> None:
    a, b = await replica("a"), await replica("b")
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    await b.listen(lambda kind, payload: heard.put_nowait((kind, payload)))

    async def next_notice() -> tuple[str, str]:
        return await asyncio.wait_for(heard.get(), 10)

    await a.send("b", "cancel", {"execution_id": "exe-1", "reason": "asked"})
    assert await next_notice() == ("mail", "cancel")
    await a.send("a", "cancel", {"execution_id": "exe-1", "reason": "asked"})  # a's channel, not b's
    new = await _submit(a, handlers=("h:1", "h:2"))
    notices = {await next_notice() for _ in range(3)}
    assert notices == {("ready", "h:1"), ("ready", "h:2"), ("history", new.execution.id)}
    await write(a, WriteBatch(events=[event(new.execution.id, 2)]))
    assert await next_notice() == ("history", new.execution.id)
    retried = replace(new.task_runs[1], updated_at=AT)  # a task run written PENDING again (a retry)
    await write(a, WriteBatch(task_runs=[retried, succeeded(running(new.task_runs[0], AT), AT)]))
    assert await next_notice() == ("ready", "h:2")
    many = [pending_execution(handlers=("h:3",)) for _ in range(800)]  # their ids pass 7,000 bytes
    await write(a, WriteBatch(new_executions=many, events=[event(m.execution.id, 1) for m in many]))
    assert {await next_notice() for _ in range(2)} == {("ready", "h:3"), ("history", "*")}
    await write(a, WriteBatch(schedules=[schedule("nightly"), schedule("hourly")]))  # one notice for the commit
    assert await next_notice() == ("schedules", "")
    await write(a, WriteBatch(deleted_schedules=["nightly"]))
    assert await next_notice() == ("schedules", "")
    odd = await _submit(a, handlers=("nul\x00handler",))  # a NUL would end the notification's payload
    assert {await next_notice() for _ in range(2)} == {("ready", "nul\x00handler"), ("history", odd.execution.id)}

    await _sql(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %' "
        "AND datname = current_database()",
    )
    assert await next_notice() == ("lost", "")
    await a.send("b", "given", {"executions": []})
    assert await next_notice() == ("mail", "given")
    assert heard.empty()


async def test_without_notifications_nothing_is_sent_or_heard(replica: Open, postgres_url: str) -> None:
    quiet, loud = await replica("quiet", notify=False), await replica("loud")
    await quiet.listen(lambda kind, payload: None)
    assert quiet._listening is None
    spy = await asyncpg.connect(postgres_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await spy.add_listener("taskwire_ready", lambda *args: heard.put_nowait(args[3]))
        await _submit(quiet, handlers=("quiet:1",))
        await _submit(loud, handlers=("loud:1",))  # notifications arrive in commit order: the quiet one's first
        assert await asyncio.wait_for(heard.get(), 10) == "loud:1"
    finally:
        await spy.close()
    assert heard.empty()


async def test_the_first_replica_to_recover_takes_what_a_server_without_replicas_left(
    replica: Open, postgres_url: str
) -> None:
    async with PostgresStore(postgres_url) as single:
        left, done = await _submit(single), await _submit(single)
        await write(single, WriteBatch(executions=[execution_succeeded(done.execution, AT)]))
    a, b = await replica("a"), await replica("b")
    assert (await a.recover()).cold == cold_entries(left)
    assert (await b.recover()).cold == []
    assert await _holders(postgres_url) == {left.execution.id: ("a", ""), done.execution.id: ("", "")}


def test_a_replica_store_is_made_from_a_postgresql_url_only() -> None:
    store: ReplicaStore = PostgresStore("postgresql://localhost/db", replica="a")
    assert store.replica == "a"
    made = store_from_url("postgresql://localhost/db", replica="b", notify=False)
    assert isinstance(made, PostgresStore)
    assert (made.replica, made.lease.row.table, made._notify) == ("b", "taskwire_replicas", False)
    assert store_from_url("postgresql://localhost/db").lease.row.table == "taskwire_owner"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="replicas need a PostgreSQL store"):
        store_from_url("sqlite:db.sqlite3", replica="a")


async def test_an_adoption_whose_read_fails_reads_again_and_loses_nothing(
    replica: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, c = await replica("a"), await replica("c", lease_s=1.0)
    queued = await _submit(c)
    _pause(c)

    async def c_lapsed() -> bool:
        return await a.lapsed_replicas() == ["c"]

    await _eventually(c_lapsed, "c's lease lapsed")
    read = a._read

    async def failing(*args: Any) -> Any:
        monkeypatch.setattr(a, "_read", read)  # fails once
        raise StoreError("reading the database failed for a moment")

    monkeypatch.setattr(a, "_read", failing)
    state = await a.adopt("c")  # moved here: what it moved must come back to be run
    assert state is not None
    assert state.cold == cold_entries(queued)


async def test_a_server_without_replicas_and_replicas_never_share_a_database(replica: Open, postgres_url: str) -> None:
    async with PostgresStore(postgres_url, holder="lone", lease_s=LEASE_S) as single:
        await _submit(single)
        with pytest.raises(StoreInUse, match=r"without --replica uses the database .*: lone"):
            await replica("a", lock_wait_s=0.2)
    a = await replica("a")  # the lone server is gone: the database is the replicas'
    assert (await a.recover()).cold != []
    with pytest.raises(StoreInUse, match=r"replica 'a' .*process-a.* uses the database"):
        await PostgresStore(postgres_url, holder="lone", lease_s=LEASE_S, lock_wait_s=0.2).open()


async def test_a_replica_whose_writing_connection_is_lost_is_told_to_stop(replica: Open, postgres_url: str) -> None:
    a = await replica("a")
    lost: list[StoreError] = []
    a.on_lost = lost.append
    pid = a._conn.get_server_pid()
    await _sql(postgres_url, "SELECT pg_terminate_backend($1)", pid)
    with pytest.raises(StoreError):
        await a.claim(["h:1"], 1)  # an idle replica's only writes: its lease is renewed on another connection
    assert lost, "a replica that can write nothing more must stop, not hold its executions while renewing its lease"


async def test_a_replica_cannot_change_an_execution_another_replica_holds_now(replica: Open, postgres_url: str) -> None:
    """The second fence, in the database: even with its epoch current, a replica's update of an execution (or of
    its task runs) that moved to another replica is refused, and nothing of that batch is written."""
    a = await replica("a")
    await replica("b")
    new = await _submit(a)
    await _sql(postgres_url, "UPDATE executions SET holder = 'b' WHERE id = $1", new.execution.id)
    with pytest.raises(StoreError, match="another replica holds"):
        await _start(a, new)
    with pytest.raises(StoreError, match="another replica holds"):
        await write(a, WriteBatch(task_runs=[running(new.task_runs[0], AT)]))
    [row] = await _sql(postgres_url, "SELECT state FROM task_runs WHERE execution_id = $1", new.execution.id)
    assert row[0] == "PENDING"
    await _sql(postgres_url, "UPDATE executions SET holder = 'a' WHERE id = $1", new.execution.id)
    await _start(a, new)  # held again: written


async def test_a_key_two_replicas_commit_at_once_refuses_the_later_batch_alone(
    replica: Open, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a's transaction has written the key and not committed yet when b's checks it: only the unique index sees
    # it, once a commits. b is told which key, as for a key already stored, and its store keeps working.
    a, b = await replica("a"), await replica("b")
    inserted, resume = asyncio.Event(), asyncio.Event()

    async def first_held_after_its_rows(conn: Any, batches: Any, *args: Any) -> None:
        await apply_rows(conn, batches, *args)
        if not inserted.is_set():
            inserted.set()
            await resume.wait()

    monkeypatch.setattr(_postgres, "apply_rows", first_held_after_its_rows)
    first = asyncio.ensure_future(a.commit([submit_batch(pending_execution(key="order-7"))]))
    await asyncio.wait_for(inserted.wait(), 10)
    later = pending_execution(key="order-7")
    second = asyncio.ensure_future(b.commit([submit_batch(later)]))  # one batch, as the engine commits

    async def blocked_on_the_key() -> bool:
        rows = await _sql(
            postgres_url,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        return bool(rows)

    until_blocked = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_result(lambda blocked: not blocked),
        wait=tenacity.wait_fixed(0.01),
        stop=tenacity.stop_after_delay(10),
    )
    await until_blocked(blocked_on_the_key)
    resume.set()
    assert await asyncio.wait_for(first, 10) == [None]
    [refused] = await asyncio.wait_for(second, 10)
    assert isinstance(refused, DuplicateIdempotencyKey)
    assert refused.key == "order-7"
    assert await b.get_execution(later.execution.id) is None
    await write(b, submit_batch(pending_execution()))  # b was not broken
