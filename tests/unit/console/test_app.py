"""The console's web application without a server: a server it cannot reach is a page that says so, and
its listen address is parsed like the server's."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from taskwire.client import AsyncClient, Execution, ExecutionSnapshot, RpcRetry, State
from taskwire.client._cli import ExitCode, main
from taskwire.console import ListenError, create_app, split_listen
from taskwire.console._app import _Filters


async def test_an_unreachable_server_is_a_503_page_naming_it() -> None:
    client = AsyncClient("127.0.0.1:9", retry=RpcRetry(max_attempts=1), timeout=timedelta(seconds=2))
    async with TestClient(TestServer(create_app(client))) as browser:
        response = await browser.get("/executions")
        assert response.status == 503
        assert "127.0.0.1:9" in await response.text()
        stylesheet = await browser.get("/static/console.css")
        assert stylesheet.status == 200
    await client.close()


async def test_an_action_without_htmx_is_refused_before_any_call() -> None:
    client = AsyncClient("127.0.0.1:9", retry=RpcRetry(max_attempts=1), timeout=timedelta(seconds=2))
    async with TestClient(TestServer(create_app(client))) as browser:
        response = await browser.post("/executions/e1/cancel")
        assert response.status == 403
    await client.close()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:0", ("::1", 0)), (":9000", ("127.0.0.1", 9000))],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses_are_refused_naming_the_flag(listen: str) -> None:
    with pytest.raises(ListenError, match="--listen"):
        split_listen(listen)


def test_taskwire_console_with_a_bad_listen_address_is_a_usage_error() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["console", "--listen", "nowhere"], stdout=out, stderr=err) == ExitCode.USAGE
    assert "--listen: expected HOST:PORT, got 'nowhere'" in err.getvalue()


def _snapshot(name: str, created: datetime, **labels: str) -> ExecutionSnapshot:
    execution = Execution(
        id="e1", name=name, state=State.PENDING, reason=None, created_at=created, updated_at=created, metadata=labels
    )
    return ExecutionSnapshot(execution=execution, task_runs=())


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("", {"nightly", "adhoc", "old"}),
        ("?name=NIGHT", {"nightly"}),
        ("?label=team%3Ddata", {"nightly", "old"}),
        ("?label=team%3Ddata&since=2030-01-01T00:00", {"nightly"}),
        ("?until=2030-01-01T00:00", {"old"}),
        ("?since=not-a-time", {"nightly", "adhoc", "old"}),  # an unreadable time is no condition
    ],
)
def test_the_list_filters_by_name_label_and_creation_time(query: str, kept: set[str]) -> None:
    filters = _Filters(make_mocked_request("GET", "/executions" + query))
    snapshots = [
        _snapshot("nightly", datetime(2030, 1, 2, tzinfo=UTC), team="data"),
        _snapshot("adhoc", datetime(2030, 1, 3, tzinfo=UTC), team="ops"),
        _snapshot("old", datetime(2029, 6, 1, tzinfo=UTC), team="data"),
    ]
    assert {s.name for s in snapshots if filters.keeps(s)} == kept
    assert filters.scans == (query not in ("", "?since=not-a-time"))


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8080", 503),
        ("[::1]:8080", 503),
        ("LOCALHOST:8080", 503),
        ("console.internal", 503),
        ("rebind.attacker.example:8080", 403),
        ("console.internal.attacker.example", 403),
    ],
)
async def test_the_console_answers_to_ip_addresses_localhost_and_the_names_it_was_given(host: str, status: int) -> None:
    """503: the request passed, to a server that is not there; 403: refused before any call."""
    from taskwire.console._hosts import host_names

    client = AsyncClient("127.0.0.1:9", retry=RpcRetry(max_attempts=1), timeout=timedelta(seconds=2))
    app = create_app(client, hosts=host_names("127.0.0.1", ["console.internal"]))
    async with TestClient(TestServer(app)) as browser:
        response = await browser.get("/executions", headers={"Host": host})
        assert response.status == status
    await client.close()
