"""Operators' drains told to worker sessions: by name (`by_name`), by instance (a drain mailed or published by
another replica, `learn`), and again on a drained instance's next stream (`tell_again`); the drains that stand
are kept in `_drains`, and a worker that finished its drain (`finished`) is not drained again.

A drained session gets no new work and is told to finish what it runs within the grace (None: the worker's own
drain timeout), then hang up; its held attempts keep their lease and report as usual.

May use: the clock, the drains kept, the connected sessions (passed in).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from taskwire.server.domain import ValidationError

from ._clock import Clock
from ._drains import Drain, DrainAsked, Drains
from ._sessions import WorkerSession, is_named

log = logging.getLogger(__name__)


class OperatorDrains:
    def __init__(self, *, lease_s: float, clock: Clock, connected: Callable[[], list[WorkerSession]]) -> None:
        self._clock = clock
        self._connected = connected
        self.kept = Drains(lease_s)  # the drains that stand, told again on an instance's next stream

    def tell_again(self, session: WorkerSession) -> None:
        """A new session: a drain that stands for its instance is told to it (its earlier stream may have died with
        the Drain on it)."""
        asked = self.kept.of(session.instance_id, session.identity, self._clock.monotonic())
        if asked is not None:
            log.info("worker %s was asked to drain before this stream: told again", session.name)
            self._ask(session, asked)

    def finished(self, session: WorkerSession) -> None:
        """The drained session's worker ended its stream itself: it has finished, and its drain is done."""
        self.kept.forget(session.instance_id, session.identity, self._clock.now())

    def by_name(self, *, name: str, session_id: str, grace: timedelta | None, reason: str) -> list[WorkerSession]:
        """An operator drains a worker: every connected session with that name (or the one session, or
        both must match) gets no new work from now on and is told to finish what it runs within `grace`
        (None: the worker's own drain timeout), then hang up. Its held attempts keep their lease and
        report as usual. Returns the sessions told (none may match)."""
        if not name and not session_id:
            raise ValidationError("name", "a worker name or session_id is required")
        asked = DrainAsked(grace, reason, self._clock.monotonic(), self._clock.now())
        return self._each(lambda session: is_named(session, name, session_id), asked)

    def learn(self, instance_id: str, identity: str, drain: Drain, origin: str) -> bool:
        """A drain of the worker instance (its grace, reason and when it was asked) asked through another replica
        (mailed), or kept by replica `origin` (published), whose stream there may have died with the Drain on it:
        kept here as if asked here at that moment, so that its sessions here are told, and one it opens within the
        drain's grace and a lease is told too. Whether it stands (not ended, not finished since it was asked)."""
        grace, reason, at = drain
        now, now_s = self._clock.now(), self._clock.monotonic()
        asked = DrainAsked(grace, reason, now_s - max((now - at).total_seconds(), 0.0), at, origin)
        if self.kept.learn(instance_id, identity, asked) is None or self.kept.of(instance_id, identity, now_s) is None:
            return False
        self._each(lambda session: session.is_instance(instance_id, identity), asked)
        return True

    def _each(self, picked: Callable[[WorkerSession], bool], asked: DrainAsked) -> list[WorkerSession]:
        sessions = [session for session in self._connected() if picked(session)]
        for session in sessions:
            self._ask(session, asked)
            log.info("worker %s (session %s) asked to drain: %s", session.name, session.session_id, asked.reason)
        return sessions

    def done(self, instance_id: str, identity: str, at: datetime) -> None:
        """Another replica saw the worker instance finish a drain at `at`: drains of it asked before are done."""
        self.kept.done(instance_id, identity, at, self._clock.monotonic())

    def standing(self) -> list[tuple[tuple[str, str], DrainAsked]]:
        """Every operator's drain kept now, by instance id and identity."""
        return self.kept.standing(self._clock.monotonic())

    def standing_for(self, instance_id: str, identity: str) -> Drain | None:
        """The operator's drain that stands for the worker instance, if any."""
        asked = self.kept.of(instance_id, identity, self._clock.monotonic())
        return None if asked is None else asked.terms

    def _ask(self, session: WorkerSession, asked: DrainAsked) -> None:
        """Tell the session to drain; the drain kept for its instance is the one that ends first."""
        asked = self.kept.ask(session.instance_id, session.identity, asked)
        session.draining = True
        if session.link is not None:
            session.link.drain(asked.grace_left(self._clock.monotonic()), asked.reason)
