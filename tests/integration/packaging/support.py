"""Build taskwire's wheel from the working tree and install it into a fresh virtualenv, both offline.

Nothing is downloaded: the wheel is built without build isolation (setuptools is in the running
environment), the virtualenv is made without pip, and the running environment's pip installs the wheel
into it with `--no-index`. taskwire's dependencies (grpcio, protobuf, rich, tenacity...) are borrowed
from the running environment through a `.pth` file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
USER_PROJECT = Path(__file__).resolve().parent / "user-project"
# The running environment's pip: it builds the wheel and installs it into the fresh virtualenv.
PIP = (sys.executable, "-m", "pip")
CONSOLE_SCRIPTS = frozenset({"taskwire", "taskwire-server", "taskwire-worker", "taskwire-conformance"})
# Subprocesses see only what their virtualenv and working directory provide.
ISOLATED_ENV = {"PYTHONPATH": "", "PYTHONSAFEPATH": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(args: Sequence[str | Path], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion in the isolated environment; an AssertionError with its output if it fails."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env={**os.environ, **ISOLATED_ENV},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def package_dirs() -> dict[str, str]:
    """pyproject's mapping of import packages onto folders: {"taskwire.server": "server", ...}."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        config = tomllib.load(file)
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return mapping


def source_files() -> dict[str, Path]:
    """Every file of the mapped folders by the path it must have in the wheel ("taskwire/server/_main.py")."""
    found: dict[str, Path] = {}
    for package, folder in package_dirs().items():
        prefix = package.replace(".", "/")
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                found.setdefault(f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}", path)
    return found


def build_wheel(into: Path) -> Path:
    """Build the wheel from a copy of what the build reads: the top-level files and the mapped folders.

    setuptools builds in place (`build/`, `*.egg-info`), and a stale `build/lib` would carry deleted
    modules into the next wheel; building a copy keeps the working tree as it is and lets two test
    processes build at once.
    """
    tree = into / "source"
    tree.mkdir(parents=True)
    for item in ROOT.iterdir():
        if item.is_file():
            shutil.copy2(item, tree / item.name)
    for folder in set(package_dirs().values()):
        shutil.copytree(ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = into / "dist"
    run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist, tree])
    (wheel,) = dist.glob("*.whl")
    return wheel


@dataclass(frozen=True)
class Venv:
    root: Path
    site_packages: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin_dir / "python"


def fresh_venv(root: Path, wheel: Path) -> Venv:
    """A new virtualenv holding `wheel`, with the running environment's site-packages after its own.

    The wheel goes in before the `.pth` file, so pip never sees the running environment's taskwire. A
    path line in a `.pth` file does not run the `.pth` files of the directory it adds, so the editable
    install of taskwire there (an import hook that one of those starts) stays out of sight.
    """
    run([sys.executable, "-m", "venv", "--without-pip", root])
    python = root / "bin" / "python"
    where = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site_packages = Path(where.stdout.strip())
    run([*PIP, "--python", python, "install", "--no-deps", "--no-index", "--root-user-action=ignore", "-q", wheel])
    borrowed = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "borrowed_dependencies.pth").write_text("".join(f"{path}\n" for path in borrowed))
    return Venv(root=root, site_packages=site_packages)
