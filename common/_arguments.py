"""Command-line argument types that `taskwire`, `taskwire-worker` and `taskwire-conformance` share (for argparse's
`type=`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A yes/no environment variable: 1, true, yes, on or 0, false, no, off (any case; unset is no). Anything
    else is a ValueError naming the variable, not a yes: `TASKWIRE_TLS=off` must not turn TLS on."""
    value = (os.environ if environ is None else environ).get(name, "")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValueError(f"{name}={value!r} is neither yes nor no: use 1, true, yes, on or 0, false, no, off")


def check_choices(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse (a usage error) a value outside an option's choices that came from the environment: argparse checks
    the choices of what is typed only, not of a default."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if action.choices is not None and value is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            parser.error(
                f"{action.option_strings[0]}: invalid choice {value!r} from the environment (choose from {choices})"
            )


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
    dropped. ValueError for an empty list, or a port past 65535 (gRPC would take it modulo 65536)."""
    entries = value.split(",") if isinstance(value, str) else [part for entry in value for part in entry.split(",")]
    addresses = [entry.strip() for entry in entries if entry.strip()]
    if not addresses:
        raise ValueError("no server address given: expected HOST:PORT[,HOST:PORT...]")
    for address in addresses:
        problem = _address_problem(address)
        if problem:
            raise ValueError(f"{address}: {problem}")
    return addresses


# gRPC's own target forms, taken as they are (gRPC reports what is wrong with them).
_GRPC_SCHEMES = ("dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:", "vsock:")


def _address_problem(address: str) -> str:
    """What is plainly wrong with a HOST:PORT address (gRPC would retry it forever), or ""."""
    if address.startswith(_GRPC_SCHEMES):
        return ""
    if "://" in address:
        return "expected HOST:PORT, not a URL"
    if address.startswith("[") and "]" not in address:
        return "an IPv6 address opened with '[' is not closed with ']'"
    host, colon, port = address.rpartition(":")
    if not colon or (":" in host and not host.startswith("[")):
        return ""  # no port (gRPC's default), or a bare IPv6 address
    if not port.isdigit():
        return f"the port must be a number, got {port!r}"
    if int(port) > 65535:
        return "a port is at most 65535"
    return ""


def server_list(text: str) -> list[str]:
    """`server_addresses` as an argparse type."""
    try:
        return server_addresses(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
