"""Background load for other measurements: ``python -m bench.loadgen --server ADDR --rate N [--batch B]``.

Submits ``echo`` tasks at N per second (open loop), B per SubmitExecutions call (1: one
SubmitExecution per task), until SIGTERM, then prints ``loadgen: submitted S failed F in T s``
(tasks). Runs as its own process so that its work does not share an event loop with the
measurement it loads.
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


async def generate(address: str, rate: float, batch: int) -> tuple[int, int, float]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    single = tpb.SubmitExecutionRequest(execution=echo_execution())
    many = tpb.SubmitExecutionsRequest(executions=[echo_execution()] * batch)
    calls_per_s = rate / batch
    submitted = failed = 0
    running: set[asyncio.Task[None]] = set()
    async with channel(address) as chan:
        stub = task_stub(chan)
        await stub.GetStats(tpb.GetStatsRequest(), timeout=10)

        async def one() -> None:
            nonlocal submitted, failed
            try:
                if batch == 1:
                    await stub.SubmitExecution(single, timeout=30)
                else:
                    await stub.SubmitExecutions(many, timeout=30)
                submitted += batch
            except grpc.aio.AioRpcError:
                failed += batch

        print(READY, flush=True)
        start = monotonic_s()
        index = 0
        while not stop.is_set():
            delay = start + index / calls_per_s - monotonic_s()
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
    parser.add_argument("--rate", type=float, required=True, help="tasks per second")
    parser.add_argument("--batch", type=int, default=1, help="tasks per call (1: SubmitExecution per task)")
    args = parser.parse_args(argv)
    submitted, failed, elapsed = asyncio.run(generate(args.server, args.rate, max(1, args.batch)))
    print(f"loadgen: submitted {submitted} failed {failed} in {elapsed:.3f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
