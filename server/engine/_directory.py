"""The worker directory: the connected workers an operator lists and drains, across replicas.

On a single server this is the worker pool's connected sessions. A replica also publishes its own in the
store (`publish`, which its replica loop calls every half second: written when a worker connected, left,
drains or its attempts in flight changed, and every `REFRESH_S` for when they were last heard from), lists
those the other live replicas published beside its own, and drains a worker connected elsewhere by mailing
its replica a `drain` naming the worker's instance (`drain_here` there: its sessions of that instance drain,
and so does one it opens next, as on one server). A worker listed from another replica is as that replica
last published it; a mailed drain's grace counts from when its replica reads the mail.

May use: the worker pool, the replica store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Final

from taskwire.server.domain import NotFound
from taskwire.server.store import ReplicaStore

from ._sessions import WorkerView, is_named
from ._workers import WorkerPool

log = logging.getLogger(__name__)

# A replica publishes its workers at least this often, so that their last-seen times stay near the truth; any other
# change is published when its replica loop next looks.
REFRESH_S: Final = 5.0


def _order(view: WorkerView) -> tuple[str, str]:
    return view.name, view.session_id


def _body(view: WorkerView) -> dict[str, Any]:
    return {
        "identity": view.identity,
        "session_id": view.session_id,
        "instance_id": view.instance_id,
        "name": view.name,
        "handlers": list(view.handlers),
        "slots": view.slots,
        "in_flight": view.in_flight,
        "labels": dict(view.labels),
        "agent_version": view.agent_version,
        "connected_at": view.connected_at.isoformat(),
        "last_seen_at": view.last_seen_at.isoformat(),
        "draining": view.draining,
    }


def _view(replica: str, body: dict[str, Any]) -> WorkerView:
    """A worker another replica published (ValueError, KeyError or TypeError when `body` is not one)."""
    return WorkerView(
        session_id=str(body["session_id"]),
        instance_id=str(body["instance_id"]),
        name=str(body["name"]),
        handlers=tuple(str(handler) for handler in body["handlers"]),
        slots=int(body["slots"]),
        in_flight=int(body["in_flight"]),
        labels={str(key): str(value) for key, value in body["labels"].items()},
        agent_version=str(body["agent_version"]),
        connected_at=datetime.fromisoformat(body["connected_at"]),
        last_seen_at=datetime.fromisoformat(body["last_seen_at"]),
        draining=bool(body["draining"]),
        replica=replica,
        identity=str(body.get("identity", "")),
    )


class WorkerDirectory:
    def __init__(self, *, pool: WorkerPool, replica_store: ReplicaStore | None) -> None:
        self._pool = pool
        self._replica_store = replica_store  # None: a single server
        self._replica = "" if replica_store is None else replica_store.replica
        self._published: list[dict[str, Any]] | None = None  # as last published, less what `REFRESH_S` covers
        self._published_at = 0.0

    def here(self) -> list[WorkerView]:
        """The workers connected to this server, by name then session id."""
        return sorted((WorkerView.of(session, self._replica) for session in self._pool.connected()), key=_order)

    async def everywhere(self) -> list[WorkerView]:
        """Those connected here, and on a replica those the other live replicas published, by name then session id."""
        return sorted([*self.here(), *await self._elsewhere()], key=_order)

    async def _elsewhere(self) -> list[WorkerView]:
        if self._replica_store is None:
            return []
        views = []
        for replica, bodies in (await self._replica_store.workers_elsewhere()).items():
            for body in bodies:
                try:
                    views.append(_view(replica, body))
                except (KeyError, ValueError, TypeError, AttributeError) as error:
                    log.warning("a worker replica %s published is not understood (%r): left out", replica, error)
        return views

    async def drain(self, *, name: str, session_id: str, grace: timedelta | None, reason: str) -> list[WorkerView]:
        """Drain every connected worker with that name (or the one session, or both must match), here and, on a
        replica, on the others (mailed); the workers told, by name then session id. NotFound when none matches."""
        elsewhere = [view for view in await self._elsewhere() if is_named(view, name, session_id)]  # read first
        drained = self._pool.drain(name=name, session_id=session_id, grace=grace, reason=reason)
        here = [WorkerView.of(session, self._replica) for session in drained]
        if elsewhere:
            await self._mail_drains(elsewhere, grace, reason)
        told = [*here, *(dataclasses.replace(view, draining=True) for view in elsewhere)]
        if not told:
            if session_id:
                raise NotFound("connected worker", session_id, key="session id")
            raise NotFound("connected worker", name, key="name")
        return sorted(told, key=_order)

    async def _mail_drains(self, views: list[WorkerView], grace: timedelta | None, reason: str) -> None:
        by_replica: dict[str, list[dict[str, str]]] = defaultdict(list)
        for view in views:
            by_replica[view.replica].append({"instance": view.instance_id, "identity": view.identity})
        await asyncio.gather(*(self.mail_drain(to, workers, grace, reason) for to, workers in by_replica.items()))

    async def mail_drain(self, to: str, workers: list[dict[str, str]], grace: timedelta | None, reason: str) -> None:
        """Mail replica `to` a drain of the worker instances of `workers` ({"instance", "identity"} each)."""
        assert self._replica_store is not None  # only a replica mails
        grace_us = None if grace is None else grace // timedelta(microseconds=1)
        await self._replica_store.send(to, "drain", {"workers": workers, "grace_us": grace_us, "reason": reason})

    def drain_here(self, body: dict[str, Any]) -> None:
        """Another replica's `drain` mail: the named worker instances drain here, now and on their next stream."""
        grace_us = body.get("grace_us")
        grace = None if grace_us is None else timedelta(microseconds=int(grace_us))
        for worker in body["workers"]:
            self._pool.drain_instance(str(worker["instance"]), str(worker["identity"]), grace, str(body["reason"]))

    async def publish(self, now_s: float) -> None:
        """On a replica: store the workers connected here for the others, when anything but their last-seen times
        changed, or `REFRESH_S` after the last time (`now_s`: monotonic seconds)."""
        if self._replica_store is None:
            return
        bodies = [_body(view) for view in self.here()]
        lasting = [{key: value for key, value in body.items() if key != "last_seen_at"} for body in bodies]
        if lasting == self._published and now_s - self._published_at < REFRESH_S:
            return
        await self._replica_store.publish_workers(bodies)
        self._published, self._published_at = lasting, now_s
