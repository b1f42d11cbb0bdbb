"""What the schedule tests share: the executions a schedule started, read back through the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from taskwire.client import Client, ExecutionSnapshot
from taskwire.common import FIRE_TIME_LABEL, SCHEDULE_LABEL
from tests.harness import ServerProcess, wait_for


@contextmanager
def sdk(server: ServerProcess) -> Iterator[Client]:
    with Client(server.address) as client:
        yield client


def started_by(client: Client, name: str) -> list[ExecutionSnapshot]:
    """The executions the schedule started, by fire time (then creation)."""
    mine = [s for s in client.list(limit=10_000) if s.execution.metadata.get(SCHEDULE_LABEL) == name]
    return sorted(mine, key=lambda s: (fire_time(s), s.execution.created_at))


def fire_time(snapshot: ExecutionSnapshot) -> datetime:
    return datetime.fromisoformat(snapshot.execution.metadata[FIRE_TIME_LABEL].replace("Z", "+00:00"))


def wait_for_fires(client: Client, name: str, count: int, *, timeout_s: float = 30.0) -> None:
    """Until the schedule has started or skipped `count` fires in all."""
    wait_for(
        lambda: (info := client.get_schedule(name)).fired + info.skipped >= count,
        timeout_s=timeout_s,
        what=f"{count} fires of schedule {name}",
    )


def wait_until_finished(client: Client, name: str, *, timeout_s: float = 30.0) -> list[ExecutionSnapshot]:
    """Every execution of the schedule, once all have ended."""

    def finished() -> list[ExecutionSnapshot] | None:
        found = started_by(client, name)
        return found if found and all(s.is_terminal for s in found) else None

    return wait_for(finished, timeout_s=timeout_s, what=f"the executions of schedule {name} to finish")
