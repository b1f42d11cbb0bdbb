"""Managing schedules with the real `taskwire` command and the SDK: create, list, get, pause, resume, trigger,
delete, and the refusals of bad input (the status code and the field named)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from taskwire.client import AlreadyExists, AsyncClient, NotFound, OverlapPolicy, State, ValidationError
from taskwire.v1 import task_service_pb2 as tpb
from taskwire.v1 import task_service_pb2_grpc
from tests.harness import Cluster, ServerProcess
from tests.integration.client.conftest import Cli
from tests.integration.schedules.support import sdk

HOURLY = "0 * * * *"  # fires only when a test runs across the hour: tests count the fires they cause


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with a demo worker for the module (each test uses its own schedule names)."""
    running = Cluster(tmp_path_factory.mktemp("schedules"))
    try:
        server = running.server()
        running.worker(server)
        yield server
    finally:
        running.close()


def test_create_list_get_pause_trigger_resume_delete(server: ServerProcess) -> None:
    cli = Cli(server.address)
    created = cli("schedule", "create", "hourly", "echo", "--cron", HOURLY, "--timezone", "Europe/Paris",
                  "--input", '{"hello": "world"}', "--catch-up", "5m", "--overlap", "buffer-one", "--json")  # fmt: skip
    assert created.returncode == 0, created.stderr
    view = json.loads(created.stdout)
    assert (view["name"], view["cron"], view["timezone"], view["overlap"]) == (
        "hourly",
        HOURLY,
        "Europe/Paris",
        "BUFFER_ONE",
    )
    assert view["catch_up_window_s"] == 300
    first = datetime.fromisoformat(view["next_fire_times"][0])
    assert first > datetime.now(UTC)
    assert (first.minute, first.second) == (0, 0)

    listed = cli("schedule", "list")
    assert listed.returncode == 0
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith("hourly"))
    assert row[:10] == ["hourly", "0", "*", "*", "*", "*", "Europe/Paris", "echo", "BUFFER_ONE", "ACTIVE"]

    assert cli("schedule", "pause", "hourly").returncode == 0
    paused = json.loads(cli("schedule", "get", "hourly", "--json").stdout)
    assert paused["paused"] is True
    assert paused["next_fire_times"] == []
    fired_before = paused["fired"]  # 1 when the hour began since the schedule was made, else 0

    triggered = cli("schedule", "trigger", "hourly")
    assert triggered.returncode == 0, triggered.stderr
    execution_id = triggered.stdout.strip()
    with sdk(server) as client:
        done = client.wait_finished(execution_id)
        assert done.state is State.SUCCESS
        assert done.output == {"hello": "world"}
        assert done.execution.metadata["taskwire.schedule"] == "hourly"
        assert done.execution.idempotency_key.startswith("schedule:hourly:trigger:")
        assert client.get_schedule("hourly").fired == fired_before + 1

    resumed = json.loads(cli("schedule", "resume", "hourly", "--json").stdout)
    assert resumed["paused"] is False
    assert len(resumed["next_fire_times"]) == 5

    assert cli("schedule", "delete", "hourly").stdout.strip() == "schedule hourly deleted"
    gone = cli("schedule", "get", "hourly")
    assert gone.returncode == 4
    assert "no schedule with name 'hourly'" in gone.stderr
    assert "taskwire schedule list" in gone.stderr
    assert cli("schedule", "delete", "hourly").returncode == 4
    assert "hourly" not in cli("schedule", "list").stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--cron", "61 * * * *"), "schedule.cron"),
        (("--cron", "* * *"), "schedule.cron"),
        (("--cron", HOURLY, "--timezone", "Mars/Olympus_Mons"), "schedule.timezone"),
        (("--cron", HOURLY, "--max-attempts", "100000"), "schedule.execution.tasks[0].retry_policy.max_attempts"),
    ],
)
def test_bad_input_is_refused_naming_the_field(server: ServerProcess, args: tuple[str, ...], field: str) -> None:
    refused = Cli(server.address)("schedule", "create", "bad", "echo", *args)
    assert refused.returncode == 4
    assert f"schedule create bad: {field}: " in refused.stderr
    assert refused.stderr.count("\n") == 1


