"""What the sync and async clients share: requests, responses, retries and outcomes, free of I/O."""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import grpc
import tenacity
from google.protobuf.message import Message
from opentelemetry import propagate

from taskwire.common import (
    DEFAULT_PRIORITY,
    MAX_ATTEMPTS_LIMIT,
    MAX_PRIORITY,
    MIN_PRIORITY,
    ConcurrencyKeyStats,
    ExecutionFilter,
    ExecutionSpec,
    HandlerStats,
    Payload,
    QueueStats,
    RateLimited,
    RateLimitStats,
    RetryPolicy,
    State,
    Stats,
    TaskSpec,
    ValidationError,
    json_payload,
    server_addresses,
    wire,
)
from taskwire.common.http2 import keepalive_options
from taskwire.v1 import task_service_pb2 as tpb

from ._errors import (
    ExecutionCancelled,
    ExecutionEnded,
    ExecutionFailed,
    is_retryable,
    rpc_status,
)
from ._models import BulkResult, ExecutionSnapshot, RpcRetry, SubmitResult, WorkerInfo

T = TypeVar("T")
M = TypeVar("M", bound=Message)

DEFAULT_ADDRESS = "127.0.0.1:50051"
DEFAULT_TIMEOUT = timedelta(seconds=10)


def channel_target(address: str | Sequence[str]) -> str:
    """The gRPC target of one server address, or of several (`a:1,b:2`, or a list): gRPC's own static address list
    (`ipv4:a:1,b:2`), which its default `pick_first` policy tries in order, moving on to the next address when one
    is unreachable (a stopped server; a standby that has not taken over binds no port).

    Several addresses must all be IPv4 or all IPv6 literals: gRPC lists only those. Servers with names go
    behind one DNS name with an address record for each, which gRPC's resolver handles the same way.
    ValueError otherwise; a TypeError for anything but text or a list of it.
    """
    if not isinstance(address, str) and not (
        isinstance(address, Sequence) and all(isinstance(entry, str) for entry in address)
    ):
        raise TypeError(f"address must be 'HOST:PORT' or a list of them, got {type(address).__name__} {address!r:.100}")
    addresses = server_addresses(address)
    if len(addresses) == 1:
        return addresses[0]
    families = {_ip_family(entry) for entry in addresses}
    if len(families) != 1 or None in families:
        raise ValueError(
            f"several server addresses must all be IPv4 or all IPv6 HOST:PORT, got {', '.join(addresses)}; servers "
            "with names go behind one DNS name that resolves to each of them"
        )
    return f"{families.pop()}:{','.join(addresses)}"


def _ip_family(address: str) -> str | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    return f"ipv{ip.version}"


#: While a call is open (the submit stream a client keeps, a watch, any call in flight), a ping this often; a server
#: that answers none within as long (paused, or cut off without a reset) is taken for gone: its calls fail
#: UNAVAILABLE, and the channel connects again, to the next address of its list.
KEEPALIVE_S = 5.0

# Reconnect quickly after a failed connection, give up a connection to a server that accepts it and then never
# answers (a paused one) within 2 s, notice a server that stopped answering, and accept the large
# pages a list can bring.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    # gRPC's name for the least time a connection attempt is given (its handshakes included): 2 s, not less, or a
    # client across a slow link (a few hundred ms a round trip) would never finish one.
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 2000),
    *keepalive_options(KEEPALIVE_S, KEEPALIVE_S),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]

MAX_PAGE_SIZE = 1000


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_seconds(text: str) -> float | None:
    """The seconds of a duration written `90`, `90s`, `1.5m`, `2h`, `1d` or `500ms`; None when it is not one."""
    match = _DURATION.match(text)
    return None if match is None else float(match.group(1)) * _UNITS[match.group(2)]


# A timeout longer than this (`timedelta.max`, say) is taken as this: past any deadline gRPC or a clock can hold.
LONGEST_TIMEOUT = timedelta(days=36_500)


def seconds(value: timedelta, where: str = "timeout") -> float:
    """The seconds of a duration the caller gave, at most `LONGEST_TIMEOUT`'s; TypeError naming `where` for
    anything but a timedelta."""
    if not isinstance(value, timedelta):
        raise TypeError(f"{where} must be a datetime.timedelta, got {type(value).__name__} {value!r}")
    return min(value, LONGEST_TIMEOUT).total_seconds()


