"""The audit trail: one structured line per cancel, delete, drain and refused call, on logger `taskwire.audit`.

Each line is `key=value` pairs in a fixed order (values with spaces, quotes or `=` are JSON-quoted), so a
log shipper can parse it without a grammar:

    audit action=denied identity=alice role=reader method=CancelExecution target=0190... code=PERMISSION_DENIED \
reason="role reader may not call CancelExecution; it needs admin or submitter"

`identity` is `-` for a caller without a valid credential and `anonymous` when the server runs without an
auth file. Tokens never appear: nothing here is given one.

May use: the standard library only (the engine calls `audit_refused_attempt`).
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("taskwire.audit")

ANONYMOUS = "anonymous"
UNKNOWN = "-"


def _value(value: object) -> str:
    text = str(value) if value not in (None, "") else UNKNOWN
    if any(c in text for c in ' "=\\\n\t') or not text.isprintable():
        return json.dumps(text)
    return text


def audit(action: str, *, identity: str, method: str, target: str = "", **fields: object) -> None:
    """One audit line: what happened, who did it (its identity name, "" for anonymous), on what."""
    pairs = {"action": action, "identity": identity or ANONYMOUS, "method": method, "target": target, **fields}
    log.info("audit %s", " ".join(f"{key}={_value(value)}" for key, value in pairs.items()))


def audit_refused_attempt(identity: str, worker: str, key: tuple[str, int], what: str) -> None:
    """A worker tried to report on (or take back) an attempt held for another identity."""
    audit(
        "denied",
        identity=identity,
        method="Connect",
        target=f"{key[0]}#{key[1]}",
        code="PERMISSION_DENIED",
        worker=worker,
        reason=f"{what} on an attempt held for another identity",
    )
