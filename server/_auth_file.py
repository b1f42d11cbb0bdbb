"""The auth file (`--auth-file`, TOML): the identities, their roles, credentials and limits. Pure but for
`load_auth_file`, which reads the file.

    [limits]                 # defaults for every identity; each may override them
    submit_rate = 50.0       # submits a second, sustained (a batch counts each execution)
    submit_burst = 200       # submits at once, above the rate
    max_worker_streams = 16  # worker streams open at once

    [[identity]]
    name = "ci"
    role = "submitter"                       # worker, submitter, reader or admin
    tokens = ["sha256:9f86d0...0f00a08"]     # hashes only: `taskwire tokens new` prints them
    sans = ["spiffe://example.org/ci"]       # client certificate SANs that are this identity
    submit_rate = 5.0

A credential is a bearer token (its hash is looked up, compared in constant time) or a client certificate
verified by mutual TLS, whose subject alternative names (DNS names, URIs, e-mail addresses, IP addresses,
exactly as gRPC reports them) map to an identity. A token, when sent, decides: a wrong token is refused
even over a certificate that would be accepted.
"""

from __future__ import annotations

import hmac
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskwire.common.bearer import HASH_PREFIX, IDENTITY_NAME, token_hash

from ._auth_policy import Role

DEFAULT_SUBMIT_RATE = 50.0
DEFAULT_SUBMIT_BURST = 200
DEFAULT_MAX_WORKER_STREAMS = 16

_HASH = re.compile(re.escape(HASH_PREFIX) + r"[0-9a-f]{64}")
_LIMIT_KEYS = {"submit_rate", "submit_burst", "max_worker_streams"}
_IDENTITY_KEYS = {"name", "role", "tokens", "sans"} | _LIMIT_KEYS


class AuthFileError(ValueError):
    """The auth file cannot be read or says something wrong; the message names the file and the place."""


@dataclass(frozen=True, slots=True)
class Limits:
    submit_rate: float = DEFAULT_SUBMIT_RATE
    submit_burst: int = DEFAULT_SUBMIT_BURST
    max_worker_streams: int = DEFAULT_MAX_WORKER_STREAMS


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: Role
    token_hashes: tuple[str, ...] = ()
    sans: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The identities of an auth file, and how a credential finds one."""

    identities: tuple[Identity, ...]

    def __post_init__(self) -> None:
        _unique("name", [(i.name, i.name) for i in self.identities])
        _unique("token hash", [(h, i.name) for i in self.identities for h in i.token_hashes])
        _unique("SAN", [(san, i.name) for i in self.identities for san in i.sans])

    def by_name(self, name: str) -> Identity | None:
        return next((identity for identity in self.identities if identity.name == name), None)

    def by_token(self, token: str) -> Identity | None:
        """The identity one of whose hashes is the token's. Every hash is compared, in constant time."""
        digest = token_hash(token).encode()
        found = None
        for identity in self.identities:
            for stored in identity.token_hashes:
                if hmac.compare_digest(stored.encode(), digest):
                    found = identity
        return found

    def by_sans(self, sans: Iterable[str]) -> Identity | None:
        """The identity a verified client certificate is, by the first of its SANs that one lists."""
        for san in sans:
            for identity in self.identities:
                if san in identity.sans:
                    return identity
        return None


def _unique(what: str, pairs: list[tuple[str, str]]) -> None:
    seen: dict[str, str] = {}
    for value, owner in pairs:
        if value in seen:
            raise AuthFileError(f"{what} {value!r} appears twice (identities {seen[value]!r} and {owner!r})")
        seen[value] = owner


def _number(table: Mapping[str, Any], key: str, default: float, where: str, *, whole: bool) -> Any:
    value: Any = table.get(key, default)
    wrong_kind = isinstance(value, bool) or not isinstance(value, int if whole else (int, float))
    if wrong_kind or value <= 0:
        kind = "a positive whole number" if whole else "a positive number"
        raise AuthFileError(f"{where}.{key}: must be {kind}, got {value!r}")
    return value


def _limits(table: Mapping[str, Any], defaults: Limits, where: str) -> Limits:
    return Limits(
        submit_rate=float(_number(table, "submit_rate", defaults.submit_rate, where, whole=False)),
        submit_burst=_number(table, "submit_burst", defaults.submit_burst, where, whole=True),
        max_worker_streams=_number(table, "max_worker_streams", defaults.max_worker_streams, where, whole=True),
    )


def _strings(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthFileError(f"{where}.{key}: must be a list of non-empty strings")
    return tuple(value)


def _identity(table: Any, defaults: Limits, where: str) -> Identity:
    if not isinstance(table, dict):
        raise AuthFileError(f"{where}: must be a table")
    unknown = sorted(set(table) - _IDENTITY_KEYS)
    if unknown:
        raise AuthFileError(f"{where}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(_IDENTITY_KEYS))})")
    name = table.get("name")
    if not isinstance(name, str) or not IDENTITY_NAME.fullmatch(name):
        raise AuthFileError(f"{where}.name: required, letters, digits and ._@- (at most 128), got {name!r}")
    try:
        role = Role(str(table.get("role")))
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise AuthFileError(f"{where}.role: one of {roles}, got {table.get('role')!r}") from None
    hashes = _strings(table, "tokens", where)
    for value in hashes:
        if not _HASH.fullmatch(value):
            raise AuthFileError(
                f"{where}.tokens: {value[:16]!r}... is not a token hash ({HASH_PREFIX}<64 hex digits>); "
                "the file holds hashes, never tokens: see `taskwire tokens new`"
            )
    sans = _strings(table, "sans", where)
    if not hashes and not sans:
        raise AuthFileError(f"{where}: identity {name!r} has no tokens and no sans: nothing could be it")
    return Identity(name=name, role=role, token_hashes=hashes, sans=sans, limits=_limits(table, defaults, where))


def parse_auth_file(text: str, source: str = "auth file") -> AuthConfig:
    """The identities of an auth file's text; AuthFileError naming `source` and the place when it is wrong."""
    try:
        document = tomllib.loads(text)
        unknown = sorted(set(document) - {"limits", "identity"})
        if unknown:
            raise AuthFileError(f"unknown tables {', '.join(unknown)} (known: limits, identity)")
        limits_table = document.get("limits", {})
        if not isinstance(limits_table, dict) or set(limits_table) - _LIMIT_KEYS:
            raise AuthFileError(f"limits: a table of {', '.join(sorted(_LIMIT_KEYS))}")
        defaults = _limits(limits_table, Limits(), "limits")
        tables = document.get("identity", [])
        if not isinstance(tables, list) or not tables:
            raise AuthFileError("no [[identity]]: list at least one")
        identities = tuple(_identity(table, defaults, f"identity[{index}]") for index, table in enumerate(tables))
        return AuthConfig(identities)
    except tomllib.TOMLDecodeError as error:
        raise AuthFileError(f"{source}: not valid TOML: {error}") from None
    except AuthFileError as error:
        raise AuthFileError(f"{source}: {error}") from None


def load_auth_file(path: Path) -> AuthConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AuthFileError(f"cannot read auth file {path}: {error}") from None
    return parse_auth_file(text, str(path))
