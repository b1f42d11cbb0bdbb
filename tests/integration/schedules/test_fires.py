"""A schedule every second, on a real server with a real worker: fires on time, and across a graceful
restart and a kill -9 it never fires twice and misses nothing within its catch-up window."""

from __future__ import annotations

import functools
from collections import Counter
from datetime import UTC, datetime, timedelta

from taskwire.client import Client, OverlapPolicy, State
from tests.harness import BOTH_STORES, Cluster, wait_for
from tests.integration.client.conftest import Cli
from tests.integration.schedules.support import fire_time, sdk, wait_for_fires, wait_until_finished

ON_TIME = timedelta(seconds=1)  # a fire's execution is created within this of its fire time


def fired_after(client: Client, moment: datetime, name: str = "tick") -> bool:
    last = client.get_schedule(name).last_fire_time
    return last is not None and last >= moment


@BOTH_STORES
def test_every_second_on_time_across_a_graceful_restart_and_a_kill(procs: Cluster) -> None:
    server = procs.server()
    procs.worker(server)
    downtimes: list[tuple[datetime, datetime]] = []
    with sdk(server) as client:
        created = client.create_schedule(
            "tick",
            "* * * * * *",
            "echo",
            {"n": 1},
            catch_up_window=timedelta(seconds=60),
            overlap=OverlapPolicy.ALLOW_ALL,
        )
        assert len(created.next_fire_times) == 5
        wait_for_fires(client, "tick", 3)

    for stop in ("SIGTERM", "SIGKILL"):
        went_down = datetime.now(UTC)
        if stop == "SIGTERM":
            assert server.process.stop() == 0
        else:
            server.process.kill()
        server = procs.server_at(server.address)
        up = datetime.now(UTC)
        downtimes.append((went_down, up))
        with sdk(server) as client:  # made up what fell due while it was down, then on time for 3 s
            wait_for(functools.partial(fired_after, client, up + 3 * ON_TIME), what="fires after the restart")

    with sdk(server) as client:
        client.pause_schedule("tick")
        info = client.get_schedule("tick")
        executions = wait_until_finished(client, "tick")

    times = [fire_time(snapshot) for snapshot in executions]
    assert [t for t, n in Counter(times).items() if n > 1] == [], "a fire time started two executions"
    assert len({s.execution.idempotency_key for s in executions}) == len(executions)
    # Every second from the first fire to the last has its execution: nothing missed within the window.
    seconds = round((times[-1] - times[0]).total_seconds())
    assert times == [times[0] + timedelta(seconds=n) for n in range(seconds + 1)]
    assert (info.fired, info.missed, info.skipped) == (len(executions), 0, 0)
    assert all(s.state is State.SUCCESS for s in executions)
    for snapshot, at in zip(executions, times, strict=True):
        delay = snapshot.execution.created_at - at
        assert delay >= timedelta(0), "an execution was created before its fire time"
        made_up = any(down - ON_TIME <= at <= up + ON_TIME for down, up in downtimes)
        assert made_up or delay < ON_TIME, f"the fire of {at} started {delay.total_seconds():.3f}s late"
    assert sum(1 for s, at in zip(executions, times, strict=True) if s.execution.created_at - at < ON_TIME) >= 6


@BOTH_STORES
def test_fires_older_than_the_catch_up_window_are_counted_missed_and_shown(procs: Cluster) -> None:
    server = procs.server()
    procs.worker(server)
    with sdk(server) as client:
        client.create_schedule("strict", "* * * * * *", "echo", catch_up_window=timedelta(0))
        wait_for_fires(client, "strict", 1)
    server.process.kill()
    went_down = datetime.now(UTC)
    # The server stays down for three whole fire times (a deliberate outage, not a wait for something).
    wait_for(lambda: datetime.now(UTC) >= went_down + 3 * ON_TIME, what="three seconds of downtime")
    server = procs.server_at(server.address)
    up = datetime.now(UTC)
    with sdk(server) as client:
        wait_for(functools.partial(fired_after, client, up + ON_TIME, "strict"), what="a fire after the restart")
        client.pause_schedule("strict")
        info = client.get_schedule("strict")
        executions = wait_until_finished(client, "strict")
    times = [fire_time(snapshot) for snapshot in executions]
    lost = [t for t in times if went_down + ON_TIME < t < up - 2 * ON_TIME]  # it starts a little before `up`
    assert lost == [], "a fire older than the window was started"
    assert info.missed >= 2
    assert info.fired == len(executions)
    shown = Cli(server.address)("schedule", "get", "strict")
    assert f"{info.fired} / {info.missed} / {info.skipped}" in shown.stdout
