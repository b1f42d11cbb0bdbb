"""The targets taskwire is held to, judged on one invocation's medians, and the side-by-side table.

Every ratio divides two figures measured in the same invocation of the suite (the bare gRPC figures
moments before the taskwire ones, run by run), so a busy machine slows both sides alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bench._common import ScenarioResult, fmt, render_table

Kind = Literal["ratio", "at_most", "equals"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """`metric` of `scenario`, alone (``at_most``/``equals`` `bound`) or over a reference (``ratio`` ≥ `bound`)."""

    name: str
    scenario: str
    metric: str
    kind: Kind
    bound: float
    unit: str = ""
    ref_scenario: str = ""
    ref_metric: str = ""
    property: bool = False  # a behaviour the issue asks to show, rather than one of its numeric targets
    # For a latency: the bare transport's figure in the same scenario, printed beside the verdict.
    transport_metric: str = ""


TARGETS: tuple[Target, ...] = (
    Target(
        name="batched submits: end-to-end tasks/s vs bare stream round trips",
        scenario="throughput",
        metric="batched.tasks_per_s",
        kind="ratio",
        bound=0.8,
        ref_scenario="throughput",
        ref_metric="bare.stream_msgs_per_s",
    ),
    Target(
        name="batched submits: end-to-end tasks/s vs Celery + Redis",
        scenario="throughput",
        metric="batched.tasks_per_s",
        kind="ratio",
        bound=12.0,
        ref_scenario="celery",
        ref_metric="tasks_per_s",
    ),
    Target(
        name="bulk result collection ≥ 0.8× batched end to end",
        scenario="throughput",
        metric="collected.tasks_per_s",
        kind="ratio",
        bound=0.8,
        ref_scenario="throughput",
        ref_metric="batched.tasks_per_s",
    ),
    Target(
        name="one submit per task: end-to-end tasks/s vs bare unary echo",
        scenario="throughput",
        metric="single.tasks_per_s",
        kind="ratio",
        bound=0.5,
        ref_scenario="throughput",
        ref_metric="bare.unary_qps",
    ),
    Target(
        name="dispatch at 100/s: submit → handler start p50",
        scenario="latency",
        metric="100.start_p50",
        kind="at_most",
        bound=1.0,
        unit="ms",
        transport_metric="bare.100.p50",
    ),
    Target(
        name="dispatch at 100/s: submit → handler start p99",
        scenario="latency",
        metric="100.start_p99",
        kind="at_most",
        bound=5.0,
        unit="ms",
        transport_metric="bare.100.p99",
    ),
    Target(
        name="durable submit acknowledgement at 100/s p50",
        scenario="latency",
        metric="100.submit_p50",
        kind="at_most",
        bound=2.0,
        unit="ms",
        transport_metric="bare.100.p50",
    ),
    Target(
        name="cancel → abort signal p50 (idle)",
        scenario="cancel",
        metric="idle.abort_p50",
        kind="at_most",
        bound=3.0,
        unit="ms",
    ),
    Target(
        name="cancel → abort signal p99 (idle)",
        scenario="cancel",
        metric="idle.abort_p99",
        kind="at_most",
        bound=10.0,
        unit="ms",
    ),
    Target(
        name="cancel → abort signal p50 (under load)",
        scenario="cancel",
        metric="loaded.abort_p50",
        kind="at_most",
        bound=3.0,
        unit="ms",
    ),
    Target(
        name="cancel → abort signal p99 (under load)",
        scenario="cancel",
        metric="loaded.abort_p99",
        kind="at_most",
        bound=10.0,
        unit="ms",
    ),
    Target(
        name="server RSS per pending task",
        scenario="memory",
        metric="per_task",
        kind="at_most",
        bound=1024.0,
        unit="B",
    ),
    Target(
        name="200 worker streams vs 4: throughput",
        scenario="many-workers",
        metric="streams_200",
        kind="ratio",
        bound=0.8,
        ref_scenario="many-workers",
        ref_metric="streams_4",
    ),
    Target(
        name="50 worker processes vs 4: throughput",
        scenario="many-workers",
        metric="processes_50",
        kind="ratio",
        bound=0.8,
        ref_scenario="many-workers",
        ref_metric="processes_4",
    ),
    Target(
        name="recovery with pending tasks: start → first GetStats",
        scenario="recovery",
        metric="ready",
        kind="at_most",
        bound=2.0,
        unit="s",
    ),
    Target(
        name="backpressure: wait-for-room submitters admitted in order",
        scenario="backpressure",
        metric="waiters_in_order",
        kind="equals",
        bound=100.0,
        unit="%",
        property=True,
    ),
    Target(
        name="backpressure: server RSS growth while full",
        scenario="backpressure",
        metric="rss_growth",
        kind="at_most",
        bound=5.0,
        unit="MiB",
        property=True,
    ),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    value: float | None  # the figure judged: the ratio for ratio targets
    measured: str
    wanted: str
    status: str  # MET, MISSED or n/a
    by: str

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.name,
            "property": self.target.property,
            "value": self.value,
            "measured": self.measured,
            "wanted": self.wanted,
            "status": self.status,
            "by": self.by,
        }


def _median(results: Mapping[str, ScenarioResult], scenario: str, metric: str) -> float | None:
    result = results.get(scenario)
    return result.median(metric) if result is not None else None


def judge(target: Target, results: Mapping[str, ScenarioResult]) -> Verdict:
    value = _median(results, target.scenario, target.metric)
    if target.kind == "ratio":
        reference = _median(results, target.ref_scenario, target.ref_metric)
        wanted = f"≥ {target.bound:g}×"
        if value is None or not reference:
            return Verdict(target, None, "n/a", wanted, "n/a", "not measured in this invocation")
        ratio = value / reference
        if ratio >= target.bound:
            return Verdict(target, ratio, f"{ratio:.2f}×", wanted, "MET", f"{ratio / target.bound:.2f}× the target")
        return Verdict(
            target,
            ratio,
            f"{ratio:.2f}×",
            wanted,
            "MISSED",
            f"short by {100 * (1 - ratio / target.bound):.0f}% (needs {target.bound / ratio:.2f}× more)",
        )
    wanted = f"{'=' if target.kind == 'equals' else '≤'} {fmt(target.bound, target.unit)} {target.unit}"
    if value is None:
        return Verdict(target, None, "n/a", wanted, "n/a", "not measured in this invocation")
    measured = f"{fmt(value, target.unit)} {target.unit}"
    transport = _median(results, target.scenario, target.transport_metric) if target.transport_metric else None
    beside = f"; bare gRPC round trip alone: {fmt(transport, target.unit)} {target.unit}" if transport else ""
    if target.kind == "equals":
        met = value == target.bound
        return Verdict(target, value, measured, wanted, "MET" if met else "MISSED", "" if met else "not all in order")
    if value <= target.bound:
        return Verdict(target, value, measured, wanted, "MET", beside.removeprefix("; "))
    over = f"over by {fmt(value - target.bound, target.unit)} {target.unit}"
    if target.bound > 0:
        over += f" ({value / target.bound:.1f}× the limit)"
    return Verdict(target, value, measured, wanted, "MISSED", over + beside)


def judge_all(results: Mapping[str, ScenarioResult]) -> list[Verdict]:
    return [judge(target, results) for target in TARGETS]


def targets_table(verdicts: Sequence[Verdict]) -> str:
    rows = [
        [
            v.target.name + (" (property)" if v.target.property else ""),
            v.measured,
            v.wanted,
            v.status + (f": {v.by}" if v.status == "MISSED" else ""),
        ]
        for v in verdicts
    ]
    return render_table(["target (medians of this invocation)", "measured", "target", "result"], rows, title="Targets")


def side_by_side(results: Mapping[str, ScenarioResult]) -> tuple[str, list[dict[str, Any]]]:
    """taskwire's throughput beside the bare gRPC limit and the peer, as ratios."""

    def get(scenario: str, metric: str) -> float | None:
        return _median(results, scenario, metric)

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}×" if a is not None and b else "n/a"

    celery = get("celery", "tasks_per_s")
    lines = [
        ("one submit per task", get("throughput", "single.tasks_per_s"), get("throughput", "bare.unary_qps"), "unary"),
        (
            "batches of 100",
            get("throughput", "batched.tasks_per_s"),
            get("throughput", "bare.stream_msgs_per_s"),
            "stream",
        ),
    ]
    rows = []
    data = []
    for label, taskwire, bare, kind in lines:
        rows.append(
            [
                label,
                fmt(taskwire, "tasks/s"),
                f"{fmt(bare, 'calls/s')} ({kind})",
                ratio(taskwire, bare),
                fmt(celery, "tasks/s"),
                ratio(taskwire, celery),
            ]
        )
        data.append({"way": label, "taskwire": taskwire, "bare": bare, "bare_kind": kind, "celery": celery})
    table = render_table(
        ["end to end, tasks/s (medians)", "taskwire", "bare gRPC", "tw/bare", "Celery+Redis", "tw/Celery"],
        rows,
        title="Side by side (same invocation)",
    )
    return table, data


__all__ = ["TARGETS", "Target", "Verdict", "judge", "judge_all", "side_by_side", "targets_table"]
