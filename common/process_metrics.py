"""The process's own Prometheus metrics, served beside taskwire's by the server and the worker agent."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def add_process_metrics(registry: CollectorRegistry) -> None:
    """Add to `registry` what any Python service exports: CPU seconds, memory and open files (`process_*`, where
    `/proc` exists), the garbage collector's passes by generation (`python_gc_*`) and the interpreter
    (`python_info`)."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
