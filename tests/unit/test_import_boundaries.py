"""The SDK, the worker agent and the shared package never import the server.

Checked twice: on the source of every module (absolute imports of `taskwire.server`, and relative ones that
climb out of their package into it), and on a fresh interpreter that imports the client and the worker.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import taskwire.client
import taskwire.common
import taskwire.conformance
import taskwire.console
import taskwire.worker

# Each folder with the package name it installs as.
PACKAGES = {
    "taskwire.client": Path(taskwire.client.__file__).parent,
    "taskwire.common": Path(taskwire.common.__file__).parent,
    "taskwire.console": Path(taskwire.console.__file__).parent,
    "taskwire.worker": Path(taskwire.worker.__file__).parent,
    "taskwire.conformance": Path(taskwire.conformance.__file__).parent,
}
MODULES = [(package, path) for package, folder in PACKAGES.items() for path in sorted(folder.rglob("*.py"))]
FORBIDDEN = "taskwire.server"


def module_name(package: str, path: Path) -> str:
    parts = path.relative_to(PACKAGES[package]).with_suffix("").parts
    return ".".join([package, *(p for p in parts if p != "__init__")])


def resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name a relative import reaches (`from ..x import y` in taskwire.client._a: taskwire.x)."""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def reaches_the_server(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def server_imports(source: str, importer: str, *, is_package: bool = False) -> list[str]:
    """Every import in `source` that reaches `taskwire.server`, as `line N: name`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(importer, is_package, node.level, node.module) if node.level else node.module or ""
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]
        else:
            continue
        found += [f"line {node.lineno}: {name}" for name in names if reaches_the_server(name)]
    return sorted(set(found))


def test_there_are_modules_to_check() -> None:
    names = {module_name(package, path) for package, path in MODULES}
    assert {"taskwire.client._cli", "taskwire.common.wire", "taskwire.worker._worker"} <= names


@pytest.mark.parametrize(("package", "path"), MODULES, ids=[module_name(p, m) for p, m in MODULES])
def test_no_module_imports_the_server(package: str, path: Path) -> None:
    importer = module_name(package, path)
    assert server_imports(path.read_text(), importer, is_package=path.name == "__init__.py") == []


@pytest.mark.parametrize(
    "source",
    [
        "import taskwire.server",
        "import taskwire.server.domain as d",
        "from taskwire.server import wire",
        "from taskwire.server.domain import State",
        "from taskwire import server",
        "from .. import server",
        "from ..server.domain import State",
        "def f():\n    from taskwire.server import wire",
    ],
)
def test_the_checker_catches_server_imports(source: str) -> None:
    assert server_imports(source, "taskwire.client._cli") != []


@pytest.mark.parametrize(
    "source",
    [
        "from taskwire.common import State",
        "from . import _common",
        "from ._errors import ServerUnavailable",
        "from taskwire.v1 import types_pb2",
        "import taskwire.serverless",
    ],
)
def test_the_checker_lets_the_rest_pass(source: str) -> None:
    assert server_imports(source, "taskwire.client._cli") == []


def test_importing_the_client_and_the_worker_loads_no_server_module() -> None:
    code = (
        "import sys, taskwire.client, taskwire.worker, taskwire.common.wire; "
        "loaded = sorted(m for m in sys.modules if m == 'taskwire.server' or m.startswith('taskwire.server.')); "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
