"""A handler that leans on the user's own `server` package and tells where it ran."""

import os

import server
import taskwire
from server import settings
from taskwire.worker import TaskContext, handler


@handler("greet")
def greet(ctx: TaskContext) -> dict[str, object]:
    payload = ctx.input
    assert isinstance(payload, dict), payload
    return {
        "greeting": f"{settings.GREETING}, {payload['who']}",
        "server": server.NAME,
        "pid": os.getpid(),
        "taskwire": taskwire.__file__,
    }
