"""One server with authentication, a demo worker and two consoles (an admin's and a reader's) per test module,
and one headless chromium per module: the browser tests reuse them rather than start their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from taskwire.client import Client, RpcRetry
from tests.harness import Cluster, ServerProcess
from tests.integration.console.support import CHROMIUM_ARGS, ensure_chromium, start_console
from tests.integration.security.auth_support import start_secured

# Where the browser tests save their screenshots: docs/console/ when asked (`make console-screenshots`).
SCREENSHOTS_ENV = "TASKWIRE_CONSOLE_SCREENSHOTS"


@dataclass
class Stack:
    cluster: Cluster
    server: ServerProcess
    tokens: dict[str, str]  # by identity name (tests/integration/security/auth_support.py)
    client: Client  # speaks as "admin"
    console: str  # the base URL of a console that speaks as "admin"
    reader_console: str  # ... as "reader": the server grants it the reader role


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server with authentication (an auth file with a token per identity), a demo worker that connects
    as "worker-a", and two consoles: one started with the admin's token, one with the reader's."""
    running = Cluster(tmp_path_factory.mktemp("console"))
    try:
        secured = start_secured(running)
        running.worker(secured.server, "--token", secured.tokens["worker-a"], name="demo-worker", slots=4)
        with secured.client("admin", retry=RpcRetry()) as client:
            yield Stack(
                running,
                secured.server,
                secured.tokens,
                client,
                start_console(running, secured.server, token=secured.tokens["admin"]),
                start_console(running, secured.server, token=secured.tokens["reader"]),
            )
    finally:
        running.close()


@pytest.fixture(scope="module")
def chromium() -> Path:
    return ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    chosen = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(chosen) if chosen else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser tab (its own cookies and storage) that accepts the console's confirmations."""
    context = browser.new_context(viewport={"width": 1280, "height": 760})
    opened = context.new_page()
    opened.on("dialog", lambda dialog: dialog.accept())
    try:
        yield opened
    finally:
        context.close()
