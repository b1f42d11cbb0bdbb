"""HTTP/2 options the server and the worker agent share: a fixed flow-control window, no BDP probes.

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

__all__ = ["FLOW_CONTROL_WINDOW_BYTES", "HTTP2_OPTIONS"]
