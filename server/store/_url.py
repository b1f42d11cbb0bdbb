"""Which store a `--store` URL names: `postgresql://…` (or `postgres://…`) or `sqlite:PATH`.

`sqlite:///abs/path.db` is the absolute file /abs/path.db and `sqlite:relative/path.db` a file relative
to the working directory (a `sqlite://host/…` URL names a host, which SQLite has not, and is refused).
"""

from __future__ import annotations

from pathlib import Path

from ._postgres import PostgresStore
from ._protocol import Store
from ._sqlite import SqliteStore

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
        return PostgresStore(url, standby=standby, lease_s=lease_s, replica=replica or None, notify=notify)
    if replica:
        raise ValueError("replicas need a PostgreSQL store (--store postgresql://…)")
    if url.startswith("sqlite:"):
        return SqliteStore(sqlite_path(url))
    raise ValueError(f"store URL {url!r} is neither postgresql://… nor sqlite:PATH")
