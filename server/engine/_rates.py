"""Rate limits: named token buckets defined on the server, which tasks name (optionally with a key: a bucket
per key).

A dispatch of a task run with a rate limit takes a token from its bucket. When
the bucket is empty (or others already wait for it), the task run leaves the
ready queue and waits `WAITING(RATE_LIMITED)` in the bucket's line; each time a
token is back, the first in line is granted it (held for it: a reservation) and
becomes PENDING, and its dispatch spends the reservation. A bucket refills at
`rate` tokens per second up to `burst`, counting reservations as tokens it
holds, so over any window of T seconds a bucket's dispatches are at most
`burst + rate * T`.

A bucket starts full (`burst` tokens) when first used. In memory only: a
restart starts every bucket full again (recovery puts the waiting task runs
back in line, in the order they began to wait).

May use: the domain (records), the timers (when a bucket has its next token),
the engine clock (monotonic), and one hook: give the task run waiting in line
its token (`admit`), which makes it PENDING.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from taskwire.common import RateLimitStats
from taskwire.server._config import RateLimit
from taskwire.server.domain import ReasonCode, State, TaskRun

from ._timers import Timers


@dataclass(eq=False)
class _Bucket:
    limit: RateLimit
    tokens: float
    at: float  # when `tokens` was last brought up to date
    reserved: set[str] = field(default_factory=set)  # task runs granted a token, not dispatched yet
    line: deque[str] = field(default_factory=deque)

    def refill(self, now: float) -> None:
        room = self.limit.burst - len(self.reserved)
        self.tokens = min(max(room, 0), self.tokens + (now - self.at) * self.limit.rate)
        self.at = now

    def next_token_in(self) -> float:
        """Seconds until one whole token is in the bucket (it may be later: reservations take room)."""
        return max(0.0, (1 - self.tokens) / self.limit.rate)


def bucket_name(task_run: TaskRun) -> str:
    """The bucket a task run draws from: its limit's, or its limit's for its key."""
    key = task_run.rate_limit_key
    return f"{task_run.rate_limit}[{key}]" if key else task_run.rate_limit


class RateLimits:
    def __init__(self, *, limits: Mapping[str, RateLimit], timers: Timers, now: Callable[[], float]) -> None:
        self.limits = dict(limits)
        self._timers = timers
        self._now = now
        self._buckets: dict[str, _Bucket] = {}
        # Wired by the engine: the task run waiting in line has its token now; make it PENDING. False when it no
        # longer waits (cancelled meanwhile).
        self.admit: Callable[[str], bool] = lambda task_run_id: False

    def _bucket(self, task_run: TaskRun) -> _Bucket:
        name = bucket_name(task_run)
        bucket = self._buckets.get(name)
        if bucket is None:
            limit = self.limits[task_run.rate_limit]
            bucket = self._buckets[name] = _Bucket(limit, float(limit.burst), self._now())
        return bucket

    def take(self, task_run: TaskRun) -> str | None:
        """At dispatch: None when the task run may go (a token spent), else why it must wait (it is in line).
        A limit this server does not define (any more) limits nothing."""
        if task_run.rate_limit not in self.limits:
            return None
        bucket = self._bucket(task_run)
        if task_run.id in bucket.reserved:
            bucket.reserved.discard(task_run.id)
            return None
        bucket.refill(self._now())
        if not bucket.line and bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        bucket.line.append(task_run.id)
        self._arm(bucket_name(task_run), bucket)
        limit = bucket.limit
        return (
            f"rate limit {bucket_name(task_run)!r} is empty: {_rate_text(limit)}, burst {limit.burst};"
            f" {len(bucket.line)} waiting, the next token in {bucket.next_token_in():.2f}s"
        )

    def left_queue(self, task_run: TaskRun) -> None:
        """A PENDING task run left the queue other than by a dispatch: its reservation, if any, goes back."""
        bucket = self._buckets.get(bucket_name(task_run))
        if bucket is not None and task_run.id in bucket.reserved:
            bucket.reserved.discard(task_run.id)
            bucket.tokens += 1
            self._arm(bucket_name(task_run), bucket)

    def _arm(self, name: str, bucket: _Bucket) -> None:
        if bucket.line:
            self._timers.arm_in(("rate", name), bucket.next_token_in(), lambda: self._grant(name))

    def _grant(self, name: str) -> None:
        """Tokens back: the first in line get them, one each, and become PENDING."""
        bucket = self._buckets.get(name)
        if bucket is None:
            return
        bucket.refill(self._now())
        while bucket.line and bucket.tokens >= 1:
            task_run_id = bucket.line.popleft()
            bucket.tokens -= 1
            bucket.reserved.add(task_run_id)
            if not self.admit(task_run_id):
                bucket.reserved.discard(task_run_id)
                bucket.tokens += 1
        if bucket.line:
            self._arm(name, bucket)
        elif not bucket.reserved and bucket.tokens >= bucket.limit.burst:
            del self._buckets[name]  # full and idle: a new one starts the same

    def restore(self, task_runs: Iterable[TaskRun]) -> None:
        """Recovery: the task runs that waited for a token line up again, in the order they began to wait."""
        waiting = [
            t
            for t in task_runs
            if t.rate_limit
            and t.rate_limit in self.limits
            and t.state is State.WAITING
            and t.reason is not None
            and t.reason.code is ReasonCode.RATE_LIMITED
        ]
        for task_run in sorted(waiting, key=lambda t: t.updated_at):
            self._bucket(task_run).line.append(task_run.id)
        for name, bucket in self._buckets.items():
            self._arm(name, bucket)

    def figures(self, most: int) -> list[RateLimitStats]:
        """At most `most` buckets in use, those with task runs waiting first."""
        now = self._now()
        found = []
        for name, bucket in self._buckets.items():
            bucket.refill(now)
            limit = bucket.limit
            found.append(
                RateLimitStats(
                    name=name,
                    rate_per_s=limit.rate,
                    burst=limit.burst,
                    tokens=math.floor(bucket.tokens),
                    reserved=len(bucket.reserved),
                    waiting=len(bucket.line),
                )
            )
        return sorted(found, key=lambda f: (-f.waiting, f.name))[:most]


def _rate_text(limit: RateLimit) -> str:
    return f"{limit.rate:g} per second"
