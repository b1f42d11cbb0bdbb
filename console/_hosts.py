"""Which requests the console answers: those addressed to it by a name it was given, from its own pages.

A page of another site can point a name it controls at 127.0.0.1 (DNS rebinding): the visitor's browser then
takes that page and the console for one origin, so the page could read the console and post its actions. The
console therefore answers only requests whose `Host` is an IP address (which names the machine itself, not a
page's site), `localhost`, the name it listens on, or a name given with `--allowed-host`, and takes an action
only from its own origin (`Origin` and `Sec-Fetch-Site`, when the browser sends them). Anything else is refused
with 403 before any call reaches the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALWAYS = frozenset({"localhost"})


def _name(host: str) -> str:
    """The name of a `Host` header or an origin's host, without its port and brackets, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 address, perhaps with a port
        return host[1 : host.find("]")] if "]" in host else host
    name, _, port = host.rpartition(":")
    return name if name and port.isdigit() else host


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_names(listen_host: str, allowed: Iterable[str] = ()) -> frozenset[str]:
    """The names the console answers to, besides IP addresses: localhost, the name it listens on, and `allowed`."""
    return ALWAYS | {_name(name) for name in (listen_host, *allowed) if name and not _is_address(_name(name))}


def same_origin_only(names: frozenset[str]) -> Middleware:
    """A middleware refusing requests addressed to another name, and actions posted from another origin."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _name(request.headers.get("Host", ""))
        if not (_is_address(host) or host in names):
            raise web.HTTPForbidden(
                text=f"this console does not answer to the name {host!r}: start it with --allowed-host {host} "
                "to serve it under that name"
            )
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            site = request.headers.get("Sec-Fetch-Site")
            if (origin is not None and _name(urlsplit(origin).netloc) != host) or site not in (
                None,
                "same-origin",
                "none",
            ):
                raise web.HTTPForbidden(text="actions are taken from the console's own pages")
        return await handler(request)

    return check


__all__ = ["host_names", "same_origin_only"]