def test_the_sdk_gets_the_status_codes(server: ServerProcess) -> None:
    with sdk(server) as client:
        with pytest.raises(ValidationError) as bad_cron:
            client.create_schedule("bad", "every day", "echo")
        assert bad_cron.value.field == "schedule.cron"
        with pytest.raises(ValidationError) as bad_zone:
            client.create_schedule("bad", HOURLY, "echo", timezone="Nowhere")
        assert bad_zone.value.field == "schedule.timezone"
        with pytest.raises(ValidationError) as bad_name:
            client.create_schedule("has space", HOURLY, "echo")
        assert bad_name.value.field == "schedule.name"
        client.create_schedule("once", HOURLY, "echo")
        with pytest.raises(AlreadyExists, match="exists already"):
            client.create_schedule("once", HOURLY, "echo")
        with pytest.raises(NotFound):
            client.trigger_schedule("nothing")
    with server.channel() as channel:  # the raw status codes, as any language's client sees them
        stub = task_service_pb2_grpc.TaskServiceStub(channel)
        with pytest.raises(grpc.RpcError) as missing_spec:
            stub.CreateSchedule(tpb.CreateScheduleRequest(), timeout=5)
        assert missing_spec.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert missing_spec.value.details() == "schedule: required"
        spec = tpb.ScheduleSpec(
            name="once", cron=HOURLY, execution=tpb.ExecutionSpec(tasks=[tpb.TaskSpec(handler="echo")])
        )
        with pytest.raises(grpc.RpcError) as duplicate:
            stub.CreateSchedule(tpb.CreateScheduleRequest(schedule=spec), timeout=5)
        assert duplicate.value.code() is grpc.StatusCode.ALREADY_EXISTS


def test_a_bad_duration_is_a_usage_error(server: ServerProcess) -> None:
    refused = Cli(server.address)("schedule", "create", "x", "echo", "--cron", HOURLY, "--catch-up", "soon")
    assert refused.returncode == 2
    assert "expected a duration such as 60s" in refused.stderr


async def test_the_async_client_manages_schedules(server: ServerProcess) -> None:
    async with AsyncClient(server.address) as client:
        created = await client.create_schedule(
            "async-hourly", HOURLY, "echo", [1, 2], overlap=OverlapPolicy.ALLOW_ALL, paused=True
        )
        assert (created.paused, created.overlap, created.next_fire_times) == (True, OverlapPolicy.ALLOW_ALL, ())
        assert [info.name for info in await client.schedules()].count("async-hourly") == 1
        execution_id = await client.trigger_schedule("async-hourly")
        assert (await client.wait(execution_id)) == [1, 2]
        assert (await client.get_schedule("async-hourly")).fired == 1  # paused since made: the trigger alone
        resumed = await client.resume_schedule("async-hourly")
        assert len(resumed.next_fire_times) == 5
        assert len((await client.get_schedule("async-hourly", next_fire_times=2)).next_fire_times) == 2
        assert (await client.pause_schedule("async-hourly")).paused
        await client.delete_schedule("async-hourly")
        with pytest.raises(NotFound):
            await client.get_schedule("async-hourly")


def test_a_schedule_from_a_flow_file_fires_its_tasks(server: ServerProcess, tmp_path: Path) -> None:
    cli = Cli(server.address)
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "tasks:\n"
        "  - {task_id: first, handler: echo, input: {n: 1}}\n"
        "  - {task_id: second, handler: echo, depends_on: [first], input: {got: {$from: first, path: n}}}\n"
    )
    created = cli("schedule", "create", "from-file", "-f", str(flow), "--cron", HOURLY, "--json")
    assert created.returncode == 0, created.stderr
    triggered = cli("schedule", "trigger", "from-file", "--json")
    assert triggered.returncode == 0, triggered.stderr
    execution_id = json.loads(triggered.stdout)["execution_id"]
    done = cli("wait", execution_id, "--json")
    assert done.returncode == 0, done.stderr
    tasks = {task["task_id"]: task for task in json.loads(done.stdout)["task_runs"]}
    assert tasks["second"]["attempts"][0]["output"] == {"got": 1}
    both = cli("schedule", "create", "nope", "echo", "-f", str(flow), "--cron", HOURLY)
    assert both.returncode == 2
    assert "HANDLER or -f FILE, not both" in both.stderr
