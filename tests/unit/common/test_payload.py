"""Payloads: which media types are JSON, and the one JSON coding every part of taskwire uses."""

from __future__ import annotations

import json

import pytest

from taskwire.common import Payload, decode_payload, dumps_json, is_json_content_type, json_payload, loads_json


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/vnd.acme+json", True),
        ("application/octet-stream", False),
        ("text/plain", False),
    ],
)
def test_json_content_types(content_type: str, is_json: bool) -> None:
    assert is_json_content_type(content_type) is is_json


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, None),
        (Payload(b'{"a": [1, 2]}'), {"a": [1, 2]}),
        (Payload(b"null"), None),
    ],
)
def test_decode_payload_decodes_json(payload: Payload | None, expected: object) -> None:
    assert decode_payload(payload) == expected


def test_decode_payload_keeps_other_media_types_as_payloads() -> None:
    raw = Payload(b"\x00\x01", content_type="application/octet-stream")
    assert decode_payload(raw) is raw


def test_a_payload_is_json_unless_said_otherwise() -> None:
    assert Payload() == Payload(b"null", "application/json")
    assert Payload().is_json
    assert Payload(b"x", "application/problem+json").is_json
    assert not Payload(b"x", "image/png").is_json


def test_json_payloads_are_compact_utf8_and_refuse_what_other_languages_cannot_read() -> None:
    assert json_payload({"name": "zoë", "n": [1, 2]}) == Payload('{"name":"zoë","n":[1,2]}'.encode())
    with pytest.raises(ValueError, match="Out of range float"):
        dumps_json(float("nan"))
    with pytest.raises(TypeError):
        dumps_json({1, 2})


@pytest.mark.parametrize(
    "text",
    [
        b"null",
        b'{"a": [1, 2.5, "\\u00e9"]}',
        '{"zoë": true}'.encode(),
        '[1, "zoë"]'.encode("utf-16"),
        '{"x": 1}'.encode("utf-32-le"),
        b"\xef\xbb\xbf[1]",
        "[1]",
    ],
)
def test_loads_json_reads_what_json_loads_reads(text: bytes | str) -> None:
    assert loads_json(text) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"NaN", "NaN is not JSON"),
        (b"[Infinity]", "Infinity is not JSON"),
        (b"-Infinity", "-Infinity is not JSON"),
        (b"[1,", "Expecting value"),
        (b"\xff", "can't decode byte 0xff"),
        ("\ufeff[1]", "Unexpected UTF-8 BOM"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_loads_json_refuses_what_is_not_json_with_a_value_error(text: bytes | str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loads_json(text)
