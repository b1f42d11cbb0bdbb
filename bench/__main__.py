"""``python -m bench``: run the scenarios, print their tables and the comparison, write JSON results.

python -m bench                       # everything, 3 runs each (what `make bench` does)
python -m bench throughput dramatiq   # some scenarios
python -m bench --quick --runs 1      # a smoke run with small counts
python -m bench --list                # the scenarios
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from bench import (
    backpressure,
    cancel,
    celery_peer,
    dramatiq_peer,
    flow,
    latency,
    many_workers,
    memory,
    procrastinate_peer,
    recovery,
    stores,
    throughput,
)
from bench._common import FULL, QUICK, RESULTS_DIR, Bench, ScenarioResult, machine_info, write_results
from bench.targets import judge_all, side_by_side, targets_table

# In the order they run: the peers right after the throughput they are compared with; memory before
# recovery, which reuses the stores it leaves.
SCENARIOS: tuple[ModuleType, ...] = (
    throughput,
    celery_peer,
    dramatiq_peer,
    procrastinate_peer,
    latency,
    cancel,
    backpressure,
    memory,
    recovery,
    many_workers,
    stores,
    flow,
)
BY_NAME: dict[str, ModuleType] = {module.NAME: module for module in SCENARIOS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"scenarios to run (default: all): {', '.join(BY_NAME)}"
    )
    parser.add_argument("--skip", action="append", default=[], metavar="SCENARIO", help="leave a scenario out")
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario; medians are reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run, not a measurement")
    parser.add_argument(
        "--tasks", type=int, metavar="N", help="tasks of scenario 1 (both ways) and of each peer (e.g. 20000)"
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes (default: %(default)s)"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for module in SCENARIOS:
            print(f"{module.NAME:14} {module.TITLE}")
        return 0
    unknown = [name for name in [*args.scenarios, *args.skip] if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [m for m in SCENARIOS if (not args.scenarios or m.NAME in args.scenarios) and m.NAME not in args.skip]
    sizes = QUICK if args.quick else FULL
    if args.tasks is not None:
        if args.tasks < 1:
            parser.error("--tasks must be at least 1")
        sizes = dataclasses.replace(sizes, tasks_single=args.tasks, tasks_batched=args.tasks, tasks_peer=args.tasks)
    root = Path(tempfile.mkdtemp(prefix="taskwire-bench-"))
    bench = Bench(sizes=sizes, runs=args.runs, quick=args.quick, root=root)
    before = machine_info()
    print(
        f"taskwire benchmarks: {'quick' if args.quick else 'full'} sizes, {args.runs} run(s) each; "
        f"{before['cpus']} CPUs, load average {before['load_average']} at the start; source {before['source']}",
        flush=True,
    )
    results: dict[str, ScenarioResult] = {}
    failures: dict[str, str] = {}
    try:
        for module in chosen:
            run: Callable[[Bench], ScenarioResult] = module.run
            started = time.monotonic()
            try:
                result = run(bench)
            except Exception as error:
                failures[module.NAME] = f"{type(error).__name__}: {error}"
                traceback.print_exc()
                result = ScenarioResult(
                    name=module.NAME, title=module.TITLE, skipped=f"FAILED: {failures[module.NAME]}"
                )
            result.details["seconds"] = round(time.monotonic() - started, 1)
            results[module.NAME] = result
            print("\n" + result.table(), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    comparison, comparison_data = side_by_side(results)
    verdicts = judge_all(results)
    after = machine_info()
    print("\n" + comparison)
    print("\n" + targets_table(verdicts))
    if after["source"] != before["source"]:
        print(f"\nWARNING: the source changed during the run: {before['source']} → {after['source']}")
    print(
        f"\nload average {after['load_average']} at the end; "
        f"{time.monotonic() - bench.started_at:.0f}s in all; durability as shipped (SQLite WAL, synchronous=FULL)"
    )
    payload = {
        "suite": "taskwire bench",
        "mode": "quick" if args.quick else "full",
        "runs": args.runs,
        "sizes": dataclasses.asdict(sizes),
        "machine_at_start": before,
        "machine_at_end": after,
        "seconds": round(time.monotonic() - bench.started_at, 1),
        "scenarios": {name: result.to_json() for name, result in results.items()},
        "side_by_side": comparison_data,
        "targets": [verdict.to_json() for verdict in verdicts],
        "failures": failures,
    }
    path = write_results(args.results_dir, payload)
    print(f"results: {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
