"""`taskwire-conformance`: run the conformance checks against a worker command and print a table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from taskwire.common import positive_seconds

from ._checks import CHECKS, CONNECT_S, Outcome, run_checks

DESCRIPTION = """\
Drives a worker through every path of the taskwire worker protocol and says what it expected and what
the worker did. A fresh worker process is started for each check from --worker-cmd, where {address}
becomes the scripted server's address (also in TASKWIRE_SERVER) and {slots} the slots to declare (also
in TASKWIRE_SLOTS). The worker must serve the conformance handlers (docs/conformance.md).

Example (the Python agent):
  taskwire-conformance --worker-cmd 'taskwire-worker --server {address} --slots {slots} \\
      --handlers taskwire.conformance.handlers'
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskwire-conformance", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--worker-cmd", required=False, metavar="CMD", help="how to start the worker under test")
    parser.add_argument("--only", metavar="NAME", action="append", default=[], help="run this check (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the checks and what each expects, then exit")
    parser.add_argument(
        "--timeout", metavar="S", type=positive_seconds, default=60.0, help="the longest one check may take"
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="S",
        type=positive_seconds,
        default=CONNECT_S,
        help=f"the longest the worker may take to open its stream ({CONNECT_S:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    if args.list:
        for check in CHECKS:
            console.print(f"[bold]{check.name}[/bold]: {check.expects}")
        return 0
    if not args.worker_cmd:
        print("taskwire-conformance: --worker-cmd is required (see --help)", file=sys.stderr)
        return 2
    unknown = sorted(set(args.only) - {check.name for check in CHECKS})
    if unknown:
        print(f"taskwire-conformance: no check named {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2

    def show(outcome: Outcome) -> None:
        mark = "[green]pass[/green]" if outcome.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {outcome.check.name} ({outcome.seconds:.1f}s)")

    outcomes = asyncio.run(
        run_checks(
            args.worker_cmd,
            names=args.only,
            timeout_s=args.timeout,
            connect_s=args.connect_timeout,
            on_outcome=show,
        )
    )
    table = Table(title="taskwire worker conformance")
    for column in ("check", "result", "the protocol asks", "what the worker did"):
        table.add_column(column)
    for outcome in outcomes:
        result = "[green]pass[/green]" if outcome.passed else "[red]FAIL[/red]"
        table.add_row(outcome.check.name, result, outcome.check.expects, outcome.detail or "as asked")
    console.print(table)
    failed = sum(not outcome.passed for outcome in outcomes)
    console.print(f"{len(outcomes) - failed} of {len(outcomes)} checks passed")
    return 1 if failed else 0
