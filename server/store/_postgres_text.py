"""Text PostgreSQL cannot hold as it is: a string with a NUL character (SQLite keeps any string).

PostgreSQL's `text` refuses U+0000, and a refused write would stop the server. The free text that
callers and handlers choose (names, reasons, idempotency keys, handler names, content types, submitters,
flow-control keys and rate limits, schedule names, the ids a caller asks for) is stored as itself
unless it holds a NUL or begins with the mark U+E000; those are stored as the mark followed by their
JSON. The mapping is one to one, so equality on stored text
(keys, handler filters, ids) is equality of the strings: query parameters go through `to_db` too.
Everything else in the tables is made by the server (ids, states, codes) or is JSON already.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

MARK: Final = "\ue000"

# The columns of free text, per table.
EXECUTION_TEXT: Final = frozenset({"name", "reason_message", "idempotency_key", "submitted_by"})
TASK_RUN_TEXT: Final = frozenset(
    {
        "handler",
        "input_content_type",
        "reason_message",
        "concurrency_key",
        "fairness_key",
        "rate_limit",
        "rate_limit_key",
    }
)


def to_db(value: str) -> str:
    """`value` as PostgreSQL can store it (itself, unless it holds a NUL or starts with the mark)."""
    if "\x00" in value or value.startswith(MARK):
        return MARK + json.dumps(value)
    return value


def optional_to_db(value: str | None) -> str | None:
    return None if value is None else to_db(value)


def from_db(value: str) -> str:
    if value.startswith(MARK):
        text: str = json.loads(value[len(MARK) :])
        return text
    return value


def decoded(row: Any, columns: Iterable[str]) -> Any:
    """The row itself, or a dict of it with its marked text decoded (rare: only text that held a NUL)."""
    marked = [c for c in columns if isinstance(value := row[c], str) and value.startswith(MARK)]
    if not marked:
        return row
    fixed = dict(row.items())
    for column in marked:
        fixed[column] = from_db(fixed[column])
    return fixed


def jsonb_dumps(value: Any) -> str:
    """`value` as JSON a `jsonb` column takes: its strings (keys too) through `to_db`, since `jsonb` refuses
    the escape of U+0000 that JSON itself allows. Read back with `jsonb_loads`."""
    text = json.dumps(value)
    if "\\u0000" not in text and "\\ue000" not in text:
        return text  # nothing to map (json.dumps writes both characters as escapes)
    return json.dumps(_mapped(value, to_db))


def jsonb_loads(text: str) -> Any:
    """What `jsonb_dumps` stored."""
    value = json.loads(text)
    return _mapped(value, from_db) if MARK in text else value


def _mapped(value: Any, text: Any) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(key): _mapped(item, text) for key, item in value.items()}
    if isinstance(value, list):
        return [_mapped(item, text) for item in value]
    return value
