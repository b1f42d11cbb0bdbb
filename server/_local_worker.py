"""The local worker `taskwire-server --with-local-worker` starts beside itself (what `make run` uses)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HINTS = """\
A local worker serves the demo handlers: echo, sleep, fail, progress.
Try, in another terminal:
  taskwire submit sleep --input '{{"seconds": 30}}' --watch
  taskwire list
  taskwire cancel <execution id>
  taskwire stats
(--server {address} is the default; set TASKWIRE_SERVER to point elsewhere.)
Ctrl-C stops the server and the worker."""


class LocalWorker:
    def __init__(self, address: str, *, slots: int = 4) -> None:
        self._address = address
        self._slots = slots
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        executable = Path(sys.executable).parent / "taskwire-worker"
        # Its own session: Ctrl-C reaches only the server, which then drains the worker in order.
        self._process = await asyncio.create_subprocess_exec(
            str(executable),
            "--server",
            self._address,
            "--handlers",
            "worker_agent.demo",
            "--slots",
            str(self._slots),
            "--name",
            "local",
            start_new_session=True,
        )

    def hints(self) -> str:
        return HINTS.format(address=self._address)

    async def stop(self, timeout_s: float = 10.0) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
