"""The local worker `taskwire-server --with-local-worker` starts beside itself (what `make run` uses)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from ._config import DEFAULT_LISTEN

log = logging.getLogger(__name__)

HINTS = """\
A local worker serves the demo handlers: echo, sleep, fail, progress.
Try, in another terminal (the commands are in .venv/bin):
  taskwire{server} submit sleep --input '{{"seconds": 30}}' --watch
  taskwire{server} list
  taskwire{server} cancel <execution id>
  taskwire{server} stats
Ctrl-C stops the server and the worker."""


class LocalWorker:
    """The local worker process, supervised: restarted (with a growing pause, up to ten seconds) when it dies,
    stopped with the server. It runs in its own session, so a terminal's Ctrl-C or hangup reaches only the
    server, which stops it in turn."""

    def __init__(self, address: str, *, slots: int = 4) -> None:
        self._address = address
        self._slots = slots
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.restarts = 0

    async def start(self) -> None:
        self._process = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="taskwire-local-worker")

    async def _spawn(self) -> asyncio.subprocess.Process:
        executable = Path(sys.executable).parent / "taskwire-worker"
        return await asyncio.create_subprocess_exec(
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
            # It talks plaintext to the server's loopback port: TLS settings meant for other clients stay out.
            env={name: value for name, value in os.environ.items() if not name.startswith("TASKWIRE_TLS")},
        )

    async def _supervise(self) -> None:
        failures = 0
        while True:
            process = self._process
            assert process is not None
            started = asyncio.get_running_loop().time()
            code = await process.wait()
            if self._stopping.is_set():
                return
            # A worker that ran a good while before it died starts again at once; one that keeps dying waits longer.
            failures = 1 if asyncio.get_running_loop().time() - started > 60 else failures + 1
            pause_s = min(0.5 * 2 ** (failures - 1), 10.0)
            log.warning("the local worker exited (code %s); starting it again in %.1fs", code, pause_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_s):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            self._process = await self._spawn()
            self.restarts += 1
            if self._stopping.is_set():  # stop() came while it was starting: it is this one to end
                self._process.terminate()

    def hints(self) -> str:
        # The CLI's default address needs no flag; any other one is spelled out so the commands work as printed.
        server = "" if self._address == DEFAULT_LISTEN else f" --server {self._address}"
        return HINTS.format(server=server)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (the worker drains), SIGKILL after `timeout_s`; no restart after that. Idempotent."""
        self._stopping.set()
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._supervisor is not None:
            await self._supervisor  # sees the exit, and that it was asked for
