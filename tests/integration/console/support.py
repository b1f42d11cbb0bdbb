"""What the console's tests share: Debian's chromium (installed once, under a file lock), and a
`taskwire console` process in front of a real server."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from taskwire.common.bearer import TOKEN_ENV
from tests.harness import BIN, Cluster, ServerProcess, spawn

CHROMIUM = Path("/usr/bin/chromium")
# Flags for a headless chromium that reaches nothing but the console on loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_LOCK = Path("/tmp/taskwire-chromium-install.lock")
_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing; concurrent test processes install it once."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{CHROMIUM} is missing and there is no apt-get to install it")
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not CHROMIUM.exists():
            install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
            if subprocess.run(install, env=_APT_ENV, capture_output=True, check=False).returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], env=_APT_ENV, capture_output=True, check=True)
                subprocess.run(install, env=_APT_ENV, capture_output=True, check=True)
    return CHROMIUM


def start_console(cluster: Cluster, server: ServerProcess, *extra_args: str, token: str | None = None) -> str:
    """A `taskwire console` on an ephemeral loopback port in front of `server`, speaking with `token` (given
    as TASKWIRE_TOKEN, as an operator would); returns its base URL."""
    process = spawn(
        [str(BIN / "taskwire"), "console", "--server", server.address, "--listen", "127.0.0.1:0", *extra_args],
        env={TOKEN_ENV: token} if token else None,
    )
    cluster.processes.append(process)
    return process.wait_for_line(r"taskwire console on (http://\S+)").group(1)
