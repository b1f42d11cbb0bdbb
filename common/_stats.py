"""What a server reports about its queue and its workers (`TaskService.GetStats`): one set of values for the
server that computes them and the client that reads them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Occupancy of the server's bounded queue."""

    size: int
    capacity: int
    waiting_submitters: int

    @property
    def full(self) -> bool:
        return self.size >= self.capacity

    @property
    def empty(self) -> bool:
        return self.size == 0


@dataclass(frozen=True, slots=True)
class HandlerStats:
    """One handler: task runs queued for it, running, and the free slots and workers that serve it."""

    handler: str
    pending: int
    in_flight: int
    free_slots: int
    workers: int
    # When its oldest queued task run was queued (see GetStats); None when none is.
    oldest_queued_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConcurrencyKeyStats:
    """One concurrency key in use: its attempts running, its task runs queued, and those waiting for a place."""

    key: str
    limit: int
    running: int
    queued: int
    waiting: int


@dataclass(frozen=True, slots=True)
class RateLimitStats:
    """One bucket of a rate limit in use: its rate and burst, tokens now, granted and waiting task runs."""

    name: str
    rate_per_s: float
    burst: int
    tokens: int
    reserved: int
    waiting: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Queue and worker statistics (`taskwire stats`)."""

    queue: QueueStats
    in_flight: int
    connected_workers: int
    free_slots: int
    handlers: tuple[HandlerStats, ...] = ()
    # The keys in use, most waiting first (at most MAX_KEY_STATS of them).
    concurrency_keys: tuple[ConcurrencyKeyStats, ...] = ()
    # The rate limit buckets in use, most waiting first (at most MAX_KEY_STATS of them).
    rate_limits: tuple[RateLimitStats, ...] = ()


# The most concurrency keys GetStats lists.
MAX_KEY_STATS = 100
