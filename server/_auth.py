"""The one gate every call passes: who is calling (a bearer token or a verified client certificate), may it
call this method (`_auth_policy.RULES`), is it within its limits (submit rate, worker streams), and the
audit line of cancels, deletes, drains and refusals.

A refused call ends before the servicer runs, so it changes nothing: UNAUTHENTICATED without a known
credential, PERMISSION_DENIED for the wrong role (naming the method and the roles it needs),
RESOURCE_EXHAUSTED over a limit (a submit rate refusal carries a `google.rpc.RetryInfo` in its status
details). The caller of an admitted call is available to the servicers as `current_caller()`.

Without an auth file every call is allowed (the loopback development mode) and only the audit lines of
cancels, deletes and drains are written, with identity `anonymous`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from taskwire.common import RateLimited
from taskwire.common.bearer import token_from_metadata

from ._audit import UNKNOWN, audit
from ._auth_file import AuthConfig, Identity
from ._auth_policy import (
    AUDITED,
    OPEN,
    RULES,
    SUBMIT_STREAM,
    SUBMITS,
    WORKER_STREAM,
    Role,
    Scope,
    TokenBucket,
    authorize,
    short_name,
)
from ._edge import HandlerWrappers, Malformed

Context = grpc.aio.ServicerContext[Any, Any]
_SAN_PROPERTY = "x509_subject_alternative_name"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes the current call: its identity ("" without authentication), its role and its scope."""

    identity: str
    role: Role | None
    scope: Scope

    @property
    def owner(self) -> str | None:
        """The identity whose executions alone this caller may see and touch; None: all of them."""
        return self.identity if self.scope is Scope.OWN else None


ANYONE = Caller("", None, Scope.ALL)
_CALLER: ContextVar[Caller] = ContextVar("taskwire_caller", default=ANYONE)
Charge = Callable[[int], RateLimited | None]


def _free(cost: int) -> RateLimited | None:
    return None


_CHARGE: ContextVar[Charge] = ContextVar("taskwire_submit_charge", default=_free)


def current_caller() -> Caller:
    """The caller of the call being served (set by the gate before the servicer runs)."""
    return _CALLER.get()


def submit_charge() -> Charge:
    """How the submits of the stream being served are charged to its caller's submit rate: the refusal
    (RESOURCE_EXHAUSTED with its retry hint, audited) of a submit over the rate, None for one within it."""
    return _CHARGE.get()


