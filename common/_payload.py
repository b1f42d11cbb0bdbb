"""Payloads: opaque bytes plus their media type, and the one JSON coding every part of taskwire uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"


def is_json_content_type(content_type: str) -> bool:
    """True for an empty media type (the wire default), application/json and any ``+json`` type."""
    if content_type == JSON_CONTENT_TYPE or not content_type:  # nearly every payload: no parsing
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type in ("", JSON_CONTENT_TYPE) or media_type.endswith("+json")


@dataclass(frozen=True, slots=True)
class Payload:
    """Opaque bytes plus their media type; JSON unless said otherwise.

    Return one from a handler to send raw bytes instead of a JSON-encoded value (say which media type,
    e.g. ``Payload(data=png, content_type="image/png")``); a handler's ``ctx.raw_input`` is one.
    """

    data: bytes = b"null"
    content_type: str = JSON_CONTENT_TYPE

    @property
    def is_json(self) -> bool:
        return is_json_content_type(self.content_type)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every parse: `json.loads` with an argument builds a new decoder (and scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def loads_json(data: bytes | str) -> Any:
    """Parse JSON text strictly: NaN and Infinity are refused, and so is nesting too deep to parse.

    Raises ValueError for anything that is not JSON by RFC 8259 (UnicodeDecodeError is one). Bytes are
    read as `json.loads` reads them (UTF-8, or UTF-16/32 told by their first bytes).
    """
    try:
        if isinstance(data, str):
            if data.startswith("\ufeff"):
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", data, 0)
            text = data
        else:
            text = data.decode(json.detect_encoding(data), "surrogatepass")
        return _DECODER.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def decode_payload(payload: Payload | None) -> Any:
    """A JSON payload as its decoded value; any other payload (or JSON that does not parse) as the `Payload`."""
    if payload is None:
        return None
    if payload.is_json:
        try:
            return loads_json(payload.data)
        except ValueError:
            return payload
    return payload


def dumps_json(value: object) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused because other languages cannot parse them.

    Raises TypeError for a value JSON cannot hold, ValueError for a float it cannot.
    """
    return _ENCODER.encode(value).encode()


# Built once: `json.dumps` with arguments builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_payload(value: object) -> Payload:
    """`value` encoded as a JSON payload (raises like `dumps_json`)."""
    return Payload(data=dumps_json(value), content_type=JSON_CONTENT_TYPE)
