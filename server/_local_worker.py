"""The local worker `taskwire-server --with-local-worker` starts beside itself (what `make run` uses)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ._config import DEFAULT_LISTEN

HINTS = """\
A local worker serves the demo handlers: echo, sleep, fail, progress.
Try, in another terminal (the commands are in .venv/bin):
  taskwire{server} submit sleep --input '{{"seconds": 30}}' --watch
  taskwire{server} list
  taskwire{server} cancel <execution id>
  taskwire{server} stats
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
            "taskwire.worker.demo",
            "--slots",
            str(self._slots),
            "--name",
            "local",
            start_new_session=True,
        )

    def hints(self) -> str:
        # The CLI's default address needs no flag; any other one is spelled out so the commands work as printed.
        server = "" if self._address == DEFAULT_LISTEN else f" --server {self._address}"
        return HINTS.format(server=server)

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
