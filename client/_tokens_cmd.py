"""`taskwire tokens new NAME --role ROLE`: a fresh bearer token, printed once, with the auth file lines
that hold its hash. Nothing is stored and no server is asked: the operator pastes the lines into the
server's auth file (`--auth-file`) and hands the token to whoever is NAME."""

from __future__ import annotations

import argparse
import json
from typing import Any

from taskwire.common.bearer import IDENTITY_NAME, ROLES, TOKEN_ENV, new_token, token_hash


def _name(text: str) -> str:
    if not IDENTITY_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"an identity name is letters, digits and ._@- (at most 128), got {text!r}")
    return text


def add_tokens_command(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """Add `tokens new` to the command parsers `commands` (an argparse subparsers action)."""
    tokens = commands.add_parser(
        "tokens",
        help="make bearer tokens for the server's auth file",
        description="make bearer tokens for the server's auth file (see docs/security.md)",
    )
    actions: Any = tokens.add_subparsers(dest="tokens_action", metavar="ACTION", parser_class=parser_class)
    actions.required = True
    new = actions.add_parser(
        "new",
        help="print a new random token once, and the auth file lines with its hash",
        description="print a new random token once, and the auth file lines with its hash",
    )
    new.add_argument("name", metavar="NAME", type=_name, help="the identity the token is (letters, digits, ._@-)")
    new.add_argument("--role", required=True, choices=ROLES, help="what the identity may do")


def token_lines(name: str, role: str, token: str) -> str:
    """What `tokens new` prints: the token, then the [[identity]] to paste into the auth file."""
    return "\n".join(
        (
            f"token (shown once; give it to {name}, e.g. as {TOKEN_ENV}): {token}",
            "",
            "# paste into the server's auth file; it holds only the hash",
            "[[identity]]",
            f"name = {json.dumps(name)}",
            f"role = {json.dumps(role)}",
            f"tokens = [{json.dumps(token_hash(token))}]",
        )
    )


def cmd_tokens(args: argparse.Namespace) -> str:
    return token_lines(args.name, args.role, new_token())
