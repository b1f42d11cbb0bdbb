"""The SDK and the CLI given several server addresses (an active server and its standbys): an unreachable one is
skipped, the first that answers serves every call."""

from __future__ import annotations

import pytest

from taskwire.client import AsyncClient, Client
from tests.harness import ServerProcess, free_port
from tests.integration.client.conftest import Cli

pytestmark = pytest.mark.timeout(60)


def _dead_first(shared: ServerProcess) -> str:
    """A loopback address nothing listens on (a standby that has not taken over), then the live server."""
    return f"127.0.0.1:{free_port()},{shared.address}"


def test_the_sync_client_skips_an_unreachable_address(shared: ServerProcess) -> None:
    with Client(_dead_first(shared)) as client:
        execution = client.submit("echo", {"hello": "there"})
        assert client.wait(execution.id) == {"hello": "there"}


async def test_the_async_client_takes_a_list_and_skips_an_unreachable_address(shared: ServerProcess) -> None:
    async with AsyncClient([f"127.0.0.1:{free_port()}", shared.address]) as client:
        execution = await client.submit("echo", {"hello": "there"})
        assert await client.wait(execution.id) == {"hello": "there"}


def test_names_cannot_be_listed_and_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="one DNS name that resolves to each of them"):
        Client("db-a.internal:50051,db-b.internal:50051")


def test_the_cli_skips_an_unreachable_address(shared: ServerProcess) -> None:
    result = Cli(_dead_first(shared))("stats")
    assert result.returncode == 0, result.stderr


def test_the_cli_refuses_a_list_it_cannot_use_in_one_line(shared: ServerProcess) -> None:
    result = Cli("a.internal:1,b.internal:2")("stats")
    assert result.returncode == 2, (result.returncode, result.stderr)
    [line] = result.stderr.splitlines()
    assert "--server: several server addresses must all be IPv4 or all IPv6" in line
