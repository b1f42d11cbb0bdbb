"""The console's web application: pages, the fragments they refresh, actions, and the event streams.

Everything it shows comes from the public gRPC API through one `AsyncClient` (so the console works
against any server, with the credentials it was started with). Live pages hold one server-sent
events stream each, fed by a watch stream of the server: WatchExecution for one execution (its
summary, task runs and log lines are pushed as they change), WatchEvents for the lists (a
`changed` event tells the page to re-read its table). The browser never polls.

Actions (cancel, delete, drain) are POSTs that htmx sends with its `HX-Request` header; a request
without it is refused, so that a page of another site cannot make a browser post them. Requests addressed to
a name the console was not given are refused too (`_hosts`: DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from taskwire.client import (
    AsyncClient,
    ExecutionSnapshot,
    ExecutionTransition,
    NotFound,
    PermissionDenied,
    ServerUnavailable,
    TaskLog,
    TaskwireError,
    WatchEvent,
)
from taskwire.common import ExecutionFilter, State

from . import _views as views
from ._hosts import host_names, same_origin_only
from ._html import error_box, esc, page, query
from ._roles import Action, Viewer, viewer
from ._sse import EventStream, relay, relay_changes

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 25
# The name, label and time filters are applied here (ListExecutions has none): over at most this many server
# pages per page of the console.
NAME_SCAN_PAGES = 10
CLIENT: web.AppKey[AsyncClient] = web.AppKey("client", AsyncClient)
VIEW_AS: web.AppKey[str | None] = web.AppKey("view_as", str)
STREAMS: web.AppKey[set[asyncio.Task[object]]] = web.AppKey("streams")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    client: AsyncClient, *, view_as: str | None = None, hosts: frozenset[str] | None = None
) -> web.Application:
    """The console over `client`; `view_as` narrows the actions shown to those of that role; `hosts` are the names
    it answers to besides IP addresses (`_hosts.host_names`; by default localhost only)."""
    app = web.Application(middlewares=[same_origin_only(host_names("") if hosts is None else hosts), _errors])
    app[CLIENT] = client
    app[VIEW_AS] = view_as
    app[STREAMS] = set()
    app.on_shutdown.append(_end_streams)
    app.add_routes(
        [
            web.get("/", home),
            web.get("/executions", executions_page),
            web.get("/executions/rows", executions_rows),
            web.get("/executions/{id}", execution_page),
            web.get("/executions/{id}/stream", execution_stream),
            web.post("/executions/{id}/cancel", cancel),
            web.post("/executions/{id}/delete", delete),
            web.get("/workers", workers_page),
            web.get("/workers/rows", workers_rows),
            web.post("/workers/{session}/drain", drain),
            web.get("/queue", queue_page),
            web.get("/queue/rows", queue_rows),
            web.get("/events/stream", events_stream),
            web.static("/static", STATIC, append_version=False),
        ]
    )
    return app


async def _end_streams(app: web.Application) -> None:
    """At shutdown: end the open event streams (they would otherwise outlive the server)."""
    streams = app[STREAMS]
    for task in tuple(streams):
        task.cancel()


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/executions")


# The HTTP status of a server's refusal, by its gRPC status: a mistake in what was asked is the asker's (4xx).
_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A server's refusal or absence is a page that says so, not a traceback; on a page, in its box for refusals."""
    try:
        return await handler(request)
    except ServerUnavailable as error:
        return await _problem(request, 503, str(error))
    except NotFound as error:
        return await _problem(request, 404, error.message)
    except TaskwireError as error:  # the server refused the call: say what it said
        return await _problem(request, _STATUS.get(error.status_name, 502), str(error))
    except web.HTTPForbidden as refused:  # the console's own refusal of an action
        if not request.headers.get("HX-Request"):
            raise
        return await _problem(request, 403, refused.text or "refused")


async def _problem(request: web.Request, status: int, message: str) -> web.Response:
    if request.headers.get("HX-Request"):
        # Into the page's box for refusals, whatever the request's own target (htmx swaps errors: see `page`).
        headers = {"HX-Retarget": "#refused", "HX-Reswap": "innerHTML"}
        return web.Response(status=status, text=error_box(message), content_type="text/html", headers=headers)
    body = f"<h1>Something went wrong</h1>{error_box(message)}"
    anonymous = Viewer("", "-", frozenset())
    return web.Response(status=status, text=page("Error", body, viewer=anonymous, current=""), content_type="text/html")


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html")


async def _viewer(request: web.Request) -> Viewer:
    return viewer(await request.app[CLIENT].identity(), request.app[VIEW_AS])


async def _require(request: web.Request, action: Action) -> Viewer:
    if request.headers.get("HX-Request") != "true":
        raise web.HTTPForbidden(text="actions are taken from the console's pages")
    current = await _viewer(request)
    if not current.may(action):
        raise web.HTTPForbidden(text=f"the role {current.role!r} may not {action.value}")
    return current


# ---- Executions ---------------------------------------------------------------------------------


