"""Server settings, with the defaults taskwire ships."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .domain import Limits

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DB = Path(".taskwire") / "taskwire.db"


_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_LIMIT = re.compile(r"^([A-Za-z0-9_.\-]{1,128})=(\d+)/(\d*\.?\d*)([smhd])(?::(\d+))?$")


# The shortest --store-lease: the lease is also the idle-in-transaction limit of the writing connection.
MIN_STORE_LEASE = timedelta(seconds=1)
# The longest replica name (it is also a key of the database's rows and channels).
MAX_REPLICA_NAME = 100


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A named rate limit tasks may refer to: `rate` tokens a second, at most `burst` held at once."""

    name: str
    rate: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """`NAME=N/PERIOD[:BURST]`, PERIOD one of s, m, h, d with an optional number before it (`10/s`,
        `100/m`, `5/2s`); BURST defaults to N."""
        found = _RATE_LIMIT.fullmatch(text.strip())
        if found is None:
            raise ValueError(f"rate limit {text!r} is not NAME=N/PERIOD[:BURST], e.g. remote-api=10/s:20")
        name, count, length, unit, burst = found.groups()
        seconds = (float(length) if length else 1.0) * _PERIODS[unit]
        if int(count) < 1 or seconds <= 0:
            raise ValueError(f"rate limit {text!r}: N and the period must be positive")
        limit = cls(name, int(count) / seconds, int(burst) if burst else int(count))
        if limit.burst < 1:
            raise ValueError(f"rate limit {text!r}: the burst must be at least 1")
        return limit


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    db_path: Path = DEFAULT_DB
    # A store URL (`postgresql://…` or `sqlite:PATH`); empty: the SQLite file at db_path.
    store_url: str = ""
    # PostgreSQL: the lease on the database that makes this server its one writer (renewed every third of
    # it); a standby takes over at most this long after the active server stopped renewing.
    store_lease: timedelta = timedelta(seconds=10)
    # PostgreSQL: when another server holds the database, wait (no port bound) and take over when its lease
    # lapses, instead of refusing to start.
    standby: bool = False
    # PostgreSQL: join the database as one of several active replicas under this name (docs/deploy.md);
    # empty: the one server of its database (with standbys).
    replica: str = ""
    # PostgreSQL replicas: tell each other of new work, cancels and history at once (LISTEN/NOTIFY); off:
    # poll only (behind a pooler in transaction mode, which does not pass notifications on).
    store_notify: bool = True
    queue_capacity: int = 10_000
    # Queued task runs held in memory. Beyond this, executions that wait untouched in the queue are
    # dropped from memory once durable and read back from the store in batches when their turn comes:
    # memory stays small for a long queue, and a short one never waits on the store.
    hot_queue_size: int = 1000
    # A queued task run's effective priority rises one level per this long waited (docs/flow-control.md);
    # zero: no aging, strict priority.
    priority_aging: timedelta = timedelta(seconds=60)
    # The rate limits tasks may name (`--rate-limit NAME=N/PERIOD[:BURST]`), docs/flow-control.md.
    rate_limits: tuple[RateLimit, ...] = ()
    limits: Limits = field(default_factory=Limits)
    # A worker sends heartbeats this often; a session silent for lease_timeout loses its attempts.
    heartbeat_interval: timedelta = timedelta(seconds=5)
    lease_timeout: timedelta = timedelta(seconds=30)
    # How long a cancelled attempt's worker has to confirm before the attempt is fenced anyway.
    cancel_grace: timedelta = timedelta(seconds=10)
    # How long a SIGTERM waits for workers to hang up (their reports read) before the server stops.
    shutdown_grace: timedelta = timedelta(seconds=30)
    # Finished executions older than this (since they ended) are deleted in the background; zero keeps
    # them forever. Deleted `retention_batch` at a time, one commit each.
    retention: timedelta = timedelta(days=7)
    retention_batch: int = 500
    # HOST:PORT of the Prometheus metrics endpoint (`/metrics`); None: no HTTP at all.
    metrics_listen: str | None = None
    # Deadline of unary calls that do not set one themselves.
    default_rpc_timeout: timedelta = timedelta(seconds=30)
    # Transport security. With a certificate and key the server speaks TLS only; with a client CA as well
    # it requires a client certificate signed by that CA (mutual TLS). The files are re-read when they change.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # The identity and role configuration (bearer tokens, certificate names).
    auth_file: Path | None = None
    # Listen on a non-loopback address without TLS or credentials (refused unless this is set).
    insecure: bool = False
    # The largest gRPC message; None derives it from the payload limit (see max_message_bytes).
    message_limit_bytes: int | None = None
    # The largest request metadata (headers) the transport accepts.
    max_metadata_bytes: int = 16 * 1024

    @property
    def max_message_bytes(self) -> int:
        """The largest gRPC message sent or received: `message_limit_bytes` when set, else room for two of
        the largest payloads, and 4 MiB at least."""
        if self.message_limit_bytes is not None:
            return self.message_limit_bytes
        return max(4 * 1024 * 1024, 2 * self.limits.max_payload_bytes + 1024 * 1024)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def __post_init__(self) -> None:
        if self.queue_capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        if self.hot_queue_size < 0:
            raise ValueError("hot queue size must not be negative")
        if self.limits.max_payload_bytes < 1:
            raise ValueError("max payload bytes must be at least 1")
        if self.standby and not self.store_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("--standby needs a PostgreSQL store (--store postgresql://…)")
        if self.replica:
            if not self.store_url.startswith(("postgresql://", "postgres://")):
                raise ValueError("--replica needs a PostgreSQL store (--store postgresql://…)")
            if self.standby:
                raise ValueError("--replica and --standby exclude each other: every replica is active")
            if (
                len(self.replica) > MAX_REPLICA_NAME
                or not self.replica.isprintable()
                or self.replica.strip() != self.replica
            ):
                raise ValueError(
                    f"--replica must be a printable name of at most {MAX_REPLICA_NAME} characters, without spaces "
                    f"around it; got {self.replica!r}"
                )
        for name in ("heartbeat_interval", "lease_timeout", "cancel_grace"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name.replace('_', ' ')} must be positive")
        if self.store_lease < MIN_STORE_LEASE:
            raise ValueError(
                f"store lease must be at least {MIN_STORE_LEASE.total_seconds():g}s: it is also how long a commit's "
                "transaction may stay idle before the database ends it"
            )
        names = [limit.name for limit in self.rate_limits]
        if len(set(names)) != len(names):
            raise ValueError("a rate limit is defined twice")
        if self.priority_aging < timedelta(0):
            raise ValueError("priority aging must not be negative")
        if self.retention < timedelta(0):
            raise ValueError("retention must not be negative")
        if self.retention_batch < 1:
            raise ValueError("retention batch must be at least 1")
        if self.shutdown_grace < timedelta(0):
            raise ValueError("shutdown grace must not be negative")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS certificate needs its key and a key its certificate: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("a TLS client CA (mutual TLS) needs the server's TLS certificate and key")
        if (
            self.message_limit_bytes is not None
            and self.message_limit_bytes < self.limits.max_payload_bytes + 64 * 1024
        ):
            raise ValueError("max message bytes must exceed max payload bytes by 64 KiB at least, to carry a payload")
        if self.max_metadata_bytes < 1024:
            raise ValueError("max metadata bytes must be at least 1024")
        if self.lease_timeout <= self.heartbeat_interval:
            raise ValueError("lease timeout must be longer than the heartbeat interval")
