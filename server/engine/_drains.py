"""Operators' drains, by worker instance: told again on the instance's next stream.

A Drain goes down the worker's stream. When that stream was already dead (half-open, or broken as the
Drain was queued) the worker never got it; its next hello names the same instance (and credential). So
a drain is kept by instance while its grace and one lease after it last (one lease when the grace is the
worker's own), and each new session of the instance is told it, with what is left of the grace. A drained
worker that ends its stream itself has finished: its drain is forgotten (a process restarted under a fixed
instance id is not drained again). A drain asked again keeps the one that ends first:
a drain's grace may shorten, never lengthen.

Across replicas (`_directory`), each replica publishes the drains it keeps, and one that a worker instance
reaches after its drain died on another replica's stream `learn`s it there. When that worker then finishes
and ends its stream, the replicas that keep a copy are told (`take_finished`; there, `done`), and a drain this
one saw finish is not learned again.

May use: nothing (time is passed in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

# An operator's drain as replicas pass it on (mailed or published): its grace, its reason, when it was asked.
Drain = tuple[timedelta | None, str, datetime]


@dataclass(frozen=True, slots=True)
class DrainAsked:
    """An operator's drain: its grace (None: the worker's own drain timeout) counts from `at_s` (monotonic), the
    moment `at` on the wall clock (how other replicas learn it); `origin`: the replica it was learned from."""

    grace: timedelta | None
    reason: str
    at_s: float
    at: datetime
    origin: str = ""

    def ends_s(self) -> float:
        return math.inf if self.grace is None else self.at_s + self.grace.total_seconds()

    def kept_until_s(self, lease_s: float) -> float:
        """A lease after its grace ends (after it was asked, when the grace is the worker's own)."""
        return (self.at_s if self.grace is None else self.ends_s()) + lease_s

    @property
    def terms(self) -> Drain:
        """As replicas pass it on: its grace, its reason, when it was asked."""
        return self.grace, self.reason, self.at

    def grace_left(self, now_s: float) -> timedelta | None:
        if self.grace is None:
            return None
        return max(self.grace - timedelta(seconds=now_s - self.at_s), timedelta(0))


Key = tuple[str, str]  # (instance id, identity)


@dataclass(frozen=True, slots=True)
class DrainFinished:
    """A drained worker instance ended its stream itself at `at` (wall clock): every drain of it asked before is
    done. Kept until `kept_until_s` (monotonic), as long as the drain it finished would have stood."""

    key: Key
    at: datetime
    kept_until_s: float
    origin: str  # the replica the finished drain was learned from ("" when asked of this one)


class Drains:
    def __init__(self, lease_s: float) -> None:
        self._lease_s = lease_s
        self._asked: dict[Key, DrainAsked] = {}  # the drain that stands
        self._last_asked: dict[Key, datetime] = {}  # when a drain of the instance was last asked, while one stands
        self._finished: dict[Key, DrainFinished] = {}  # when each instance last finished a drain
        self._finished_here: list[DrainFinished] = []  # to tell the other replicas that keep a copy

    def ask(self, instance_id: str, identity: str, asked: DrainAsked) -> DrainAsked:
        """Keep the drain asked of the instance; the one that stands (the earlier asked, if it ends first)."""
        if not instance_id:
            return asked
        self._forget_ended(asked.at_s)
        key = (instance_id, identity)
        earlier = self._asked.get(key)
        self._last_asked[key] = max(self._last_asked.get(key, asked.at), asked.at)
        if earlier is not None and earlier.ends_s() <= asked.ends_s():
            return earlier
        self._asked[key] = asked
        return asked

    def of(self, instance_id: str, identity: str, now_s: float) -> DrainAsked | None:
        """The drain asked of the instance that still stands at `now_s`, if any."""
        self._forget_ended(now_s)
        return self._asked.get((instance_id, identity)) if instance_id else None

    def learn(self, instance_id: str, identity: str, asked: DrainAsked) -> DrainAsked | None:
        """A drain another replica keeps for the instance: kept here as if asked here (`ask`), unless it has
        ended or the instance finished a drain since it was asked. Returns the drain that stands, or None."""
        finished = self._finished.get((instance_id, identity))
        if (finished is not None and asked.at <= finished.at) or not instance_id:
            return None
        return self.ask(instance_id, identity, asked)

    def standing(self, now_s: float) -> list[tuple[Key, DrainAsked]]:
        """Every drain that stands at `now_s`, by instance id and identity."""
        self._forget_ended(now_s)
        return sorted(self._asked.items(), key=lambda item: item[0])

    def forget(self, instance_id: str, identity: str, at: datetime) -> None:
        """The instance drained and closed its stream itself at `at`: a new process under its id starts afresh."""
        key = (instance_id, identity)
        asked = self._asked.pop(key, None)
        self._last_asked.pop(key, None)
        if asked is not None:
            finished = DrainFinished(key, at, asked.kept_until_s(self._lease_s), asked.origin)
            self._finished[key] = finished
            self._finished_here.append(finished)

    def done(self, instance_id: str, identity: str, at: datetime, now_s: float) -> None:
        """Another replica saw the instance finish a drain at `at`: the drain kept here goes if every drain of the
        instance was asked before, and one learned later that was asked before is not kept."""
        key = (instance_id, identity)
        if key in self._asked and self._last_asked.get(key, self._asked[key].at) <= at:
            del self._asked[key]
            self._last_asked.pop(key, None)
        earlier = self._finished.get(key)
        if earlier is None or earlier.at < at:
            kept_until_s = (
                now_s + self._lease_s if earlier is None else max(earlier.kept_until_s, now_s + self._lease_s)
            )
            self._finished[key] = DrainFinished(key, at, kept_until_s, "")

    def take_finished(self) -> list[DrainFinished]:
        """The drains whose worker finished here since the last call."""
        taken, self._finished_here = self._finished_here, []
        return taken

    def finished_again(self, finished: list[DrainFinished]) -> None:
        """Those of `take_finished` whose end could not be told yet: given by its next call."""
        self._finished_here[:0] = finished

    def _forget_ended(self, now_s: float) -> None:
        for key, asked in list(self._asked.items()):
            if now_s > asked.kept_until_s(self._lease_s):
                del self._asked[key]
                self._last_asked.pop(key, None)
        for key, finished in list(self._finished.items()):
            if now_s > finished.kept_until_s:
                del self._finished[key]
        # Past that, no copy of what they finished stands anywhere: nothing left to tell (bounded on one server,
        # where no replica loop takes them).
        self._finished_here = [finished for finished in self._finished_here if now_s <= finished.kept_until_s]
