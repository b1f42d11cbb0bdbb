"""A harness for testing handlers: run one in-process, record what it reports, abort it on demand.

It runs handlers through the worker's own executor, so a handler behaves here exactly as on a worker:
same context, same abort signal, same outcome rules, same thread or process isolation.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from types import TracebackType

from taskwire.common import Payload, json_payload

from ._abort import AbortReason
from ._context import AttemptInfo, LogLine, ProgressUpdate
from ._executor import AttemptKey, AttemptSpec, Executor, Isolation, SubmitResult
from ._outcome import Outcome
from ._process import ChildLimits
from ._registry import HandlerRegistry, RegisteredHandler, default_registry


class HarnessRun:
    """One handler run started by :meth:`HandlerHarness.start`.

    ``progress`` and ``logs`` fill up as the handler reports; ``abort()`` fires its abort signal;
    ``await outcome()`` waits for how it ended.
    """

    def __init__(self, *, executor: Executor, key: AttemptKey, handler: str) -> None:
        self._executor = executor
        self.key = key
        self.handler = handler
        self.started = False
        self.progress: list[ProgressUpdate] = []
        self.logs: list[LogLine] = []
        self._outcome: Outcome | None = None
        # Replaced by a fresh future on every change; waiters re-check their condition when it resolves.
        self._changed: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        """True once the run has an outcome."""
        return self._outcome is not None

    def abort(self, reason: AbortReason = AbortReason.CANCELLED, message: str = "") -> bool:
        """Fire the handler's abort signal as the worker would.

        SHUTDOWN ends the run as a WorkerShutdown failure, LEASE_LOST and every other reason as
        Cancelled(reason). For the worker's own timeout, start the run with ``timeout_s`` instead.
        Returns False when the run had already ended.
        """
        return self._executor.abort(self.key, reason, message)

    async def outcome(self, timeout_s: float | None = None) -> Outcome:
        """Wait for the run to end; raises TimeoutError if it has not within ``timeout_s``."""
        await self._wait_for(lambda: self._outcome is not None, timeout_s)
        assert self._outcome is not None
        return self._outcome

    async def wait_started(self, timeout_s: float | None = None) -> None:
        """Wait until the handler has started (with process isolation: until the child runs it)."""
        await self._wait_for(lambda: self.started or self.done, timeout_s)

    async def wait_for_progress(self, count: int = 1, timeout_s: float | None = None) -> ProgressUpdate:
        """Wait for the ``count``-th progress report and return it."""
        await self._wait_for(lambda: len(self.progress) >= count or self.done, timeout_s)
        if len(self.progress) < count:
            raise AssertionError(f"the run ended after {len(self.progress)} progress reports, not {count}")
        return self.progress[count - 1]

    async def wait_for_log(self, count: int = 1, timeout_s: float | None = None) -> LogLine:
        """Wait for the ``count``-th log line and return it."""
        await self._wait_for(lambda: len(self.logs) >= count or self.done, timeout_s)
        if len(self.logs) < count:
            raise AssertionError(f"the run ended after {len(self.logs)} log lines, not {count}")
        return self.logs[count - 1]

    async def _wait_for(self, predicate: Callable[[], bool], timeout_s: float | None) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                if self._changed is None:
                    self._changed = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._changed)

    # Called by the harness's sink, on the loop thread.

    def _on_started(self) -> None:
        self.started = True
        self._notify()

    def _on_progress(self, update: ProgressUpdate) -> None:
        self.progress.append(update)
        self._notify()

    def _on_log(self, line: LogLine) -> None:
        self.logs.append(line)
        self._notify()

    def _on_outcome(self, outcome: Outcome) -> None:
        self._outcome = outcome
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def __repr__(self) -> str:
        return f"<HarnessRun {self.handler} {self.key} {'done' if self.done else 'running'}>"


class _HarnessHandlers:
    """The handlers the harness has been asked to run; the latest function given for a name wins."""

    def __init__(self) -> None:
        self._by_name: dict[str, RegisteredHandler] = {}

    def put(self, registered: RegisteredHandler) -> None:
        self._by_name[registered.name] = registered

    def get(self, name: str) -> RegisteredHandler | None:
        return self._by_name.get(name)


class _HarnessSink:
    """The harness's AttemptSink: records each event on its run."""

    def __init__(self) -> None:
        self.runs: dict[AttemptKey, HarnessRun] = {}

    def attempt_started(self, key: AttemptKey) -> None:
        if (run := self.runs.get(key)) is not None:
            run._on_started()

    def attempt_progress(self, key: AttemptKey, update: ProgressUpdate) -> None:
        if (run := self.runs.get(key)) is not None:
            run._on_progress(update)

    def attempt_log(self, key: AttemptKey, line: LogLine) -> None:
        if (run := self.runs.get(key)) is not None:
            run._on_log(line)

    def attempt_finished(self, key: AttemptKey, outcome: Outcome) -> None:
        if (run := self.runs.get(key)) is not None:
            run._on_outcome(outcome)


