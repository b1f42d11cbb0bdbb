"""The README's schedule example runs as printed against a real server and worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from taskwire.client import OverlapPolicy, State
from tests.harness import Cluster
from tests.integration.schedules.support import sdk

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_schedule_example_runs(procs: Cluster) -> None:
    server = procs.server()
    procs.worker(server)
    block = re.search(r"```sh\n(taskwire schedule create .*?)```", README.read_text(), re.DOTALL)
    assert block, "the README's schedule example is missing"
    env = {
        **os.environ,
        "TASKWIRE_SERVER": server.address,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    ran = subprocess.run(
        ["bash", "-e", "-c", block.group(1)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    triggered = ran.stdout.strip().splitlines()[-1]
    with sdk(server) as client:
        (info,) = client.schedules()
        assert (info.name, info.cron, info.timezone, info.overlap) == (
            "cleanup",
            "*/5 * * * *",
            "Europe/Paris",
            OverlapPolicy.SKIP,
        )
        assert info.catch_up_window.total_seconds() == 120
        done = client.wait_finished(triggered)
        assert done.state is State.SUCCESS
        assert done.output == {"older_than_days": 7}
