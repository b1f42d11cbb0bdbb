"""Several server addresses, as the worker agent, the SDK and the CLI take them."""

from __future__ import annotations

import argparse
import re

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


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("http://tw.internal:50051", "expected HOST:PORT, not a URL"),
        ("127.0.0.1:abc", "the port must be a number, got 'abc'"),
        ("127.0.0.1:99999", "a port is at most 65535"),
        ("[::1", "an IPv6 address opened with '[' is not closed with ']'"),
        ("a:1,b:http", "the port must be a number, got 'http'"),
    ],
)
def test_an_address_gRPC_would_retry_forever_is_refused(given: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        server_addresses(given)


@pytest.mark.parametrize("given", ["localhost", "::1", "unix:/run/taskwire.sock", "ipv4:10.0.0.1:1"])
def test_grpc_targets_and_addresses_without_a_port_pass_as_they_are(given: str) -> None:
    assert server_addresses(given) == [given]
