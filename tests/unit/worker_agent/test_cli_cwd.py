"""taskwire-worker imports handler modules as `python -m` would: the working directory comes first.

A user project with its own package `server` (and `server/settings.py`) must be served even when another
`server` is importable from the environment; before, the working directory came after site-packages and
`--handlers` failed with "no module named 'server.settings'".
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from taskwire.worker._main import main

PACKAGE = "server"


@pytest.fixture
def forget_package() -> Iterator[None]:
    """Take `server` and its submodules out of sys.modules for the test, and put back what was there."""

    def loaded() -> dict[str, ModuleType]:
        return {name: module for name, module in sys.modules.items() if name.partition(".")[0] == PACKAGE}

    saved = loaded()
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in loaded():
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.mark.usefixtures("forget_package")
def test_a_module_in_the_working_directory_shadows_an_installed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    installed = tmp_path / "site-packages" / PACKAGE
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text('WHERE = "installed"\n')
    project = tmp_path / "project"
    (project / PACKAGE).mkdir(parents=True)
    (project / PACKAGE / "__init__.py").write_text('WHERE = "working directory"\n')
    (project / PACKAGE / "settings.py").write_text('GREETING = "hello"\n')
    monkeypatch.syspath_prepend(str(installed.parent))  # importable before anything else; sys.path is restored
    monkeypatch.chdir(project)
    monkeypatch.delenv("TASKWIRE_HANDLERS", raising=False)

    # `MODULE:FUNCTION` imports the module first; the missing function then stops the worker before it connects.
    assert main(["--handlers", f"{PACKAGE}.settings:missing"]) == 2

    err = capsys.readouterr().err
    assert f"module '{PACKAGE}.settings' has no function 'missing'" in err, err
    assert sys.modules[PACKAGE].WHERE == "working directory"
    assert Path(str(sys.modules[f"{PACKAGE}.settings"].__file__)).parent == project / PACKAGE
