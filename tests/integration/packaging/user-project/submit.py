"""A user's script: their own `server`, `client` and `worker_agent` beside taskwire's SDK.

Run from the project directory as `python submit.py HOST:PORT`. Submits to the user's handler, waits for
its output and prints one JSON line: the execution, its output, the worker that ran it, and where
`taskwire` came from.
"""

import json
import sys
from datetime import timedelta

import client
import server
import taskwire
import worker_agent
from taskwire.client import Client

assert server.NAME == "user's server", server.NAME
assert client.NAME == "user's client", client.NAME
assert worker_agent.NAME == "user's worker_agent", worker_agent.NAME
# Importing the SDK left the user's names alone.
assert sys.modules["server"] is server
assert sys.modules["client"] is client
assert sys.modules["worker_agent"] is worker_agent

with Client(sys.argv[1]) as sdk:
    submitted = sdk.submit("greet", {"who": "wheel"})
    output = sdk.wait(submitted.id, timeout=timedelta(seconds=30))
    (task_run,) = sdk.get(submitted.id).task_runs

report = {
    "execution": submitted.id,
    "output": output,
    "worker": task_run.attempts[-1].worker_id,
    "taskwire": taskwire.__file__,
}
print(json.dumps(report))
