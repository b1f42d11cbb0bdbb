"""The README's "SDK in ten lines" runs as printed against a real server and worker."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tests.harness import Cluster

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_sdk_example_runs(procs: Cluster) -> None:
    server = procs.server()
    procs.worker(server)
    block = re.search(r"```python\n(from taskwire.client import Client\n.*?)```", README.read_text(), re.DOTALL)
    assert block, "the README's SDK example is missing"
    source = block.group(1).replace('"127.0.0.1:50051"', repr(server.address))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(source, str(README), "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0] == "{'hello': 'world'}", lines
    assert len(lines) > 3, "the watch loop printed no history"
