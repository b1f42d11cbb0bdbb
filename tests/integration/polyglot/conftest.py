"""Fixtures of the polyglot tests: the non-Python tools they drive, and a server with a demo worker.

The tools (node with the example's packages, buf) are installed by `make test`. When one is
missing the tests fail, saying so: a skip would let a broken example go unnoticed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster, ServerProcess

ROOT = Path(__file__).resolve().parents[3]
NODE_EXAMPLE = ROOT / "examples" / "node"
TS_SDK = ROOT / "sdks" / "typescript"
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
INSTALL_HINT = "run `make test` (it installs the tools the polyglot tests need)"


def require_tool(path: Path | None, what: str, hint: str = INSTALL_HINT) -> Path:
    if path is None or not path.exists():
        pytest.fail(f"{what} is missing: {hint}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def node() -> Path:
    """The node binary, with the Node.js example's packages installed."""
    found = shutil.which("node")
    binary = require_tool(
        Path(found) if found else None, "node", f"install Node.js 18 or later (with npm), then {INSTALL_HINT}"
    )
    require_tool(NODE_EXAMPLE / "node_modules" / "@grpc" / "grpc-js", "examples/node/node_modules")
    return binary


@pytest.fixture(scope="session")
def ts_worker_cli(node: Path) -> Path:
    """The TypeScript worker's command-line entry, built by `make test` (sdks/typescript/dist)."""
    return require_tool(TS_SDK / "dist" / "src" / "cli.js", "the TypeScript worker (sdks/typescript/dist)")


@dataclass(frozen=True)
class BufCurl:
    """`buf curl` against one server: gRPC over plaintext HTTP/2, schemas from server reflection."""

    binary: Path
    address: str

    def run(self, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "curl", "--protocol", "grpc", "--http2-prior-knowledge", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=ROOT,
        )

    def url(self, method: str = "") -> str:
        return f"http://{self.address}/{method}"

    def call(self, method: str, body: dict[str, Any] | None = None, *, timeout_s: float = 30) -> list[dict[str, Any]]:
        """Call `method` ("pkg.Service/Method") with a JSON body; returns every response message, in order."""
        args: Sequence[str] = ("--data", json.dumps(body)) if body is not None else ()
        result = self.run(*args, self.url(method), timeout_s=timeout_s)
        assert result.returncode == 0, f"buf curl {method} exited {result.returncode}:\n{result.stderr}"
        return json_documents(result.stdout)


def json_documents(text: str) -> list[dict[str, Any]]:
    """buf curl prints one indented JSON document per response message, one after another."""
    decoder = json.JSONDecoder()
    documents: list[dict[str, Any]] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return documents
        document, index = decoder.raw_decode(text, index)
        documents.append(document)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with one demo worker, shared by the tests of a module (each uses its own executions)."""
    running = Cluster(tmp_path_factory.mktemp("polyglot"))
    try:
        server = running.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")
        running.worker(server)
        server.wait_for_workers(1)
        yield server
    finally:
        running.close()


@pytest.fixture
def buf_curl(demo_server: ServerProcess) -> BufCurl:
    return BufCurl(require_tool(BUF, "buf"), demo_server.address)
