"""The page shell and the small pieces every page uses: escaping, times, state badges.

Pages are plain HTML built here on the server; the browser's only scripts are htmx and its
server-sent events extension (vendored under `static/vendor/`), which swap the fragments the
console pushes. Everything interpolated into markup goes through `esc`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from urllib.parse import urlencode

from taskwire.common import State

from ._roles import Viewer

HTMX = "/static/vendor/htmx-2.0.11.min.js"
HTMX_SSE = "/static/vendor/htmx-ext-sse-2.2.4.min.js"
# htmx swaps an error's answer too (by default it drops every 4xx and 5xx): the console sends each into the
# page's box for them (`HX-Retarget: #refused`), so a refused action or a bad filter says why.
HTMX_CONFIG = (
    '{"responseHandling": [{"code": "204", "swap": false}, {"code": "[23]..", "swap": true}, '
    '{"code": "[45]..", "swap": true, "error": true}]}'
)
NAV = (("executions", "/executions", "Executions"), ("workers", "/workers", "Workers"), ("queue", "/queue", "Queue"))


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def query(**params: str | list[str]) -> str:
    """A query string of the non-empty parameters, with a leading `?` (or nothing)."""
    pairs = [(key, value) for key, values in params.items() for value in _as_list(values) if value]
    return "?" + urlencode(pairs) if pairs else ""


def _as_list(values: str | list[str]) -> list[str]:
    return [values] if isinstance(values, str) else values


def when(value: datetime | None) -> str:
    """A `<time>` in UTC to the second; `-` when unset."""
    if value is None:
        return "-"
    utc = value.astimezone(UTC)
    return f'<time datetime="{utc.isoformat()}">{utc.strftime("%Y-%m-%d %H:%M:%SZ")}</time>'


def span(value: timedelta | None) -> str:
    """A duration for people: 850ms, 12.3s, 4m05s, 2h10m."""
    if value is None:
        return "-"
    total = value.total_seconds()
    if total < 1:
        return f"{total * 1000:.0f}ms"
    if total < 60:
        return f"{total:.1f}s"
    if total < 3600:
        return f"{int(total // 60)}m{int(total % 60):02d}s"
    return f"{int(total // 3600)}h{int(total % 3600 // 60):02d}m"


def badge(state: State) -> str:
    return f'<span class="state state-{esc(state.value.lower())}">{esc(state.value)}</span>'


def page(title: str, body: str, *, viewer: Viewer, current: str) -> str:
    """A whole page: the navigation, who the console acts as, and `body`."""
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if key == current else ""}>{label}</a>' for key, href, label in NAV
    )
    who = f"{esc(viewer.name) or 'anonymous'} · {esc(viewer.role)}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · taskwire</title>
<link rel="stylesheet" href="/static/console.css">
<meta name="htmx-config" content='{HTMX_CONFIG}'>
<script src="{HTMX}"></script>
<script src="{HTMX_SSE}"></script>
</head>
<body>
<header><strong>taskwire</strong><nav>{links}</nav>
<span class="who" data-role="{esc(viewer.role)}">{who}</span></header>
<main>
<div id="refused" aria-live="polite"></div>
{body}
</main>
</body>
</html>
"""


def table(headers: tuple[str, ...], rows: list[str], *, empty: str, attrs: str = "") -> str:
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(header)}</th>" for header in headers)
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def error_box(message: str) -> str:
    return f'<p class="error" role="alert">{esc(message)}</p>'
