"""The ready queues on their own: priority, aging, FIFO within a key, fairness keys in turns."""

from __future__ import annotations

from taskwire.server.engine._ready import ReadyQueues


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _drain(ready: ReadyQueues, handler: str = "h") -> list[str]:
    taken = []
    while (queued := ready.popleft(handler)) is not None:
        taken.append(queued.id)
    return taken


def test_higher_priority_first_fifo_within_one_and_handlers_apart() -> None:
    ready = ReadyQueues()
    for task_run_id, priority in (("a", 5), ("b", 1), ("c", 9), ("d", 9), ("e", 5)):
        ready.push("h", task_run_id, priority)
    ready.push("other", "x", 9)
    assert _drain(ready) == ["c", "d", "a", "e", "b"]
    assert list(ready.handlers_with_work()) == ["other"]


def test_fairness_keys_take_turns_within_a_priority() -> None:
    ready = ReadyQueues()
    for n in range(5):
        ready.push("h", f"big-{n}", tenant="big")
    ready.push("h", "small-0", tenant="small")
    ready.push("h", "plain-0")  # no key: the key ""
    ready.push("h", "small-1", tenant="small")
    assert _drain(ready) == ["big-0", "small-0", "plain-0", "big-1", "small-1", "big-2", "big-3", "big-4"]


def test_a_task_put_back_keeps_its_turn() -> None:
    ready = ReadyQueues()
    for tenant in ("a", "b"):
        for n in range(2):
            ready.push("h", f"{tenant}{n}", tenant=tenant)
    first = ready.popleft("h")
    assert first is not None
    assert first.id == "a0"
    ready.pushleft("h", first)
    assert _drain(ready) == ["a0", "b0", "a1", "b1"]


def test_a_level_ages_by_its_oldest_task_whatever_key_is_next() -> None:
    clock = Clock()
    ready = ReadyQueues(now=clock, aging_s=10)
    for task_run_id, tenant in (("y0", "y"), ("x0", "x"), ("x1", "x")):
        ready.push("h", task_run_id, 1, tenant=tenant)
    assert _drain_one(ready) == "y0"
    clock.now = 40
    ready.push("h", "y1", 1, tenant="y")
    assert _drain_one(ready) == "x0"  # now y (its head fresh) is next in turn, x1 (queued at 0) the oldest
    ready.push("h", "fresh-five", 5)
    clock.now = 41  # the level's oldest has waited 41 s: 1 + 4 = 5, queued before fresh-five
    assert _drain(ready) == ["y1", "x1", "fresh-five"]


def _drain_one(ready: ReadyQueues) -> str:
    queued = ready.popleft("h")
    assert queued is not None
    return queued.id


def test_without_aging_a_low_priority_waits() -> None:
    clock = Clock()
    ready = ReadyQueues(now=clock, aging_s=0)
    ready.push("h", "low", 1)
    clock.now = 10_000
    ready.push("h", "two", 2)
    assert _drain(ready) == ["two", "low"]


def test_many_keys_many_pops_stay_correct() -> None:
    """Stale heads are dropped and the heap is rebuilt as keys come and go."""
    clock = Clock()
    ready = ReadyQueues(now=clock, aging_s=5)
    expected_high = []
    for n in range(300):
        clock.now = n
        ready.push("h", f"low-{n}", 1, tenant=f"t{n % 7}")
        if n % 3 == 0:
            ready.push("h", f"high-{n}", 9, tenant=f"t{n % 11}")
            expected_high.append(f"high-{n}")
    taken = _drain(ready)
    assert sorted(taken) == sorted([f"low-{n}" for n in range(300)] + expected_high)
    assert ready.size("h") == 0


def test_keep_drops_the_ids_it_refuses_and_keeps_order_turns_and_queue_times() -> None:
    clock = Clock()
    ready = ReadyQueues(now=clock, aging_s=10.0)
    for task_run_id, tenant in (("a1", "a"), ("b1", "b"), ("a2", "a"), ("gone-a", "a"), ("c1", "c")):
        ready.push("h", task_run_id, tenant=tenant)
    clock.now = 5.0
    ready.push("h", "gone-b", 9, tenant="b")
    ready.push("h", "gone-c", 9, tenant="c")
    ready.push("h", "late", 1)
    ready.keep("h", lambda task_run_id: not task_run_id.startswith("gone"))
    ready.keep("no-such-handler", lambda task_run_id: False)
    assert ready.size("h") == 5
    clock.now = 40.0  # the level queued at 0 has aged past the one at 1 queued at 5
    head = ready.popleft("h")
    assert head is not None
    assert (head.id, head.since) == ("a1", 0.0)
    assert _drain(ready) == ["b1", "c1", "a2", "late"]