class HandlerHarness:
    """Runs handlers in-process the way a worker runs them, for tests.

    Use it in async tests::

        async with HandlerHarness() as harness:
            run = harness.start(resize, input={"width": 10})
            await run.wait_for_progress()
            run.abort()
            outcome = await run.outcome(timeout_s=5)

    or from sync code with :meth:`run_sync`.
    """

    def __init__(
        self,
        *,
        isolation: Isolation = Isolation.THREAD,
        registry: HandlerRegistry | None = None,
        slots: int = 64,
        stop_grace_s: float = 2.0,
        kill_grace_s: float = 1.0,
        mp_start_method: str = "spawn",
        child_limits: ChildLimits | None = None,
    ) -> None:
        self._isolation = isolation
        self._slots = slots
        self._stop_grace_s = stop_grace_s
        self._kill_grace_s = kill_grace_s
        self._mp_start_method = mp_start_method
        self._child_limits = child_limits
        self._registry = registry if registry is not None else default_registry
        self._handlers = _HarnessHandlers()
        self._sink = _HarnessSink()
        self._executor = Executor(
            registry=self._handlers,
            sink=self._sink,
            slots=slots,
            isolation=isolation,
            stop_grace_s=stop_grace_s,
            kill_grace_s=kill_grace_s,
            handler_log_level=logging.DEBUG,
            mp_start_method=mp_start_method,
            child_limits=child_limits,
        )

    @property
    def executor(self) -> Executor:
        """The executor running the handlers (the same class a worker uses)."""
        return self._executor

    def start(
        self,
        handler: Callable[..., object] | str,
        /,
        input: object = None,
        *,
        timeout_s: float | None = None,
        task_run_id: str | None = None,
        attempt: int = 1,
        execution_id: str = "harness-execution",
        task_id: str | None = None,
    ) -> HarnessRun:
        """Start a handler (a function, or a name registered with ``@handler``) and return its run.

        ``input`` is JSON-encoded, unless it is a :class:`Payload`, which is passed as is. ``timeout_s``
        is the attempt's timeout, enforced as on a worker. Call it from a running event loop.
        Starting the same ``task_run_id`` and ``attempt`` again returns the run already in progress.
        """
        registered = self._resolve(handler)
        self._handlers.put(registered)
        payload = input if isinstance(input, Payload) else json_payload(input)
        run_id = task_run_id if task_run_id is not None else f"harness-{uuid.uuid4().hex[:12]}"
        info = AttemptInfo(
            task_run_id=run_id,
            attempt=attempt,
            handler=registered.name,
            input=payload,
            execution_id=execution_id,
            task_id=task_id if task_id is not None else registered.name,
        )
        spec = AttemptSpec(info=info, timeout_s=timeout_s)
        key = spec.key
        existing = self._sink.runs.get(key)
        if existing is not None and not existing.done:
            return existing
        run = HarnessRun(executor=self._executor, key=key, handler=registered.name)
        self._sink.runs[key] = run
        if self._executor.submit(spec) is SubmitResult.DUPLICATE:  # pragma: no cover - guarded above
            raise AssertionError(f"attempt {key} is already running")
        return run

    async def run(
        self,
        handler: Callable[..., object] | str,
        /,
        input: object = None,
        *,
        timeout_s: float | None = None,
        outcome_timeout_s: float | None = None,
    ) -> Outcome:
        """Start a handler and wait for its outcome."""
        run = self.start(handler, input, timeout_s=timeout_s)
        return await run.outcome(outcome_timeout_s)

    def run_sync(
        self,
        handler: Callable[..., object] | str,
        /,
        input: object = None,
        *,
        timeout_s: float | None = None,
        outcome_timeout_s: float | None = None,
    ) -> Outcome:
        """Run a handler to its end from sync code (not from inside a running event loop)."""

        async def run_once() -> Outcome:
            async with HandlerHarness(
                isolation=self._isolation,
                registry=self._registry,
                slots=self._slots,
                stop_grace_s=self._stop_grace_s,
                kill_grace_s=self._kill_grace_s,
                mp_start_method=self._mp_start_method,
                child_limits=self._child_limits,
            ) as harness:
                return await harness.run(handler, input, timeout_s=timeout_s, outcome_timeout_s=outcome_timeout_s)

        return asyncio.run(run_once())

    async def close(self) -> None:
        """Abort runs still in progress (as a worker shutdown would) and wait for them. Idempotent."""
        await self._executor.close()

    async def __aenter__(self) -> HandlerHarness:
        self._executor.start()  # the child processes kept ready, under process isolation
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _resolve(self, handler: Callable[..., object] | str) -> RegisteredHandler:
        if isinstance(handler, str):
            registered = self._registry.get(handler)
            if registered is None:
                raise LookupError(f"no handler named {handler!r} is registered")
            return registered
        known = next((h for h in self._registry if h.fn is handler), None)
        return known if known is not None else RegisteredHandler.of(handler)
