"""A real server with an auth file, its identities and their tokens, and clients that speak as them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from taskwire.client import Client, RpcRetry
from taskwire.common.bearer import bearer_metadata, new_token, token_hash
from taskwire.v1 import worker_service_pb2 as wpb
from tests.harness import Cluster, ServerProcess, wait_for

NO_RETRY = RpcRetry(max_attempts=1)
CONNECT = "/taskwire.v1.WorkerService/Connect"

# name -> (role, extra lines of its [[identity]])
IDENTITIES: dict[str, tuple[str, str]] = {
    "admin": ("admin", ""),
    "alice": ("submitter", ""),
    "bob": ("submitter", ""),
    "reader": ("reader", ""),
    "worker-a": ("worker", ""),
    "worker-b": ("worker", "max_worker_streams = 1"),
    "limited": ("submitter", "submit_rate = 1.0\nsubmit_burst = 2"),
}


@dataclass
class Secured:
    """A server that reads an auth file, and the token of each of its identities."""

    server: ServerProcess
    tokens: dict[str, str]
    auth_file: Path

    @property
    def address(self) -> str:
        return self.server.address

    def client(self, name: str | None = None, *, token: str | None = None, retry: RpcRetry = NO_RETRY) -> Client:
        """An SDK client speaking as identity `name` (or with `token`; neither: with no credential)."""
        return Client(self.address, token=token or (self.tokens[name] if name else None), retry=retry)

    def metadata(self, name: str) -> tuple[tuple[str, str]]:
        return bearer_metadata(self.tokens[name])

    def wait_for_workers(self, count: int) -> None:
        with self.client("admin") as admin:
            wait_for(lambda: len(admin.workers()) >= count, what=f"{count} connected worker(s)")


def write_auth_file(path: Path) -> dict[str, str]:
    tokens = {name: new_token() for name in IDENTITIES}
    lines = ["[limits]", "max_worker_streams = 4", ""]
    for name, (role, extra) in IDENTITIES.items():
        lines += [
            "[[identity]]",
            f"name = {json.dumps(name)}",
            f"role = {json.dumps(role)}",
            f"tokens = [{json.dumps(token_hash(tokens[name]))}]",
            extra,
            "",
        ]
    path.write_text("\n".join(lines))
    return tokens


def start_secured(procs: Cluster, *extra_args: str) -> Secured:
    auth_file = procs.tmp_path / "auth.toml"
    tokens = write_auth_file(auth_file)
    server = procs.server(
        "--auth-file",
        str(auth_file),
        "--lease-timeout",
        "2",
        "--heartbeat-interval",
        "0.5",
        "--cancel-grace",
        "2",
        "--log-level",
        "DEBUG",
        *extra_args,
    )
    return Secured(server, tokens, auth_file)


def hello_frame(name: str, running: tuple[tuple[str, int], ...] = ()) -> bytes:
    hello = wpb.WorkerHello(
        name=name,
        instance_id=f"{name}-instance",
        handlers=["echo"],
        slots=1,
        running_attempts=[wpb.AttemptRef(task_run_id=t, attempt=n) for t, n in running],
    )
    return wpb.ConnectRequest(messages=[wpb.WorkerMessage(hello=hello)]).SerializeToString()


def raw_stream(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.StreamStreamCall[bytes, bytes]:
    """A WorkerService stream of raw frames, opened with `metadata` (the credential)."""
    same: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
    return channel.stream_stream(CONNECT, request_serializer=same, response_deserializer=same)(metadata=metadata)


async def refusal(
    call: grpc.aio.StreamStreamCall[bytes, bytes], frame: bytes | None = None
) -> tuple[grpc.StatusCode, str]:
    """Send `frame` (if any) and read until the stream ends; its status. A call refused for its credential
    is sent no frame: the server ends it before reading one, and a write that fails as the call ends makes
    grpc.aio report INTERNAL in place of the server's status (grpc/grpc#36066)."""
    if frame is not None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(frame)

    async def drain() -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            while await call.read() is not grpc.aio.EOF:
                pass

    await asyncio.wait_for(drain(), 10)
    return await call.code(), await call.details() or ""
