"""taskwire from a user's seat: the wheel has one top-level name, and installs beside a user project that
has its own `server/` package, `client.py` and `worker_agent.py`.

The user project lives in `user-project/` next to this file and is copied for each run.
"""

from __future__ import annotations

import configparser
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Cluster
from tests.integration.packaging.support import (
    CONSOLE_SCRIPTS,
    ISOLATED_ENV,
    USER_PROJECT,
    build_wheel,
    fresh_venv,
    run,
    source_files,
)

pytestmark = pytest.mark.slow

# What a fresh virtualenv's `import taskwire` finds, and whether an editable install's import hook came along.
PROBE = """\
import importlib.metadata, json, sys
import taskwire, taskwire.client, taskwire.server, taskwire.worker
print(json.dumps({
    "taskwire": taskwire.__file__,
    "metadata": str(importlib.metadata.distribution("taskwire").locate_file("")),
    "hooks": sorted(name for name in sys.modules if name.startswith("__editable__")),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def archive(wheel: Path) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(wheel) as opened:
        yield opened


def dist_info(archive: zipfile.ZipFile) -> str:
    """The wheel's metadata folder, "taskwire-0.1.0.dist-info/"."""
    (marker,) = [name for name in archive.namelist() if name.endswith(".dist-info/WHEEL")]
    return marker.removesuffix("WHEEL")


def test_taskwire_is_the_only_top_level_name(archive: zipfile.ZipFile) -> None:
    meta = dist_info(archive)
    if f"{meta}top_level.txt" in archive.namelist():
        assert archive.read(f"{meta}top_level.txt").decode().split() == ["taskwire"]
    files = [name for name in archive.namelist() if not name.startswith(meta)]
    assert {name.split("/")[0] for name in files} == {"taskwire"}
    assert all(name.startswith("taskwire/") for name in files)


def test_every_file_of_the_mapped_folders_is_in_the_wheel(archive: zipfile.ZipFile) -> None:
    # pyproject lists the packages one by one: a new subpackage that is not listed would be left out.
    missing = sorted(str(path) for name, path in source_files().items() if name not in archive.namelist())
    assert not missing, f"not in the wheel (add their packages to pyproject's [tool.setuptools] packages): {missing}"


def test_the_console_scripts_point_into_taskwire(archive: zipfile.ZipFile) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(archive.read(f"{dist_info(archive)}entry_points.txt").decode())
    scripts = dict(entry_points["console_scripts"])
    assert set(scripts) == CONSOLE_SCRIPTS
    assert all(target.startswith("taskwire.") and target.endswith(":main") for target in scripts.values()), scripts


def test_a_user_project_with_its_own_server_client_and_worker_agent(
    wheel: Path, tmp_path: Path, procs: Cluster
) -> None:
    venv = fresh_venv(tmp_path / "venv", wheel)
    project = Path(shutil.copytree(USER_PROJECT, tmp_path / "project"))

    probe = json.loads(run([venv.python, "-c", PROBE], cwd=project).stdout)
    assert Path(probe["taskwire"]).is_relative_to(venv.site_packages), probe
    assert Path(probe["metadata"]).is_relative_to(venv.site_packages), probe
    assert probe["hooks"] == [], probe

    # Everything runs from the project directory with the virtualenv's executables.
    server = procs.server(env=ISOLATED_ENV, bin_dir=venv.bin_dir, cwd=project)
    worker = procs.worker(
        server,
        handlers="myapp.handlers",
        slots=1,
        name="user-worker",
        env=ISOLATED_ENV,
        bin_dir=venv.bin_dir,
        cwd=project,
    )
    script = run([venv.python, "submit.py", server.address], cwd=project)

    report = json.loads(script.stdout.splitlines()[-1])
    assert report["output"]["greeting"] == "hello from the user's settings, wheel"
    assert report["output"]["server"] == "user's server"
    assert report["output"]["pid"] == worker.popen.pid  # the handler ran in the worker process
    assert report["worker"] == "user-worker"
    for imported in (report["taskwire"], report["output"]["taskwire"]):
        assert Path(imported).is_relative_to(venv.site_packages), report

    # The third console script, from the same directory, beside the user's `client.py`.
    cli = run([venv.bin_dir / "taskwire", "--server", server.address, "wait", report["execution"]], cwd=project)
    assert json.loads(cli.stdout)["greeting"] == report["output"]["greeting"]

    outputs = {"server": server.process.output, "worker": worker.output, "script": script.stderr, "cli": cli.stderr}
    for name, output in outputs.items():
        assert "Traceback" not in output, f"{name}:\n{output}"
