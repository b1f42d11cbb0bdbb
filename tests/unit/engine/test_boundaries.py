"""The engine speaks domain values: no module under server/engine imports protobuf, grpc or the stubs,
and only the clock seam reads a clock or sleeps."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import taskwire.server.engine

ENGINE = Path(taskwire.server.engine.__file__).parent
MODULES = sorted(ENGINE.glob("*.py"))
WIRE = ("grpc", "google.protobuf", "taskwire.v1")
# Where time may be read: the clock seam, and the ids (their time orders the store's indexes).
CLOCK_READERS = {"_clock.py", "_ids.py"}
SEAM_CALLS = {"now", "monotonic", "call_at"}
OTHER_CLOCKS = {"time_ns", "perf_counter", "sleep", "call_later", "utcnow", "today"}


def _imports(tree: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_engine_module_imports_the_wire(module: Path) -> None:
    imports = _imports(ast.parse(module.read_text()))
    assert [name for name in imports if name.startswith(WIRE)] == []


@pytest.mark.parametrize("module", [m for m in MODULES if m.name not in CLOCK_READERS], ids=lambda p: p.name)
def test_only_the_clock_seam_reads_time(module: Path) -> None:
    tree = ast.parse(module.read_text())
    assert "time" not in _imports(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        if node.attr in SEAM_CALLS:
            # `self._clock.now()`, `self._clock.call_at(...)`: the seam itself. Anything else is not.
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else owner.id if isinstance(owner, ast.Name) else ""
            assert "clock" in name, f"{module.name}: {ast.unparse(node)} reads time past the clock seam"
        assert node.attr not in OTHER_CLOCKS, f"{module.name}: {ast.unparse(node)} reads time past the clock seam"


def test_importing_the_engine_loads_no_wire_module() -> None:
    code = (
        "import sys, taskwire.server.engine; "
        "print(sorted(m for m in sys.modules if m.startswith(('grpc', 'google.protobuf', 'taskwire.v1'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
