"""HTTP/2 options the server, the worker agent and the SDK share: a fixed flow-control window, no BDP probes;
and keepalive pings, which notice a peer that stopped answering without closing its connection.

gRPC sizes each connection's flow-control window by probing its bandwidth-delay product: while data
flows it sends a ping every few milliseconds and the peer acknowledges it. That is a wake-up of both
sides per ping, per connection: with many worker streams that each carry a frame per task, the pings
and their acknowledgements cost as many system calls as the tasks themselves. A fixed window of 4 MiB
(the window gRPC itself announces while memory is plentiful) keeps large payloads flowing without them.
"""

from __future__ import annotations

FLOW_CONTROL_WINDOW_BYTES = 4 * 1024 * 1024

HTTP2_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", FLOW_CONTROL_WINDOW_BYTES),
)


def keepalive_options(every_s: float, timeout_s: float) -> list[tuple[str, int]]:
    """A ping every `every_s` on a connection, which is dropped when one gets no answer within `timeout_s`: a
    server that was paused, or cut off without a reset, is noticed, and the channel connects again (to the
    next address of its list). The server accepts a ping a second (`taskwire.server`)."""
    return [
        ("grpc.keepalive_time_ms", max(1, round(every_s * 1000))),
        ("grpc.keepalive_timeout_ms", max(1, round(timeout_s * 1000))),
        # gRPC core enforces the keepalive timeout through its ping timeout (grpc/grpc#39239).
        ("grpc.http2.ping_timeout_ms", max(1, round(timeout_s * 1000))),
        # Also on a stream that has carried nothing for a while (gRPC stops after two such pings otherwise).
        ("grpc.http2.max_pings_without_data", 0),
    ]


__all__ = ["FLOW_CONTROL_WINDOW_BYTES", "HTTP2_OPTIONS", "keepalive_options"]
