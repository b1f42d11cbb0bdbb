"""The checks: each drives a fresh worker process through one path of the protocol.

A check reads what the worker sends and raises `Mismatch(expected, got)` at the first difference from
docs/worker-protocol.md. `run_checks` starts a scripted server on loopback and the worker command
(`{address}` and `{slots}` in it are filled in) for every check, and reports each outcome.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

from taskwire.v1 import worker_service_pb2 as wpb

from ._scripted import Mismatch, Ref, ScriptedServer, ScriptedSession, describe, invocation, ref_of, running_of

SLOTS = 2
HEARTBEAT_S = 0.3
CONNECT_S = 20.0  # how long a worker may take to open its stream, unless told otherwise
FENCED_STOP_S = 3.0  # how long a fenced handler may take to stop (a runtime's stop grace, 2 s, and a margin)
HANDLERS = ("conformance.echo", "conformance.sleep", "conformance.fail", "conformance.progress", "conformance.block")


class Kit:
    """One check's world: the scripted server the worker under test connects to, and how long the worker may take
    to open a stream (at its start, and again after the check broke or ended its last one)."""

    def __init__(self, server: ScriptedServer, connect_s: float) -> None:
        self.server = server
        self.connect_s = connect_s

    async def connect(self, **welcome: object) -> tuple[ScriptedSession, wpb.WorkerHello]:
        """The worker's next stream, welcomed (heartbeats every HEARTBEAT_S unless told otherwise)."""
        welcome.setdefault("heartbeat_interval_s", HEARTBEAT_S)
        return await self.server.connect(timeout_s=self.connect_s, **welcome)  # type: ignore[arg-type]

    async def next_session(self) -> ScriptedSession:
        """The worker's next stream, not yet welcomed."""
        return await self.server.next_session(timeout_s=self.connect_s)


@dataclass(frozen=True)
class Check:
    name: str
    expects: str  # what the protocol asks, in a line
    run: Callable[[Kit], Awaitable[None]]


@dataclass(frozen=True)
class Outcome:
    check: Check
    passed: bool
    detail: str
    seconds: float


# ---- Reading -----------------------------------------------------------------------------------------


def _kind(message: wpb.WorkerMessage) -> str:
    return message.WhichOneof("kind") or ""


async def _about(
    session: ScriptedSession, ref: Ref, kind: str, *, timeout_s: float = 10, repeats: tuple[str, ...] = ()
) -> wpb.WorkerMessage:
    """The next message about `ref` (other messages skipped); it must be of `kind`.

    `repeats` are kinds the worker already sent about `ref` on a stream that then broke: reports are at
    least once, so it may send them again, and they are skipped too.
    """
    message = await session.wait_for(lambda m: ref_of(m) == ref and _kind(m) not in repeats, timeout_s=timeout_s)
    if _kind(message) != kind:
        raise Mismatch(f"{kind} for {ref}", describe(message))
    return message


async def _quiet_about(session: ScriptedSession, ref: Ref, seconds: float) -> list[wpb.WorkerMessage]:
    """Everything the worker sends for `seconds`; nothing of it may be about `ref`."""
    seen: list[wpb.WorkerMessage] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = await session.next(skip=(), timeout_s=left)
        except Mismatch:
            break
        if ref_of(message) == ref:
            raise Mismatch(f"nothing more about {ref}", describe(message))
        seen.append(message)
    return seen


