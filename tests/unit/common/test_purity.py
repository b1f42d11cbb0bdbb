"""The shared package and the server's domain are pure: no grpc, no protobuf, no clock.

Checked on the source of every module but the public edge modules, `taskwire.common.wire` (the converter),
`taskwire.common.tls` (channel credentials from files), `taskwire.common.bearer` (tokens, and the client
interceptors that send them) and `taskwire.common.aio_status` (the status a grpc.aio stream ended with), and
on a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import taskwire.common
import taskwire.server.domain

COMMON = Path(taskwire.common.__file__).parent
DOMAIN = Path(taskwire.server.domain.__file__).parent
EDGES = {COMMON / "wire.py", COMMON / "tls.py", COMMON / "bearer.py", COMMON / "aio_status.py"}
MODULES = sorted(path for path in [*COMMON.glob("*.py"), *DOMAIN.glob("*.py")] if path not in EDGES)

FORBIDDEN_MODULES = ("grpc", "google.protobuf", "time", "random", "uuid", "secrets")
# Attribute reads that read a clock whatever the module was imported as.
CLOCK_ATTRIBUTES = {"now", "utcnow", "today", "monotonic", "monotonic_ns", "perf_counter", "time_ns"}


def _forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN_MODULES)


def impurities(source: str) -> list[str]:
    """What in `source` talks to the wire or to a clock, as readable findings."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _forbidden(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if _forbidden(node.module) or node.module == "google":
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr in CLOCK_ATTRIBUTES:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr == "time" and isinstance(node.value, ast.Name):
            if node.value.id == "time":
                found.append(f"line {node.lineno}: time.time")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append(f"line {node.lineno}: __import__")
    return found


def test_there_are_modules_to_check() -> None:
    names = {f"{module.parent.name}/{module.name}" for module in MODULES}
    assert {"domain/__init__.py", "domain/_transitions.py", "common/_models.py", "common/_json_view.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_module_is_pure(module: Path) -> None:
    assert impurities(module.read_text()) == []


@pytest.mark.parametrize(
    "source",
    [
        "import grpc",
        "import grpc.aio as aio",
        "from google.protobuf import timestamp_pb2",
        "from google import protobuf",
        "import time",
        "from time import monotonic",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.utcnow()",
        "from datetime import date\nx = date.today()",
        "x = clock.monotonic()",
        "import uuid",
        "m = __import__('grpc')",
    ],
)
def test_the_checker_catches_impurity(source: str) -> None:
    assert impurities(source) != []


def test_the_checker_accepts_time_as_an_argument() -> None:
    assert (
        impurities("from datetime import datetime, timedelta\ndef f(now: datetime) -> datetime:\n    return now") == []
    )


@pytest.mark.parametrize("package", ["taskwire.common", "taskwire.server.domain"])
def test_importing_loads_no_grpc_or_protobuf(package: str) -> None:
    code = (
        f"import {package}, sys; "
        "loaded = sorted(m for m in sys.modules if m.startswith(('grpc', 'google.protobuf'))); "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
