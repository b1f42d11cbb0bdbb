"""The worker directory: the connected workers an operator lists and drains, across replicas.

On a single server this is the worker pool's connected sessions. A replica also publishes its own in the
store (`publish`, which its replica loop calls every half second: written when a worker connected, left,
drains or its attempts in flight changed, and every `REFRESH_S` for when they were last heard from), lists
those the other live replicas published beside its own, and drains a worker connected elsewhere by mailing
its replica a `drain` naming the worker's instance (`drain_here` there: its sessions of that instance drain,
and so does one it opens next, as on one server). A worker listed from another replica is as that replica
last published it; a drain passed between replicas (mailed or published) says when it was asked, and its grace
counts from then, on the asking replica's wall clock: replicas' clocks are taken to be in step, as NTP keeps them.

A replica publishes the drains it keeps for worker instances too (`_drains`). A worker whose Drain died with its
stream may come back to another replica: each pass (`look`), a session new here whose instance another replica
keeps a drain for learns it. When a drained worker finishes and ends its stream,
every other replica that publishes a drain of its instance (and the one it was learned from) is mailed
`drain_done` with when it finished (`drain_done_here` there: the drains of it asked before are done), so that a
process restarted under that instance id is not drained.

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

from ._clock import Clock, aware
from ._drains import Drain, DrainAsked, DrainFinished
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


def _terms(drain: Drain) -> dict[str, Any]:
    grace, reason, asked_at = drain
    grace_us = None if grace is None else grace // timedelta(microseconds=1)
    return {"grace_us": grace_us, "reason": reason, "asked_at": asked_at.isoformat()}


def _drain_body(instance_id: str, identity: str, asked: DrainAsked) -> dict[str, Any]:
    return {"instance": instance_id, "identity": identity, **_terms(asked.terms)}


def _grace(body: dict[str, Any]) -> timedelta | None:
    grace_us = body["grace_us"]
    return None if grace_us is None else timedelta(microseconds=int(grace_us))


def _drain(body: dict[str, Any]) -> Drain:
    """A drain another replica published or mailed: its grace, reason and when it was asked (ValueError, KeyError
    or TypeError when `body` is not one)."""
    return _grace(body), str(body["reason"]), aware(body["asked_at"], "asked_at")


def _drain_key(body: object) -> tuple[object, object] | None:
    return (body.get("instance"), body.get("identity")) if isinstance(body, dict) else None


class WorkerDirectory:
    def __init__(self, *, pool: WorkerPool, replica_store: ReplicaStore | None, clock: Clock) -> None:
        self._pool = pool
        self._clock = clock
        self._replica_store = replica_store  # None: a single server
        self._replica = "" if replica_store is None else replica_store.replica
        self._published: dict[str, Any] | None = None  # as last published, less what `REFRESH_S` covers
        self._published_at = 0.0
        self._looked_at: set[str] = set()  # the sessions connected here whose drains elsewhere were looked for

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
        drained = self._pool.drains.by_name(name=name, session_id=session_id, grace=grace, reason=reason)
        here = [WorkerView.of(session, self._replica) for session in drained]
        if elsewhere:
            await self._mail_drains(elsewhere, (grace, reason, self._clock.now()))
        told = [*here, *(dataclasses.replace(view, draining=True) for view in elsewhere)]
        if not told:
            if session_id:
                raise NotFound("connected worker", session_id, key="session id")
            raise NotFound("connected worker", name, key="name")
        return sorted(told, key=_order)

    async def _mail_drains(self, views: list[WorkerView], drain: Drain) -> None:
        by_replica: dict[str, list[dict[str, str]]] = defaultdict(list)
        for view in views:
            by_replica[view.replica].append({"instance": view.instance_id, "identity": view.identity})
        await asyncio.gather(*(self.mail_drain(to, workers, drain) for to, workers in by_replica.items()))

    async def mail_drain(self, to: str, workers: list[dict[str, str]], drain: Drain) -> None:
        """Mail replica `to` a drain of the worker instances of `workers` ({"instance", "identity"} each)."""
        assert self._replica_store is not None  # only a replica mails
        await self._replica_store.send(to, "drain", {"workers": workers, **_terms(drain)})

    def drain_here(self, body: dict[str, Any]) -> None:
        """Another replica's `drain` mail: the named worker instances drain here, now and on their next stream, with
        the grace left since it was asked (unless they finished a drain since)."""
        # A replica of an earlier version does not say when it was asked: asked now.
        drain = _drain(body) if "asked_at" in body else (_grace(body), str(body["reason"]), self._clock.now())
        for worker in body["workers"]:
            self._pool.drains.learn(str(worker["instance"]), str(worker["identity"]), drain, "")

    def drain_done_here(self, body: dict[str, Any]) -> None:
        """Another replica's `drain_done` mail: a worker instance finished a drain there at `finished_at`."""
        self._pool.drains.done(str(body["instance"]), str(body["identity"]), aware(body["finished_at"], "finished_at"))

    async def look(self, now_s: float) -> None:
        """On a replica, the replica loop's pass: publish (`publish`), tell the replicas drains were learned from
        that their workers finished them, and let each session new here learn a drain kept elsewhere."""
        if self._replica_store is None:
            return
        await self.publish(now_s)
        finished = self._pool.drains.kept.take_finished()
        try:
            if finished:
                await self._tell_finished(finished)
        finally:
            self._pool.drains.kept.finished_again(finished)  # what the store failed on goes with the next pass
        await self._learn_drains()

    async def _tell_finished(self, finished: list[DrainFinished]) -> None:
        """Mail each drain's end to the replicas that publish a copy of it, and to the one it was learned from;
        `finished` keeps what is not told yet."""
        assert self._replica_store is not None
        published = await self._replica_store.drains_elsewhere()
        while finished:
            (instance_id, identity), at, origin = finished[0].key, finished[0].at, finished[0].origin
            keeping = {origin} - {""}
            for replica, bodies in published.items():
                if any(_drain_key(body) == (instance_id, identity) for body in bodies):
                    keeping.add(replica)
            done = {"instance": instance_id, "identity": identity, "finished_at": at.isoformat()}
            for replica in sorted(keeping):
                await self._replica_store.send(replica, "drain_done", done)
            del finished[0]

    async def _learn_drains(self) -> None:
        assert self._replica_store is not None
        connected = {session.session_id: session for session in self._pool.connected()}
        new = {
            (s.instance_id, s.identity) for id_, s in connected.items() if id_ not in self._looked_at and not s.draining
        }
        if new:
            await self._learn_drains_of(new)
        self._looked_at = set(connected)  # once read (a store failure: looked for again with the next pass)

    async def _learn_drains_of(self, new: set[tuple[str, str]]) -> None:
        assert self._replica_store is not None
        for replica, bodies in (await self._replica_store.drains_elsewhere()).items():
            for body in bodies:
                try:
                    key, drain = (str(body["instance"]), str(body["identity"])), _drain(body)
                except (KeyError, ValueError, TypeError) as error:
                    log.warning("a drain replica %s published is not understood (%r): left out", replica, error)
                    continue
                if key in new and self._pool.drains.learn(*key, drain, replica):
                    log.info("worker instance %s was asked to drain on replica %s: told here", key[0], replica)

    async def publish(self, now_s: float) -> None:
        """On a replica: store the workers connected here and the drains kept here for the others, when anything
        but the workers' last-seen times changed, or `REFRESH_S` after the last time (`now_s`: monotonic seconds)."""
        if self._replica_store is None:
            return
        bodies = [_body(view) for view in self.here()]
        drains = [_drain_body(*key, asked) for key, asked in self._pool.drains.standing()]
        lasting = {
            "workers": [{key: value for key, value in body.items() if key != "last_seen_at"} for body in bodies],
            "drains": drains,
        }
        if lasting == self._published and now_s - self._published_at < REFRESH_S:
            return
        await self._replica_store.publish_workers(bodies, drains)
        self._published, self._published_at = lasting, now_s