def sans_of(auth_context: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The subject alternative names of the verified client certificate in a call's auth context."""
    return [value.decode("utf-8", "replace") for value in auth_context.get(_SAN_PROPERTY, [])]


def target_of(request: object) -> str:
    """What an audited call is about: its execution id, or the worker it drains."""
    for field in ("execution_id", "session_id", "name"):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return value
    return ""


def _retry_status(message: str, retry_after_s: float) -> grpc.Status:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(timedelta(seconds=max(retry_after_s, 0.001)))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    result: grpc.Status = rpc_status.to_status(status)
    return result


async def _unserved(request: object, context: Context) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no such method")
    raise AssertionError("unreachable: context.abort raises")


_UNSERVED: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(_unserved)


class AuthGate(grpc.aio.ServerInterceptor):
    def __init__(self, config: AuthConfig | None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._streams: dict[str, int] = {}
        self._wrappers = HandlerWrappers(self._wrap)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if self._config is None:
            return self._wrappers.get(handler, method) if handler is not None and method in AUDITED else handler
        if RULES.get(method) == OPEN:
            return handler
        if handler is None:  # a method nobody serves: its name is the caller's, nothing is kept for it
            return self._wrap(_UNSERVED, method)
        return self._wrappers.get(handler, method)

    # ---- Admission ------------------------------------------------------------------------------

    async def _admit(self, method: str, request: object, context: Context) -> Caller:
        """The caller, once it is known, allowed and within its submit rate; otherwise the call is aborted."""
        config = self._config
        if config is None:
            return ANYONE
        identity = self._authenticate(config, context)
        if identity is None:
            await self._deny(
                context, method, request, None, grpc.StatusCode.UNAUTHENTICATED, self._why_unknown(context)
            )
        decision = authorize(identity.role, method)
        if decision.scope is None:
            await self._deny(context, method, request, identity, grpc.StatusCode.PERMISSION_DENIED, decision.message)
        if method in SUBMITS:
            await self._within_rate(identity, method, request, context)
        elif method == SUBMIT_STREAM:
            _CHARGE.set(lambda cost: self._charge(identity, method, cost))
        caller = Caller(identity.name, identity.role, decision.scope)
        _CALLER.set(caller)
        return caller

    @staticmethod
    def _authenticate(config: AuthConfig, context: Context) -> Identity | None:
        token = token_from_metadata(context.invocation_metadata())
        if token is not None:
            return config.by_token(token)  # a token decides, also over a certificate
        return config.by_sans(sans_of(context.auth_context()))

    @staticmethod
    def _why_unknown(context: Context) -> str:
        if token_from_metadata(context.invocation_metadata()) is not None:
            return "the bearer token is not known to this server"
        sans = sans_of(context.auth_context())
        if sans:
            return f"no identity has the client certificate's names ({', '.join(sans)})"
        return "no credential: send `authorization: Bearer <token>` metadata or a client certificate"

    async def _within_rate(self, identity: Identity, method: str, request: object, context: Context) -> None:
        executions = getattr(request, "executions", None)
        refused = self._charge(identity, method, len(executions) if executions is not None else 1, request)
        if refused is not None:
            status = _retry_status(refused.message, refused.retry_after_s)
            await context.abort(status.code, status.details, status.trailing_metadata)

    def _charge(self, identity: Identity, method: str, cost: int, request: object = None) -> RateLimited | None:
        """Take `cost` submits from the identity's rate; the refusal, audited, when it has not that many."""
        limits = identity.limits
        now = self._clock()
        bucket = self._buckets.get(identity.name)
        if bucket is None:
            bucket = self._buckets[identity.name] = TokenBucket(
                rate=limits.submit_rate, burst=limits.submit_burst, now=now
            )
        wait_s = bucket.take(cost, now)
        if wait_s <= 0:
            return None
        message = (
            f"identity {identity.name!r} is over its submit rate ({limits.submit_rate:g}/s, "
            f"bursts of {limits.submit_burst}); retry in {wait_s:.3f}s"
        )
        self._audit_denied(method, request, identity, "RESOURCE_EXHAUSTED", message)
        return RateLimited(message, retry_after_s=wait_s)

    @contextmanager
    def _stream_slot(self, identity: str) -> Iterator[None]:
        self._streams[identity] = self._streams.get(identity, 0) + 1
        try:
            yield
        finally:
            self._streams[identity] -= 1
            if not self._streams[identity]:
                del self._streams[identity]

    async def _check_streams(self, caller: Caller, context: Context) -> None:
        identity = self._config.by_name(caller.identity) if self._config is not None else None
        if identity is None:
            return
        most = identity.limits.max_worker_streams
        if self._streams.get(identity.name, 0) >= most:
            message = f"identity {identity.name!r} already has {most} worker streams open, its most"
            self._audit_denied(WORKER_STREAM, None, identity, "RESOURCE_EXHAUSTED", message)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)

    async def _deny(
        self,
        context: Context,
        method: str,
        request: object,
        identity: Identity | None,
        code: grpc.StatusCode,
        message: str,
    ) -> NoReturn:
        self._audit_denied(method, request, identity, code.name, message)
        await context.abort(code, message)
        raise AssertionError("unreachable: context.abort raises")

    @staticmethod
    def _audit_denied(method: str, request: object, identity: Identity | None, code: str, message: str) -> None:
        audit(
            "denied",
            identity=identity.name if identity is not None else UNKNOWN,
            method=short_name(method),
            target=target_of(request),
            role=identity.role.value if identity is not None else UNKNOWN,
            code=code,
            reason=message,
        )

    # ---- Wrapping the handlers ------------------------------------------------------------------

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.request_streaming and handler.response_streaming:
            return handler._replace(stream_stream=self._stream_stream(handler.stream_stream, method))  # type: ignore[attr-defined,no-any-return]
        if handler.response_streaming:
            return handler._replace(unary_stream=self._unary_stream(handler.unary_stream, method))  # type: ignore[attr-defined,no-any-return]
        if handler.request_streaming:
            return handler._replace(stream_unary=self._stream_unary(handler.stream_unary, method))  # type: ignore[attr-defined,no-any-return]
        return handler._replace(unary_unary=self._unary_unary(handler.unary_unary, method))  # type: ignore[attr-defined,no-any-return]

    def _unary_unary(self, inner: Any, method: str) -> Callable[[Any, Context], Awaitable[Any]]:
        audited = method in AUDITED

        async def behavior(request: Any, context: Context) -> Any:
            caller = await self._admit(method, request, context)
            if not audited or isinstance(request, Malformed):  # bytes that name nothing: the edge logs them
                return await inner(request, context)
            outcome = "UNKNOWN"
            try:
                response = await inner(request, context)
                outcome = "OK"
                return response
            except BaseException:
                code = context.code()
                outcome = code.name if isinstance(code, grpc.StatusCode) else "CANCELLED"
                raise
            finally:
                action = short_name(method).removesuffix("Execution").removesuffix("Worker").lower()
                audit(
                    action, identity=caller.identity, method=short_name(method), target=target_of(request), code=outcome
                )

        return behavior

    def _unary_stream(self, inner: Any, method: str) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def behavior(request: Any, context: Context) -> AsyncIterator[Any]:
            await self._admit(method, request, context)
            async for response in inner(request, context):
                yield response

        return behavior

    def _stream_unary(self, inner: Any, method: str) -> Callable[[Any, Context], Awaitable[Any]]:
        async def behavior(requests: Any, context: Context) -> Any:
            await self._admit(method, None, context)
            return await inner(requests, context)

        return behavior

    def _stream_stream(self, inner: Any, method: str) -> Callable[[Any, Context], Any]:
        if inspect.iscoroutinefunction(inner):
            return self._stream_stream_writer(inner, method)

        async def behavior(requests: Any, context: Context) -> AsyncIterator[Any]:
            caller = await self._admit(method, None, context)
            if method != WORKER_STREAM:
                async for response in inner(requests, context):
                    yield response
                return
            await self._check_streams(caller, context)
            with self._stream_slot(caller.identity):
                async for response in inner(requests, context):
                    yield response

        return behavior

    def _stream_stream_writer(self, inner: Any, method: str) -> Callable[[Any, Context], Awaitable[None]]:
        """A stream whose handler reads and writes through its context (a coroutine, not a generator):
        wrapped as a coroutine, so its messages pass through no generator of ours."""

        async def behavior(requests: Any, context: Context) -> None:
            caller = await self._admit(method, None, context)
            if method != WORKER_STREAM:
                await inner(requests, context)
                return
            await self._check_streams(caller, context)
            with self._stream_slot(caller.identity):
                await inner(requests, context)

        return behavior
