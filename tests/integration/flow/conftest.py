"""Fixtures of the flow-control tests: the SDK clients of the worker end-to-end tests."""

from __future__ import annotations

from tests.integration.workers.conftest import client, connect

__all__ = ["client", "connect"]
