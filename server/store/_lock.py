"""One server per store: an exclusive lock on a file beside the database, held for the store's whole life.

`flock` on `<database>.lock`, taken before anything opens the database, so a second server on the same
file refuses before it writes anything. The lock belongs to the open file, which the writer process
inherits: it is held until the server *and* its writer process are gone (a killed server's writer
cannot go on writing under a new server). The file keeps the holder's pid, for the refusal's message.
Local file systems only: `flock` means nothing across machines on NFS.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from pathlib import Path

from ._protocol import StoreError


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _alive(pid: str) -> bool:
    """Whether the process the lock file names runs (a server that took the lock and still lives)."""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class StoreInUse(StoreError):
    """Another process holds the store."""


class StoreLock:
    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    @property
    def fd(self) -> int:
        assert self._fd is not None, "the lock is not held"
        return self._fd

    async def acquire(self, *, orphan_wait_s: float = 10.0) -> None:
        """Take the lock, or raise StoreInUse naming the database and the process that holds it.

        When the server that took the lock is gone, its writer process is finishing its last commit and
        about to exit (it exits when its server's connection closes): wait for it, up to `orphan_wait_s`.
        A live holder is refused at once."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + orphan_wait_s
            while not _try_lock(fd):
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
                if _alive(holder) or time.monotonic() > deadline:
                    database = self.path.with_name(self.path.name.removesuffix(".lock"))
                    raise StoreInUse(
                        f"the store {database} is in use by another taskwire server (pid {holder or 'unknown'}); "
                        "one server owns a store at a time"
                    )
                await asyncio.sleep(0.02)  # a gone server's writer process finishing its last commit
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
