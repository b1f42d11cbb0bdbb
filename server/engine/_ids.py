"""Ids for executions, task runs and worker sessions.

The system time in an id orders the store's indexes; nothing reads it back, so
it is not a clock the engine acts on (that is `_clock`).

May use: the standard library only.
"""

from __future__ import annotations

import os
import time

_RANDOM_BYTES = 10  # 80 bits
_POOL_BYTES = 4096  # read from the OS at once: one read serves 409 ids
_last_ms = 0
_pool = b""
_used = 0


def _forget_pool() -> None:
    """A forked child must not hand out the ids its parent will."""
    global _pool, _used
    _pool, _used = b"", 0


os.register_at_fork(after_in_child=_forget_pool)


def _random_hex(count: int) -> str:
    """`count` × 80 random bits, as hex, from the pool of CSPRNG bytes (refilled when it runs out)."""
    global _pool, _used
    wanted = _RANDOM_BYTES * count
    if _used + wanted > len(_pool):
        _pool, _used = os.urandom(max(_POOL_BYTES, wanted)), 0
    start, _used = _used, _used + wanted
    return _pool[start:_used].hex()


def new_ids(count: int) -> list[str]:
    """`count` unique, unguessable ids: 32 hex digits each, the milliseconds since the epoch and then 80
    random bits from the operating system's CSPRNG.

    The time first (as in UUIDv7) makes the ids of new records sort after the ids of older ones, so the
    store appends them at the end of its indexes instead of touching a random page of each index for
    every record. The random part is what makes an execution id a handle only its holder knows:
    `os.urandom` bytes, read 4 KiB at a time (a read costs some microseconds; an id from the pool costs
    about as much as one from a Mersenne Twister, which is predictable once a few ids are seen).
    """
    global _last_ms
    # Never below the last id's time: a wall clock stepped back would otherwise put new ids before old ones.
    _last_ms = max(time.time_ns() // 1_000_000, _last_ms)
    prefix = f"{_last_ms:012x}"
    random = _random_hex(count)
    step = 2 * _RANDOM_BYTES
    return [prefix + random[i : i + step] for i in range(0, step * count, step)]


def new_id() -> str:
    """One id (`new_ids`)."""
    return new_ids(1)[0]
