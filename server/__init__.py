"""The taskwire control-plane server: `taskwire-server`, or embedded with `TaskwireServer`.

    from taskwire.server import ServerConfig, TaskwireServer

    async with TaskwireServer(ServerConfig(listen="127.0.0.1:0")) as server:
        print(server.address)

The store is pluggable behind the `Store` protocol: `SqliteStore` is the default, `PostgresStore` keeps
the state in a PostgreSQL database (`ServerConfig(store_url="postgresql://…")`), `MemoryStore` is
for tests. Everything else in this package is private. The names are loaded on first use, so that
importing the pure domain (`taskwire.server.domain`) loads no grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

if TYPE_CHECKING:
    from ._app import TaskwireServer
    from ._config import ServerConfig
    from .domain import Limits
    from .store import MemoryStore, PostgresStore, SqliteStore, Store, StoreError

# Each public name: the module that defines it and its name there (loaded by __getattr__, below).
_WHERE = {
    "TaskwireServer": ("._app", "TaskwireServer"),
    "ServerConfig": ("._config", "ServerConfig"),
    "Limits": (".domain", "Limits"),
    "MemoryStore": (".store", "MemoryStore"),
    "PostgresStore": (".store", "PostgresStore"),
    "SqliteStore": (".store", "SqliteStore"),
    "Store": (".store", "Store"),
    "StoreError": (".store", "StoreError"),
}

__all__ = [
    "Limits",
    "MemoryStore",
    "PostgresStore",
    "ServerConfig",
    "SqliteStore",
    "Store",
    "StoreError",
    "TaskwireServer",
]


if not TYPE_CHECKING:  # the type checker sees the imports above instead
    __getattr__ = lazy_names(__name__, globals(), _WHERE)
