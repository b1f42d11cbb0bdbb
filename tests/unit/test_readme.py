"""The README's handler example and its harness tests run as printed."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

from taskwire.worker import HandlerRegistry

README = Path(__file__).resolve().parents[2] / "README.md"


def _block(first_line: str) -> str:
    block = re.search(rf"```python\n({re.escape(first_line)}\n.*?)```", README.read_text(), re.DOTALL)
    assert block, f"the README's example starting {first_line!r} is missing"
    return block.group(1)


def _module(name: str, source: str, namespace: dict[str, Any]) -> ModuleType:
    module = ModuleType(name)
    module.__dict__.update(namespace)
    exec(compile(source, str(README), "exec"), module.__dict__)
    return module


def _readme_handlers() -> ModuleType:
    # A private registry, so the example cannot clash with handlers registered elsewhere in the suite.
    source = _block("# myapp/handlers.py").replace('@handler("resize")', '@handler("resize", registry=_registry)')
    return _module("readme_handlers", source, {"_registry": HandlerRegistry()})


def _readme_tests() -> ModuleType:
    source = _block("# tests/test_handlers.py").replace("from myapp.handlers import resize\n", "")
    return _module("readme_tests", source, {"resize": _readme_handlers().resize})


async def test_the_readme_harness_test_of_a_completed_run_passes() -> None:
    await _readme_tests().test_resize_halves_the_width()


async def test_the_readme_harness_test_of_a_cancelled_run_passes() -> None:
    await _readme_tests().test_resize_stops_when_cancelled()
