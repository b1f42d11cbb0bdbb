"""The JSON coding of handler inputs and outputs, over the shared `Payload` of `taskwire.common`."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from taskwire.common import JSON_CONTENT_TYPE, Payload, dumps_json, json_payload, loads_json

from ._errors import InputDecodingError, OutputEncodingError


@runtime_checkable
class PayloadLike(Protocol):
    """Anything with ``data`` bytes and a ``content_type`` string (for example the proto Payload)."""

    @property
    def data(self) -> bytes: ...

    @property
    def content_type(self) -> str: ...


def decode_input(payload: Payload) -> object:
    """The handler's view of its input: decoded JSON, or the raw bytes for any other media type.

    An empty JSON payload (an unset input) decodes to None.
    """
    if not payload.is_json:
        return payload.data
    if not payload.data:
        return None
    try:
        return loads_json(payload.data)
    except ValueError as exc:
        raise InputDecodingError(f"input is not valid JSON: {exc}") from exc


_PLAIN_JSON = (dict, list, str, int, float, bool, type(None))


def encode_output(value: object) -> Payload:
    """The wire form of a handler's return value."""
    if isinstance(value, Payload):
        return _checked(value)
    # Plain JSON values skip the runtime check against the PayloadLike protocol, which is slow.
    if (
        not isinstance(value, _PLAIN_JSON)
        and isinstance(value, PayloadLike)
        and isinstance(value.data, bytes)
        and isinstance(value.content_type, str)
    ):
        return Payload(data=value.data, content_type=value.content_type or JSON_CONTENT_TYPE)
    try:
        return json_payload(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise OutputEncodingError(
            f"handler returned a value that cannot be encoded as JSON ({type(value).__name__}): {exc}"
        ) from exc


def _checked(payload: Payload) -> Payload:
    """A `Payload` a handler built itself, as the wire can carry it: bytes, a media type, and valid JSON when it
    says it is JSON (the server and every reader of the output decode it as such)."""
    if not isinstance(payload.data, bytes):
        raise OutputEncodingError(f"handler returned a Payload whose data is not bytes ({type(payload.data).__name__})")
    if not isinstance(payload.content_type, str) or not payload.content_type.isprintable():
        raise OutputEncodingError(
            f"handler returned a Payload whose content_type is not a media type: {payload.content_type!r:.100}"
        )
    if payload.is_json and payload.data:
        try:
            loads_json(payload.data)
        except ValueError as exc:
            raise OutputEncodingError(f"handler returned a Payload marked JSON that is not valid JSON: {exc}") from exc
    return payload


def to_json_compatible(value: object) -> object:
    """A deep copy of ``value`` made only of JSON types; raises TypeError/ValueError early otherwise."""
    return loads_json(dumps_json(value))
