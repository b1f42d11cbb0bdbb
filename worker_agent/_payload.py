"""Payloads: bytes plus a media type, and the JSON coding of handler inputs and outputs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._errors import InputDecodingError, OutputEncodingError

JSON_CONTENT_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class Payload:
    """Opaque bytes and their media type.

    Return one from a handler to send raw bytes instead of a JSON-encoded value; ``ctx.raw_input`` is one.
    """

    data: bytes
    content_type: str = OCTET_STREAM


@runtime_checkable
class PayloadLike(Protocol):
    """Anything with ``data`` bytes and a ``content_type`` string (for example the proto Payload)."""

    @property
    def data(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


def is_json_content_type(content_type: str) -> bool:
    """True for an empty media type (the wire default), application/json and any ``+json`` type."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("", JSON_CONTENT_TYPE) or media_type.endswith("+json")


def decode_input(payload: Payload) -> object:
    """The handler's view of its input: decoded JSON, or the raw bytes for any other media type.

    An empty JSON payload (an unset input) decodes to None.
    """
    if not is_json_content_type(payload.content_type):
        return payload.data
    if not payload.data:
        return None
    try:
        return json.loads(payload.data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputDecodingError(f"input is not valid JSON: {exc}") from exc


def encode_json(value: object) -> bytes:
    """Compact JSON; NaN and infinities are refused because other languages cannot parse them."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


_PLAIN_JSON = (dict, list, str, int, float, bool, type(None))


def encode_output(value: object) -> Payload:
    """The wire form of a handler's return value."""
    if isinstance(value, Payload):
        return value
    # Plain JSON values skip the runtime check against the PayloadLike protocol, which is slow.
    if (
        not isinstance(value, _PLAIN_JSON)
        and isinstance(value, PayloadLike)
        and isinstance(value.data, bytes)
        and isinstance(value.content_type, str)
    ):
        return Payload(data=value.data, content_type=value.content_type or JSON_CONTENT_TYPE)
    try:
        return Payload(data=encode_json(value), content_type=JSON_CONTENT_TYPE)
    except (TypeError, ValueError) as exc:
        raise OutputEncodingError(
            f"handler returned a value that cannot be encoded as JSON ({type(value).__name__}): {exc}"
        ) from exc


def to_json_compatible(value: object) -> object:
    """A deep copy of ``value`` made only of JSON types; raises TypeError/ValueError early otherwise."""
    return json.loads(encode_json(value))
