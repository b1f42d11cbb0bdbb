"""One server with a demo worker and two consoles (one that shows what a reader may do) per test module,
and one headless chromium per module: the browser tests reuse them rather than start their own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from taskwire.client import Client
from tests.harness import Cluster, ServerProcess
from tests.integration.console.support import CHROMIUM_ARGS, ensure_chromium, start_console

# Where the browser tests save their screenshots: docs/console/ when asked (`make console-screenshots`).
SCREENSHOTS_ENV = "TASKWIRE_CONSOLE_SCREENSHOTS"


@dataclass
class Stack:
    cluster: Cluster
    server: ServerProcess
    client: Client
    console: str  # the console's base URL (the server grants "admin": no authentication)
    reader_console: str  # a console started with --view-as reader


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Cluster(tmp_path_factory.mktemp("console"))
    try:
        server = running.server("--lease-timeout", "2", "--heartbeat-interval", "0.5", "--cancel-grace", "2")
        running.worker(server, name="demo-worker", slots=4)
        with Client(server.address) as client:
            yield Stack(
                running,
                server,
                client,
                start_console(running, server),
                start_console(running, server, "--view-as", "reader"),
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
