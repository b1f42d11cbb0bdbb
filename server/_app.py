"""The taskwire server: the engine behind gRPC, with health checking and reflection.

It serves plaintext or TLS (mutual TLS with a client CA) as `_tls` decides, and refuses to serve
plaintext or without credentials off loopback unless told `insecure`.

Shutdown order (STYLE.md): stop accepting → stop dispatching and tell the
workers the server is going away, then wait (within the grace period) until
each has hung up, so everything they wrote is read → stop the gRPC server →
flush state → close the store. Workers keep running their attempts and hand
them to the next server; draining a worker is an operator's act, never a side
effect of a restart. Nothing acknowledged is lost either way: an acknowledged
submit is already committed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from taskwire.common.http2 import HTTP2_OPTIONS
from taskwire.v1 import task_service_pb2, worker_service_pb2

from ._auth import AuthGate
from ._auth_file import AuthConfig, load_auth_file
from ._config import ServerConfig
from ._edge import RejectionLog, add_service
from ._history_wire import ProtoHistoryCodec
from ._replicas import ReplicaLoops
from ._servicers import TaskService
from ._tls import CertificateFiles, listen_refusal, server_credentials
from ._worker_servicer import WorkerService
from .engine import Clock, Engine
from .store import SqliteStore, Store, store_from_url
from .store._url import as_postgres

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ._http import HttpEndpoint
    from ._metrics import ServerMetrics

log = logging.getLogger(__name__)

TASK = task_service_pb2.DESCRIPTOR.services_by_name["TaskService"]
WORKER = worker_service_pb2.DESCRIPTOR.services_by_name["WorkerService"]
TASK_SERVICE = TASK.full_name
WORKER_SERVICE = WORKER.full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _check_free(listen: str) -> None:
    """Bind the address once without SO_REUSEPORT, as gRPC will, so that a used port is refused here with
    one clear line rather than by gRPC core's own log line. Port 0 is always free."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return
    for family, kind, proto, _name, address in socket.getaddrinfo(
        host.strip("[]") or None, int(port), type=socket.SOCK_STREAM
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)


class AddressInUse(OSError):
    """The address to listen on is taken (by another server, most likely) or cannot be bound."""


class InsecureListen(ValueError):
    """Plaintext or unauthenticated service on a non-loopback address, without `insecure`."""


