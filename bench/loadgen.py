"""Background load for other measurements: ``python -m bench.loadgen --server ADDR --rate N``.

Submits ``echo`` tasks, one SubmitExecution each, at N per second (open loop) until SIGTERM, then
prints ``loadgen: submitted S failed F in T s``. Runs as its own process so that its work does not
share an event loop with the measurement it loads.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Sequence

import grpc
import grpc.aio

from bench._common import channel, echo_execution, monotonic_s, task_stub
from taskwire.v1 import task_service_pb2 as tpb

READY = "loadgen: running"
SUMMARY = re.compile(r"loadgen: submitted (\d+) failed (\d+) in ([0-9.]+) s")


async def generate(address: str, rate: float) -> tuple[int, int, float]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    request = tpb.SubmitExecutionRequest(execution=echo_execution())
    submitted = failed = 0
    running: set[asyncio.Task[None]] = set()
    async with channel(address) as chan:
        stub = task_stub(chan)
        await stub.GetStats(tpb.GetStatsRequest(), timeout=10)

        async def one() -> None:
            nonlocal submitted, failed
            try:
                await stub.SubmitExecution(request, timeout=30)
                submitted += 1
            except grpc.aio.AioRpcError:
                failed += 1

        print(READY, flush=True)
        start = monotonic_s()
        index = 0
        while not stop.is_set():
            delay = start + index / rate - monotonic_s()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            task = asyncio.create_task(one())
            running.add(task)
            task.add_done_callback(running.discard)
            index += 1
        elapsed = monotonic_s() - start
        await asyncio.gather(*running)
    return submitted, failed, elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    parser.add_argument("--rate", type=float, required=True, help="submits per second")
    args = parser.parse_args(argv)
    submitted, failed, elapsed = asyncio.run(generate(args.server, args.rate))
    print(f"loadgen: submitted {submitted} failed {failed} in {elapsed:.3f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
