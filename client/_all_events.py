"""What the SDKs share for following all executions (`watch_events`) and asking who the caller is."""

from __future__ import annotations

from collections.abc import Iterable

from taskwire.common import State, wire
from taskwire.v1 import task_service_pb2 as tpb

from ._common import many, parse_state, request
from ._events import WatchEvent, event_from_proto
from ._models import Identity


def events_request(handler: str, states: Iterable[State | str]) -> tpb.WatchEventsRequest:
    return request(
        tpb.WatchEventsRequest,
        handler=handler,
        states=[wire.execution_state_to_proto(parse_state(state)) for state in many(states, "states")],
    )


def event_of(response: tpb.WatchEventsResponse) -> WatchEvent:
    return event_from_proto(response.event)


def identity_from_proto(response: tpb.GetIdentityResponse) -> Identity:
    return Identity(name=response.name, role=response.role)