async def _fenced_copy_stopped(session: ScriptedSession, message: wpb.ServerMessage, ref: Ref) -> None:
    """The handler of `ref`, fenced (LEASE_LOST, rejected) a while ago, really stopped.

    The fenced copy reports nothing, so ask the worker: the same attempt invoked again is new work that it
    runs once the fenced copy has stopped (docs/worker-protocol.md §4). `conformance.sleep` stops at once
    on its abort signal, so the new copy must start within FENCED_STOP_S; a worker that never aborted the
    fenced handler (it sleeps 30 s) starts it late, or never, or refuses it. The new copy is then cancelled.
    """
    session.send(message)
    expected = f"AttemptStarted for {ref} invoked again: its fenced handler stopped, so the new copy runs"
    try:
        await _about(session, ref, "started", timeout_s=FENCED_STOP_S)
    except Mismatch as error:
        raise Mismatch(expected, f"{error.got} (was the fenced handler ever aborted?)") from None
    session.cancel(ref)
    await _about(session, ref, "cancel_acknowledged")


def _output(message: wpb.WorkerMessage) -> object:
    return json.loads(message.completed.output.data or b"null")


# ---- The checks ----------------------------------------------------------------------------------------


async def _hello(kit: Kit) -> None:
    session = await kit.next_session()
    first = await session.next(skip=())
    frame = session.frames[0]
    if _kind(first) != "hello" or len(frame.messages) != 1:
        raise Mismatch("a first frame holding a single WorkerHello", describe(first))
    hello = first.hello
    missing = sorted(set(HANDLERS) - set(hello.handlers))
    if missing:
        raise Mismatch(f"the handlers {', '.join(HANDLERS)}", f"no {', '.join(missing)}")
    if hello.slots != SLOTS:
        raise Mismatch(f"slots = {SLOTS}, as the command gave", str(hello.slots))
    if not hello.instance_id or not hello.name:
        raise Mismatch("a name and an instance_id", f"name {hello.name!r}, instance_id {hello.instance_id!r}")
    if hello.running_attempts:
        raise Mismatch("no running attempts in a first hello", str(list(hello.running_attempts)))


async def _heartbeats(kit: Kit) -> None:
    session, _ = await kit.connect()
    beats = [m for m in await _quiet_about(session, ("", 0), 8 * HEARTBEAT_S) if _kind(m) == "heartbeat"]
    if len(beats) < 4:
        raise Mismatch(f"a heartbeat every {HEARTBEAT_S}s (4 or more in {8 * HEARTBEAT_S:g}s)", f"{len(beats)}")


