"""The server's HTTP side: Prometheus metrics on `/metrics`, off unless `--metrics-listen` is given.

An aiohttp application on the server's own event loop, so that a scrape reads the engine's state on
the thread that changes it (no locks, no torn reads).
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class AddressUnavailable(OSError):
    """The metrics address cannot be bound."""


class HttpEndpoint:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._runner: web.AppRunner | None = None
        self.address = ""

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self, listen: str) -> str:
        """Serve on HOST:PORT (port 0 picks one); returns the bound address."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, _, port = listen.rpartition(":")
        site = web.TCPSite(runner, host.strip("[]") or None, int(port), reuse_port=False)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise AddressUnavailable(f"cannot serve metrics on {listen}: {error.strerror or error}") from None
        self._runner = runner
        bound_port = int(port)
        for bound in runner.addresses:  # (host, port, ...) of each socket the site listens on
            bound_port = int(bound[1])
            break
        self.address = f"{host}:{bound_port}"
        return self.address

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
