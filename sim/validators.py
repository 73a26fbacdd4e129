"""Checks shared by the scenario schema's step-function schedules (carbon intensity, tariffs,
replica plans, arrival rates): kept apart from sim.config so sim.economics can use them too."""

from __future__ import annotations

from typing import Optional, Sequence


def check_step_function(times: Sequence[float], values: Sequence, period: Optional[float], values_key: str) -> None:
    """``values[i]`` holds from ``times[i]``: equal lengths, times from 0 increasing, all
    within ``period`` when the schedule repeats. Raises ValueError naming the keys."""
    if len(times) != len(values):
        raise ValueError(f"'times_s' and '{values_key}' must have the same length")
    if times[0] != 0 or any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError("'times_s' must start at 0 and increase")
    if period is not None and times[-1] >= period:
        raise ValueError("'times_s' must lie within 'period_s'")