class TaskwireServer:
    def __init__(self, config: ServerConfig, *, store: Store | None = None, clock: Clock | None = None) -> None:
        self.config = config
        self._store: Store = store or (
            store_from_url(
                config.store_url,
                standby=config.standby,
                lease_s=config.store_lease.total_seconds(),
                replica=config.replica,
                notify=config.store_notify,
            )
            if config.store_url
            else SqliteStore(config.db_path)
        )
        postgres = as_postgres(self._store)
        if postgres is not None:
            postgres.on_lost = self._on_fatal  # taken over, or the lease not renewed in time: stop at once
        self._http: HttpEndpoint | None = None
        self._interceptors: list[grpc.aio.ServerInterceptor] = []
        registry: CollectorRegistry | None = None
        observer: ServerMetrics | None = None
        if config.metrics_listen is not None:
            # Here: prometheus_client and aiohttp load only when metrics are served (startup).
            from prometheus_client import CollectorRegistry

            from taskwire.common.process_metrics import add_process_metrics

            from ._http import HttpEndpoint
            from ._metrics import CallMetrics, EngineGauges, ServerMetrics

            registry = CollectorRegistry(auto_describe=False)
            add_process_metrics(registry)
            observer = ServerMetrics(registry)
            self._http = HttpEndpoint(registry)
            self._interceptors.append(CallMetrics(registry))
        self.engine = Engine(
            store=self._store,
            config=config,
            codec=ProtoHistoryCodec(),
            clock=clock,
            on_fatal=self._on_fatal,
            observer=observer,
            replica=postgres if config.replica else None,
        )
        if registry is not None:
            registry.register(EngineGauges(self.engine))
        self._replicas: ReplicaLoops | None = None
        self.metrics_address = ""
        self._health = HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self.address = ""
        self.auth: AuthConfig | None = None  # read from config.auth_file when the server starts
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        self._hurry: asyncio.Task[None] | None = None
        self._stop_lock = asyncio.Lock()
        self.failure: BaseException | None = None
        self.certificates: CertificateFiles | None = None

    async def start(self) -> str:
        """Bind the port, open the store, recover, and serve. Returns the bound address (useful with port 0).

        The port is bound first and alone (no SO_REUSEPORT): a second server on a used port, or on a
        store another server owns, refuses before it changes anything. A standby (`config.standby`) first
        waits for the store, with no port bound meanwhile, so that clients and workers given several
        addresses find the active server; it binds once it holds the store."""
        refusal = listen_refusal(self.config)
        if refusal is not None:
            raise InsecureListen(refusal)
        credentials, self.certificates = server_credentials(self.config)  # TlsFileError when unusable
        max_message = self.config.max_message_bytes
        self.auth = load_auth_file(self.config.auth_file) if self.config.auth_file is not None else None
        server = grpc.aio.server(
            # Metrics first: they count the calls the gate refuses too.
            interceptors=[*self._interceptors, AuthGate(self.auth)],
            options=[
                ("grpc.max_receive_message_length", max_message),
                ("grpc.max_send_message_length", max_message),
                # Headers past this are refused (RESOURCE_EXHAUSTED) before any handler runs.
                ("grpc.max_metadata_size", self.config.max_metadata_bytes),
                ("grpc.absolute_max_metadata_size", self.config.max_metadata_bytes),
                # Workers probe their stream with keepalive pings (every few seconds, also when idle).
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                ("grpc.keepalive_permit_without_calls", 1),
                # gRPC shares ports by default: two servers on one port would split clients and workers.
                ("grpc.so_reuseport", 0),
                # A fixed flow-control window, no bandwidth-delay pings (see taskwire.common.http2).
                *HTTP2_OPTIONS,
            ],
        )
        if self.config.standby:
            self._probe_listen()  # a used port is refused now, not after the wait
            await self._store.open()  # waits while another server holds the database
        rejections = RejectionLog()
        add_service(server, TaskService(engine=self.engine, config=self.config, rejections=rejections), TASK)
        add_service(server, WorkerService(engine=self.engine, config=self.config, rejections=rejections), WORKER)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (TASK_SERVICE, WORKER_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server
        )
        try:
            self._probe_listen()
            try:
                if credentials is None:
                    port = server.add_insecure_port(self.config.listen)
                else:
                    port = server.add_secure_port(self.config.listen, credentials)
            except (RuntimeError, OSError):
                raise AddressInUse(
                    f"cannot listen on {self.config.listen}: the address is in use or not available"
                ) from None
        except AddressInUse:
            if self.config.standby:
                await self._store.close()  # it holds the store already: let the next one have it
            raise
        host = self.config.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        try:
            if self._http is not None and self.config.metrics_listen is not None:
                self.metrics_address = await self._http.start(self.config.metrics_listen)
            await self._store.open()
            await self.engine.start()
            if self.engine.replicas.replica_store is not None:
                self._replicas = ReplicaLoops(
                    engine=self.engine,
                    store=self.engine.replicas.replica_store,
                    lease_s=self.config.store_lease.total_seconds(),
                    notify=self.config.store_notify,
                )
                await self._replicas.start()
        except BaseException:
            await server.stop(None)  # never started: this only releases the port
            if self._http is not None:
                await self._http.close()
            raise
        await server.start()
        self._grpc = server
        for service in ("", TASK_SERVICE, WORKER_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.address

    def _probe_listen(self) -> None:
        try:
            _check_free(self.config.listen)
        except OSError:
            raise AddressInUse(
                f"cannot listen on {self.config.listen}: the address is in use or not available"
            ) from None

    def _on_fatal(self, error: BaseException) -> None:
        self.failure = error
        self.stop_soon(grace=None)

    def stop_soon(self, *, grace: timedelta | None) -> asyncio.Task[None]:
        """Start stopping (graceful with `grace`, at once with None); a later call with None hurries it."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.shutdown(grace=grace))
        elif grace is None and self._hurry is None:
            self._hurry = asyncio.ensure_future(self._stop_now())
        return self._stopping

    async def shutdown(self, *, grace: timedelta | None) -> None:
        """Graceful with a grace period; immediate with None. Idempotent."""
        await self._health.enter_graceful_shutdown()
        self.engine.stop_accepting()
        if grace is not None and grace > timedelta(0):
            # Workers retry at least this often until the next server is up.
            await self.engine.release_workers(grace, reconnect_within=self.config.heartbeat_interval)
        await self._stop_now()

    async def _stop_now(self) -> None:
        async with self._stop_lock:
            if self._stopped.is_set():
                return
            try:
                if self._replicas is not None:
                    await self._replicas.close()
                await self.engine.close()
            finally:  # whatever closing the engine met, the server stops
                if self._grpc is not None:
                    await self._grpc.stop(grace=0.5)
                if self._http is not None:
                    await self._http.close()
                await self._store.close()
                self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def __aenter__(self) -> TaskwireServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown(grace=None)
