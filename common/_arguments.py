"""Command-line argument types that `taskwire` and `taskwire-worker` share (for argparse's `type=`)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def positive_int(text: str) -> int:
    """A whole number of at least 1; argparse reports anything else as a usage error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
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
