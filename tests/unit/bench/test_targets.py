"""The peer targets and the side-by-side table take the best peer measured in the same invocation."""

from __future__ import annotations

from bench._common import ScenarioResult
from bench.targets import TARGETS, Target, best_peer, judge, side_by_side, targets_table


def _result(name: str, **figures: float) -> ScenarioResult:
    result = ScenarioResult(name=name, title=name)
    for key, value in figures.items():
        result.add(key.replace("__", "."), key, "", value)
    return result


def _target(name: str) -> Target:
    [target] = [t for t in TARGETS if t.name == name]
    return target


SINGLE = "one submit per task: end-to-end tasks/s vs the best peer"
ACK = "durable submit acknowledgement p50 at 100/s vs the best peer"
ABORT = "cancel → abort p50 (idle) vs the best peer"


def test_the_best_peer_is_the_highest_rate_and_the_lowest_latency() -> None:
    results = {
        "celery": _result("celery", single__tasks_per_s=300, abort_p50=0.7),
        "dramatiq": _result("dramatiq", single__tasks_per_s=1000),
        "procrastinate": _result("procrastinate", single__tasks_per_s=250, abort_p50=5.0),
    }
    assert best_peer(results, "single.tasks_per_s", higher=True) == (1000, "Dramatiq + Redis")
    assert best_peer(results, "abort_p50", higher=False) == (0.7, "Celery + Redis")
    assert best_peer(results, "100.ack_p50", higher=False) == (None, "")


def test_peer_targets_are_judged_against_the_best_peer_of_the_run() -> None:
    results = {
        "throughput": _result("throughput", single__tasks_per_s=1500),
        "latency": _result("latency", **{"100__submit_p50": 2.0}),
        "cancel": _result("cancel", idle__abort_p50=2.0),
        "celery": _result("celery", single__tasks_per_s=400, abort_p50=0.7, **{"100__ack_p50": 1.9}),
        "dramatiq": _result("dramatiq", single__tasks_per_s=1000, **{"100__ack_p50": 2.1}),
    }
    single = judge(_target(SINGLE), results)
    assert (single.status, round(single.value or 0, 2)) == ("MISSED", 1.5)  # 1500 / 1000, wanted ≥ 2×
    assert "Dramatiq + Redis" in single.measured
    results["throughput"] = _result("throughput", single__tasks_per_s=2000)
    assert judge(_target(SINGLE), results).status == "MET"
    ack = judge(_target(ACK), results)
    assert ack.status == "MISSED"
    assert "Celery + Redis" in ack.by
    abort = judge(_target(ABORT), results)
    assert abort.status == "MISSED"


def test_without_peers_the_peer_targets_and_columns_are_not_applicable() -> None:
    results = {
        "throughput": _result("throughput", single__tasks_per_s=1500),
        "celery": ScenarioResult(name="celery", title="celery", skipped="not installed"),
    }
    assert judge(_target(SINGLE), results).status == "n/a"
    table, data = side_by_side(results)
    assert "Dramatiq + Redis" in table
    assert data[0]["taskwire"] == 1500
    assert data[0]["best"] is None
    assert data[0]["peers"] == {"celery": None, "dramatiq": None, "procrastinate": None}


