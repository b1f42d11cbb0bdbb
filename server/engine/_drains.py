"""Operators' drains, by worker instance: told again on the instance's next stream.

A Drain goes down the worker's stream. When that stream was already dead (half-open, or broken as the
Drain was queued) the worker never got it; its next hello names the same instance (and credential). So
a drain is kept by instance while its grace and one lease after it last (one lease when the grace is the
worker's own), and each new session of the instance is told it, with what is left of the grace. A drained
worker that ends its stream itself has finished: its drain is forgotten (a process restarted under a fixed
instance id is not drained again). A drain asked again keeps the one that ends first:
a drain's grace may shorten, never lengthen.

May use: nothing (time is passed in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class DrainAsked:
    """An operator's drain: its grace (None: the worker's own drain timeout) counts from `at_s` (monotonic)."""

    grace: timedelta | None
    reason: str
    at_s: float

    def ends_s(self) -> float:
        return math.inf if self.grace is None else self.at_s + self.grace.total_seconds()

    def kept_until_s(self, lease_s: float) -> float:
        """A lease after its grace ends (after it was asked, when the grace is the worker's own)."""
        return (self.at_s if self.grace is None else self.ends_s()) + lease_s

    def grace_left(self, now_s: float) -> timedelta | None:
        if self.grace is None:
            return None
        return max(self.grace - timedelta(seconds=now_s - self.at_s), timedelta(0))


class Drains:
    def __init__(self, lease_s: float) -> None:
        self._lease_s = lease_s
        self._asked: dict[tuple[str, str], DrainAsked] = {}  # (instance id, identity) -> the drain that stands

    def ask(self, instance_id: str, identity: str, asked: DrainAsked) -> DrainAsked:
        """Keep the drain asked of the instance; the one that stands (the earlier asked, if it ends first)."""
        if not instance_id:
            return asked
        self._forget_ended(asked.at_s)
        key = (instance_id, identity)
        earlier = self._asked.get(key)
        if earlier is not None and earlier.ends_s() <= asked.ends_s():
            return earlier
        self._asked[key] = asked
        return asked

    def of(self, instance_id: str, identity: str, now_s: float) -> DrainAsked | None:
        """The drain asked of the instance that still stands at `now_s`, if any."""
        self._forget_ended(now_s)
        return self._asked.get((instance_id, identity)) if instance_id else None

    def forget(self, instance_id: str, identity: str) -> None:
        """The instance drained and closed its stream itself: a new process under its id starts afresh."""
        self._asked.pop((instance_id, identity), None)

    def _forget_ended(self, now_s: float) -> None:
        for key, asked in list(self._asked.items()):
            if now_s > asked.kept_until_s(self._lease_s):
                del self._asked[key]
