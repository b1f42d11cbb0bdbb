"""What a replica's commits announce to the other replicas (LISTEN/NOTIFY), debounced.

A commit that wrote events names their executions on `taskwire_history`; one that wrote PENDING task runs
names their handlers on `taskwire_ready`; one that wrote or deleted schedules says so on
`taskwire_schedules`. The announcements of every commit are gathered and sent after the commits, at most
once per `ANNOUNCE_S` per replica, in one statement of their own: a NOTIFY inside each commit transaction
would take PostgreSQL's notification queue lock at every commit of every replica, and every listener would
wake for every commit (measured: three replicas ran 30–40% slower so). A notification only wakes others up
to read what is committed, so it comes after the commit, and one that is lost (the server died in between)
is made up for by the readers' polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Final

from ._postgres_text import to_db
from ._sqlite_codec import Rows

log = logging.getLogger("taskwire.server.store")

HISTORY_CHANNEL: Final = "taskwire_history"
READY_CHANNEL: Final = "taskwire_ready"
SCHEDULES_CHANNEL: Final = "taskwire_schedules"
ANNOUNCE_S: Final = 0.02  # the longest an announcement waits for others to go with it
_HISTORY_LIMIT: Final = 7000  # bytes of ids in one notification (PostgreSQL takes 8,000); past it, "*"


def announcements(group: Sequence[Rows]) -> tuple[list[str], list[str], bool]:
    """The executions that got events in `group`, the handlers of its task runs written PENDING, and whether it
    wrote or deleted schedules."""
    ids = list(dict.fromkeys(row["execution_id"] for rows in group for row in rows.events))
    handlers = list(
        dict.fromkeys(
            row["handler"]
            for rows in group
            for row in (*rows.new_task_runs, *rows.task_runs)
            if row["state"] == "PENDING"
        )
    )
    return ids, handlers, any(rows.schedules or rows.schedule_updates or rows.deleted_schedules for rows in group)


class Announcer:
    """Gathers the announcements of commits (`add`) and sends them through `pool` (`run`, a task of its own)."""

    def __init__(self) -> None:
        self._ids: dict[str, None] = {}
        self._handlers: dict[str, None] = {}
        self._schedules = False
        self._due = asyncio.Event()

    def add(self, group: Sequence[Rows]) -> None:
        ids, handlers, schedules = announcements(group)
        if ids or handlers or schedules:
            self._ids.update(dict.fromkeys(ids))
            self._handlers.update(dict.fromkeys(handlers))
            self._schedules = self._schedules or schedules
            self._due.set()

    async def run(self, pool: Any) -> None:
        while True:
            await self._due.wait()
            await asyncio.sleep(ANNOUNCE_S)  # what the next commits announce goes along
            self._due.clear()
            ids, self._ids = list(self._ids), {}
            handlers, self._handlers = list(self._handlers), {}
            channels = [READY_CHANNEL] * len(handlers)
            payloads = [to_db(handler) for handler in handlers]  # a NUL ends a payload: `heard` maps them back
            if self._schedules:
                self._schedules = False
                channels.append(SCHEDULES_CHANNEL)
                payloads.append("")
            if ids:
                history = ",".join(to_db(execution_id) for execution_id in ids)
                channels.append(HISTORY_CHANNEL)
                payloads.append(history if len(history.encode()) <= _HISTORY_LIMIT else "*")
            try:
                async with pool.acquire() as conn:
                    await conn.execute(
                        "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS u(c, p)", channels, payloads
                    )
            except Exception as error:  # the readers' polls make up for it
                log.debug("announcing to the other replicas failed: %s", error)