def _when(text: str) -> datetime | None:
    """A time from a form (`2030-01-31T09:00`, local to nobody: taken as UTC), or None when empty or unreadable."""
    try:
        value = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)


class _Filters:
    """The list's filters from the query string: state and handler go to the server; name, label (K=V)
    and the creation time range (`since`, `until`) are applied here, over the pages the server returns."""

    def __init__(self, request: web.Request) -> None:
        params = request.query
        self.states = [state for state in params.getall("state", []) if state in State.__members__]
        self.handler = params.get("handler", "").strip()
        self.name = params.get("name", "").strip()
        self.label = params.get("label", "").strip()
        self.since = params.get("since", "").strip()
        self.until = params.get("until", "").strip()
        self.page_token = params.get("page_token", "")
        key, _, value = self.label.partition("=")
        self.selection = ExecutionFilter(
            labels={key.strip(): value.strip()} if key.strip() else {},
            created_after=_when(self.since),
            created_before=_when(self.until),
        )

    @property
    def scans(self) -> bool:
        """Whether the console filters itself (and so may read several server pages for one of its own)."""
        return bool(self.name) or not self.selection.is_empty

    def keeps(self, snapshot: ExecutionSnapshot) -> bool:
        wanted = self.name.casefold()
        return wanted in snapshot.name.casefold() and self.selection.matches(snapshot.execution, snapshot.task_runs)

    def query(self, *, page_token: str = "") -> str:
        return query(
            state=self.states,
            handler=self.handler,
            name=self.name,
            label=self.label,
            since=self.since,
            until=self.until,
            page_token=page_token,
        )

    def form(self) -> str:
        boxes = "".join(
            f'<label><input type="checkbox" name="state" value="{state.value}"'
            f"{' checked' if state.value in self.states else ''}> {state.value}</label>"
            for state in State
        )
        return (
            f'<form class="filters" method="get" action="/executions">{boxes}'
            f'<label>Handler <input name="handler" value="{esc(self.handler)}"></label>'
            f'<label>Name <input name="name" value="{esc(self.name)}"></label>'
            f'<label>Label <input name="label" placeholder="key=value" value="{esc(self.label)}"></label>'
            f'<label>Created from <input type="datetime-local" name="since" value="{esc(self.since)}"></label>'
            f'<label>to <input type="datetime-local" name="until" value="{esc(self.until)}"></label>'
            '<button type="submit">Filter</button> <a href="/executions">Clear</a></form>'
        )


async def _executions(request: web.Request, filters: _Filters) -> str:
    client = request.app[CLIENT]
    shown: list[ExecutionSnapshot] = []
    token = filters.page_token
    for _ in range(NAME_SCAN_PAGES if filters.scans else 1):
        snapshots, token = await client.list_page(
            states=filters.states, handler=filters.handler, page_size=PAGE_SIZE, page_token=token
        )
        shown.extend(s for s in snapshots if filters.keeps(s))
        if not token or len(shown) >= PAGE_SIZE:
            break
    pager = '<a href="/executions' + filters.query() + '">First page</a>' if filters.page_token else ""
    if token:
        pager += f' <a rel="next" href="/executions{filters.query(page_token=token)}">Next page</a>'
    return views.execution_rows(shown) + f'<nav class="pager">{pager}</nav>'


async def executions_page(request: web.Request) -> web.Response:
    filters = _Filters(request)
    rows = await _executions(request, filters)
    stream = "/events/stream" + query(state=filters.states, handler=filters.handler)
    body = (
        f"<h1>Executions</h1>{filters.form()}"
        f'<div hx-ext="sse" sse-connect="{esc(stream)}" sse-close="end"><div id="rows" hx-get="/executions/rows'
        f'{esc(filters.query(page_token=filters.page_token))}" hx-trigger="sse:changed">{rows}</div></div>'
    )
    return _html(page("Executions", body, viewer=await _viewer(request), current="executions"))


async def executions_rows(request: web.Request) -> web.Response:
    return _html(await _executions(request, _Filters(request)))


async def execution_page(request: web.Request) -> web.Response:
    execution_id = request.match_info["id"]
    snapshot = await request.app[CLIENT].get(execution_id)
    current = await _viewer(request)
    base = f"/executions/{esc(execution_id)}"
    body = (
        f"<h1>{esc(snapshot.name)} <code>{esc(execution_id)}</code></h1>"
        f'<div hx-ext="sse" sse-connect="{base}/stream" sse-close="end">'
        f'<section id="summary" sse-swap="summary">{views.summary(snapshot, current)}</section>'
        f'<div id="problem" sse-swap="problem"></div>'
        f'<h2>Task runs</h2><section id="runs" sse-swap="runs">{views.task_runs(snapshot)}</section>'
        f'<h2>Log</h2><ol id="log" sse-swap="log" hx-swap="beforeend"></ol></div>'
    )
    return _html(page(snapshot.name, body, viewer=current, current="executions"))


