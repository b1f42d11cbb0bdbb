"""Terminal reports made to fit the server's limits: never dropped, since a dropped one leaves its attempt out of
the next heartbeat, and the server runs it again (and again, as the output is the same each time)."""

from __future__ import annotations

import pytest

from taskwire.common import Payload
from taskwire.v1 import worker_service_pb2 as wpb
from taskwire.worker import Completed
from taskwire.worker._executor import AttemptKey
from taskwire.worker._limits import WireLimits
from taskwire.worker._outbox import Outbox
from taskwire.worker._reports import ReportSink

KEY = AttemptKey("run-with-a-long-enough-id", 1)
P = 1024 * 1024  # a payload limit


def _output(size: int) -> Completed:
    """A JSON string output of exactly ``size`` bytes."""
    return Completed(output=Payload(data=b'"' + b"x" * (size - 2) + b'"', content_type="application/json"))


async def _report(limits: WireLimits, outcome: Completed) -> wpb.WorkerMessage:
    outbox = Outbox()
    sink = ReportSink(outbox)
    sink.limits = limits
    sink.attempt_finished(KEY, outcome)
    assert len(outbox) == 1, "the terminal report was dropped"
    (entry,) = await outbox.take()
    assert entry.message.ByteSize() <= limits.frame_budget
    return entry.message


# An older server announces no payload limit: the output is checked against what a frame carries. And a server
# whose message limit is the smallest it allows (its payload limit and 64 KiB) takes an output of its payload
# limit, but not with the report around it.
LIMITS = {
    "no-payload-limit": WireLimits(),
    "payload-limit-at-the-message-limit": WireLimits.from_welcome(
        wpb.Welcome(max_payload_bytes=P, max_message_bytes=P + 64 * 1024)
    ),
}


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
async def test_an_output_within_the_payload_limit_whose_report_would_not_fit_is_output_too_large(
    limits: WireLimits,
) -> None:
    size = limits.max_payload_bytes or limits.frame_budget
    assert limits.fit_outcome(_output(size)) == _output(size)  # the output alone is within the limit

    report = await _report(limits, _output(size))

    assert report.WhichOneof("kind") == "failed", report.WhichOneof("kind")
    assert report.failed.ref.task_run_id == KEY.task_run_id
    error = report.failed.error
    assert (error.type, error.retryable) == ("OutputTooLarge", False)
    assert f"output is {size} bytes" in error.message
    assert f"message limit of {limits.max_message_bytes} bytes" in error.message


@pytest.mark.parametrize("limits", LIMITS.values(), ids=LIMITS.keys())
async def test_an_output_whose_report_fits_is_sent_whole(limits: WireLimits) -> None:
    size = (limits.max_payload_bytes or limits.frame_budget) - 1024
    report = await _report(limits, _output(size))
    assert report.WhichOneof("kind") == "completed"
    assert len(report.completed.output.data) == size


async def test_a_server_with_room_for_its_payload_limit_takes_an_output_of_that_size() -> None:
    """A server's own message limit, unless told otherwise: room for two payloads and a MiB."""
    limits = WireLimits.from_welcome(wpb.Welcome(max_payload_bytes=P, max_message_bytes=2 * P + 1024 * 1024))
    report = await _report(limits, _output(P))
    assert report.WhichOneof("kind") == "completed"
