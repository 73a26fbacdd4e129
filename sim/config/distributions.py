"""Distributions a workload class draws from: token lengths, arrival processes, thinking shares
and tool times. Each is a frozen model chosen by ``kind`` (a discriminated union)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from sim.config.base import MAX_TOKENS, Frozen, NonNegFloat, PosFloat, PosInt, Prob, Tokens, check_step_function

# A lognormal's log-space spread: sigma 10 puts the 99th percentile e^23 times above the median,
# far past any length or time a workload has; more only overflows the draws.
Sigma = Annotated[float, Field(ge=0, le=10)]
# Length medians and means, in tokens.
TokenFloat = Annotated[float, Field(gt=0, le=MAX_TOKENS)]


class LowHigh(Frozen):
    """A range ``[low, high]`` (fields declared by subclasses) that must not be reversed."""

    @model_validator(mode="after")
    def _ordered(self):
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


# --------------------------------------------------------------------------- lengths
class FixedLength(Frozen):
    """Every call has exactly ``value`` tokens."""

    kind: Literal["fixed"]
    value: Tokens


class UniformLength(LowHigh):
    """Integers uniform on ``[low, high]`` inclusive."""

    kind: Literal["uniform"]
    low: Tokens
    high: Tokens


class LognormalLength(Frozen):
    """Lognormal with the given median and log-space sigma, rounded, clipped to [min, max]."""

    kind: Literal["lognormal"]
    median: TokenFloat
    sigma: Sigma
    min: Tokens = 1
    max: Optional[Tokens] = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class ExponentialLength(Frozen):
    """Ceil of an exponential with the given mean: a geometric law on 1, 2, ..."""

    kind: Literal["exponential"]
    mean: Annotated[float, Field(ge=1, le=MAX_TOKENS)]
    max: Optional[Tokens] = None


class EmpiricalLength(Frozen):
    """Draws from observed lengths.

    Either inline ``values`` (with optional ``weights``), or a CSV file ``path``
    (relative to the scenario file) with a ``column`` of observations, or a PMF
    file with ``column`` and ``weight_column`` (e.g. value, probability).
    """

    kind: Literal["empirical"]
    values: Optional[list[Tokens]] = None
    weights: Optional[list[NonNegFloat]] = None
    path: Optional[str] = None
    column: Optional[str] = None
    weight_column: Optional[str] = None
    max: Optional[Tokens] = None

    @model_validator(mode="after")
    def _one_source(self):
        values_or_path(self)
        if self.values is not None and self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("'weights' must have as many entries as 'values'")
            if not 0 < sum(self.weights) < float("inf"):
                raise ValueError("'weights' must not all be zero, and their sum must be finite")
        if self.values is not None and len(self.values) == 0:
            raise ValueError("'values' must not be empty")
        return self


def values_or_path(d) -> None:
    """An empirical distribution comes inline (``values``) or from a CSV (``path`` + ``column``)."""
    if (d.values is None) == (d.path is None):
        raise ValueError("give exactly one of 'values' or 'path'")
    if d.path is not None and not d.column:
        raise ValueError("'column' is required with 'path'")


LengthDist = Annotated[
    Union[FixedLength, UniformLength, LognormalLength, ExponentialLength, EmpiricalLength],
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- arrivals
class PoissonArrivals(Frozen):
    """Exponential inter-arrival times at ``rate_per_s``."""

    kind: Literal["poisson"]
    rate_per_s: PosFloat


class DeterministicArrivals(Frozen):
    """One arrival every ``1/rate_per_s`` seconds."""

    kind: Literal["deterministic"]
    rate_per_s: PosFloat


class GammaArrivals(Frozen):
    """Gamma inter-arrival times with mean ``1/rate_per_s`` and coefficient of variation ``cv``
    (cv > 1 is burstier than Poisson, cv < 1 smoother)."""

    kind: Literal["gamma"]
    rate_per_s: PosFloat
    # 1/cv^2 is the gamma shape: cv 1e-3 is a clock (shape 1e6), cv 1e3 all burst
    cv: Annotated[float, Field(ge=1e-3, le=1e3)]


class TraceArrivals(Frozen):
    """Replay of a trace of timestamps and (optionally) token counts: a CSV file, or JSON
    lines (``.jsonl``, e.g. the Mooncake traces).

    ``time_column`` holds seconds (numbers) or date-times (ISO strings); times
    are shifted so the first arrival is at ``start_s`` and multiplied by
    ``time_scale`` (0.5 replays twice as fast; 0.001 reads milliseconds). With
    ``prompt_column`` / ``output_column`` the token counts come from the trace and
    override the class's length distributions. ``hash_column`` (JSON lines) names a list
    of prefix-block hashes, one per ``hash_tokens`` prompt tokens: requests with equal
    leading hashes share those KV blocks through the prefix cache (a block only with all the
    blocks before it, as vLLM chains its block hashes).
    """

    kind: Literal["trace"]
    path: str
    time_column: str
    prompt_column: Optional[str] = None
    output_column: Optional[str] = None
    hash_column: Optional[str] = None
    hash_tokens: Tokens = 512
    # 1e-6 replays microseconds as seconds; a smaller scale squeezes a trace to nothing
    time_scale: Annotated[float, Field(ge=1e-6, le=1e6)] = 1.0
    start_s: NonNegFloat = 0.0
    loop: bool = False
    limit: Optional[PosInt] = None  # replay only the first rows


class ClosedArrivals(Frozen):
    """Closed loop: ``concurrency`` clients, each sending its next call ``think_s`` seconds
    after its previous call ends (finished or dropped). The load a benchmark like
    ``vllm bench serve --max-concurrency`` or a fixed-batch power measurement applies."""

    kind: Literal["closed"]
    concurrency: PosInt
    think_s: NonNegFloat = 0.0


class BurstArrivals(Frozen):
    """``count`` calls all arriving at ``start_s``: an offline batch, or a benchmark that sends
    every request at once (``vllm bench serve --request-rate inf``; the ML.ENERGY benchmark,
    whose server then holds ``max_num_seqs`` of them and queues the rest)."""

    kind: Literal["burst"]
    count: PosInt


class ScheduleArrivals(Frozen):
    """Poisson arrivals whose rate follows a step function of time (a non-homogeneous Poisson
    process): ``rates_per_s[i]`` from ``times_s[i]`` until the next time, inline or read from a
    CSV (``path`` with ``time_column`` and ``rate_column``, e.g. ServeGen's DeepSeek-R1 rate
    per 10 minutes over a real day). ``time_scale`` stretches the schedule's clock (1/24 plays
    a day in an hour), ``rate_scale`` multiplies every rate; ``period_s`` (in scaled time)
    repeats it, else the last rate holds."""

    kind: Literal["schedule"]
    times_s: Optional[list[NonNegFloat]] = None
    rates_per_s: Optional[list[NonNegFloat]] = None
    path: Optional[str] = None
    time_column: str = "timestamp_s"
    rate_column: str = "rate_per_s"
    time_scale: Annotated[float, Field(ge=1e-6, le=1e6)] = 1.0
    rate_scale: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    period_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _one_source(self):
        inline = self.times_s is not None or self.rates_per_s is not None
        if inline == (self.path is not None):
            raise ValueError("give either 'times_s' and 'rates_per_s', or 'path' to a CSV")
        if inline:
            if self.times_s is None or self.rates_per_s is None or not self.times_s:
                raise ValueError("'times_s' and 'rates_per_s' must both be given")
            check_step_function(self.times_s, self.rates_per_s, self.period_s, "rates_per_s")
        return self


Arrivals = Annotated[
    Union[PoissonArrivals, DeterministicArrivals, GammaArrivals, TraceArrivals, ClosedArrivals, BurstArrivals,
          ScheduleArrivals],
    Field(discriminator="kind"),
]


class FixedShare(Frozen):
    kind: Literal["fixed"]
    value: Prob


class UniformShare(LowHigh):
    kind: Literal["uniform"]
    low: Prob
    high: Prob


class BetaShare(Frozen):
    kind: Literal["beta"]
    a: Annotated[float, Field(ge=1e-3, le=1e6)]
    b: Annotated[float, Field(ge=1e-3, le=1e6)]


class EmpiricalShare(Frozen):
    """Observed shares: inline ``values`` (optional ``weights``), or a CSV ``path`` (relative to
    the scenario) with a ``column`` of values in [0, 1] and an optional ``weight_column``."""

    kind: Literal["empirical"]
    values: Optional[list[Prob]] = None
    weights: Optional[list[NonNegFloat]] = None
    path: Optional[str] = None
    column: Optional[str] = None
    weight_column: Optional[str] = None

    @model_validator(mode="after")
    def _one_source(self):
        values_or_path(self)
        if self.values is not None and (not self.values or (self.weights is not None and len(self.weights) != len(self.values))):
            raise ValueError("'values' must be non-empty, with as many 'weights' if given")
        if self.weights is not None and not 0 < sum(self.weights) < float("inf"):
            raise ValueError("'weights' must not all be zero, and their sum must be finite")
        return self


ShareDist = Annotated[Union[FixedShare, UniformShare, BetaShare, EmpiricalShare], Field(discriminator="kind")]


# --------------------------------------------------------------------------- agent sessions
class FixedTime(Frozen):
    kind: Literal["fixed"]
    value: NonNegFloat


class ExponentialTime(Frozen):
    kind: Literal["exponential"]
    mean: PosFloat


class LognormalTime(Frozen):
    """Lognormal seconds with the given median and log-space sigma, clipped to ``max``."""

    kind: Literal["lognormal"]
    median: PosFloat
    sigma: Sigma
    max: Optional[PosFloat] = None


class UniformTime(LowHigh):
    kind: Literal["uniform"]
    low: NonNegFloat
    high: NonNegFloat


TimeDist = Annotated[Union[FixedTime, ExponentialTime, LognormalTime, UniformTime], Field(discriminator="kind")]
