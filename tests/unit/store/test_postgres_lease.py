"""The lease on a PostgreSQL database: one writer at a time, standbys, takeovers and the fence in every commit.

A paused server is played in-process by stopping its store's renewals: to the database it is then exactly
a server that stopped answering while its session stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, NoReturn

import asyncpg
import pytest

from taskwire.server.store import PostgresStore, StoreError, StoreFenced, StoreInUse, _postgres
from taskwire.server.store._postgres_lease import OwnerLease, keep_renewed
from taskwire.server.store._postgres_schema import MIGRATIONS, migrate
from taskwire.server.store._postgres_writes import apply_rows
from tests.unit.store.records import pending_execution, submit_batch
from tests.unit.store.support import write

pytestmark = pytest.mark.timeout(60)

LEASE_S = 2.0  # short, yet long enough for renewals on a busy machine


async def _owner(url: str) -> tuple[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT holder, epoch FROM taskwire_owner")
    finally:
        await conn.close()
    return str(row["holder"]), int(row["epoch"])


def _pause(store: PostgresStore) -> None:
    """Stop renewing, as a SIGSTOPped server does; its connections stay open."""
    assert store._renewing is not None
    store._renewing.cancel()


def _pause_commits(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make every commit stop inside its transaction, past its epoch check, as a server paused there: `inside` is set
    when one is there, and it goes on once `resume` is."""
    inside, resume = asyncio.Event(), asyncio.Event()

    async def paused_after_the_check(conn: Any, batches: Any, *args: Any) -> None:
        inside.set()
        await resume.wait()
        await apply_rows(conn, batches, *args)

    monkeypatch.setattr(_postgres, "apply_rows", paused_after_the_check)
    return inside, resume


async def test_the_first_server_takes_the_database_at_epoch_one_and_a_second_is_refused_naming_it(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S) as first:
        assert first.lease.epoch == 1
        assert await _owner(postgres_url) == ("alpha", 1)
        second = PostgresStore(postgres_url, holder="beta", lease_s=LEASE_S, lock_wait_s=0.2)
        with pytest.raises(StoreInUse, match=r"another taskwire server uses the database .*: alpha \(epoch 1"):
            await second.open()
        await second.close()
        await asyncio.sleep(LEASE_S * 1.5)  # longer than a lease: the renewals keep it the holder's
        assert await _owner(postgres_url) == ("alpha", 1)


async def test_a_killed_holders_successor_takes_over_at_once(postgres_url: str) -> None:
    first = PostgresStore(postgres_url, holder="alpha", lease_s=30)
    await first.open()
    _pause(first)
    conn = await asyncpg.connect(postgres_url)
    try:  # the writer holds its epoch's advisory lock: ending that session is what a kill -9 does
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted")
    finally:
        await conn.close()
    # The lease has most of 30 s left, but its holder is gone: no standby needed, no wait for the lease.
    async with PostgresStore(postgres_url, holder="beta", lease_s=30) as second:
        assert second.lease.epoch == 2
    await first.close()


async def test_a_standby_takes_over_a_paused_holder_which_then_changes_nothing(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "taskwire.server.store")
    first = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await first.open()
    lost: list[StoreError] = []
    first.on_lost = lost.append
    standby = PostgresStore(postgres_url, holder="beta", lease_s=LEASE_S, standby=True)
    taking = asyncio.ensure_future(standby.open())
    await asyncio.sleep(LEASE_S * 1.5)  # the holder renews: the standby keeps waiting
    assert not taking.done()
    assert "standby: the database" in caplog.text
    assert "held by alpha (epoch 1)" in caplog.text
    _pause(first)
    await asyncio.wait_for(taking, 10)
    assert standby.lease.epoch == 2
    assert await _owner(postgres_url) == ("beta", 2)

    late = pending_execution()
    with pytest.raises(StoreFenced, match=r"beta holds it at epoch 2 \(this server held epoch 1\)"):
        await write(first, submit_batch(late))
    assert [type(error) for error in lost] == [StoreFenced]
    with pytest.raises(StoreFenced):  # and every later one
        await write(first, submit_batch(pending_execution()))
    assert await standby.get_execution(late.execution.id) is None
    await first.close()  # does not let go of a lease it no longer holds
    assert await _owner(postgres_url) == ("beta", 2)
    await standby.close()


