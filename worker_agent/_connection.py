"""The worker's way to a server: which address to try next, the channel to it, and how long to wait
before the next try.

Given several server addresses (an active server and its standbys), each connection attempt goes to the
next one, round the list: a standby binds no port until it has taken over, so the worker lands on
whichever server is active.

A stream that goes silent without closing (a half-open connection: a NAT or proxy dropped the flow) is
detected with gRPC keepalive pings: every ``keepalive_s`` the channel pings the server and drops the
connection when no answer comes within ``keepalive_timeout_s``, which ends the stream and starts a
reconnect. The server sends nothing on an idle stream by design (the heartbeats go the other way), so
silence from the server is no sign of trouble; only a transport-level probe tells a quiet peer from a dead
path, and it needs no protocol change and exists in every gRPC implementation.

With ``tls`` the channel runs over TLS (mutual TLS when it names a client certificate); the files are
read again for every connection, so a rotated certificate is used without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from taskwire.common import bearer, server_addresses
from taskwire.common.http2 import HTTP2_OPTIONS, keepalive_options
from taskwire.common.tls import TlsConfigError, TlsFiles

from ._errors import ConnectionLostError

_log = logging.getLogger("taskwire.worker")

#: A reconnecting worker waits at most this share of the last lease timeout between attempts, so it is back
#: (and its attempts adopted) well before the server gives up on them.
_BACKOFF_LEASE_SHARE = 1 / 3


class ConnectFailed(Exception):
    """A connection attempt that did not reach a Welcome (or a session too short to count): retried."""


class ServerGoingAway(ConnectFailed):
    """The server said it is stopping: reconnect, to it again or to the next address."""


class SessionEnded(Exception):
    """A healthy session's stream ended; reconnect at once, backoff starting afresh."""


class ServerLink:
    """The addresses, the channel options and the reconnect backoff of one worker."""

    def __init__(
        self,
        server: str | Sequence[str],
        *,
        tls: TlsFiles | None,
        token: str | None,
        keepalive_s: float,
        keepalive_timeout_s: float,
        reconnect_initial_s: float,
        reconnect_max_s: float,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.servers = server_addresses(server)
        self.address = self.servers[0]  # the address of the current (or next) connection attempt
        self._tried = 0
        self._tls = tls
        self._interceptors = bearer.aio_interceptors(token)  # the credential: who this worker is to the server
        self._reconnect_initial_s = reconnect_initial_s
        self._reconnect_max_s = reconnect_max_s
        # Set from the last Welcome and the last GoingAway: bounds on the backoff.
        self.last_lease_s: float | None = None
        self.reconnect_within_s: float | None = None
        self._options = [
            *keepalive_options(keepalive_s, keepalive_timeout_s),
            ("grpc.keepalive_permit_without_calls", 1),
            # The worker paces its reconnects itself (`backoff`, bounded by the lease), with a new channel each
            # time. Its connections are its own, not gRPC's shared ones: a shared one keeps gRPC's backoff from
            # the failed attempts of an outage (1 s growing by 1.6×), and fails the next channel's connect at
            # once until that runs out, seconds after the server is back, past the leases the worker came for.
            # (Not grpc.min_reconnect_backoff_ms: gRPC takes it as the least time a connection attempt is given,
            # and each new channel starts over, so a handshake slower than that would never finish.)
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", 100),
            # A fixed flow-control window, no bandwidth-delay pings (see taskwire.common.http2).
            *HTTP2_OPTIONS,
            *channel_options,
        ]

    def open_channel(self) -> grpc.aio.Channel:
        """A channel to the next address of the list (each call moves on: a stopped server's standby, or the
        restarted server itself). ConnectFailed when the TLS files cannot be read."""
        self.address = self.servers[self._tried % len(self.servers)]
        self._tried += 1
        if self._tls is None:
            return grpc.aio.insecure_channel(self.address, options=self._options, interceptors=self._interceptors)
        try:
            credentials = self._tls.credentials()
        except TlsConfigError as exc:
            raise ConnectFailed(str(exc)) from exc
        options = [*self._options, *self._tls.channel_options()]
        return grpc.aio.secure_channel(self.address, credentials, options=options, interceptors=self._interceptors)

    def backoff(self, state: RetryCallState) -> float:
        """Exponential with full jitter, at most a share of the last lease: back before the leases expire."""
        cap_s = self._reconnect_max_s
        if self.last_lease_s:
            cap_s = min(cap_s, self.last_lease_s * _BACKOFF_LEASE_SHARE)
        if self.reconnect_within_s:
            cap_s = min(cap_s, self.reconnect_within_s)
        exponential = wait_random_exponential(multiplier=self._reconnect_initial_s, max=self._reconnect_max_s)
        return min(exponential(state), random.uniform(0, cap_s))

    async def keep_connected(
        self, session: Callable[[], Awaitable[None]], *, stop: asyncio.Event, max_attempts: int | None
    ) -> None:
        """Run `session` again and again until it returns (it does once `stop` is set). ConnectFailed is
        retried with backoff, ConnectionLostError after `max_attempts` failures in a row; SessionEnded at
        once, the backoff starting afresh."""

        async def sleep(delay_s: float) -> None:
            # A shutdown must not wait out a long backoff.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await stop.wait()

        while not stop.is_set():
            retrying = AsyncRetrying(
                stop=stop_never if max_attempts is None else stop_after_attempt(max_attempts),
                wait=self.backoff,
                retry=retry_if_exception_type(ConnectFailed),
                sleep=sleep,
                before_sleep=self._log_retry,
            )
            try:
                async for attempt in retrying:
                    with attempt:
                        await session()
            except SessionEnded:
                continue
            except RetryError as exc:
                cause = exc.last_attempt.exception()
                raise ConnectionLostError(
                    f"gave up connecting to {', '.join(self.servers)} after {max_attempts} attempt(s): {cause}"
                ) from cause
            return

    def _log_retry(self, state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        _log.warning("connection to %s failed (%s); retrying in %.2fs", self.address, failure, delay)
