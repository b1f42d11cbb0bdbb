"""``taskwire-worker``: run a worker agent from the command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from taskwire.common import (
    check_choices,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    positive_seconds,
    server_list,
)
from taskwire.common.bearer import TOKEN_ENV
from taskwire.common.tls import TlsConfigError, TlsFiles, add_tls_arguments, tls_from_args

from ._errors import ConnectionLostError, HandlerLoadError, WorkerRefused
from ._executor import Isolation
from ._process import ChildLimits
from ._registry import HandlerRegistry, load_handlers
from ._stream import default_worker_name
from ._worker import Worker

if TYPE_CHECKING:
    from ._metrics import WorkerMetrics

_log = logging.getLogger("taskwire.worker")

_DESCRIPTION = """\
Run a taskwire worker: connect to the server, declare the handlers found in the given modules, and run
the invocations the server sends, at most --slots at once. It reconnects (with backoff) whenever the
stream breaks; running handlers keep running meanwhile.

Shutdown: the first SIGTERM drains (no new work; running attempts get --drain-timeout seconds to
finish, then are aborted and reported); a second SIGTERM, or SIGINT, aborts everything at once.
Every option can also be set with the environment variable named in its help.
"""


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line on stderr (no usage dump) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taskwire-worker",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--server",
        type=server_list,
        default=_env("TASKWIRE_SERVER", "127.0.0.1:50051"),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="address of the taskwire server; several, comma-separated (an active server and its standbys), "
        "are tried in turn on each reconnect [env TASKWIRE_SERVER; default 127.0.0.1:50051]",
    )
    parser.add_argument(
        "--token",
        default=_env(TOKEN_ENV),
        metavar="TOKEN",
        help="bearer token of a worker identity, for a server with an auth file "
        f"[env {TOKEN_ENV}, which other users cannot read from the process list]",
    )
    parser.add_argument(
        "--handlers",
        default=_env("TASKWIRE_HANDLERS"),
        metavar="MODULE[,MODULE...]",
        help="comma-separated Python modules whose @handler functions this worker serves "
        "(MODULE:FUNCTION takes one function) [env TASKWIRE_HANDLERS; required]",
    )
    parser.add_argument(
        "--slots",
        type=positive_int,
        default=_env("TASKWIRE_SLOTS", "4"),
        metavar="N",
        help="how many attempts run at once [env TASKWIRE_SLOTS; default 4]",
    )
    parser.add_argument(
        "--name",
        default=_env("TASKWIRE_WORKER_NAME"),
        help="worker name shown to operators [env TASKWIRE_WORKER_NAME; default HOSTNAME/PID]",
    )
    parser.add_argument(
        "--isolation",
        choices=[i.value for i in Isolation],
        default=_env("TASKWIRE_ISOLATION", Isolation.THREAD.value),
        help="thread: async handlers on the event loop, sync ones in threads; process: every attempt in "
        "a child process, terminated if it ignores its abort signal [env TASKWIRE_ISOLATION; default thread]",
    )
    parser.add_argument(
        "--max-attempts-per-child",
        type=positive_int,
        default=_env("TASKWIRE_MAX_ATTEMPTS_PER_CHILD"),
        metavar="N",
        help="with process isolation, start a fresh child process after each has run N attempts "
        "(1: a fresh one for every attempt) [env TASKWIRE_MAX_ATTEMPTS_PER_CHILD; default no limit]",
    )
    parser.add_argument(
        "--max-memory-per-child",
        type=positive_int,
        default=_env("TASKWIRE_MAX_MEMORY_PER_CHILD"),
        metavar="MIB",
        help="with process isolation, replace a child process after an attempt once its peak resident memory "
        "has passed MIB mebibytes [env TASKWIRE_MAX_MEMORY_PER_CHILD; default no limit]",
    )
    parser.add_argument(
        "--min-children",
        type=non_negative_int,
        default=_env("TASKWIRE_MIN_CHILDREN", "0"),
        metavar="N",
        help="with process isolation, keep N child processes ready (at most --slots): started with the worker, "
        "never let go for being idle, and replaced as soon as one is let go "
        "[env TASKWIRE_MIN_CHILDREN; default 0: started as attempts need them]",
    )
    parser.add_argument(
        "--drain-timeout",
        type=non_negative_seconds,
        default=_env("TASKWIRE_DRAIN_TIMEOUT", "30"),
        metavar="SECONDS",
        help="on SIGTERM, how long running attempts may take to finish before they are aborted "
        "[env TASKWIRE_DRAIN_TIMEOUT; default 30]",
    )
    parser.add_argument(
        "--stop-grace",
        type=non_negative_seconds,
        default=_env("TASKWIRE_STOP_GRACE", "2"),
        metavar="SECONDS",
        help="how long an aborted handler may take to stop before it is stopped by force "
        "[env TASKWIRE_STOP_GRACE; default 2]",
    )
    parser.add_argument(
        "--instance-id",
        default=_env("TASKWIRE_INSTANCE_ID"),
        metavar="ID",
        help="stable id of this agent, kept across reconnects [env TASKWIRE_INSTANCE_ID; default a new UUID]",
    )
    parser.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label shown to operators; repeatable [env TASKWIRE_LABELS, comma-separated]",
    )
    parser.add_argument(
        "--max-reconnect-attempts",
        type=positive_int,
        default=_env("TASKWIRE_MAX_RECONNECT_ATTEMPTS"),
        metavar="N",
        help="give up (exit 1) after N failed connection attempts in a row "
        "[env TASKWIRE_MAX_RECONNECT_ATTEMPTS; default: never give up]",
    )
    parser.add_argument(
        "--keepalive",
        type=positive_seconds,
        default=_env("TASKWIRE_KEEPALIVE", "5"),
        metavar="SECONDS",
        help="ping the server this often, and drop the connection (then reconnect) when a ping is not answered "
        "within as long: how soon a server that stopped answering is noticed [env TASKWIRE_KEEPALIVE; default 5]",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        default=_env("TASKWIRE_LOG_LEVEL", "info"),
        help="log verbosity on stderr; handler log lines below it are not sent either "
        "[env TASKWIRE_LOG_LEVEL; default info]",
    )
    parser.add_argument(
        "--metrics-listen",
        default=_env("TASKWIRE_WORKER_METRICS_LISTEN"),
        metavar="HOST:PORT",
        help="serve this worker's Prometheus metrics on http://HOST:PORT/metrics; port 0 picks one "
        "[env TASKWIRE_WORKER_METRICS_LISTEN; default off]",
    )
    add_tls_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``taskwire-worker``; returns the exit status."""
    parser = build_parser()
    try:
        args, registry, labels, tls = _configure(parser, argv)
    except SystemExit as exc:  # --help, or a bad argument already reported in one line
        return exc.code if isinstance(exc.code, int) else 2

    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    metrics: WorkerMetrics | None = None
    if args.metrics_listen:
        from ._metrics import WorkerMetrics  # here: prometheus_client only when metrics are served (startup)

        metrics = WorkerMetrics()
        try:
            host, port = metrics.serve(args.metrics_listen)
        except (OSError, ValueError) as error:
            print(f"taskwire-worker: cannot serve metrics on {args.metrics_listen}: {error}", file=sys.stderr)
            return 2
        _log.info("metrics on http://%s:%d/metrics", host, port)
    worker = Worker(
        server=args.server,
        registry=registry,
        slots=args.slots,
        name=args.name or default_worker_name(),
        instance_id=args.instance_id or str(uuid.uuid4()),
        labels=labels,
        isolation=Isolation(args.isolation),
        child_limits=ChildLimits(
            max_attempts=args.max_attempts_per_child,
            max_memory_mib=args.max_memory_per_child,
            min_children=args.min_children,
        ),
        drain_timeout_s=args.drain_timeout,
        stop_grace_s=args.stop_grace,
        max_reconnect_attempts=args.max_reconnect_attempts,
        keepalive_s=args.keepalive,
        keepalive_timeout_s=args.keepalive,
        handler_log_level=level,
        tls=tls,
        metrics=metrics,
        token=args.token,
    )
    _log.info(
        "worker %s (instance %s) serving %s with %d slot(s), %s isolation",
        worker.name,
        worker.instance_id,
        ", ".join(registry.names()),
        args.slots,
        args.isolation,
    )
    return asyncio.run(_serve(worker, drain_timeout_s=args.drain_timeout))


def _configure(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, HandlerRegistry, dict[str, str], TlsFiles | None]:
    args = parser.parse_args(argv)
    check_choices(parser, args)
    try:
        tls = tls_from_args(args)
        if tls is not None:
            tls.credentials()  # the files read now: one missing is a usage error, not a retry forever
    except TlsConfigError as exc:
        parser.error(str(exc))
    labels = dict(args.label)
    for item in filter(None, (_env("TASKWIRE_LABELS") or "").split(",")):
        try:
            key, value = _label(item.strip())
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TASKWIRE_LABELS: {exc}")
        labels.setdefault(key, value)
    if args.min_children > args.slots:
        parser.error(f"--min-children ({args.min_children}) cannot be more than --slots ({args.slots})")
    if not args.handlers:
        parser.error("no handler modules given: use --handlers MODULE or TASKWIRE_HANDLERS")
    # Handler modules are imported as `python -m` would: the working directory comes first. Everything
    # taskwire imports lives under `taskwire`, so a user's own `server` or `client` shadows nothing of ours.
    cwd = os.getcwd()
    if cwd in sys.path:
        sys.path.remove(cwd)
    sys.path.insert(0, cwd)
    try:
        registry = load_handlers(args.handlers.split(","))
    except HandlerLoadError as exc:
        parser.error(str(exc))
    return args, registry, labels, tls


async def _serve(worker: Worker, *, drain_timeout_s: float) -> int:
    loop = asyncio.get_running_loop()
    terms = 0

    def on_sigterm() -> None:
        nonlocal terms
        terms += 1
        if terms == 1:
            _log.info("SIGTERM: draining for up to %gs (send it again to stop at once)", drain_timeout_s)
            worker.drain()
        else:
            _log.info("second SIGTERM: aborting running attempts")
            worker.drain(grace_s=0)

    def on_sigint() -> None:
        _log.info("SIGINT: aborting running attempts")
        worker.drain(grace_s=0)

    _install_signal_handler(loop, signal.SIGTERM, on_sigterm)
    _install_signal_handler(loop, signal.SIGINT, on_sigint)
    await worker.start()
    try:
        await worker.wait_closed()
    except WorkerRefused as exc:  # a configuration the server refuses: a usage error, as a bad option is
        _log.error("%s", exc)
        return 2
    except ConnectionLostError as exc:
        _log.error("%s", exc)
        return 1
    return 0


def _install_signal_handler(
    loop: asyncio.AbstractEventLoop, signum: signal.Signals, callback: Callable[[], None]
) -> None:
    try:
        loop.add_signal_handler(signum, callback)
    except NotImplementedError:  # pragma: no cover - event loops without signal support (Windows)
        signal.signal(signum, lambda *_: loop.call_soon_threadsafe(callback))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