def check_credentials(token: str | None, credentials: grpc.ChannelCredentials | None) -> None:
    """A client's `token` and `credentials` of the kinds gRPC needs, or a TypeError (ValueError) naming which."""
    expect(token, str, "token", optional=True)
    expect(credentials, grpc.ChannelCredentials, "credentials", optional=True)
    if token and (not token.isprintable() or any(character.isspace() for character in token)):
        raise ValueError("token must be one word of printable characters (it is sent as an HTTP header)")


def call_timeout(value: timedelta) -> timedelta:
    """A client's `timeout`, the deadline of each of its calls: a positive timedelta (ValueError otherwise)."""
    if seconds(value) <= 0:
        raise ValueError(f"timeout must be positive (the deadline of every call), got {value!r}")
    return value


def backoff_wait(policy: RpcRetry) -> tenacity.wait_exponential_jitter:
    """The pause before each retry: exponential backoff with jitter, at most `max_backoff_s`."""
    return tenacity.wait_exponential_jitter(
        multiplier=policy.initial_backoff_s, max=policy.max_backoff_s, jitter=policy.initial_backoff_s
    )


# The longest rate limit hint a call waits out by itself; a longer one is raised at once (`RateLimited`).
RATE_LIMIT_WAIT_CAP_S = 10.0


def _retryable(error: BaseException, idempotent: bool) -> bool:
    if isinstance(error, RateLimited):
        return 0 < error.retry_after_s <= RATE_LIMIT_WAIT_CAP_S
    return idempotent and is_retryable(error)


class _Attempt:
    """What the backoff curve reads of a retry state: the number of the attempt that failed."""

    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


def _pause_s(policy: RpcRetry, error: BaseException | None, failed: int) -> float:
    if isinstance(error, RateLimited):
        return error.retry_after_s
    return float(backoff_wait(policy)(_Attempt(failed)))  # type: ignore[arg-type]