async def test_a_renewal_that_finds_another_holder_reports_the_loss(postgres_url: str) -> None:
    first = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await first.open()
    lost = asyncio.get_running_loop().create_future()
    first.on_lost = lost.set_result
    conn = await asyncpg.connect(postgres_url)
    try:  # another server took over (as after a pause the holder did not notice)
        await conn.execute("UPDATE taskwire_owner SET epoch = epoch + 1, holder = 'gamma'")
    finally:
        await conn.close()
    error = await asyncio.wait_for(lost, 10)
    assert isinstance(error, StoreFenced)
    assert (error.holder, error.epoch) == ("gamma", 2)
    await first.close()


async def test_reads_that_hold_every_reading_connection_past_a_lease_do_not_hold_up_its_renewal(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await store.open()
    lost = asyncio.get_running_loop().create_future()
    store.on_lost = lost.set_result
    try:
        deadline = store.lease.deadline
        async with contextlib.AsyncExitStack() as reads:  # as slow reads would, for two leases
            for _ in range(store._readers):
                await reads.enter_async_context(store._pool.acquire())
            done, _ = await asyncio.wait([lost], timeout=2 * LEASE_S)
            assert not done, f"the store lost its lease: {lost.result()}"
            assert store.lease.deadline > deadline + LEASE_S / 2, "renewed meanwhile"
    finally:
        await store.close()


async def test_a_graceful_close_lets_a_standby_take_over_at_once(postgres_url: str) -> None:
    first = PostgresStore(postgres_url, holder="alpha", lease_s=30)
    await first.open()
    standby = PostgresStore(postgres_url, holder="beta", lease_s=30, standby=True)
    taking = asyncio.ensure_future(standby.open())
    _pause(first)
    await first.lease.release(first._conn)  # what close() does first; the session stays, as the process would
    await asyncio.wait_for(taking, 10)  # far sooner than the 30 s lease
    assert standby.lease.epoch == 2
    await standby.close()
    await first.close()


async def test_a_paused_holder_whose_session_the_database_ended_is_told_who_took_over(postgres_url: str) -> None:
    first = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await first.open()
    _pause(first)
    async with PostgresStore(postgres_url, holder="beta", lease_s=LEASE_S, standby=True):
        conn = await asyncpg.connect(postgres_url)
        try:  # as idle_in_transaction_session_timeout does to a server paused inside a commit
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = 1 AND granted"
            )
        finally:
            await conn.close()
        with pytest.raises(StoreFenced, match="beta holds it at epoch 2"):
            await write(first, submit_batch(pending_execution()))
    await first.close()


async def test_a_server_whose_renewals_fail_is_told_when_its_lease_ends_not_a_third_of_a_lease_later() -> None:
    loop = asyncio.get_running_loop()
    lease = OwnerLease(holder="alpha", lease_s=3.0, database="db")
    lease.deadline = loop.time() + lease.lease_s  # as just after a renewal
    tries: list[float] = []

    async def connect() -> NoReturn:
        tries.append(loop.time())
        if len(tries) == 1:  # the first try fails a moment before the lease ends, every later one at once
            await asyncio.sleep(lease.deadline - 0.1 - loop.time())
        raise OSError("connection refused")

    @contextlib.asynccontextmanager
    async def unreachable() -> AsyncIterator[None]:
        yield await connect()

    lost: list[tuple[float, StoreError]] = []

    def on_lost(error: StoreError) -> None:
        lost.append((loop.time(), error))

    await asyncio.wait_for(keep_renewed(lease, SimpleNamespace(acquire=unreachable), on_lost), 10)
    [(at, error)] = lost
    assert "could not renew the lease on the database before it ran out" in str(error)
    # From then on a standby may take over: the server must be told then, not after another wait of a third of a lease.
    assert lease.deadline <= at < lease.deadline + 0.5, (at - lease.deadline, [t - lease.deadline for t in tries])


