"""The taskwire web console: a client of the public gRPC API served over HTTP (`taskwire console`).

Rooms:

- `_main`: serving it (`serve`), the listen address.
- `_app`: the aiohttp application: pages, fragments, actions, event streams.
- `_views`: the fragments' HTML; `_html`: the page shell and small helpers.
- `_roles`: what each role may do from the console.
- `_sse`: server-sent events fed by watch streams.
- `static/`: the stylesheet, and htmx with its SSE extension (vendored, with their licenses).
"""

from ._app import create_app
from ._main import DEFAULT_LISTEN, ListenError, serve, split_listen
from ._roles import ROLES, Action, Viewer, viewer

__all__ = [
    "DEFAULT_LISTEN",
    "ROLES",
    "Action",
    "ListenError",
    "Viewer",
    "create_app",
    "serve",
    "split_listen",
    "viewer",
]