def retry_options(policy: RpcRetry, *, idempotent: bool = True, after: int = 0) -> dict[str, Any]:
    """tenacity options, a bounded number of attempts: an idempotent call retries UNAVAILABLE with exponential
    backoff and jitter; any call refused by a rate limit (`RateLimited`: nothing was done) retries after the
    server's hint, when that is at most `RATE_LIMIT_WAIT_CAP_S`. `after`: attempts already made outside
    tenacity (`first_retry_pause_s`), which the bound and the backoff curve count."""

    def pause_s(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return _pause_s(policy, error, state.attempt_number + after)

    return {
        "retry": tenacity.retry_if_exception(lambda error: _retryable(error, idempotent)),
        "stop": tenacity.stop_after_attempt(policy.max_attempts - after),
        "wait": pause_s,
        "reraise": True,
    }


def first_retry_pause_s(policy: RpcRetry, error: BaseException, *, idempotent: bool) -> float | None:
    """The pause before the second attempt of a call whose first attempt, made without tenacity (its bookkeeping
    costs more than a small call), failed with `error`; None when `retry_options` would not retry it. The
    attempts after the second are tenacity's, with `retry_options(..., after=1)`."""
    if policy.max_attempts <= 1 or not _retryable(error, idempotent):
        return None
    return _pause_s(policy, error, 1)


def backoff_s(policy: RpcRetry, failures: int) -> float:
    """The pause before reconnecting a watch after `failures` consecutive failures (same curve as `retry_options`)."""
    base = min(policy.initial_backoff_s * 2.0 ** max(failures - 1, 0), policy.max_backoff_s)
    return min(base + random.uniform(0, policy.initial_backoff_s), policy.max_backoff_s)


# ---- Requests -----------------------------------------------------------------------------------


def to_payload(value: Any) -> Payload:
    """A task input for a `TaskSpec`: a `Payload` as given, anything else encoded as JSON.

    Raises ValidationError for a value JSON cannot hold (a set, NaN, ...).
    """
    if isinstance(value, Payload):
        return value
    try:
        return json_payload(value)
    except (TypeError, ValueError) as error:
        raise ValidationError("input", f"is not valid JSON ({error})") from None


def single_task_spec(
    handler: str,
    input: Any = None,
    *,
    task_id: str = "",
    timeout: timedelta | None = None,
    max_attempts: int | None = None,
    max_infrastructure_retries: int | None = None,
    retry_policy: RetryPolicy | None = None,
    key: str | None = None,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
    execution_timeout: timedelta | None = None,
    not_before: datetime | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    priority: int | None = None,
    concurrency_key: str = "",
    concurrency_limit: int = 0,
    fairness_key: str = "",
    rate_limit: str = "",
    rate_limit_key: str = "",
) -> ExecutionSpec:
    """The spec of an execution with one task (what `submit` sends)."""
    expect(retry_policy, RetryPolicy, "retry_policy", optional=True)
    expect(metadata, Mapping, "metadata", optional=True)
    # A zero on the wire reads as unset (the default), which the server cannot tell from one given: refused here.
    if priority == 0:
        raise ValidationError("priority", f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}, got 0")
    if max_attempts == 0:
        raise ValidationError("max_attempts", f"must be between 1 and {MAX_ATTEMPTS_LIMIT}, got 0")
    policy = retry_policy or RetryPolicy()
    if max_attempts is not None:
        policy = replace(policy, max_attempts=max_attempts)
    if max_infrastructure_retries is not None:
        policy = replace(policy, max_infrastructure_retries=max_infrastructure_retries)
    task = TaskSpec(
        handler=handler,
        task_id=task_id or "",
        input=to_payload(input),
        timeout=timeout,
        retry_policy=policy,
        schedule_to_start_timeout=schedule_to_start_timeout,
        priority=DEFAULT_PRIORITY if priority is None else priority,
        concurrency_key=concurrency_key,
        concurrency_limit=concurrency_limit,
        fairness_key=fairness_key,
        rate_limit=rate_limit,
        rate_limit_key=rate_limit_key,
    )
    return ExecutionSpec(
        tasks=(task,),
        name=name or "",
        metadata=dict(metadata or {}),
        timeout=execution_timeout,
        not_before=not_before,
        idempotency_key=key or "",
    )


def admission(wait_for_room: bool) -> tpb.AdmissionMode.ValueType:
    return tpb.ADMISSION_MODE_WAIT_FOR_ROOM if wait_for_room else tpb.ADMISSION_MODE_FAIL_FAST


def expect(value: object, kind: type, name: str, *, optional: bool = False) -> None:
    """A TypeError naming `name` when a caller's `value` is not a `kind` (nor None, when `optional`)."""
    if not isinstance(value, kind) and not (optional and value is None):
        article = "an" if kind.__name__[0].lower() in "aeiou" else "a"
        raise TypeError(f"{name} must be {article} {kind.__name__}, got {type(value).__name__} {value!r:.100}")


def request(message_type: type[M], **fields: Any) -> M:
    """`message_type(**fields)`, from a caller's values: one protobuf refuses is a TypeError (or, for a number
    outside its field's range, a ValidationError) naming its field."""
    try:
        return message_type(**fields)
    except (TypeError, ValueError) as error:
        raise wire.explained_request(error, message_type, fields) from None


def many(values: Iterable[T], name: str) -> Iterable[T]:
    """`values` as given, unless it is one str: that is a TypeError, not a sequence of its characters."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list, not one str ({values!r:.100}): write [{values!r:.100}]")
    return values


def submit_request(spec: ExecutionSpec, *, wait_for_room: bool) -> tpb.SubmitExecutionRequest:
    return tpb.SubmitExecutionRequest(execution=_traced(spec), admission=admission(wait_for_room))


def submit_many_request(specs: Iterable[ExecutionSpec], *, wait_for_room: bool) -> tpb.SubmitExecutionsRequest:
    return tpb.SubmitExecutionsRequest(executions=[_traced(spec) for spec in specs], admission=admission(wait_for_room))


def _traced(spec: ExecutionSpec) -> tpb.ExecutionSpec:
    """The spec on the wire, carrying the caller's current trace context (W3C) unless it sets its own."""
    expect(spec, ExecutionSpec, "the execution")
    message = wire.execution_spec_to_proto(spec)
    if not spec.trace_context:
        propagate.inject(message.trace_context)
    return message


def cancel_matching_request(selection: ExecutionFilter, *, reason: str, dry_run: bool) -> tpb.CancelExecutionsRequest:
    expect(selection, ExecutionFilter, "the filter")
    return request(
        tpb.CancelExecutionsRequest, filter=wire.execution_filter_to_proto(selection), reason=reason, dry_run=dry_run
    )


def delete_matching_request(selection: ExecutionFilter, *, dry_run: bool) -> tpb.DeleteExecutionsRequest:
    expect(selection, ExecutionFilter, "the filter")
    return request(tpb.DeleteExecutionsRequest, filter=wire.execution_filter_to_proto(selection), dry_run=dry_run)


def bulk_result(response: tpb.CancelExecutionsResponse | tpb.DeleteExecutionsResponse) -> BulkResult:
    if isinstance(response, tpb.CancelExecutionsResponse):
        return BulkResult(matched=response.matched, changed=response.cancelled)
    return BulkResult(matched=response.matched, changed=response.deleted, skipped=response.skipped)


def submit_is_idempotent(specs: Iterable[ExecutionSpec]) -> bool:
    """A submit may be retried only when every execution in it carries an idempotency key."""
    return all(spec.idempotency_key for spec in specs)


def parse_state(value: State | str) -> State:
    if isinstance(value, State):
        return value
    expect(value, str, "a state")
    try:
        return State(value.strip().upper())
    except ValueError:
        choices = ", ".join(state.value for state in State)
        raise ValueError(f"unknown state {value!r}; choose from {choices}") from None


def list_request(
    *, states: Iterable[State | str], handler: str, page_size: int, page_token: str
) -> tpb.ListExecutionsRequest:
    return request(
        tpb.ListExecutionsRequest,
        states=[wire.execution_state_to_proto(parse_state(state)) for state in many(states, "states")],
        handler=handler,
        page_size=page_size,
        page_token=page_token,
    )


def page_size_for(limit: int | None, page_size: int | None, fetched: int) -> int:
    """The page size to ask for: what the caller chose, at most what the limit still allows (0: server default)."""
    size = min(page_size or 0, MAX_PAGE_SIZE)
    if limit is None:
        return size
    remaining = max(limit - fetched, 0)
    return min(size, remaining) if size else min(remaining, MAX_PAGE_SIZE)


# ---- Responses ----------------------------------------------------------------------------------


def snapshot(message: Any, *, deduplicated: bool = False) -> ExecutionSnapshot:
    """An ExecutionSnapshot from a `taskwire.v1.Execution` message."""
    execution, task_runs = wire.execution_from_proto(message)
    return ExecutionSnapshot(execution=execution, task_runs=task_runs, deduplicated=deduplicated)


def submitted(response: tpb.SubmitExecutionResponse) -> ExecutionSnapshot:
    """The execution a submit stored, with the handlers of it that no connected worker served."""
    unserved = tuple(response.unserved_handlers)
    execution, task_runs = wire.execution_from_proto(response.execution)
    return ExecutionSnapshot(
        execution=execution, task_runs=task_runs, deduplicated=response.deduplicated, unserved_handlers=unserved
    )


def unserved_warning(execution_id: str, handlers: Sequence[str]) -> str:
    """What the CLI says of a submit whose handlers no connected worker serves."""
    names = ", ".join(repr(handler) for handler in handlers)
    return (
        f"no connected worker serves {names}: execution {execution_id} waits until one connects"
        " (or until its schedule-to-start timeout)"
    )


def submit_results(response: tpb.SubmitExecutionsResponse) -> list[SubmitResult]:
    return [
        SubmitResult(
            index=index,
            execution_id=item.execution_id,
            deduplicated=item.deduplicated,
            error=wire.error_from_status_name(item.error_code, item.error_message) if item.error_code else None,
            unserved_handlers=tuple(item.unserved_handlers),
        )
        for index, item in enumerate(response.results)
    ]


def stats_from_proto(response: tpb.GetStatsResponse) -> Stats:
    queue = response.queue
    return Stats(
        queue=QueueStats(
            size=queue.size,
            capacity=queue.capacity,
            waiting_submitters=queue.waiting_submitters,
        ),
        in_flight=response.in_flight,
        connected_workers=response.connected_workers,
        free_slots=response.free_slots,
        handlers=tuple(
            HandlerStats(
                handler=h.handler,
                pending=h.pending,
                in_flight=h.in_flight,
                free_slots=h.free_slots,
                workers=h.workers,
                oldest_queued_at=wire.optional_timestamp(h, "oldest_queued_at"),
            )
            for h in response.handlers
        ),
        concurrency_keys=tuple(
            ConcurrencyKeyStats(key=k.key, limit=k.limit, running=k.running, queued=k.queued, waiting=k.waiting)
            for k in response.concurrency_keys
        ),
        rate_limits=tuple(
            RateLimitStats(
                name=r.name,
                rate_per_s=r.rate_per_s,
                burst=r.burst,
                tokens=r.tokens,
                reserved=r.reserved,
                waiting=r.waiting,
            )
            for r in response.rate_limits
        ),
    )


def worker_from_proto(message: tpb.WorkerInfo) -> WorkerInfo:
    return WorkerInfo(
        session_id=message.session_id,
        instance_id=message.instance_id,
        name=message.name,
        handlers=tuple(message.handlers),
        slots=message.slots,
        in_flight=message.in_flight,
        labels=dict(message.labels),
        agent_version=message.agent_version,
        connected_at=wire.optional_timestamp(message, "connected_at"),
        last_seen_at=wire.optional_timestamp(message, "last_seen_at"),
        draining=message.draining,
        lease_timeout=wire.optional_duration(message, "lease_timeout"),
        replica=message.replica,
    )


def workers_from_proto(response: tpb.ListWorkersResponse | tpb.DrainWorkerResponse) -> list[WorkerInfo]:
    return [worker_from_proto(worker) for worker in response.workers]


def drain_request(name: str, *, session_id: str, grace: timedelta | None, reason: str) -> tpb.DrainWorkerRequest:
    return request(
        tpb.DrainWorkerRequest,
        name=name,
        session_id=session_id,
        grace=wire.duration_to_proto(grace, "grace"),
        reason=reason,
    )


def ignore_event(_event: object) -> None:
    """An `on_event` that shows nothing: the wait for one execution on a server older than WaitExecutions
    follows the execution's watch instead."""


def result_of(done: ExecutionSnapshot) -> Any:
    """The output of a terminal execution, or the typed error of its failure or cancellation.

    A terminal state this version does not know (a newer server) is no success: ExecutionEnded names it.
    """
    if done.state is State.SUCCESS:
        return done.output
    if done.state is State.FAILED:
        raise ExecutionFailed(done)
    if done.state is State.CANCELLED:
        raise ExecutionCancelled(done)
    raise ExecutionEnded(done)


def deadline_exceeded(error: grpc.RpcError) -> bool:
    return rpc_status(error)[0] is grpc.StatusCode.DEADLINE_EXCEEDED


# ---- Loops --------------------------------------------------------------------------------------
# The decisions of the sync and async loops; each client drives one of these with its own I/O (the
# streams followed across outages are in `_streams`).


class ListPager:
    """One `list`: the page requests and how many executions the limit still allows."""

    def __init__(
        self, *, states: Iterable[State | str], handler: str, limit: int | None, page_size: int | None
    ) -> None:
        expect(limit, int, "limit", optional=True)
        expect(page_size, int, "page_size", optional=True)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be zero or more (None: no limit), got {limit}")
        self._states = list(many(states, "states"))
        self._handler = handler
        self._limit = limit
        self._page_size = page_size
        self._token = ""
        self._fetched = 0
        self._finished = False

    @property
    def more(self) -> bool:
        """Whether to fetch another page."""
        return not self._finished and (self._limit is None or self._fetched < self._limit)

    def request(self) -> tpb.ListExecutionsRequest:
        return list_request(
            states=self._states,
            handler=self._handler,
            page_size=page_size_for(self._limit, self._page_size, self._fetched),
            page_token=self._token,
        )

    def page(self, response: tpb.ListExecutionsResponse) -> Iterator[ExecutionSnapshot]:
        """The page's executions, as far as the limit allows."""
        for message in response.executions:
            if self._limit is not None and self._fetched >= self._limit:
                self._finished = True
                return
            self._fetched += 1
            yield snapshot(message)
        self._token = response.next_page_token
        if not self._token:
            self._finished = True
