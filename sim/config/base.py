"""Building blocks of the scenario schema shared by sim.config.scenario and sim.models.economics (which
sim.config.scenario imports, so they live apart from both): the frozen base model, number types, and
the step-function schedules' check and lookup (carbon intensity, tariffs, replica plans).

Numbers are strict and finite everywhere: :class:`Frozen` turns on pydantic's strict mode (a YAML
``true`` is not the integer 1, a string is not a number; an integer still validates where a float is
expected) and refuses ``inf`` and ``nan`` in every float field. The bounded types below keep counts
and token lengths within what the engine's int64 and int32 columns hold."""

from __future__ import annotations

from typing import Annotated, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

# Largest count of anything (replicas, samples, blocks, budgets) a scenario may name: far above any
# real fleet or engine, far below int64 overflow. What a run may afford is sim.config.limits' business.
MAX_COUNT = 10**9
# Longest call or length a distribution may draw, in tokens: no model has a context of 100M tokens.
MAX_TOKENS = 10**8
# Seeds and run numbers: numpy's SeedSequence takes non-negative integers; int64 in the tables.
MAX_SEED = 2**63 - 1
# Priorities are written as int32.
MAX_PRIORITY = 10**6

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Prob = Annotated[float, Field(ge=0, le=1)]
Auc = Annotated[float, Field(ge=0.5, lt=1)]


class Frozen(BaseModel):
    """Base of every config object: immutable, strict about unknown keys, strict about types
    (no bool or string as a number) and finite floats only. ``defer_build``: a model's validator is
    built at its first use, not at import; a run validates one scenario, whose schema takes in the
    models it nests, so most are never built on their own (~40 ms of CPU less per process)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)


def check_step_function(times: Sequence[float], values: Sequence, period: Optional[float], values_key: str) -> None:
    """``values[i]`` holds from ``times[i]``: equal lengths, times from 0 increasing, all
    within ``period`` when the schedule repeats. Raises ValueError naming the keys."""
    if len(times) != len(values):
        raise ValueError(f"'times_s' and '{values_key}' must have the same length")
    if times[0] != 0 or any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError("'times_s' must start at 0 and increase")
    if period is not None and times[-1] >= period:
        raise ValueError("'times_s' must lie within 'period_s'")


def step_at(times: Sequence[float], values: Sequence, period: Optional[float], t) -> np.ndarray:
    """Values of the step function ``values[i]`` from ``times[i]`` at times ``t`` (repeating
    every ``period`` if given)."""
    t = np.asarray(t, dtype=float)
    if period is not None:
        t = np.mod(t, period)
    i = np.searchsorted(np.asarray(times), t, side="right") - 1
    return np.asarray(values)[np.clip(i, 0, len(values) - 1)]


class KeyedError(ValueError):
    """A validation error that knows its key path better than pydantic's location."""

    def __init__(self, key_path: str, message: str):
        super().__init__(message)
        self.key_path = key_path
        self.message = message


def check_unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"duplicate {what[:-1]} name '{n}'")
        seen.add(n)