def test_one_submit_per_task_through_the_sdk_is_set_beside_both_bare_echoes_and_the_unary_call_has_its_row() -> None:
    results = {
        "throughput": _result(
            "throughput", single__tasks_per_s=1000, unary__tasks_per_s=600, bare__unary_qps=2000, bare__mux_qps=8000
        ),
        "latency": _result("latency", **{"100__submit_p50": 3.0, "bare__100__p50": 1.5, "bare__stream__100__p50": 1.0}),
        "dramatiq": _result("dramatiq", single__tasks_per_s=500),
    }
    table, data = side_by_side(results)
    rows = {(row["figure"], row["bare_kind"]): row for row in data}
    sdk_unary = rows["one submit per task (SDK), end to end", "unary"]
    assert (sdk_unary["taskwire"], sdk_unary["bare"], sdk_unary["best"]) == (1000, 2000, 500)
    sdk_mux = rows["one submit per task (SDK), end to end", "multiplexed"]
    assert (sdk_mux["taskwire"], sdk_mux["bare"], sdk_mux["peers"]) == (1000, 8000, {})  # the peers: first row only
    stub = rows["one SubmitExecution call per task (stub, unary), end to end", "unary"]
    assert (stub["taskwire"], stub["bare"]) == (600, 2000)
    ack_stream = rows["submit (SDK) acknowledged at 100/s, p50", "stream"]
    assert (ack_stream["taskwire"], ack_stream["bare"]) == (3.0, 1.0)
    for shown in ("2,000 (unary)", "8,000 (multiplexed)", "0.50×", "0.12×", "0.30×", "1.00 (stream)", "3.00×"):
        assert shown in table, (shown, table)


DISPATCH = "dispatch at 100/s: submit → handler start p50 vs the bare unary round trip"
SERVER_CPU = "one submit per task: server CPU per task, store writer included"


def test_dispatch_is_judged_as_a_multiple_of_the_bare_round_trip_of_the_same_run() -> None:
    [target] = [t for t in TARGETS if t.name == DISPATCH]
    slow = {"latency": _result("latency", **{"100__start_p50": 2.4, "bare__100__p50": 1.5})}
    verdict = judge(target, slow)
    assert (verdict.status, round(verdict.value or 0, 2), verdict.wanted) == ("MISSED", 1.6, "≤ 1.5×")
    assert verdict.by == "over by 7% (needs 1.07× less)"
    quick = {"latency": _result("latency", **{"100__start_p50": 2.0, "bare__100__p50": 1.5})}
    assert judge(target, quick).status == "MET"
    assert judge(target, {"latency": _result("latency", **{"100__start_p50": 2.0})}).status == "n/a"


def test_the_server_cpu_of_a_single_submit_is_held_under_its_bound() -> None:
    [target] = [t for t in TARGETS if t.name == SERVER_CPU]
    assert judge(target, {"throughput": _result("throughput", single__server_cpu_per_task=574)}).status == "MISSED"
    assert judge(target, {"throughput": _result("throughput", single__server_cpu_per_task=480)}).status == "MET"


def test_a_stretch_bound_is_judged_beside_the_target_of_the_same_figure() -> None:
    results = {"throughput": _result("throughput", single__tasks_per_s=900, bare__unary_qps=2000)}
    name = "one submit per task: end-to-end tasks/s vs bare unary echo"
    verdicts = {(t.stretch, t.bound): judge(t, results) for t in TARGETS if t.name == name}
    assert {key: v.status for key, v in verdicts.items()} == {(False, 0.4): "MET", (True, 0.5): "MISSED"}
    table = targets_table(list(verdicts.values()))
    assert f"{name} (stretch)" in table
    assert table.count(name) == 2
    # Every stretch bound sits beside a target of the same figure; of the same kind, it is the stricter.
    for stretch in (t for t in TARGETS if t.stretch):
        own = [t for t in TARGETS if (t.scenario, t.metric) == (stretch.scenario, stretch.metric) and not t.stretch]
        assert own, stretch.name
        for target in own:
            if (target.kind, target.ref_metric) == (stretch.kind, stretch.ref_metric):
                stricter = stretch.bound > target.bound if target.kind == "ratio" else stretch.bound < target.bound
                assert stricter, stretch.name


def test_the_drain_is_set_against_the_batched_rate_measured_beside_it_not_scenario_one() -> None:
    [target] = [t for t in TARGETS if t.scenario == "recovery" and t.metric == "drain.tasks_per_s"]
    results = {
        "throughput": _result("throughput", batched__tasks_per_s=4000),  # minutes earlier, in a quicker stretch
        "recovery": _result("recovery", drain__tasks_per_s=2800, drain__batched_tasks_per_s=3000),
    }
    verdict = judge(target, results)
    assert (verdict.status, round(verdict.value or 0, 2)) == ("MET", 0.93)