async def execution_stream(request: web.Request) -> web.StreamResponse:
    """The execution's history (replayed, then live) as pushes of its summary, task runs and log lines."""
    client = request.app[CLIENT]
    execution_id = request.match_info["id"]
    last_id = request.headers.get("Last-Event-ID", "")
    after = int(last_id) if last_id.isdigit() else 0  # a reconnecting browser resumes after what it has
    current = await _viewer(request)
    stream = await EventStream.open(request)
    # The summary holds the action buttons: redrawn only when it changed, not on every progress report, so
    # that a button is not replaced under a click (a click whose press and release land on two copies of the
    # button is no click at all).
    summary_sent = ""

    async def write(batch: list[WatchEvent]) -> bool:
        nonlocal summary_sent
        event_id = str(batch[-1].sequence)
        logs = [event for event in batch if isinstance(event, TaskLog)]
        if logs:
            await stream.send("log", views.log_lines(logs), event_id=event_id)
        if len(logs) < len(batch):
            try:
                snapshot = await client.get(execution_id)
            except TaskwireError as error:  # deleted meanwhile, or the server went away
                await stream.send("problem", error_box(str(error)))
                return False
            summary = views.summary(snapshot, current)
            if summary != summary_sent:
                await stream.send("summary", summary, event_id=event_id)
                summary_sent = summary
            await stream.send("runs", views.task_runs(snapshot), event_id=event_id)
        return not any(isinstance(event, ExecutionTransition) and event.is_terminal for event in batch)

    async with _tracked(request):
        error = await relay(stream, client.watch(execution_id, after_sequence=after), write)
        if error is None:
            await stream.send("end")  # the page closes its stream (sse-close) rather than reconnect
        elif isinstance(error, NotFound | PermissionDenied):  # for good: reconnecting would find the same
            await stream.send("problem", error_box(f"the live view stopped: {error}"))
            await stream.send("end")
        else:
            await stream.send("problem", error_box(f"the live view stopped: {error}; reconnecting"))
    return stream.response


async def cancel(request: web.Request) -> web.Response:
    current = await _require(request, Action.CANCEL)
    snapshot = await request.app[CLIENT].cancel(request.match_info["id"], reason="cancelled from the console")
    log.info("execution %s cancelled from the console", snapshot.id)
    return _html(views.summary(snapshot, current))


async def delete(request: web.Request) -> web.Response:
    await _require(request, Action.DELETE)
    await request.app[CLIENT].delete(request.match_info["id"])
    return web.Response(headers={"HX-Redirect": "/executions"})


# ---- Workers, the queue, and the stream that refreshes lists ------------------------------------


async def _workers(request: web.Request, current: Viewer) -> str:
    client = request.app[CLIENT]
    workers = await client.workers()
    running, _ = await client.list_page(states=[State.RUNNING], page_size=1000)
    return views.worker_rows(workers, views.running_by_worker(running), current)


async def workers_page(request: web.Request) -> web.Response:
    current = await _viewer(request)
    body = (
        '<h1>Workers</h1><div hx-ext="sse" sse-connect="/events/stream" sse-close="end">'
        f'<div id="workers" hx-get="/workers/rows" hx-trigger="sse:changed">{await _workers(request, current)}</div>'
        "</div>"
    )
    return _html(page("Workers", body, viewer=current, current="workers"))


async def workers_rows(request: web.Request) -> web.Response:
    return _html(await _workers(request, await _viewer(request)))


async def drain(request: web.Request) -> web.Response:
    current = await _require(request, Action.DRAIN)
    await request.app[CLIENT].drain_worker(session_id=request.match_info["session"], reason="drained from the console")
    return _html(await _workers(request, current))


async def queue_page(request: web.Request) -> web.Response:
    stats = await request.app[CLIENT].stats()
    body = (
        '<h1>Queue</h1><div hx-ext="sse" sse-connect="/events/stream" sse-close="end">'
        f'<div id="queue" hx-get="/queue/rows" hx-trigger="sse:changed">{views.queue(stats)}</div></div>'
    )
    return _html(page("Queue", body, viewer=await _viewer(request), current="queue"))


async def queue_rows(request: web.Request) -> web.Response:
    return _html(views.queue(await request.app[CLIENT].stats(), datetime.now(UTC)))


async def events_stream(request: web.Request) -> web.StreamResponse:
    """`changed` whenever WatchEvents delivers (with the page's filters), for a list to re-read itself."""
    filters = _Filters(request)
    stream = await EventStream.open(request)
    async with _tracked(request):
        if request.headers.get("Last-Event-ID"):
            await stream.send("changed", "reconnected")  # events may have passed while it was away
        source = request.app[CLIENT].watch_events(handler=filters.handler, states=filters.states)
        error = await relay_changes(stream, source)
        if isinstance(error, PermissionDenied):  # this role may not watch every execution: stay still
            await stream.send("end")
        elif error is not None:
            await stream.send("problem", error_box(f"live updates stopped: {error}; reconnecting"))
    return stream.response


@contextlib.asynccontextmanager
async def _tracked(request: web.Request) -> AsyncIterator[None]:
    """Register the current event stream so that shutdown can end it; a browser that left ends it too."""
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        yield
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the browser went away, or the console is stopping
    finally:
        streams.discard(task)
