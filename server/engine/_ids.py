"""Ids for executions, task runs and worker sessions.

The system time in an id orders the store's indexes; nothing reads it back, so
it is not a clock the engine acts on (that is `_clock`).

May use: the standard library only.
"""

from __future__ import annotations

import random
import time

_ids = random.Random()
_last_ms = 0


def new_id() -> str:
    """A unique id: 32 hex digits, the milliseconds since the epoch and then 80 random bits.

    The time first (as in UUIDv7) makes the ids of new records sort after the ids of older ones, so
    the store appends them at the end of its indexes instead of touching a random page of each index
    for every record. The random bits come from a Mersenne Twister seeded from the OS once: ids need
    to be unique, not secret, and that is ~50x cheaper per id than an os.urandom call.
    """
    global _last_ms
    # Never below the last id's time: a wall clock stepped back would otherwise put new ids before old ones.
    _last_ms = max(time.time_ns() // 1_000_000, _last_ms)
    return f"{_last_ms:012x}{_ids.getrandbits(80):020x}"
