"""`taskwire console`: serve the web console over HTTP until interrupted.

The console is a client of one taskwire server (`--server`), with the TLS files and token it was started with;
the browser talks only to the console.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from typing import IO, Any

import grpc
from aiohttp import web

from taskwire.client import AsyncClient

from ._app import create_app
from ._hosts import host_names

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8080"


class ListenError(ValueError):
    """The console's --listen address is malformed or cannot be bound."""


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) → (host, port); port 0 picks a free one."""
    host, separator, port = listen.rpartition(":")
    if not separator or not port.isdigit() or int(port) > 65535:
        raise ListenError(f"--listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    *,
    server: str,
    listen: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
    token: str | None = None,
    view_as: str | None = None,
    allowed_hosts: Sequence[str] = (),
    out: IO[str],
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the console on `listen` until `stop` is set (or SIGINT/SIGTERM when none is given). It answers to IP
    addresses, localhost, the name it listens on and `allowed_hosts` (see `_hosts`)."""
    host, port = split_listen(listen)
    # The one place the console's credentials reach the server: its TLS files and its bearer token.
    client = AsyncClient(server, credentials=credentials, options=options, token=token)
    app = create_app(client, view_as=view_as, hosts=host_names(host, allowed_hosts))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as error:
            raise ListenError(f"cannot serve the console on {listen}: {error.strerror or error}") from None
        bound = runner.addresses[0]
        shown_host = f"[{host}]" if ":" in host else host
        print(f"taskwire console on http://{shown_host}:{bound[1]} (server {server})", file=out, flush=True)
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
        await client.close()
