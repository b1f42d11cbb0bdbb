"""Load and quiescence for fault scenarios: concurrent submitters that remember what they saw.

A `Load` runs submitter threads against a server address that may die and come back: every submit
carries a unique op (in its metadata and as its idempotency key), and its outcome is recorded as the
client saw it: acknowledged with an id, refused with a definite status, or unknown.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc

from taskwire.client import Client, RetryPolicy, TaskwireError
from taskwire.client._common import CHANNEL_OPTIONS
from taskwire.common.http2 import keepalive_options
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from taskwire.v1 import types_pb2 as pb
from tests.harness import wait_for

from .checker import Fault, Outcome, Report, Submission, check
from .journal import read_journal
from .observe import OP_KEY, slots_in_use, stored_executions

# Statuses after which the execution may or may not exist: the request may have been applied.
UNKNOWN_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)


UNKNOWN_STATUS_NAMES = frozenset(code.name for code in UNKNOWN_CODES)


def journal_spec(
    op: str, *, seconds: float = 0.0, max_attempts: int = 3, handler: str = "journal.work"
) -> tpb.ExecutionSpec:
    spec = tpb.ExecutionSpec(name=op, metadata={OP_KEY: op}, idempotency_key=op)
    task = spec.tasks.add(task_id="main", handler=handler)
    task.input.data = f'{{"seconds": {seconds}}}'.encode()
    task.input.content_type = "application/json"
    task.retry_policy.CopyFrom(pb.RetryPolicy(max_attempts=max_attempts))
    task.retry_policy.initial_interval.FromMilliseconds(50)
    return spec


@dataclass
class Load:
    """`threads` submitters, each submitting `per_thread` executions one at a time (or until `stop()`, with
    `per_thread=None`); `pace_s` spaces one thread's submits. `address` is any gRPC target: several servers
    (`ipv4:127.0.0.1:1,127.0.0.1:2`) are gRPC's own multi-address channel, which moves on when one is unreachable;
    `keepalive_s` makes it notice a server that stopped answering. With `streamed`, the threads submit through one
    SDK `Client` they share, so their submits travel on its submit stream (`StreamSubmits`), retried as the SDK
    retries a submit with an idempotency key."""

    address: str
    threads: int = 4
    per_thread: int | None = 50
    seconds: float = 0.02
    pace_s: float = 0.0
    timeout_s: float = 5.0
    keepalive_s: float | None = None
    streamed: bool = False
    ops: str = "op"  # the prefix of its submits' ops (and keys): another load beside it needs one of its own
    # The handlers its ops go to, in turn: journal.work, and journal.work_sync, its twin as a plain function.
    handlers: tuple[str, ...] = ("journal.work",)
    submissions: list[Submission] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)
    _workers: list[threading.Thread] = field(default_factory=list)
    _ops: Iterator[int] = field(default_factory=itertools.count)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _client: Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    def start(self) -> Load:
        target = self._sdk_submitter if self.streamed else self._submitter
        if self.streamed:
            self._client = Client(self.address, timeout=timedelta(seconds=self.timeout_s))
        for _ in range(self.threads):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout_s: float = 120.0) -> None:
        for thread in self._workers:
            thread.join(timeout_s)
            assert not thread.is_alive(), "a submitter did not finish"
        if self.streamed:
            self._client.close()

    def wait_acknowledged(self, count: int, timeout_s: float = 30.0) -> None:
        """Block until at least `count` submits were acknowledged."""
        with self._changed:
            ok = self._changed.wait_for(lambda: self.acknowledged >= count, timeout_s)
        assert ok, f"only {self.acknowledged} of {count} submits acknowledged in {timeout_s}s"

    @property
    def acknowledged(self) -> int:
        return sum(s.outcome is Outcome.ACKNOWLEDGED for s in self.submissions)

    def _record(self, submission: Submission) -> None:
        with self._changed:
            self.submissions.append(submission)
            self._changed.notify_all()

    def _next_op(self) -> tuple[str, str]:
        """A new op, and the handler it goes to."""
        with self._lock:
            number = next(self._ops)
        return f"{self.ops}-{number}", self.handlers[number % len(self.handlers)]

    def _submit_each(self, submit: Callable[[str, str], Submission]) -> None:
        """One thread's submits, one at a time, each with a new op, its outcome recorded."""
        sent = itertools.count(1)
        while not self._stopped.is_set() and (self.per_thread is None or next(sent) <= self.per_thread):
            self._record(submit(*self._next_op()))
            if self.pace_s:
                self._stopped.wait(self.pace_s)

    def _submitter(self) -> None:
        options = list(CHANNEL_OPTIONS)  # as the SDK's channel: a connection that does not answer is given up quickly
        if self.keepalive_s is not None:
            options += keepalive_options(self.keepalive_s, self.keepalive_s)
        with grpc.insecure_channel(self.address, options=options) as channel:
            stub = task_service_pb2_grpc.TaskServiceStub(channel)

            def submit(op: str, handler: str) -> Submission:
                request = tpb.SubmitExecutionRequest(execution=journal_spec(op, seconds=self.seconds, handler=handler))
                try:
                    response: tpb.SubmitExecutionResponse = stub.SubmitExecution(
                        request, timeout=self.timeout_s, wait_for_ready=True
                    )
                except grpc.RpcError as error:
                    return Submission(op, Outcome.UNKNOWN if error.code() in UNKNOWN_CODES else Outcome.REFUSED)
                return Submission(op, Outcome.ACKNOWLEDGED, response.execution.id)

            self._submit_each(submit)

    def _sdk_submitter(self) -> None:
        retry = RetryPolicy(max_attempts=3, initial_interval=timedelta(milliseconds=50))

        def submit(op: str, handler: str) -> Submission:
            try:
                snapshot = self._client.submit(
                    handler,
                    {"seconds": self.seconds},
                    name=op,
                    key=op,
                    metadata={OP_KEY: op},
                    retry_policy=retry,
                )
            except TaskwireError as error:
                unknown = error.status_name in UNKNOWN_STATUS_NAMES
                return Submission(op, Outcome.UNKNOWN if unknown else Outcome.REFUSED)
            return Submission(op, Outcome.ACKNOWLEDGED, snapshot.execution.id)

        self._submit_each(submit)


def quiesce(address: str, *, timeout_s: float = 60.0) -> None:
    """Wait until every stored execution is terminal (the checker then reports whatever is still not)."""
    with contextlib.suppress(TimeoutError):
        wait_for(
            lambda: all(e.state in {"SUCCESS", "FAILED", "CANCELLED"} for e in stored_executions(address)),
            timeout_s=timeout_s,
            what="every execution to end",
        )


def final_report(
    address: str,
    load: Load,
    journal: Path,
    faults: Iterable[Fault],
    *,
    settle: Callable[[], None] | None = None,
    quiesce_s: float = 60.0,
) -> Report:
    """Quiesce, then run the checker over what the clients saw, the store and the handlers' journal."""
    quiesce(address, timeout_s=quiesce_s)
    if settle is not None:
        settle()
    return check(
        submissions=load.submissions,
        stored=stored_executions(address),
        runs=read_journal(journal),
        faults=faults,
        slots_in_use=slots_in_use(address),
    )
