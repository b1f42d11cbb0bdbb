"""Backoff arithmetic: the delays a retry policy gives, capped, growing, never overflowing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskwire.common import MAX_ATTEMPTS_LIMIT, RetryPolicy
from tests.unit.domain.factories import PROPERTY_SETTINGS


def seconds(*values: float) -> list[timedelta]:
    return [timedelta(seconds=v) for v in values]


# ---- Backoff arithmetic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy(), seconds(1, 2, 4, 8, 16)),
        (RetryPolicy(initial_interval=timedelta(milliseconds=250), backoff_coefficient=3), seconds(0.25, 0.75, 2.25)),
        (RetryPolicy(backoff_coefficient=1), seconds(1, 1, 1, 1)),
        # maximum_interval caps the delay...
        (RetryPolicy(maximum_interval=timedelta(seconds=5)), seconds(1, 2, 4, 5, 5, 5)),
        # ...and without one the cap is 100 × initial_interval.
        (RetryPolicy(backoff_coefficient=10), seconds(1, 10, 100, 100, 100)),
        (RetryPolicy(initial_interval=timedelta(seconds=3), backoff_coefficient=7), seconds(3, 21, 147, 300, 300)),
    ],
)
def test_delay_after(policy: RetryPolicy, delays: list[timedelta]) -> None:
    assert [policy.delay_after(n) for n in range(1, len(delays) + 1)] == delays


def test_default_maximum_interval_is_a_hundred_initial_intervals() -> None:
    assert RetryPolicy(initial_interval=timedelta(seconds=2)).effective_maximum_interval == timedelta(seconds=200)
    assert RetryPolicy(maximum_interval=timedelta(seconds=7)).effective_maximum_interval == timedelta(seconds=7)


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(max_attempts=MAX_ATTEMPTS_LIMIT),
        RetryPolicy(backoff_coefficient=1000.0),
        RetryPolicy(backoff_coefficient=1e300),
        RetryPolicy(backoff_coefficient=float("inf")),
    ],
)
def test_late_attempts_are_capped_instead_of_overflowing(policy: RetryPolicy) -> None:
    """Regression: 2 ** 98 seconds does not fit in a timedelta; the delay must be capped before it is built."""
    assert policy.delay_after(MAX_ATTEMPTS_LIMIT - 1) == policy.effective_maximum_interval


@PROPERTY_SETTINGS
@given(
    initial_ms=st.integers(1, 10**7),
    coefficient=st.floats(1.0, 1e6, allow_nan=False),
    cap_factor=st.none() | st.integers(1, 10**4),
)
def test_delays_grow_and_stay_within_the_cap(initial_ms: int, coefficient: float, cap_factor: int | None) -> None:
    initial = timedelta(milliseconds=initial_ms)
    policy = RetryPolicy(
        max_attempts=MAX_ATTEMPTS_LIMIT,
        initial_interval=initial,
        backoff_coefficient=coefficient,
        maximum_interval=initial * cap_factor if cap_factor is not None else None,
    )
    delays = [policy.delay_after(n) for n in range(1, MAX_ATTEMPTS_LIMIT)]
    assert delays[0] == initial
    assert delays == sorted(delays)
    assert max(delays) <= policy.effective_maximum_interval
