"""Which store a `--store` URL names: `postgresql://…` (or `postgres://…`) or `sqlite:PATH`.

`sqlite:///abs/path.db` is the absolute file /abs/path.db and `sqlite:relative/path.db` a file relative
to the working directory (a `sqlite://host/…` URL names a host, which SQLite has not, and is refused).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ._protocol import Store
from ._sqlite import SqliteStore

if TYPE_CHECKING:
    from ._postgres import PostgresStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def sqlite_path(url: str) -> Path:
    """The file of a `sqlite:` URL; ValueError when the URL names none."""
    rest = url.removeprefix("sqlite:")
    if rest.startswith("//"):
        if not rest.startswith("///"):
            raise ValueError(f"store URL {url!r} names a host; use sqlite:///absolute/path or sqlite:relative/path")
        rest = rest[2:]
    if not rest:
        raise ValueError(f"store URL {url!r} names no file")
    return Path(rest)


def store_from_url(
    url: str, *, standby: bool = False, lease_s: float = 10.0, replica: str = "", notify: bool = True
) -> Store:
    """A new, unopened store for `url`; ValueError for a URL no store takes. `standby`, `lease_s`, `replica` and
    `notify` are PostgreSQL's (see `PostgresStore`)."""
    if url.startswith(POSTGRES_SCHEMES):
        from ._postgres import PostgresStore  # here: a server on SQLite loads no asyncpg (startup)

        return PostgresStore(url, standby=standby, lease_s=lease_s, replica=replica or None, notify=notify)
    if replica:
        raise ValueError("replicas need a PostgreSQL store (--store postgresql://…)")
    if url.startswith("sqlite:"):
        return SqliteStore(sqlite_path(url))
    raise ValueError(f"store URL {url!r} is neither postgresql://… nor sqlite:PATH")


def as_postgres(store: Store) -> PostgresStore | None:
    """`store` if it is a PostgresStore, else None; without loading PostgreSQL's modules for another store (a
    PostgresStore exists only once its module is loaded)."""
    if f"{__package__}._postgres" not in sys.modules:
        return None
    from ._postgres import PostgresStore  # loaded already (above)

    return store if isinstance(store, PostgresStore) else None


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