async def _result(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.echo", {"a": [1, 2.5, "x"]})
    await _about(session, ref, "started")
    done = await _about(session, ref, "completed")
    if _output(done) != {"a": [1, 2.5, "x"]} or done.completed.output.content_type != "application/json":
        raise Mismatch('output {"a": [1, 2.5, "x"]} as application/json', describe(done))


async def _progress_and_log(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.progress")
    await _about(session, ref, "started")
    kinds: list[wpb.WorkerMessage] = []
    while True:
        message = await session.wait_for(lambda m: ref_of(m) == ref)
        if _kind(message) == "completed":
            break
        kinds.append(message)
    if not any(_kind(m) == "progress" and abs(m.progress.fraction - 0.5) < 1e-9 for m in kinds):
        raise Mismatch("AttemptProgress(0.5) before the end", ", ".join(map(describe, kinds)) or "none")
    if not any(_kind(m) == "log" and "hello from the handler" in m.log.text for m in kinds):
        raise Mismatch("AttemptLog('hello from the handler') before the end", ", ".join(map(describe, kinds)) or "none")


async def _failure(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.fail", {"message": "boom", "retryable": False})
    await _about(session, ref, "started")
    failed = (await _about(session, ref, "failed")).failed
    if failed.error.type != "ConformanceError" or "boom" not in failed.error.message or failed.error.retryable:
        raise Mismatch("error type ConformanceError, message 'boom', retryable false", str(failed.error).strip())


async def _refusal(session: ScriptedSession, handler: str, error_type: str) -> Ref:
    ref = session.invoke(handler, {"seconds": 30})
    message = await session.wait_for(lambda m: ref_of(m) == ref)
    if _kind(message) != "failed" or message.failed.error.type != error_type or not message.failed.error.retryable:
        raise Mismatch(f"AttemptFailed({error_type}, retryable) without AttemptStarted", describe(message))
    return ref


async def _unknown_handler(kit: Kit) -> None:
    session, _ = await kit.connect()
    await _refusal(session, "conformance.absent", "HandlerNotFound")


async def _slots(kit: Kit) -> None:
    session, _ = await kit.connect()
    running = [session.invoke("conformance.sleep", {"seconds": 30}) for _ in range(SLOTS)]
    for ref in running:
        await _about(session, ref, "started")
    await _refusal(session, "conformance.sleep", "SlotsExhausted")
    for ref in running:
        session.cancel(ref)
        await _about(session, ref, "cancel_acknowledged")


async def _duplicate(kit: Kit) -> None:
    session, _ = await kit.connect()
    message, ref = invocation("conformance.sleep", {"seconds": 30})
    session.send(message)
    await _about(session, ref, "started")
    session.send(message)  # the same attempt again, while it runs: the same work
    await _quiet_about(session, ref, 1.0)
    session.cancel(ref)
    await _about(session, ref, "cancel_acknowledged")
    if session.about(ref) != ["started", "cancel_acknowledged"]:
        raise Mismatch("started then cancel_acknowledged, once each", ", ".join(session.about(ref)))


async def _cancel_reasons(kit: Kit) -> None:
    session, _ = await kit.connect()
    reasons = {
        "REQUESTED": wpb.CANCEL_REASON_REQUESTED,
        "TIMED_OUT": wpb.CANCEL_REASON_TIMED_OUT,
        "EXECUTION_TIMED_OUT": wpb.CANCEL_REASON_EXECUTION_TIMED_OUT,
        "UPSTREAM_FAILED": wpb.CANCEL_REASON_UPSTREAM_FAILED,
        "an unknown value": 99,
    }
    for name, reason in reasons.items():
        ref = session.invoke("conformance.sleep", {"seconds": 30})
        await _about(session, ref, "started")
        session.cancel(ref, reason)  # type: ignore[arg-type]
        try:
            await _about(session, ref, "cancel_acknowledged")
        except Mismatch as error:
            raise Mismatch(f"CancelAcknowledged after a cancel with {name}", error.got) from None


async def _cancel_unknown(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = ("run-never-sent", 1)
    session.cancel(ref)
    await _about(session, ref, "cancel_acknowledged", timeout_s=5)


async def _lease_lost(kit: Kit) -> None:
    session, _ = await kit.connect()
    message, ref = invocation("conformance.sleep", {"seconds": 30})
    session.send(message)
    await _about(session, ref, "started")
    session.cancel(ref, wpb.CANCEL_REASON_LEASE_LOST)
    seen = await _quiet_about(session, ref, 8 * HEARTBEAT_S)
    late = [m for m in seen[2:] if _kind(m) == "heartbeat" and ref in running_of(m)]
    if late:
        raise Mismatch(f"heartbeats that no longer list {ref} once it stopped", describe(late[-1]))
    await _fenced_copy_stopped(session, message, ref)


async def _local_timeout(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.sleep", {"seconds": 30}, timeout_s=0.5)
    await _about(session, ref, "started")
    failed = (await _about(session, ref, "failed", timeout_s=6)).failed
    if not failed.timed_out or failed.error.type != "TimeoutError" or not failed.error.retryable:
        raise Mismatch("AttemptFailed(timed_out, TimeoutError, retryable)", str(failed).strip())


async def _blocked_handler(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.block", {"seconds": 2})
    await _about(session, ref, "started")
    beats = 0
    while True:
        message = await session.next(skip=(), timeout_s=10)
        if ref_of(message) == ref:
            if _kind(message) == "completed":
                break
            continue
        if _kind(message) == "heartbeat" and ref in running_of(message):
            beats += 1
    if beats < 3:
        raise Mismatch(f"heartbeats every {HEARTBEAT_S}s listing the attempt while its handler blocks 2s", f"{beats}")


async def _upstream(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.echo", {"$from": "up", "path": "x.1"}, upstream={"up": {"x": [0, 7]}})
    await _about(session, ref, "started")
    done = await _about(session, ref, "completed")
    if _output(done) != 7:
        raise Mismatch('output 7 (the input {"$from": "up", "path": "x.1"} resolved)', describe(done))


async def _invocations_received(kit: Kit) -> None:
    session, _ = await kit.connect()
    message, ref = invocation("conformance.echo", 1)
    message.invocation.dispatch = 1
    session.send(message)
    await _about(session, ref, "started")
    await _about(session, ref, "completed")
    beat = await session.wait_for(lambda m: _kind(m) == "heartbeat", timeout_s=5)
    if not beat.heartbeat.HasField("invocations_received") or beat.heartbeat.invocations_received != 1:
        raise Mismatch("Heartbeat.invocations_received = 1 after dispatch 1 was handled", describe(beat))


async def _reconnect(kit: Kit, seconds: float, *, adopt: bool) -> tuple[ScriptedSession, Ref, wpb.ServerMessage]:
    """A broken stream while an attempt runs; the next stream adopts or rejects it. The new stream, the
    attempt and its invocation."""
    session, hello = await kit.connect()
    message, ref = invocation("conformance.sleep", {"seconds": seconds})
    session.send(message)
    await _about(session, ref, "started")
    session.close()  # the stream breaks while the attempt runs
    again = await kit.next_session()
    second = (await again.next("hello", timeout_s=20)).hello
    if second.instance_id != hello.instance_id or ref not in running_of(wpb.WorkerMessage(hello=second)):
        raise Mismatch(f"a new hello with the same instance_id listing {ref}", " ".join(str(second).split()))
    again.welcome(heartbeat_interval_s=HEARTBEAT_S, adopted=[ref] if adopt else (), rejected=() if adopt else [ref])
    return again, ref, message


async def _reconnect_adopted(kit: Kit) -> None:
    again, ref, _ = await _reconnect(kit, 1.0, adopt=True)
    await _about(again, ref, "completed", timeout_s=10, repeats=("started",))


async def _reconnect_rejected(kit: Kit) -> None:
    again, ref, message = await _reconnect(kit, 30, adopt=False)
    seen = await _quiet_about(again, ref, 8 * HEARTBEAT_S)
    if any(_kind(m) == "heartbeat" and ref in running_of(m) for m in seen[2:]):
        raise Mismatch(f"heartbeats that no longer list the rejected {ref}", "it is still listed")
    await _fenced_copy_stopped(again, message, ref)


async def _drain(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.sleep", {"seconds": 1})
    await _about(session, ref, "started")
    session.drain(10)
    await session.wait_for(lambda m: _kind(m) == "draining", timeout_s=5)
    await _refusal(session, "conformance.echo", "WorkerDraining")
    await _about(session, ref, "completed")
    await session.wait_half_closed(timeout_s=10)


async def _going_away(kit: Kit) -> None:
    session, _ = await kit.connect()
    ref = session.invoke("conformance.sleep", {"seconds": 1.5})
    await _about(session, ref, "started")
    going = wpb.GoingAway(reason="restart")
    going.reconnect_within.FromTimedelta(timedelta(seconds=0.5))
    session.send(wpb.ServerMessage(going_away=going))
    await session.wait_half_closed(timeout_s=10)  # it half-closes, keeping its attempt
    session.close()
    again = await kit.next_session()
    second = (await again.next("hello", timeout_s=20)).hello
    if ref not in running_of(wpb.WorkerMessage(hello=second)):
        raise Mismatch(f"a hello to the next server listing {ref}", " ".join(str(second).split()))
    again.welcome(heartbeat_interval_s=HEARTBEAT_S, adopted=[ref])
    await _about(again, ref, "completed", timeout_s=10, repeats=("started",))


CHECKS: tuple[Check, ...] = (
    Check(
        "hello", "the first frame is one WorkerHello with the handlers, the slots, a name and an instance id", _hello
    ),
    Check("heartbeats", "a Heartbeat every heartbeat_interval of the Welcome", _heartbeats),
    Check("result", "AttemptStarted, then AttemptCompleted with the JSON output", _result),
    Check("progress-and-log", "AttemptProgress and AttemptLog before the terminal report", _progress_and_log),
    Check("failure", "AttemptFailed with the error's type, message and retryable flag", _failure),
    Check("unknown-handler", "AttemptFailed(HandlerNotFound, retryable) without AttemptStarted", _unknown_handler),
    Check("slots", "never more attempts than slots: AttemptFailed(SlotsExhausted) for one more", _slots),
    Check("duplicate-invocation", "the same attempt sent twice while it runs is the same work", _duplicate),
    Check("cancel-reasons", "CancelAcknowledged after a Cancel of every reason but LEASE_LOST", _cancel_reasons),
    Check("cancel-unknown", "CancelAcknowledged at once for an attempt the worker does not run", _cancel_unknown),
    Check(
        "lease-lost",
        "after Cancel(LEASE_LOST): the handler stopped, nothing more about the attempt; invoked again, it runs anew",
        _lease_lost,
    ),
    Check(
        "local-timeout",
        "Invocation.timeout enforced by the worker: AttemptFailed(timed_out, TimeoutError)",
        _local_timeout,
    ),
    Check("blocked-handler", "heartbeats go on, listing the attempt, while a handler blocks", _blocked_handler),
    Check("upstream-outputs", 'a {"$from": ...} input resolved from upstream_outputs', _upstream),
    Check(
        "invocations-received",
        "Heartbeat.invocations_received echoes the highest dispatch handled",
        _invocations_received,
    ),
    Check(
        "reconnect-adopted",
        "a broken stream: re-hello listing the attempt; adopted, its report follows",
        _reconnect_adopted,
    ),
    Check(
        "reconnect-rejected",
        "a rejected attempt is stopped and never mentioned again; invoked again, it runs anew",
        _reconnect_rejected,
    ),
    Check("drain", "Drain: Draining, new work refused (WorkerDraining), running work finished, half-close", _drain),
    Check("going-away", "GoingAway: keep the attempt, half-close, re-hello the next server, report there", _going_away),
)


# ---- Running ------------------------------------------------------------------------------------------


async def _run_one(check: Check, worker_cmd: str, timeout_s: float, connect_s: float) -> Outcome:
    server = ScriptedServer()
    await server.start()
    command = shlex.split(worker_cmd.format(address=server.address, slots=SLOTS))
    env = {**os.environ, "TASKWIRE_SERVER": server.address, "TASKWIRE_SLOTS": str(SLOTS)}
    started = time.monotonic()
    with tempfile.TemporaryFile() as log:
        worker = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            async with asyncio.timeout(timeout_s):
                await check.run(Kit(server, connect_s))
            return Outcome(check, True, "", time.monotonic() - started)
        except (Mismatch, TimeoutError) as error:
            detail = str(error) if isinstance(error, Mismatch) else f"no verdict within {timeout_s:g}s"
            if worker.returncode is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
                detail += f" (the worker exited with {worker.returncode}: {' | '.join(tail)})"
            return Outcome(check, False, detail, time.monotonic() - started)
        finally:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()
            await server.stop()


async def run_checks(
    worker_cmd: str,
    *,
    names: Iterable[str] = (),
    timeout_s: float = 60.0,
    connect_s: float = CONNECT_S,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run the checks named (all when none) against fresh workers from `worker_cmd`, one after another."""
    wanted = set(names)
    outcomes = []
    for check in CHECKS:
        if wanted and check.name not in wanted:
            continue
        outcome = await _run_one(check, worker_cmd, timeout_s, connect_s)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes
