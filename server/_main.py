"""`taskwire-server`: run the control plane."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, TypeVar

from taskwire.common import check_choices, env_flag

from ._app import TaskwireServer
from ._config import DEFAULT_DB, DEFAULT_LISTEN, RateLimit, ServerConfig
from ._local_worker import LocalWorker
from .domain import Limits
from .store import StoreFenced
from .store._url import POSTGRES_SCHEMES, redact, sqlite_path

T = TypeVar("T")
_MAX_MESSAGE = 2**31 - 1  # gRPC's largest message (an int32 option)
# The collector passes over its youngest generation once this many more tracked objects exist than at its
# last pass (CPython's default is 700). A task's objects live a few milliseconds: with the default, a pass ran
# every few tasks under load, found those in flight still alive and moved them on to the older generations,
# whose passes walked them again: 5-11% of the server's CPU, and a quarter of it while a large backlog built
# up. From 50,000, a pass runs when the live objects really grow; it takes 15-40 ms here, and every tenth one,
# which takes the middle generation too, up to 150 ms in a backlog of 100,000 (the default paused up to 280).
YOUNG_OBJECTS = 50_000
DESCRIPTION = """\
Run the taskwire control plane: the gRPC server that holds the bounded queue, the
durable store (SQLite, or PostgreSQL with --store) and the execution state machine.
Worker agents connect to it with `taskwire-worker`; clients use the `taskwire` CLI,
the Python SDK, or any gRPC client (server reflection is on, so grpcurl works
without proto files).

Every option can also be set with the environment variable shown in brackets.
SIGTERM or SIGINT stops gracefully: no more dispatching, the workers are told the
server is going away and hang up (waited for up to --shutdown-grace); they keep
running their tasks and hand them to the next server started on the same store.
A second signal stops at once. Nothing acknowledged is lost either way.
"""


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument as one line on stderr (no usage dump) and exits with status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _positive(
    kind: Callable[[str], T], what: str, *, zero_allowed: bool = False, maximum: int | None = None
) -> Callable[[str], T]:
    """An argparse type: a number of `kind`, above zero (or at least zero with `zero_allowed`), at most
    `maximum` when given."""
    kind_name = "a whole number" if kind is int else "a number"

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be {kind_name}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{what} must be a finite number, got {text!r}")
        if value < 0 or (value == 0 and not zero_allowed):  # type: ignore[operator]
            must = "must not be negative" if zero_allowed else "must be positive"
            raise argparse.ArgumentTypeError(f"{what} {must}, got {text!r}")
        if maximum is not None and value > maximum:  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"{what} must be at most {maximum}, got {text!r}")
        return value

    return parse


def _path_env(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _seconds(what: str, *, zero_allowed: bool = False) -> Callable[[str], timedelta]:
    number = _positive(float, what, zero_allowed=zero_allowed)

    def parse(text: str) -> timedelta:
        try:
            return timedelta(seconds=number(text))
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{what} is longer than any date can hold, got {text!r}") from None

    return parse


def _file(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got nothing")
    return Path(text)


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (port 0 picks one), got {text!r}")
    return text


def _rate_limit(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taskwire-server", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add(
        "--listen",
        type=_host_port,
        default=_env("TASKWIRE_LISTEN", "") or DEFAULT_LISTEN,
        help="address to serve on, HOST:PORT; port 0 picks a free one [TASKWIRE_LISTEN] (default: %(default)s)",
    )
    add(
        "--db",
        type=_file,
        default=None,
        help=f"SQLite database file, created if missing [TASKWIRE_DB] (default: {DEFAULT_DB})",
    )
    add(
        "--store",
        default=_env("TASKWIRE_STORE", ""),
        metavar="URL",
        help="the store as a URL instead of --db: postgresql://USER:PASSWORD@HOST:PORT/DATABASE (the schema is "
        "created or migrated on start) or sqlite:PATH [TASKWIRE_STORE]",
    )
    add(
        "--standby",
        action="store_true",
        default=env_flag("TASKWIRE_STANDBY"),
        help="PostgreSQL: when another server holds the database, wait as its standby (no port bound) and take "
        "over when its lease lapses, instead of refusing to start [TASKWIRE_STANDBY]",
    )
    add(
        "--replica",
        metavar="NAME",
        default=_env("TASKWIRE_REPLICA", ""),
        help="PostgreSQL: run as one of several active replicas of the database, named NAME (unique among them; "
        "a replica restarted under its name takes its work back); clients and workers may use any replica "
        "[TASKWIRE_REPLICA]",
    )
    add(
        "--store-notify",
        choices=("on", "off"),
        default=_env("TASKWIRE_STORE_NOTIFY", "on"),
        help="PostgreSQL replicas: tell each other of new work, cancels and history at once with LISTEN/NOTIFY "
        "(on), or only poll (off: behind a pooler in transaction mode) [TASKWIRE_STORE_NOTIFY] "
        "(default: %(default)s)",
    )
    add(
        "--store-lease",
        type=_seconds("store lease"),
        default=_env("TASKWIRE_STORE_LEASE", "10"),
        help="PostgreSQL: seconds of the lease that makes this server the database's one writer, renewed every "
        "third of it; a standby takes over at most this long after the active server stopped "
        "[TASKWIRE_STORE_LEASE] (default: %(default)s)",
    )
    add(
        "--queue-capacity",
        type=_positive(int, "queue capacity"),
        default=_env("TASKWIRE_QUEUE_CAPACITY", "10000"),
        help="task runs accepted and not yet dispatched before submits are refused or wait "
        "[TASKWIRE_QUEUE_CAPACITY] (default: %(default)s)",
    )
    add(
        "--hot-queue-size",
        type=_positive(int, "hot queue size", zero_allowed=True),
        default=_env("TASKWIRE_HOT_QUEUE_SIZE", "1000"),
        help="queued task runs kept in memory; beyond it, waiting executions are read back from the store "
        "when their turn comes [TASKWIRE_HOT_QUEUE_SIZE] (default: %(default)s)",
    )
    add(
        "--priority-aging",
        type=_seconds("priority aging", zero_allowed=True),
        default=_env("TASKWIRE_PRIORITY_AGING", "60"),
        help="seconds after which a queued task's priority rises one level, so low priorities are not starved; "
        "0: strict priority [TASKWIRE_PRIORITY_AGING] (default: %(default)s)",
    )
    add(
        "--rate-limit",
        action="append",
        type=_rate_limit,
        default=[],
        metavar="NAME=N/PERIOD[:BURST]",
        help="a rate limit tasks may name: N dispatches per PERIOD (s, m, h, d, e.g. 10/s, 100/m, 5/2s), at most "
        "BURST at once (default N); repeat for more [TASKWIRE_RATE_LIMITS, comma-separated]",
    )
    add(
        "--max-payload-bytes",
        # gRPC's limit on a message is an int32, and a message carries twice the payload limit plus 1 MiB.
        type=_positive(int, "max payload bytes", maximum=_MAX_MESSAGE // 2 - 2**20),
        default=_env("TASKWIRE_MAX_PAYLOAD_BYTES", str(Limits().max_payload_bytes)),
        help="largest accepted task input [TASKWIRE_MAX_PAYLOAD_BYTES] (default: %(default)s)",
    )
    add(
        "--heartbeat-interval",
        type=_seconds("heartbeat interval"),
        default=_env("TASKWIRE_HEARTBEAT_INTERVAL", "5"),
        help="seconds between worker heartbeats [TASKWIRE_HEARTBEAT_INTERVAL] (default: %(default)s)",
    )
    add(
        "--lease-timeout",
        type=_seconds("lease timeout"),
        default=_env("TASKWIRE_LEASE_TIMEOUT", "30"),
        help="seconds of worker silence after which its attempts are lost and retried "
        "[TASKWIRE_LEASE_TIMEOUT] (default: %(default)s)",
    )
    add(
        "--cancel-grace",
        type=_seconds("cancel grace"),
        default=_env("TASKWIRE_CANCEL_GRACE", "10"),
        help="seconds a worker has to confirm a cancel before the attempt is fenced "
        "[TASKWIRE_CANCEL_GRACE] (default: %(default)s)",
    )
    add(
        "--shutdown-grace",
        type=_seconds("shutdown grace"),
        default=_env("TASKWIRE_SHUTDOWN_GRACE", "30"),
        help="seconds a graceful stop waits for its workers to hang up (they keep their tasks for the next "
        "server) [TASKWIRE_SHUTDOWN_GRACE] (default: %(default)s)",
    )
    add(
        "--retention",
        type=_seconds("retention", zero_allowed=True),
        default=_env("TASKWIRE_RETENTION", str(7 * 24 * 3600)),
        help="seconds a finished execution is kept after it ended; older ones are deleted in the background, "
        "0 keeps them forever [TASKWIRE_RETENTION] (default: %(default)s, 7 days)",
    )
    add(
        "--metrics-listen",
        type=_host_port,
        metavar="HOST:PORT",
        default=_env("TASKWIRE_METRICS_LISTEN", "") or None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics; port 0 picks a free one "
        "[TASKWIRE_METRICS_LISTEN] (default: off)",
    )
    add(
        "--max-message-bytes",
        type=_positive(int, "max message bytes", maximum=_MAX_MESSAGE),
        default=_env("TASKWIRE_MAX_MESSAGE_BYTES", "") or None,
        help="largest gRPC message received or sent [TASKWIRE_MAX_MESSAGE_BYTES] "
        "(default: twice the payload limit plus 1 MiB, 4 MiB at least)",
    )
    add(
        "--max-metadata-bytes",
        type=_positive(int, "max metadata bytes"),
        default=_env("TASKWIRE_MAX_METADATA_BYTES", str(ServerConfig().max_metadata_bytes)),
        help="largest request metadata (headers); larger requests are refused with RESOURCE_EXHAUSTED "
        "[TASKWIRE_MAX_METADATA_BYTES] (default: %(default)s)",
    )
    tls = parser.add_argument_group(
        "transport security",
        "Plaintext, or service without credentials, is for loopback addresses only: on any\n"
        "other address the server needs TLS and --auth-file, or --insecure. Certificate files\n"
        "are re-read when they change, so a rotation needs no restart.",
    )
    for flag, env, what in (
        ("--tls-cert", "TASKWIRE_TLS_CERT", "the server's certificate chain (PEM); with --tls-key, serve TLS only"),
        ("--tls-key", "TASKWIRE_TLS_KEY", "its private key (PEM)"),
        ("--tls-client-ca", "TASKWIRE_TLS_CLIENT_CA", "require client certificates signed by this CA: mutual TLS"),
        (
            "--auth-file",
            "TASKWIRE_AUTH_FILE",
            "identities, roles, token hashes and limits (TOML, docs/security.md): who may call what; "
            "without it every caller may do everything",
        ),
    ):
        tls.add_argument(flag, type=Path, default=_path_env(env), metavar="FILE", help=f"{what} [{env}]")
    tls.add_argument(
        "--insecure",
        action="store_true",
        default=env_flag("TASKWIRE_INSECURE"),
        help="allow a non-loopback address without TLS or credentials [TASKWIRE_INSECURE]",
    )
    add(
        "--with-local-worker",
        action="store_true",
        default=env_flag("TASKWIRE_WITH_LOCAL_WORKER"),
        help="also start one local worker agent with the demo handlers (what `make run` does) "
        "[TASKWIRE_WITH_LOCAL_WORKER]",
    )
    add(
        "--log-level",
        type=str.upper,
        default=_env("TASKWIRE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="[TASKWIRE_LOG_LEVEL] (default: %(default)s)",
    )
    return parser


def _store_url(args: argparse.Namespace) -> str:
    """The --store URL, checked; ValueError when it names no store or comes with --db."""
    url: str = args.store
    if not url:
        return ""
    if args.db is not None:
        raise ValueError("--db and --store both name the store; give one")
    if url.startswith(POSTGRES_SCHEMES):
        return url
    if url.startswith("sqlite:"):
        sqlite_path(url)
        return url
    raise ValueError(f"--store must be postgresql://… or sqlite:PATH, got {redact(url)!r}")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    db_path = args.db if args.db is not None else Path(_env("TASKWIRE_DB", "") or DEFAULT_DB)
    if db_path.is_dir():
        raise ValueError(f"--db {str(db_path)!r} is a directory; name the database file in it")
    return ServerConfig(
        listen=args.listen,
        db_path=db_path,
        store_url=_store_url(args),
        standby=args.standby,
        replica=args.replica,
        store_notify=args.store_notify == "on",
        store_lease=args.store_lease,
        queue_capacity=args.queue_capacity,
        hot_queue_size=args.hot_queue_size,
        priority_aging=args.priority_aging,
        rate_limits=(
            *(RateLimit.parse(text) for text in os.environ.get("TASKWIRE_RATE_LIMITS", "").split(",") if text.strip()),
            *args.rate_limit,
        ),
        limits=Limits(max_payload_bytes=args.max_payload_bytes),
        heartbeat_interval=args.heartbeat_interval,
        lease_timeout=args.lease_timeout,
        cancel_grace=args.cancel_grace,
        shutdown_grace=args.shutdown_grace,
        retention=args.retention,
        metrics_listen=args.metrics_listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_file=args.auth_file,
        insecure=args.insecure,
        message_limit_bytes=args.max_message_bytes,
        max_metadata_bytes=args.max_metadata_bytes,
    )


def _auth_note(server: TaskwireServer, config: ServerConfig) -> str:
    """The startup line's word on authentication: off (everything allowed), or on with whom."""
    if server.auth is None:
        return "authentication off, no --auth-file: every caller may do everything"
    roles = Counter(identity.role.value for identity in server.auth.identities)
    summary = ", ".join(f"{count} {role}" for role, count in sorted(roles.items()))
    count = len(server.auth.identities)
    return f"authentication on: {count} identities ({summary}) from {config.auth_file}"


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def _start(server: TaskwireServer) -> str | None:
    """Start `server`; None when a stop signal came first (a standby waiting for the database, a long recovery)."""
    loop = asyncio.get_running_loop()
    starting = asyncio.ensure_future(server.start())
    signalled = False

    def stop_starting() -> None:
        nonlocal signalled
        signalled = True
        starting.cancel()

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop_starting)
    try:
        return await starting
    except asyncio.CancelledError:
        if not signalled:
            raise
        return None
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def serve(config: ServerConfig, *, with_local_worker: bool = False) -> int:
    server = TaskwireServer(config)
    try:
        address = await _start(server)
    except Exception as error:
        print(f"taskwire-server: cannot start: {error}", file=sys.stderr)
        return 1
    if address is None:
        print("taskwire-server stopped before it served", flush=True)
        return 0
    # What exists now (modules, the recovered state) lives as long as the server: keep it out of the
    # collector's full passes, which otherwise stop the loop for 15-25 ms every few thousand tasks.
    gc.collect()
    gc.freeze()
    transport = ("mutual TLS" if config.tls_client_ca else "TLS") if config.tls else "plaintext"
    auth = _auth_note(server, config)
    store = redact(config.store_url) if config.store_url else config.db_path
    print(f"taskwire-server listening on {address} ({transport}, store: {store}; {auth})", flush=True)
    if server.metrics_address:
        print(f"taskwire-server metrics on http://{server.metrics_address}/metrics", flush=True)
    loop = asyncio.get_running_loop()

    signals_seen = 0

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        # The first signal lets the workers go (they keep their work for the next server); a second stops at once.
        server.stop_soon(grace=config.shutdown_grace if signals_seen == 1 else None)

    # A closed terminal (SIGHUP) stops the server like Ctrl-C: gracefully, and its local worker with it.
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal)
    local = LocalWorker(address) if with_local_worker else None
    if local is not None:
        await local.start()
        print(local.hints(), flush=True)
    await server.wait_stopped()
    if local is not None:
        await local.stop()
    if isinstance(server.failure, StoreFenced):
        print(f"taskwire-server: {server.failure}", file=sys.stderr)  # the one line: who holds it now
        return 1
    if server.failure is not None:
        print(f"taskwire-server: stopped after a store failure: {server.failure}", file=sys.stderr)
        return 1
    print("taskwire-server stopped", flush=True)
    return 0


def collect_as_a_server() -> None:
    """Set this process's collector as the server runs it (see `YOUNG_OBJECTS`)."""
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # reads the environment's yes/no flags
    except ValueError as error:
        print(f"taskwire-server: error: {error}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    check_choices(parser, args)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    if args.with_local_worker and config.tls:
        parser.error(
            "--with-local-worker runs over plaintext loopback only; start taskwire-worker with --tls-* instead"
        )
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    collect_as_a_server()
    return asyncio.run(serve(config, with_local_worker=args.with_local_worker))


if __name__ == "__main__":
    sys.exit(main())
