"""The ``plan:`` section of a scenario: what a plan may change, what must hold, what to minimize.

::

    plan:
      space:                               # dotted scenario key paths (as sweep axes) -> candidates
        datacenter.pools.main.accelerator: [h100-sxm, h200, b200]
        datacenter.pools.main.tp: [1, 2, 4, 8]
        datacenter.pools.main.replicas: [1, 2, 3, 4, 6, 8]
      constraints:                         # every one must hold for a configuration to be feasible
        - {metric: ttft_p99_s, max: 2.0, class: chat}   # from the class's calls
        - {metric: tpot_p90_s, max: 0.05}               # a summary column (whole fleet)
        - {metric: slo_attainment, min: 0.95, class: chat}  # share of its calls within its slo
      objective: usd_per_million_output_tokens           # minimized ({metric: x, goal: max} to maximize)
      frontier: [usd_per_million_output_tokens, ttft_p99_s, energy_per_output_token_j]
      search: {trials: 24, seed: 0, searcher: optuna, concurrency: 2,
               early_stop: {rule: hopeless, horizon: 0.25}}
      capacity: {pool: main, class: chat}  # prune replica counts with `estimate` before simulating
      sensitivity: {loads: [0.5, 1.5], top: 3}

The scenario loader keeps the section as an opaque mapping (``Scenario.plan``); this module
validates it (:func:`parse_plan`) so that errors name the file and the ``plan.`` key path.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from sim.config.base import Frozen, PosFloat, PosInt
from sim.config.sweep import _split_path
from sim.errors import ScenarioError

__all__ = ["Constraint", "Objective", "EarlyStop", "Search", "Capacity", "Sensitivity", "PlanSpec", "parse_plan",
           "CLASS_METRICS"]

# Metrics computed per workload class from the calls table (a constraint with ``class:``).
CLASS_METRICS = tuple(f"{m}_p{q}_s" for m in ("ttft", "tpot", "e2e") for q in (50, 90, 99)) + (
    "slo_attainment", "completed_share")


class Constraint(Frozen):
    """``metric`` must stay at most ``max`` and/or at least ``min``. With ``class`` the metric is
    one of :data:`CLASS_METRICS` over that class's calls; otherwise any summary column (or one of
    the plan's derived metrics, see :mod:`sim.plan.metrics`)."""

    metric: str = Field(min_length=1)
    max: Optional[float] = None
    min: Optional[float] = None
    class_: Optional[str] = Field(default=None, alias="class")

    @model_validator(mode="after")
    def _bound(self):
        if self.max is None and self.min is None:
            raise ValueError("give max: or min: (or both)")
        if self.class_ is not None and self.metric not in CLASS_METRICS:
            raise ValueError(f"per-class metric must be one of {', '.join(CLASS_METRICS)} (got {self.metric!r})")
        return self

    @property
    def label(self) -> str:
        return f"{self.class_}.{self.metric}" if self.class_ else self.metric


class Objective(Frozen):
    metric: str = Field(min_length=1)
    goal: Literal["min", "max"] = "min"


class EarlyStop(Frozen):
    """How hopeless trials stop early. Every trial first runs a shortened horizon (``horizon`` x
    the scenario's duration and warm-up); ``hopeless`` stops it there when a constraint misses
    by more than ``slo_factor`` (latency bounds: measured > factor x bound) or its objective is
    worse than ``1 + cost_margin`` x the best feasible one found by the trials before it (known
    when it was suggested: independent of finish order); ``asha`` hands the decision to Ray
    Tune's ASHA scheduler (depends on finish order when trials run concurrently); ``none``
    runs every trial to the full horizon."""

    rule: Literal["hopeless", "asha", "none"] = "hopeless"
    horizon: float = Field(default=0.25, gt=0, lt=1)
    slo_factor: float = Field(default=2.0, ge=1)
    cost_margin: float = Field(default=0.25, ge=0)


class Search(Frozen):
    trials: PosInt = 24
    seed: int = Field(default=0, ge=0)
    searcher: Literal["optuna", "random"] = "optuna"
    # trials running at once; each batch finishes before the next is suggested (determinism)
    concurrency: Optional[PosInt] = None
    # random configurations the searcher tries before it models the results (optuna)
    startup_trials: Optional[PosInt] = None
    early_stop: EarlyStop = EarlyStop()


class Capacity(Frozen):
    """The cheap first stage: one replica of ``pool`` is estimated (``sim.tools.estimate``) with
    the mean prompt and output lengths of ``class`` (or the ones given); a replica count whose
    total capacity is below the class's arrival rate, or a replica whose unloaded latency
    already misses a latency constraint, is pruned without simulating."""

    pool: str = Field(min_length=1)
    class_: str = Field(alias="class", min_length=1)
    prompt_tokens: Optional[PosInt] = None
    output_tokens: Optional[PosInt] = None
    # the estimate's closed-loop concurrency (default: the pool's max_num_seqs, a full batch)
    concurrency: Optional[PosInt] = None


class Sensitivity(Frozen):
    loads: list[PosFloat] = Field(default_factory=lambda: [0.5, 1.5])
    top: PosInt = 3


class PlanSpec(Frozen):
    space: dict[str, list[Any]] = Field(min_length=1)
    constraints: list[Constraint] = Field(default_factory=list)
    objective: Objective
    frontier: list[Union[str, Objective]] = Field(default_factory=list)
    search: Search = Search()
    capacity: Optional[Capacity] = None
    sensitivity: Optional[Sensitivity] = Sensitivity()

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, v):
        return {"metric": v} if isinstance(v, str) else v

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            if path == "plan" or path.startswith(("plan.", "sweep")):
                raise ValueError(f"{path!r}: the plan cannot search its own section or a sweep")
            _split_path(path)
            if len(values) == 0:
                raise ValueError(f"{path!r}: needs at least one value")
        return v

    @property
    def frontier_axes(self) -> list[Objective]:
        """The Pareto frontier's axes (default: the objective, the worst latency bound, J/token)."""
        axes = [Objective(metric=a) if isinstance(a, str) else a for a in self.frontier]
        if not axes:
            axes = [self.objective]
            latency = [c for c in self.constraints if c.max is not None and c.metric.startswith("ttft")]
            axes += [Objective(metric=c.label) for c in latency[:1]]
            axes.append(Objective(metric="energy_per_output_token_j"))
        return axes

    def size(self) -> int:
        n = 1
        for values in self.space.values():
            n *= len(values)
        return n


def parse_plan(raw: Any, source: str) -> PlanSpec:
    """Validate a scenario's ``plan:`` mapping; ScenarioError naming ``plan.<key path>`` if bad."""
    if raw is None:
        raise ScenarioError(source, "plan", "the scenario has no plan: section (what to search, what must hold)")
    try:
        return PlanSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in ("plan", *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and not isinstance(err["input"], (dict, list)) and err["type"] != "value_error":
            msg = f"{msg} (got {err['input']!r})"
        raise ScenarioError(source, loc, msg) from None
