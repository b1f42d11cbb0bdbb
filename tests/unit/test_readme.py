"""The README's handler example runs as printed: it completes, reports progress, and honours its abort signal."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

from worker_agent import AbortReason, Cancelled, Completed, HandlerHarness, HandlerRegistry

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_handler_module() -> ModuleType:
    text = README.read_text()
    block = re.search(r"```python\n(# myapp/handlers.py\n.*?)```", text, re.DOTALL)
    assert block, "the README's handler example is missing"
    # Register into a private registry so the example cannot clash with handlers elsewhere in the suite.
    source = block.group(1).replace('@handler("resize")', '@handler("resize", registry=_registry)')
    module = ModuleType("readme_handlers")
    module.__dict__["_registry"] = HandlerRegistry()
    exec(compile(source, str(README), "exec"), module.__dict__)
    return module


async def test_the_readme_handler_completes_with_its_progress() -> None:
    resize: Any = _readme_handler_module().resize
    async with HandlerHarness() as harness:
        run = harness.start(resize, input={"width": 640})
        outcome = await run.outcome(timeout_s=10)
    assert isinstance(outcome, Completed)
    assert outcome.value == {"width": 320}
    assert [update.fraction for update in run.progress] == [step / 10 for step in range(1, 11)]


async def test_the_readme_handler_stops_when_aborted() -> None:
    resize: Any = _readme_handler_module().resize
    async with HandlerHarness() as harness:
        run = harness.start(resize, input={"width": 640})
        await run.wait_for_progress(1)
        run.abort(AbortReason.CANCELLED)
        outcome = await run.outcome(timeout_s=5)
    assert isinstance(outcome, Cancelled)
    assert len(run.progress) < 10
