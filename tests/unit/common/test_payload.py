"""Payloads: which media types are JSON, and the one JSON coding every part of taskwire uses."""

from __future__ import annotations

import pytest

from taskwire.common import Payload, decode_payload, dumps_json, is_json_content_type, json_payload


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
