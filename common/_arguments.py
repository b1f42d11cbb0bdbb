"""Command-line argument types that `taskwire`, `taskwire-worker` and `taskwire-conformance` share (for argparse's
`type=`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def positive_int(text: str) -> int:
    """A whole number of at least 1; argparse reports anything else as a usage error naming the value."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number, zero or more; argparse reports anything else as a usage error naming the value."""
    return _whole_number(text, 0)


_MAX_WHOLE_NUMBER = 2**31 - 1  # what every count and limit of taskwire's fits in (an int32 on the wire)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    if value > _MAX_WHOLE_NUMBER:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_WHOLE_NUMBER}, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None


def non_negative_seconds(text: str) -> float:
    """A number of seconds, zero or more; argparse reports anything else as a usage error naming the value."""
    value = _seconds(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, got {text}")
    return value


def positive_seconds(text: str) -> float:
    """A number of seconds above zero; argparse reports anything else as a usage error naming the value."""
    value = _seconds(text)
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be more than zero seconds, got {text}")
    return value


def server_addresses(value: str | Sequence[str]) -> list[str]:
    """The servers to try, in order: `HOST:PORT[,HOST:PORT...]` (or a list of them; each any gRPC target), blanks
    dropped. ValueError for an empty list."""
    entries = value.split(",") if isinstance(value, str) else [part for entry in value for part in entry.split(",")]
    addresses = [entry.strip() for entry in entries if entry.strip()]
    if not addresses:
        raise ValueError("no server address given: expected HOST:PORT[,HOST:PORT...]")
    return addresses


def server_list(text: str) -> list[str]:
    """`server_addresses` as an argparse type."""
    try:
        return server_addresses(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
