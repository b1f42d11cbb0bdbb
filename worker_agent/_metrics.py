"""The worker agent's own Prometheus metrics, served on ``--metrics-listen`` (off by default).

Updated from the worker's loop and the handler loop's watchdog; prometheus_client's values are safe to
update from several threads. The names are listed in docs/metrics.md.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

from taskwire.common.process_metrics import add_process_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside each counter

_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:  # its own: with the process's figures too (a registry passed in may have them already)
            registry = CollectorRegistry(auto_describe=False)
            add_process_metrics(registry)
        self.registry = registry
        self.slots = Gauge("taskwire_worker_agent_slots", "Slots this worker declared.", registry=self.registry)
        self.in_use = Gauge(
            "taskwire_worker_agent_slots_in_use", "Attempts running on this worker now.", registry=self.registry
        )
        self._attempts = Counter(
            "taskwire_worker_agent_attempts",
            "Attempts that ended on this worker, by outcome (succeeded, failed, cancelled).",
            ["handler", "outcome"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "taskwire_worker_agent_handler_seconds",
            "How long handlers ran on this worker.",
            ["handler"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._blocked = Counter(
            "taskwire_worker_agent_loop_blocked",
            "Times an async handler blocked its event loop past the stall threshold.",
            ["handler"],
            registry=self.registry,
        )
        self._processes_started = Counter(
            "taskwire_worker_agent_handler_processes_started",
            "Handler processes started (process isolation).",
            registry=self.registry,
        )
        self._processes_ended = Counter(
            "taskwire_worker_agent_handler_processes_ended",
            "Handler processes let go (process isolation), by why: max_attempts, max_memory, idle, stopped (its "
            "handler ignored its abort), died, closed.",
            ["reason"],
            registry=self.registry,
        )
        self.connected = Gauge(
            "taskwire_worker_agent_connected",
            "1 while the worker has a session with the server, else 0.",
            registry=self.registry,
        )

    def attempt_ended(self, handler: str, outcome: str, seconds: float) -> None:
        self._attempts.labels(handler, outcome).inc()
        self._durations.labels(handler).observe(seconds)

    def handler_process_started(self) -> None:
        self._processes_started.inc()

    def handler_process_ended(self, reason: str) -> None:
        self._processes_ended.labels(reason).inc()

    def loop_blocked(self, handler: str) -> None:
        self._blocked.labels(handler).inc()

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on HOST:PORT (port 0 picks one) from a daemon thread; returns the bound address."""
        host, _, port = listen.rpartition(":")
        if not port.isdigit() or int(port) > 65535:
            raise ValueError(f"expected HOST:PORT (port 0 picks one), got {listen!r}")
        server, _thread = start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=self.registry)
        bound_host, bound_port = server.server_address[:2]
        return str(bound_host), int(bound_port)
