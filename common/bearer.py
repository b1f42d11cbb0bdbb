"""Bearer tokens: how they are made, how the server stores them (hashed), and how every client sends them.

A token is 256 random bits (`secrets`), written `tw_<base64url>`. The server keeps only its hash,
`sha256:<hex>`: a fast hash is enough because the token is a long random value, not a password — nobody
can search 2**256 candidates, so a slow password hash (bcrypt, argon2) would cost every call time and
protect nothing more.

The SDK (sync and asyncio), the CLI and the worker agent send the token the same way, through the
interceptors here: call metadata `authorization: Bearer <token>` on every call. Metadata and not gRPC
call credentials, which gRPC sends only over a secure channel: the token must also reach a server on
plaintext loopback.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import grpc

METADATA_KEY = "authorization"
SCHEME = "Bearer "
TOKEN_PREFIX = "tw_"
HASH_PREFIX = "sha256:"
TOKEN_ENV = "TASKWIRE_TOKEN"
# The roles of an identity (the server's `Role`), and what an identity's name may be.
ROLES = ("worker", "submitter", "reader", "admin")
IDENTITY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def new_token() -> str:
    """A fresh random token: `tw_` then 43 base64url characters (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the auth file stores for `token`: `sha256:` then the hex digest of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that carries `token`."""
    return ((METADATA_KEY, SCHEME + token),)


def token_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The bearer token in a call's metadata, or None when there is none (or another scheme)."""
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and value[: len(SCHEME)].lower() == SCHEME.lower():
            return value[len(SCHEME) :].strip()
    return None


def _with_token(metadata: Any, token: str) -> list[tuple[str, str | bytes]]:
    kept = [(k, v) for k, v in (metadata or ()) if k != METADATA_KEY]
    return [*kept, *bearer_metadata(token)]


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: Any


class _SyncBearer(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: Any) -> Any:
        return _Details(
            details.method,
            details.timeout,
            _with_token(details.metadata, self._token),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioBearer:
    """The token on the metadata of an asyncio call. grpc.aio files each interceptor under one kind of
    call only (its first base that matches), so there is one class per kind below."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*_with_token(details.metadata, self._token)),
            details.credentials,
            details.wait_for_ready,
        )


class _AioUnaryUnary(_AioBearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioBearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioBearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStream(_AioBearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """A blocking channel whose every call carries `token` (the channel itself without one)."""
    return grpc.intercept_channel(channel, _SyncBearer(token)) if token else channel


def aio_interceptors(token: str | None) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of an asyncio channel whose every call carries `token` (none without one)."""
    if not token:
        return []
    return [_AioUnaryUnary(token), _AioUnaryStream(token), _AioStreamUnary(token), _AioStreamStream(token)]
