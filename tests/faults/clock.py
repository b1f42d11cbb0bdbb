"""Wall-clock jumps for real processes, with libfaketime (Debian's `libfaketime`, installed when missing).

A process started with `FakeClock.env` reads its wall clock (CLOCK_REALTIME: `time.time()`,
`datetime.now()`) shifted by the offset written to a file, re-read on every call; the monotonic clock is
left alone, as a real clock step would leave it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

LIBRARY = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def ensure_libfaketime() -> Path:
    """The library's path, installing the Debian package first when it is missing."""
    if not LIBRARY.exists():
        apt = shutil.which("apt-get")
        if apt is None or os.geteuid() != 0:
            raise RuntimeError(f"{LIBRARY} is missing: install Debian's libfaketime package")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if subprocess.run([apt, "install", "-y", "-qq", "libfaketime"], env=env, capture_output=True).returncode:
            subprocess.run([apt, "update", "-qq"], env=env, check=True, capture_output=True)
            subprocess.run([apt, "install", "-y", "-qq", "libfaketime"], env=env, check=True, capture_output=True)
    return LIBRARY


class FakeClock:
    def __init__(self, directory: Path) -> None:
        self._file = directory / "faketime-offset"
        self.shift(0)
        self.env = {
            "LD_PRELOAD": str(ensure_libfaketime()),
            "FAKETIME_TIMESTAMP_FILE": str(self._file),
            "FAKETIME_NO_CACHE": "1",  # the offset takes effect at once
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }

    def shift(self, seconds: int) -> None:
        """From now on the wall clock reads `seconds` away from the real time (either way)."""
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(f"{seconds:+d}\n")
        tmp.replace(self._file)
