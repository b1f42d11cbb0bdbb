"""Process isolation on a real worker: children kept, kept ready and replaced at their limit, as its metrics
count them."""

from __future__ import annotations

from taskwire.client import Client, State
from tests.harness import Cluster, handler_processes, wait_for
from tests.integration.server.test_metrics import metrics_url, scrape, value
from tests.integration.workers.support import FINISH


def test_children_are_replaced_at_their_limit_of_attempts_and_counted(procs: Cluster) -> None:
    server = procs.server()
    worker = procs.worker(
        server,
        "--isolation",
        "process",
        "--max-attempts-per-child",
        "2",
        "--metrics-listen",
        "127.0.0.1:0",
        slots=1,
        name="isolating",
    )
    url = metrics_url(worker)
    with Client(server.address) as client:
        for n in range(5):  # one at a time: children A, A, B, B, C
            execution = client.submit("echo", {"n": n})
            finished = client.wait_finished(execution.id, FINISH)
            assert finished.state is State.SUCCESS
            assert finished.output == {"n": n}

    def counted() -> tuple[float, float] | None:
        samples = scrape(url)
        started = value(samples, "taskwire_worker_agent_handler_processes_started_total")
        ended = value(samples, "taskwire_worker_agent_handler_processes_ended_total", reason="max_attempts")
        return (started, ended) if started == 3 and ended == 2 else None

    wait_for(counted, what="three children started and two replaced in the worker's metrics")
    samples = scrape(url)
    assert value(samples, "taskwire_worker_agent_handler_processes_ended_total") == 2  # none for another reason


def test_children_kept_ready_are_up_before_the_first_task_and_run_it(procs: Cluster) -> None:
    server = procs.server()
    worker = procs.worker(
        server, "--isolation", "process", "--min-children", "2", "--metrics-listen", "127.0.0.1:0", slots=2
    )
    url = metrics_url(worker)
    ready = wait_for(
        lambda: found if len(found := handler_processes(worker.popen.pid)) == 2 else None,
        what="the worker's two children kept ready, before any task",
    )
    assert value(scrape(url), "taskwire_worker_agent_handler_processes_started_total") == 2
    with Client(server.address) as client:
        executions = [client.submit("echo", {"n": n}) for n in range(4)]
        for n, execution in enumerate(executions):
            finished = client.wait_finished(execution.id, FINISH)
            assert (finished.state, finished.output) == (State.SUCCESS, {"n": n})
    assert handler_processes(worker.popen.pid) == ready  # the tasks started no other child
    assert value(scrape(url), "taskwire_worker_agent_handler_processes_started_total") == 2
