"""Page tokens of `Store.list_executions`, alike in every store.

A listing is newest first by a store-wide insertion number that only grows (SQLite's `seq`); a token
names the number below which the next page starts. Tokens are opaque to clients: URL-safe base64
of `seq:<number>`, and a token this code did not issue is refused as a ValidationError.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from taskwire.server.domain import ValidationError

_PAGE_TOKEN_PREFIX: Final = "seq:"
FIRST_PAGE: Final = 2**63 - 1  # `before` of the first page: above every insertion number


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_PAGE_TOKEN_PREFIX}{seq}".encode()).decode("ascii")


def decode_page_token(token: str) -> int:
    """The number below which the page starts: FIRST_PAGE for "", ValidationError for a token not issued here."""
    if not token:
        return FIRST_PAGE
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (UnicodeError, binascii.Error, ValueError):
        text = ""
    number = text.removeprefix(_PAGE_TOKEN_PREFIX)
    valid = number.isascii() and number.isdigit() and len(number) <= 19  # FIRST_PAGE has 19 digits
    if not valid or int(number) > FIRST_PAGE or encode_page_token(int(number)) != token:
        raise ValidationError(
            "page_token", "is not a page token issued by this server; pass the one a listing returned"
        )
    return int(number)


def check_page_size(page_size: int) -> None:
    if page_size < 1:
        raise ValidationError("page_size", f"must be at least 1, got {page_size}")
