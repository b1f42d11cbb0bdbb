"""Several server addresses, as the worker agent, the SDK and the CLI take them."""

from __future__ import annotations

import argparse

import pytest

from taskwire.common import server_addresses, server_list


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:50051", ["127.0.0.1:50051"]),
        ("a:1,b:2", ["a:1", "b:2"]),
        (" a:1 , ,b:2, ", ["a:1", "b:2"]),
        (["a:1", "b:2,c:3"], ["a:1", "b:2", "c:3"]),
        ("[::1]:50051,dns:///db.internal:50051", ["[::1]:50051", "dns:///db.internal:50051"]),
    ],
)
def test_addresses_are_split_in_order(given: str | list[str], expected: list[str]) -> None:
    assert server_addresses(given) == expected


@pytest.mark.parametrize("given", ["", " , ", []])
def test_no_address_is_refused(given: str | list[str]) -> None:
    with pytest.raises(ValueError, match="no server address given"):
        server_addresses(given)


def test_the_argparse_type_reports_a_usage_error() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="no server address"):
        server_list(",")
