"""The auth file: identities with a role, token hashes and SANs, limits with defaults; every mistake is one
message naming the place. And how a credential finds its identity (tokens hashed, SANs from a fake auth
context, as mutual TLS reports them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from taskwire.common.bearer import METADATA_KEY, bearer_metadata, new_token, token_from_metadata, token_hash
from taskwire.server._auth import AuthGate, sans_of
from taskwire.server._auth_file import (
    DEFAULT_MAX_WORKER_STREAMS,
    AuthFileError,
    load_auth_file,
    parse_auth_file,
)
from taskwire.server._auth_policy import Role

ALICE = new_token()
WORKER = new_token()
GOOD = f"""
[limits]
submit_rate = 5
submit_burst = 10

[[identity]]
name = "alice"
role = "submitter"
tokens = ["{token_hash(ALICE)}"]
submit_rate = 1.5

[[identity]]
name = "worker-a"
role = "worker"
tokens = ["{token_hash(WORKER)}"]
sans = ["spiffe://taskwire.test/worker-a", "worker-a.taskwire.test"]
max_worker_streams = 2
"""


def test_a_good_file_gives_identities_with_their_limits() -> None:
    config = parse_auth_file(GOOD)
    alice, worker = config.identities
    assert (alice.name, alice.role, alice.token_hashes) == ("alice", Role.SUBMITTER, (token_hash(ALICE),))
    assert (alice.limits.submit_rate, alice.limits.submit_burst) == (1.5, 10)
    assert alice.limits.max_worker_streams == DEFAULT_MAX_WORKER_STREAMS
    assert (worker.limits.submit_rate, worker.limits.max_worker_streams) == (5.0, 2)


def test_tokens_find_their_identity_and_nothing_else_does() -> None:
    config = parse_auth_file(GOOD)
    assert config.by_token(ALICE) is config.identities[0]
    assert config.by_token(WORKER) is config.identities[1]
    assert config.by_token(new_token()) is None
    assert config.by_token(token_hash(ALICE)) is None  # the hash is not the token
    assert config.by_token("") is None


def test_tokens_are_long_random_values_and_stored_as_sha256() -> None:
    token = new_token()
    assert token.startswith("tw_")
    assert len(token) == 46
    assert new_token() != token
    assert token_hash(token).startswith("sha256:")
    assert len(token_hash(token)) == 7 + 64


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        (bearer_metadata("tw_abc"), "tw_abc"),
        (((METADATA_KEY, "bearer tw_abc"),), "tw_abc"),
        (((METADATA_KEY, "Basic dXNlcg=="),), None),
        ((("x-other", "Bearer tw_abc"),), None),
        ((), None),
        (None, None),
    ],
)
def test_the_token_is_read_from_bearer_metadata(metadata: Any, token: str | None) -> None:
    assert token_from_metadata(metadata) == token


class FakeContext:
    """What the gate reads of a call: its metadata and the transport's auth context."""

    def __init__(self, *, metadata: tuple[tuple[str, str], ...] = (), sans: tuple[str, ...] = ()) -> None:
        self._metadata = metadata
        self._auth = {"x509_subject_alternative_name": [san.encode() for san in sans]} if sans else {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth


def test_a_verified_certificate_is_the_identity_its_san_names() -> None:
    config = parse_auth_file(GOOD)
    for san in ("spiffe://taskwire.test/worker-a", "worker-a.taskwire.test"):
        context: Any = FakeContext(sans=("unrelated.example", san))
        assert AuthGate._authenticate(config, context) is config.identities[1]
    assert AuthGate._authenticate(config, FakeContext(sans=("someone-else.example",))) is None  # type: ignore[arg-type]
    assert AuthGate._authenticate(config, FakeContext()) is None  # type: ignore[arg-type]
    assert sans_of({"x509_subject_alternative_name": [b"a.example", b"spiffe://x/y"]}) == ["a.example", "spiffe://x/y"]


def test_a_token_decides_over_a_certificate() -> None:
    config = parse_auth_file(GOOD)
    cert = ("spiffe://taskwire.test/worker-a",)
    with_alice: Any = FakeContext(metadata=bearer_metadata(ALICE), sans=cert)
    assert AuthGate._authenticate(config, with_alice) is config.identities[0]
    with_wrong: Any = FakeContext(metadata=bearer_metadata(new_token()), sans=cert)
    assert AuthGate._authenticate(config, with_wrong) is None


def test_the_refusal_says_what_was_missing() -> None:
    assert "no credential" in AuthGate._why_unknown(FakeContext())  # type: ignore[arg-type]
    assert "not known" in AuthGate._why_unknown(FakeContext(metadata=bearer_metadata("tw_x")))  # type: ignore[arg-type]
    why = AuthGate._why_unknown(FakeContext(sans=("who.example",)))  # type: ignore[arg-type]
    assert "who.example" in why


H = token_hash("tw_x")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no [[identity]]"),
        ("[[identity]]\nname='a'\nrole='admin'\ntokens=['tw_plaintext']", "not a token hash"),
        (f"[[identity]]\nname='a'\nrole='root'\ntokens=['{H}']", "identity[0].role: one of worker, submitter"),
        ("[[identity]]\nname='a'\nrole='admin'", "no tokens and no sans"),
        (f"[[identity]]\nname='a b'\nrole='admin'\ntokens=['{H}']", "identity[0].name"),
        (f"[[identity]]\nname='a'\nrole='admin'\ntoken=['{H}']", "unknown keys token"),
        (f"[[identity]]\nname='a'\nrole='admin'\ntokens=['{H}']\nsubmit_rate=0", "submit_rate: must be a positive"),
        (f"[[identity]]\nname='a'\nrole='admin'\ntokens=['{H}']\nsubmit_burst=1.5", "submit_burst: must be a positive"),
        (f"[limits]\nmax_streams=1\n[[identity]]\nname='a'\nrole='admin'\ntokens=['{H}']", "limits: a table of"),
        (
            f"[[identity]]\nname='a'\nrole='admin'\ntokens=['{H}']\n[[identity]]\nname='a'\nrole='reader'\nsans=['x']",
            "name 'a' appears twice",
        ),
        (
            f"[[identity]]\nname='a'\nrole='admin'\ntokens=['{H}']\n[[identity]]\nname='b'\nrole='reader'\ntokens=['{H}']",
            "token hash",
        ),
        (
            "[[identity]]\nname='a'\nrole='admin'\nsans=['x']\n[[identity]]\nname='b'\nrole='reader'\nsans=['x']",
            "SAN 'x' appears twice",
        ),
        ("[[identity]\n", "not valid TOML"),
        (f"[users]\n[[identity]]\nname='a'\nrole='admin'\ntokens=['{H}']", "unknown tables users"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_place(text: str, message: str) -> None:
    with pytest.raises(AuthFileError, match=r"^auth\.toml: ") as refused:
        parse_auth_file(text, "auth.toml")
    assert message in str(refused.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match="cannot read auth file"):
        load_auth_file(tmp_path / "nope.toml")
    (tmp_path / "auth.toml").write_text(GOOD)
    assert len(load_auth_file(tmp_path / "auth.toml").identities) == 2
