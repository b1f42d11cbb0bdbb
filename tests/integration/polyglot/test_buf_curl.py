"""`buf curl` with JSON bodies and server reflection, no .proto files: what docs/other-languages.md shows."""

from __future__ import annotations

import base64
import json
from typing import Any

from taskwire.v1 import task_service_pb2, worker_service_pb2
from tests.harness import wait_for
from tests.integration.polyglot.conftest import BufCurl

TASK = "taskwire.v1.TaskService"


def payload(value: Any) -> dict[str, str]:
    """A Payload in proto JSON: `bytes` travel as base64."""
    return {"data": base64.b64encode(json.dumps(value).encode()).decode(), "content_type": "application/json"}


def decoded(payload_json: dict[str, str]) -> Any:
    return json.loads(base64.b64decode(payload_json["data"]))


def submit(buf_curl: BufCurl, handler: str, value: Any) -> dict[str, Any]:
    body = {"execution": {"tasks": [{"handler": handler, "input": payload(value)}]}}
    [response] = buf_curl.call(f"{TASK}/SubmitExecution", body)
    execution: dict[str, Any] = response["execution"]
    return execution


def get(buf_curl: BufCurl, execution_id: str) -> dict[str, Any]:
    [response] = buf_curl.call(f"{TASK}/GetExecution", {"execution_id": execution_id})
    execution: dict[str, Any] = response["execution"]
    return execution


def test_reflection_lists_every_method(buf_curl: BufCurl) -> None:
    result = buf_curl.run("--list-methods", buf_curl.url())
    assert result.returncode == 0, result.stderr
    listed = set(result.stdout.split())
    for module in (task_service_pb2, worker_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"{service.full_name}/{method.name}" in listed, result.stdout
    assert {"grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch"} <= listed


def test_health_check_says_serving(buf_curl: BufCurl) -> None:
    assert buf_curl.call("grpc.health.v1.Health/Check") == [{"status": "SERVING"}]
    assert buf_curl.call("grpc.health.v1.Health/Check", {"service": TASK}) == [{"status": "SERVING"}]


def test_submit_get_and_cancel(buf_curl: BufCurl) -> None:
    submitted = submit(buf_curl, "sleep", {"seconds": 30})
    execution_id = submitted["id"]
    assert submitted["state"] in ("EXECUTION_STATE_PENDING", "EXECUTION_STATE_RUNNING")
    [task_run] = submitted["taskRuns"]
    assert task_run["handler"] == "sleep"
    assert task_run["taskId"] == "main"

    fetched = get(buf_curl, execution_id)
    assert fetched["id"] == execution_id
    assert decoded(fetched["taskRuns"][0]["input"]) == {"seconds": 30}

    [cancelled] = buf_curl.call(
        f"{TASK}/CancelExecution", {"execution_id": execution_id, "reason": "cancelled with buf curl"}
    )
    assert cancelled["execution"]["id"] == execution_id

    # It is CANCELLED once the worker has stopped the handler, which may be after the cancel returns.
    def cancelled_execution() -> dict[str, Any] | None:
        execution = get(buf_curl, execution_id)
        return execution if execution["state"] == "EXECUTION_STATE_CANCELLED" else None

    final = wait_for(cancelled_execution, what="the execution to be CANCELLED")
    assert final["reasonCode"] == "REASON_CODE_CANCEL_REQUESTED"
    assert final["reasonMessage"] == "cancelled with buf curl"

    # A second cancel is an OK no-op.
    [again] = buf_curl.call(f"{TASK}/CancelExecution", {"executionId": execution_id})
    assert again["alreadyTerminal"] is True

    # Watching a finished execution replays its history; the stream ends with the terminal transition.
    events = [message["event"] for message in buf_curl.call(f"{TASK}/WatchExecution", {"execution_id": execution_id})]
    assert [int(event["sequence"]) for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["executionTransition"]["toState"] == "EXECUTION_STATE_CANCELLED"


def test_watch_streams_until_the_execution_ends(buf_curl: BufCurl) -> None:
    execution_id = submit(buf_curl, "progress", {"steps": 3, "interval": 0.05})["id"]
    events = [message["event"] for message in buf_curl.call(f"{TASK}/WatchExecution", {"execution_id": execution_id})]
    assert [event["progress"]["message"] for event in events if "progress" in event] == [
        "step 1 of 3",
        "step 2 of 3",
        "step 3 of 3",
    ]
    assert events[-1]["executionTransition"]["toState"] == "EXECUTION_STATE_SUCCESS"
    [attempt] = get(buf_curl, execution_id)["taskRuns"][0]["attempts"]
    assert decoded(attempt["output"]) == {"steps": 3}


def test_errors_come_back_as_status_codes(buf_curl: BufCurl) -> None:
    result = buf_curl.run("--data", '{"execution_id": "no-such-id"}', buf_curl.url(f"{TASK}/GetExecution"))
    # buf curl exits with the gRPC code shifted three bits left: NOT_FOUND (5) -> 40.
    assert result.returncode == 5 << 3, result.stderr
    assert json.loads(result.stderr) == {"code": "not_found", "message": "no execution with id 'no-such-id'"}