async def test_a_server_taken_over_from_before_it_migrated_changes_no_schema(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = (*MIGRATIONS, ("CREATE TABLE later_step (x INTEGER)",))  # a newer server's migration

    async def taken_over_first(conn: Any, *args: Any, **kwargs: Any) -> int:
        # Paused between its takeover and its migration, long enough for another server to take the database.
        side = await asyncpg.connect(postgres_url)
        try:
            await side.execute("UPDATE taskwire_owner SET epoch = epoch + 1, holder = 'gamma'")
        finally:
            await side.close()
        return await migrate(conn, later, **kwargs)

    monkeypatch.setattr(_postgres, "migrate", taken_over_first)
    store = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    with pytest.raises(StoreFenced, match=r"gamma holds it at epoch 2 \(this server held epoch 1\)"):
        await store.open()
    conn = await asyncpg.connect(postgres_url)
    try:
        made = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename IN ('later_step', 'executions')")
    finally:
        await conn.close()
    assert made == 0  # the holder's schema is as it left it
    assert await _owner(postgres_url) == ("gamma", 2)


async def test_a_takeover_waits_for_the_commit_under_way_and_the_new_holder_reads_what_it_wrote(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PostgresStore(postgres_url, holder="alpha", lease_s=30)
    await first.open()
    _pause(first)
    standby = PostgresStore(postgres_url, holder="beta", lease_s=30, standby=True)
    side = await asyncpg.connect(postgres_url)
    inside, resume = _pause_commits(monkeypatch)
    try:
        await side.execute("UPDATE taskwire_owner SET lease_until = now()")  # its lease lapsed: the holder was paused
        late = pending_execution()
        writing = asyncio.ensure_future(write(first, submit_batch(late)))
        await asyncio.wait_for(inside.wait(), 10)
        taking = asyncio.ensure_future(standby.open())
        # The standby's compare-and-set waits for the commit that checked the epoch before it.
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%taskwire_owner%'"
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 20
        while not await side.fetchval(waiting):
            assert not taking.done(), "the standby took over while the holder's commit was open"
            assert loop.time() < give_up, "the standby's takeover never waited for the open commit"
            await asyncio.sleep(0.02)
        assert not taking.done()
        resume.set()
        await asyncio.wait_for(writing, 10)  # it held the database when it checked: its commit stands
        await asyncio.wait_for(taking, 10)
        assert standby.lease.epoch == 2
        assert await standby.get_execution(late.execution.id) is not None  # read after the old holder's last commit
        with pytest.raises(StoreFenced, match="beta holds it at epoch 2"):
            await write(first, submit_batch(pending_execution()))
    finally:
        resume.set()
        await side.close()
        await first.close()
        await standby.close()


async def test_a_holder_paused_inside_its_commit_holds_up_a_takeover_for_a_lease_at_most(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await first.open()
    _pause(first)
    inside, resume = _pause_commits(monkeypatch)
    late = pending_execution()
    writing = asyncio.ensure_future(write(first, submit_batch(late)))
    await asyncio.wait_for(inside.wait(), 10)
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        # The database ends the paused session (its transaction idle longer than a lease), and the standby takes over:
        # not after the standby's statement timeout (a minute), which would end the standby instead.
        async with PostgresStore(postgres_url, holder="beta", lease_s=LEASE_S, standby=True) as standby:
            assert loop.time() - began < 4 * LEASE_S
            assert standby.lease.epoch == 2
            resume.set()
            with pytest.raises(StoreFenced, match="beta holds it at epoch 2"):
                await asyncio.wait_for(writing, 10)
            assert await standby.get_execution(late.execution.id) is None
    finally:
        resume.set()
        await first.close()


async def test_a_standby_whose_takeover_waits_longer_than_a_statement_may_looks_again(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease longer than the store's statement timeout: the paused holder's open commit outlasts the standby's
    compare-and-set, which must not end the standby."""
    first = PostgresStore(postgres_url, holder="alpha", lease_s=3)
    await first.open()
    _pause(first)
    side = await asyncpg.connect(postgres_url)
    try:
        await side.execute("UPDATE taskwire_owner SET lease_until = now()")  # its lease lapsed: the holder was paused
    finally:
        await side.close()
    inside, resume = _pause_commits(monkeypatch)
    writing = asyncio.ensure_future(write(first, submit_batch(pending_execution())))
    await asyncio.wait_for(inside.wait(), 10)
    standby = PostgresStore(postgres_url, holder="beta", lease_s=3, standby=True, command_timeout_s=1)
    try:
        await asyncio.wait_for(standby.open(), 20)
        assert standby.lease.epoch == 2
        resume.set()
        with pytest.raises(StoreFenced, match="beta holds it at epoch 2"):
            await asyncio.wait_for(writing, 10)
    finally:
        resume.set()
        await standby.close()
        await first.close()


async def test_a_standby_that_waited_on_the_holders_open_commit_gets_a_whole_lease(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its compare-and-set waited about a lease (the paused holder's open commit); the lease it takes runs from when
    it took it, not from when it began to wait: else it is lapsed at once, and a third server takes the database."""
    first = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await first.open()
    _pause(first)
    side = await asyncpg.connect(postgres_url)
    standby = await asyncpg.connect(postgres_url)
    inside, resume = _pause_commits(monkeypatch)
    await side.execute("UPDATE taskwire_owner SET lease_until = now()")  # its lease lapsed: the holder was paused
    writing = asyncio.ensure_future(write(first, submit_batch(pending_execution())))
    await asyncio.wait_for(inside.wait(), 10)
    try:
        lease = OwnerLease(holder="beta", lease_s=LEASE_S, database="db")  # the lease alone, never renewed
        await asyncio.wait_for(lease.take(standby, standby=True, refuse_after_s=0), 10)
        assert lease.epoch == 2
        left_s = await side.fetchval("SELECT extract(epoch FROM lease_until - clock_timestamp()) FROM taskwire_owner")
        assert left_s > LEASE_S / 2, left_s
        third = PostgresStore(postgres_url, holder="gamma", lease_s=LEASE_S, lock_wait_s=0.2)
        with pytest.raises(StoreInUse, match=r"beta \(epoch 2"):
            await third.open()
        await third.close()
    finally:
        resume.set()
        await asyncio.gather(writing, return_exceptions=True)
        await first.close()
        await side.close()
        await standby.close()


async def test_a_commit_longer_than_what_is_left_of_the_lease_does_not_hold_up_its_renewal(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's own commit (a slow database) must not keep its lease from being renewed: else the holder stops
    itself, though no other server could have taken the database during that commit."""
    store = PostgresStore(postgres_url, holder="alpha", lease_s=LEASE_S)
    await store.open()
    lost: list[StoreError] = []
    store.on_lost = lost.append

    async def slow(conn: Any, batches: Any, *args: Any) -> None:
        await conn.execute("SELECT pg_sleep($1)", LEASE_S * 1.5)  # a statement the database is slow to run
        await apply_rows(conn, batches, *args)

    monkeypatch.setattr(_postgres, "apply_rows", slow)
    try:
        slowly = pending_execution()
        await write(store, submit_batch(slowly))
        monkeypatch.undo()
        await write(store, submit_batch(pending_execution()))
        assert lost == []
        assert await store.get_execution(slowly.execution.id) is not None
    finally:
        await store.close()


async def test_a_slow_renewal_then_one_that_hangs_stops_the_server_as_its_lease_ends() -> None:
    loop = asyncio.get_running_loop()
    lease = OwnerLease(holder="alpha", lease_s=6.0, database="db")
    lease.epoch = 1
    lease.deadline = loop.time() + lease.lease_s  # as just after a renewal
    sent: list[float] = []

    class Database:
        async def fetchval(self, *args: Any) -> int:
            sent.append(loop.time())
            if len(sent) == 1:
                await asyncio.sleep(lease.lease_s / 2)  # slow, yet through: the lease ends a lease after it was sent
                return 1
            await asyncio.Event().wait()  # then the database stops answering
            raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[Database]:
        yield Database()

    lost: list[tuple[float, StoreError]] = []

    def on_lost(error: StoreError) -> None:
        lost.append((loop.time(), error))

    await asyncio.wait_for(keep_renewed(lease, SimpleNamespace(acquire=acquire), on_lost), 20)
    [(at, error)] = lost
    assert "could not renew the lease on the database before it ran out (TimeoutError)" in str(error)
    assert lease.deadline == pytest.approx(sent[0] + lease.lease_s, abs=0.05)
    assert lease.deadline <= at < lease.deadline + 0.5, (at - lease.deadline, [t - lease.deadline for t in sent])
