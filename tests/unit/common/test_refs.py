"""The substitution rule of workflows: {"$from": TASK_ID, "path": ...} in an input."""

from __future__ import annotations

import pytest

from taskwire.common import InputReferenceError, references, resolve

OUTPUTS = {"fetch": {"items": [{"url": "a"}, {"url": "b"}], "n": 2}, "plain": 7}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"$from": "plain"}, 7),
        ({"$from": "fetch", "path": "items.1.url"}, "b"),
        ({"$from": "fetch", "path": ""}, OUTPUTS["fetch"]),
        ({"a": [{"$from": "fetch", "path": "n"}, 3]}, {"a": [2, 3]}),
        ({"$from": "fetch", "other": 1}, {"$from": "fetch", "other": 1}),  # not a reference: other keys
        ("$from", "$from"),
    ],
)
def test_resolve(value: object, expected: object) -> None:
    assert resolve(value, OUTPUTS) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"$from": "fetch", "path": "items.9"}, "nothing at 'items.9'"),
        ({"$from": "fetch", "path": "n.x"}, "nothing at 'n.x'"),
        ({"$from": "absent"}, "task 'absent'"),
        ({"$from": 3}, "a task id"),
    ],
)
def test_an_unresolvable_reference_says_why(value: object, message: str) -> None:
    with pytest.raises(InputReferenceError, match=message) as raised:
        resolve(value, OUTPUTS)
    assert raised.value.retryable is False


def test_references_name_where_they_are() -> None:
    value = {"x": [{"$from": "a"}, {"y": {"$from": "b", "path": "c"}}]}
    assert list(references(value)) == [(".x[0]", "a"), (".x[1].y", "b")]
