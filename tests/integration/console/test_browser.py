"""The console in a real headless chromium, against a real server and worker: the list, an execution page
that updates live while its handler reports progress, a cancel from the page that reaches the handler, a
reader who sees no actions, and the workers and queue pages."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from taskwire.client import AttemptOutcome, Client, NotFound, PermissionDenied, State
from tests.harness import start_worker, wait_for
from tests.integration.console.conftest import Stack

pytestmark = pytest.mark.timeout(90)
WAIT_MS = 15_000
expect.set_options(timeout=WAIT_MS)  # a loaded machine may take more than the default 5 s
BAR_VALUE = "+document.querySelector('progress[data-task=main]').value"
RECORD_PROGRESS = f"""() => {{
  window.progressSeen = [{BAR_VALUE}];
  new MutationObserver(() => {{
    const value = {BAR_VALUE};
    if (value !== window.progressSeen.at(-1)) window.progressSeen.push(value);
  }}).observe(document.getElementById("runs"), {{subtree: true, childList: true, attributes: true}});
}}"""


def submit_progress(client: Client, steps: int, interval_s: float) -> str:
    return client.submit("progress", {"steps": steps, "interval": interval_s}).id


def wait_running(client: Client, execution_id: str) -> None:
    for event in client.watch(execution_id, timeout=timedelta(seconds=15)):
        if getattr(event, "fraction", 0) > 0:
            return


def test_the_list_shows_executions_filters_them_and_adds_new_ones_live(
    stack: Stack, page: Page, screenshots: Path
) -> None:
    done = stack.client.submit("echo", {"hello": "console"}, name="greeting")
    stack.client.wait(done.id, timeout=timedelta(seconds=15))
    running = submit_progress(stack.client, 600, 0.05)  # runs until cancelled at the end
    wait_running(stack.client, running)

    page.goto(f"{stack.console}/executions")
    expect(page.locator(f'tr[data-id="{done.id}"]')).to_contain_text("SUCCESS")
    expect(page.locator(f'tr[data-id="{running}"]')).to_contain_text("RUNNING")
    page.screenshot(path=screenshots / "executions.png")

    page.locator('input[name="state"][value="SUCCESS"]').check()
    page.get_by_role("button", name="Filter").click()
    expect(page.locator(f'tr[data-id="{done.id}"]')).to_be_visible()
    expect(page.locator(f'tr[data-id="{running}"]')).to_have_count(0)

    page.fill('input[name="name"]', "greet")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("table.executions tbody tr")).to_have_count(1)

    # A new execution that ends while the page is open appears without a reload: WatchEvents pushed it.
    page.goto(f"{stack.console}/executions?state=SUCCESS")
    page.evaluate("window.notReloaded = true")
    later = stack.client.submit("echo", {}, name="pushed")
    stack.client.wait(later.id, timeout=timedelta(seconds=15))
    expect(page.locator(f'tr[data-id="{later.id}"]')).to_contain_text("SUCCESS", timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True
    stack.client.cancel(running)


def test_an_execution_page_updates_live_while_its_task_reports_progress(
    stack: Stack, page: Page, screenshots: Path
) -> None:
    execution_id = submit_progress(stack.client, 50, 0.1)
    page.goto(f"{stack.console}/executions/{execution_id}")
    # Record every value the bar shows, as the pushes replace it (the page is never reloaded).
    page.evaluate(RECORD_PROGRESS)
    bar = page.locator('progress[data-task="main"]')

    page.wait_for_function(f"() => {{ const v = {BAR_VALUE}; return v >= 0.2 && v < 1; }}", timeout=WAIT_MS)
    expect(page.locator("#log")).to_contain_text("step 10 of 50")
    page.screenshot(path=screenshots / "execution.png", full_page=True)
    # Progress redraws the task runs, not the summary with its Cancel button: a button replaced under a
    # click loses the click.
    page.evaluate("document.querySelector('#summary dl').dataset.mark = 'unchanged'")
    page.wait_for_function(f"() => {{ const v = {BAR_VALUE}; return v >= 0.4 && v < 1; }}", timeout=WAIT_MS)
    expect(page.locator('#summary dl[data-mark="unchanged"]')).to_have_count(1)

    expect(page.locator("#summary dl")).to_have_attribute("data-state", "SUCCESS", timeout=WAIT_MS)
    expect(bar).to_have_attribute("value", "1.0000")
    expect(page.locator("#log li")).to_have_count(50)
    expect(page.locator(".timeline .attempt.outcome-succeeded")).to_have_count(1)
    expect(page.locator('button[name="cancel"]')).to_have_count(0)  # nothing to cancel any more
    seen = page.evaluate("window.progressSeen")
    assert len(set(seen)) >= 3, f"the bar moved by steps while the task ran: {seen}"
    assert seen == sorted(seen)
    assert seen[-1] == 1.0


def test_a_cancel_from_the_page_reaches_the_handler_then_a_delete_removes_it(stack: Stack, page: Page) -> None:
    execution_id = submit_progress(stack.client, 600, 0.05)
    page.goto(f"{stack.console}/executions/{execution_id}")
    expect(page.locator('progress[data-task="main"]')).not_to_have_attribute("value", "0.0000", timeout=WAIT_MS)

    page.locator('button[name="cancel"]').click()  # the confirmation is accepted

    expect(page.locator("#summary dl")).to_have_attribute("data-state", "CANCELLED", timeout=WAIT_MS)
    finished = stack.client.wait_finished(execution_id, timedelta(seconds=15))
    assert finished.state is State.CANCELLED
    (task_run,) = finished.task_runs
    # The handler saw its abort signal and stopped: the worker reported the attempt cancelled.
    assert task_run.attempts[-1].outcome is AttemptOutcome.CANCELLED
    assert finished.reason is not None
    assert "console" in finished.reason.message
    page.locator('button[name="delete"]').click()  # now finished, it may be deleted
    expect(page).to_have_url(f"{stack.console}/executions", timeout=WAIT_MS)
    expect(page.locator(f'tr[data-id="{execution_id}"]')).to_have_count(0)
    with pytest.raises(NotFound):
        stack.client.get(execution_id)


def test_a_reader_sees_no_actions_and_both_console_and_server_refuse_them(
    stack: Stack, page: Page, screenshots: Path
) -> None:
    execution_id = submit_progress(stack.client, 600, 0.05)
    page.goto(f"{stack.reader_console}/executions/{execution_id}")
    # The server authenticated the console's token as the identity "reader", with the reader role.
    expect(page.locator("header .who")).to_have_attribute("data-role", "reader")
    expect(page.locator("header .who")).to_contain_text("reader · reader")
    expect(page.locator('progress[data-task="main"]')).not_to_have_attribute("value", "0.0000", timeout=WAIT_MS)
    expect(page.locator('button[name="cancel"]')).to_have_count(0)
    page.screenshot(path=screenshots / "reader.png", full_page=True)
    page.goto(f"{stack.reader_console}/workers")
    expect(page.locator('tr[data-worker="demo-worker"]')).to_be_visible()
    expect(page.locator('button[name="drain"]')).to_have_count(0)

    # A hand-made request is refused by the console too (the server's own checks stay the enforcement).
    request = urllib.request.Request(
        f"{stack.reader_console}/executions/{execution_id}/cancel", method="POST", headers={"HX-Request": "true"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    refused.value.close()
    assert stack.client.get(execution_id).state is State.RUNNING
    # Behind the console, the server refuses the reader too: its checks are the enforcement.
    with Client(stack.server.address, token=stack.tokens["reader"]) as reader, pytest.raises(PermissionDenied):
        reader.cancel(execution_id)
    stack.client.cancel(execution_id)


def test_an_action_without_the_htmx_header_is_refused(stack: Stack) -> None:
    execution_id = submit_progress(stack.client, 600, 0.05)
    request = urllib.request.Request(f"{stack.console}/executions/{execution_id}/cancel", method="POST", data=b"")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    refused.value.close()
    assert stack.client.get(execution_id).state is not State.CANCELLED
    stack.client.cancel(execution_id)


def test_the_workers_page_shows_slots_and_what_runs_and_drains_a_worker(
    stack: Stack, page: Page, screenshots: Path
) -> None:
    spare = start_worker(stack.server.address, "--token", stack.tokens["worker-a"], name="spare-worker", slots=2)
    stack.cluster.processes.append(spare)
    execution_id = submit_progress(stack.client, 600, 0.05)
    wait_running(stack.client, execution_id)
    runner = stack.client.get(execution_id).task_runs[0].attempts[-1].worker_id

    page.goto(f"{stack.console}/workers")
    row = page.locator(f'tr[data-worker="{runner}"]')
    expect(row.locator(f'a[href="/executions/{execution_id}"]')).to_be_visible()
    expect(row.locator(".slots")).to_contain_text("1/")
    page.screenshot(path=screenshots / "workers.png", full_page=True)

    stack.client.cancel(execution_id)
    spare_row = page.locator('tr[data-worker="spare-worker"]')
    spare_row.locator('button[name="drain"]').click()
    assert spare.wait(timeout_s=20) == 0, "the drained agent finished and exited"
    # The row shows DRAINING, or is gone already when a pushed refresh came after the worker left.
    expect(spare_row.locator('button[name="drain"]')).to_have_count(0)
    wait_for(lambda: "spare-worker" not in {w.name for w in stack.client.workers()}, what="the drained worker gone")


def test_the_queue_page_shows_the_backlog_per_handler(stack: Stack, page: Page, screenshots: Path) -> None:
    queued = stack.client.submit("nobody-serves-this", {})
    page.goto(f"{stack.console}/queue")
    row = page.locator('tr[data-handler="nobody-serves-this"]')
    expect(row.locator(".backlog")).to_have_text("1")
    assert row.locator("td").nth(2).inner_text() != "-", "the oldest queued task's wait is shown"
    page.screenshot(path=screenshots / "queue.png", full_page=True)
    stack.client.cancel(queued.id)
    expect(row).to_have_count(0, timeout=WAIT_MS)  # pushed: its only task left the queue


def _post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, method="POST", data=b"", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answered:
            return int(answered.status)
    except urllib.error.HTTPError as refused:
        refused.close()
        return refused.code


def test_a_request_addressed_to_another_name_or_posted_from_another_origin_is_refused(stack: Stack) -> None:
    """DNS rebinding: a page of another site whose name now points at the console shares its origin, and sends
    htmx's header. The console refuses any name it was not given, and actions from another origin."""
    execution_id = submit_progress(stack.client, 600, 0.05)
    port = stack.console.rsplit(":", 1)[1]
    cancel = f"{stack.console}/executions/{execution_id}/cancel"
    rebound = {"Host": f"rebind.attacker.example:{port}", "HX-Request": "true"}
    assert _post(cancel, {**rebound, "Origin": f"http://rebind.attacker.example:{port}"}) == 403
    with pytest.raises(urllib.error.HTTPError) as read:
        urllib.request.urlopen(urllib.request.Request(f"{stack.console}/executions", headers=rebound), timeout=10)
    assert read.value.code == 403
    assert "--allowed-host rebind.attacker.example" in read.value.read().decode()
    read.value.close()
    assert _post(cancel, {"HX-Request": "true", "Origin": "http://attacker.example"}) == 403
    assert _post(cancel, {"HX-Request": "true", "Sec-Fetch-Site": "cross-site"}) == 403
    assert stack.client.get(execution_id).state is State.RUNNING
    # Its own name, and its own pages: taken.
    assert (
        _post(cancel, {"HX-Request": "true", "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}) == 200
    )
    assert stack.client.wait_finished(execution_id, timedelta(seconds=15)).state is State.CANCELLED


def test_a_forged_page_token_is_a_400_naming_it_and_htmx_shows_it_in_the_page(stack: Stack, page: Page) -> None:
    """A mistake is the asker's (4xx, not 502), and a page shows why its request was refused."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{stack.console}/executions?page_token=bogus", timeout=10)
    assert refused.value.code == 400
    assert "page_token" in refused.value.read().decode()
    refused.value.close()
    page.goto(f"{stack.console}/executions")
    page.evaluate("htmx.ajax('GET', '/executions/rows?page_token=bogus', '#rows')")
    expect(page.locator("#refused .error")).to_contain_text("page_token", timeout=WAIT_MS)


def test_deleting_a_running_execution_is_a_409_saying_why(stack: Stack) -> None:
    execution_id = submit_progress(stack.client, 600, 0.05)
    wait_running(stack.client, execution_id)
    request = urllib.request.Request(
        f"{stack.console}/executions/{execution_id}/delete", method="POST", data=b"", headers={"HX-Request": "true"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 409
    assert refused.value.headers["HX-Retarget"] == "#refused"
    assert "finished" in refused.value.read().decode()
    refused.value.close()
    assert stack.client.get(execution_id).state is State.RUNNING
    stack.client.cancel(execution_id)


def test_the_live_view_of_an_execution_that_does_not_exist_ends_rather_than_reconnect(stack: Stack) -> None:
    with urllib.request.urlopen(f"{stack.console}/executions/no-such-execution/stream", timeout=10) as answered:
        body = answered.read().decode()
    assert "event: problem" in body
    assert "reconnecting" not in body
    assert body.rstrip().endswith("event: end\ndata:")
