"""Scenario schema: typed, immutable, unknown keys rejected.

A scenario is read from YAML (:func:`load_raw`) and validated once
(:func:`validate`) into a frozen :class:`Scenario`. Building one does no I/O
beyond reading the file; names of hardware and models are checked against the
catalog by :func:`sim.cluster.world.build` so that this module stays free of data files.
Every error becomes a :class:`~sim.errors.ScenarioError` naming the file and the
dotted key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from sim.models.economics import Economics
from sim.errors import ScenarioError
from sim.config.base import Frozen, NonNegFloat, PosFloat, PosInt, check_step_function, step_at
from sim.config.sweep import SweepSpec



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
    value: PosInt


class UniformLength(LowHigh):
    """Integers uniform on ``[low, high]`` inclusive."""

    kind: Literal["uniform"]
    low: PosInt
    high: PosInt


class LognormalLength(Frozen):
    """Lognormal with the given median and log-space sigma, rounded, clipped to [min, max]."""

    kind: Literal["lognormal"]
    median: PosFloat
    sigma: NonNegFloat
    min: PosInt = 1
    max: Optional[PosInt] = None


class ExponentialLength(Frozen):
    """Ceil of an exponential with the given mean: a geometric law on 1, 2, ..."""

    kind: Literal["exponential"]
    mean: Annotated[float, Field(ge=1)]
    max: Optional[PosInt] = None


class EmpiricalLength(Frozen):
    """Draws from observed lengths.

    Either inline ``values`` (with optional ``weights``), or a CSV file ``path``
    (relative to the scenario file) with a ``column`` of observations, or a PMF
    file with ``column`` and ``weight_column`` (e.g. value, probability).
    """

    kind: Literal["empirical"]
    values: Optional[list[PosInt]] = None
    weights: Optional[list[NonNegFloat]] = None
    path: Optional[str] = None
    column: Optional[str] = None
    weight_column: Optional[str] = None
    max: Optional[PosInt] = None

    @model_validator(mode="after")
    def _one_source(self):
        _values_or_path(self)
        if self.values is not None and self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("'weights' must have as many entries as 'values'")
            if sum(self.weights) <= 0:
                raise ValueError("'weights' must not all be zero")
        if self.values is not None and len(self.values) == 0:
            raise ValueError("'values' must not be empty")
        return self


def _values_or_path(d) -> None:
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
    cv: PosFloat


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
    hash_tokens: PosInt = 512
    time_scale: PosFloat = 1.0
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
    time_scale: PosFloat = 1.0
    rate_scale: PosFloat = 1.0
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


class Slo(Frozen):
    """Latency targets of a class (used for goodput and SLO attainment)."""

    ttft_s: Optional[PosFloat] = None
    tpot_s: Optional[PosFloat] = None
    e2e_s: Optional[PosFloat] = None


# --------------------------------------------------------------------------- test-time compute jobs
Prob = Annotated[float, Field(ge=0, le=1)]
Auc = Annotated[float, Field(ge=0.5, lt=1)]


class FixedShare(Frozen):
    kind: Literal["fixed"]
    value: Prob


class UniformShare(LowHigh):
    kind: Literal["uniform"]
    low: Prob
    high: Prob


class BetaShare(Frozen):
    kind: Literal["beta"]
    a: PosFloat
    b: PosFloat


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
        _values_or_path(self)
        if self.values is not None and (not self.values or (self.weights is not None and len(self.weights) != len(self.values))):
            raise ValueError("'values' must be non-empty, with as many 'weights' if given")
        return self


ShareDist = Annotated[Union[FixedShare, UniformShare, BetaShare, EmpiricalShare], Field(discriminator="kind")]


class EarlyExit(Frozen):
    """A sample stops thinking early (confident) with ``probability``, at a fraction ``at``
    of the thinking it would otherwise have done; its accuracy is that of a full sample."""

    probability: Prob
    at: ShareDist


class Level(Frozen):
    """One difficulty level of a job mix: how often it occurs, how right one sample is, how
    long it thinks and answers: ``thinking_tokens`` and ``answer_tokens``, or the whole
    ``output_tokens`` with the ``reasoning_share`` of it spent thinking (as production traces
    such as ServeGen's DeepSeek-R1 data report them)."""

    name: str = Field(min_length=1)
    weight: PosFloat = 1.0
    accuracy: Prob  # one sample that thinks as long as it wants
    truncated_accuracy: Prob  # one sample whose thinking the budget cut off (forced to answer)
    thinking_tokens: Optional[LengthDist] = None
    answer_tokens: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    reasoning_share: Optional[ShareDist] = None
    early_exit: Optional[EarlyExit] = None
    # Share of the level's questions the model can solve at all; the rest are wrong in every
    # sample, so no search gets past it. 1: samples of a question are independent draws.
    coverage: Prob = 1.0

    @model_validator(mode="after")
    def _within_coverage(self):
        if max(self.accuracy, self.truncated_accuracy) > self.coverage:
            raise ValueError(f"accuracy and truncated_accuracy must be <= coverage ({self.coverage})")
        split = self.thinking_tokens is not None and self.answer_tokens is not None
        total = self.output_tokens is not None and self.reasoning_share is not None
        given = [k for k in ("thinking_tokens", "answer_tokens", "output_tokens", "reasoning_share") if getattr(self, k) is not None]
        if split == total or len(given) != 2:
            raise ValueError("give 'thinking_tokens' and 'answer_tokens', or 'output_tokens' and 'reasoning_share' "
                             f"(got {given or 'none'})")
        return self


class Verifier(Frozen):
    """A reward-model call that scores candidates. ``auc`` is how well its scores separate
    right from wrong candidates (ROC AUC; None takes the fitted default of sim.models.quality).
    ``pool`` (default: the job's pool) serves it; it reads the question plus each candidate's
    answer (``reads: answers``) or whole output (``outputs``) and writes ``output_tokens``."""

    pool: Optional[str] = None
    auc: Optional[Auc] = None
    output_tokens: PosInt = 1
    reads: Literal["answers", "outputs"] = "answers"


class SingleStrategy(Frozen):
    """One sample; its answer is the job's answer."""

    kind: Literal["single"]
    thinking_budget: Optional[PosInt] = None


class BestOfN(Frozen):
    """``n`` parallel samples sharing the prompt's KV, then one verifier call scoring all n; the
    best-scored answer is the job's."""

    kind: Literal["best_of_n"]
    n: PosInt
    verifier: Verifier = Verifier()
    thinking_budget: Optional[PosInt] = None


class SelfConsistency(Frozen):
    """``n`` parallel samples, majority vote; with ``early_stop`` the remaining samples are
    cancelled as soon as one answer holds more than n/2 votes."""

    kind: Literal["self_consistency"]
    n: PosInt
    early_stop: bool = False
    thinking_budget: Optional[PosInt] = None


class Revision(Frozen):
    """A sample, then ``rounds`` sequential revisions, each reading the question and the
    previous answer (``carry: answer``) or whole output (``carry: output``). A wrong answer
    is fixed with ``p_fix`` per round, a right one broken with ``p_break`` (None: fitted defaults)."""

    kind: Literal["revision"]
    rounds: Annotated[int, Field(ge=1)]
    p_fix: Optional[Prob] = None
    p_break: Optional[Prob] = None
    carry: Literal["answer", "output"] = "answer"
    thinking_budget: Optional[PosInt] = None


class BeamSearch(Frozen):
    """Step-level beam search guided by a process reward model: ``depth`` steps of
    ``step_tokens``; each depth expands the kept beams into ``width * expansions`` candidate
    steps (the root into as many), the PRM scores each, the best ``width`` are kept."""

    kind: Literal["beam_search"]
    width: PosInt
    expansions: PosInt
    depth: PosInt
    step_tokens: PosInt
    prm: Verifier = Verifier()


FixedStrategy = Annotated[Union[SingleStrategy, BestOfN, SelfConsistency, Revision, BeamSearch],
                          Field(discriminator="kind")]


class Adaptive(Frozen):
    """Adaptive compute: a difficulty predictor that is right with ``predictor_accuracy``
    (else names another level uniformly) picks the strategy mapped to the predicted level."""

    kind: Literal["adaptive"]
    predictor_accuracy: Prob
    policies: dict[str, FixedStrategy]


Strategy = Annotated[Union[SingleStrategy, BestOfN, SelfConsistency, Revision, BeamSearch, Adaptive],
                     Field(discriminator="kind")]


class JobSpec(Frozen):
    """What a job is: a question of some difficulty, answered by a strategy of calls.
    ``levels`` None takes the default mix fitted to published curves (sim.models.quality)."""

    levels: Optional[list[Level]] = None
    strategy: Strategy

    @model_validator(mode="after")
    def _levels(self):
        if self.levels is not None:
            if not self.levels:
                raise ValueError("'levels' must not be empty")
            _check_unique([lv.name for lv in self.levels], "levels")
        if isinstance(self.strategy, Adaptive):
            from sim.models.quality import DEFAULT_LEVELS

            names = [lv.name for lv in (self.levels or DEFAULT_LEVELS)]
            missing = [n for n in names if n not in self.strategy.policies]
            extra = [n for n in self.strategy.policies if n not in names]
            if missing or extra:
                raise _KeyedError("strategy.policies", f"needs one strategy per level {names}"
                                  + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
        return self


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
    sigma: NonNegFloat
    max: Optional[PosFloat] = None


class UniformTime(LowHigh):
    kind: Literal["uniform"]
    low: NonNegFloat
    high: NonNegFloat


TimeDist = Annotated[Union[FixedTime, ExponentialTime, LognormalTime, UniformTime], Field(discriminator="kind")]


class Tool(Frozen):
    """One kind of tool an agent calls between turns, how often, and how long it runs."""

    name: str = Field(min_length=1)
    weight: PosFloat = 1.0
    latency_s: TimeDist


class DropKv(Frozen):
    """Free the session's KV when a turn ends; the next turn prefills the whole history."""

    kind: Literal["drop"]


class LruKv(Frozen):
    """Leave the session's KV in the replica's prefix cache (reclaimed least recently used
    first when other calls need room); the next turn reuses what is still there."""

    kind: Literal["lru"]


class PinKv(Frozen):
    """Keep the session's KV on the device between turns (it counts against the pool and
    holds back other admissions); after ``ttl_s`` without a next turn it is released to the
    prefix cache. None: held until the next turn or the session's end."""

    kind: Literal["pin"]
    ttl_s: Optional[PosFloat] = None


class OffloadKv(Frozen):
    """Copy the session's KV to host memory when a turn ends (the device copy stays in the
    prefix cache while it lasts); the next turn reloads the blocks the device lost at
    ``bandwidth_gb_s`` before it runs. ``host_gib`` per replica, least-recently-used sessions
    evicted first. PCIe Gen5 x16 moves about 64 GB/s each way at best (PCI-SIG spec);
    ~25 GB/s is what KV-offload stacks report in practice (LMCache / vLLM CPU offload)."""

    kind: Literal["offload"]
    host_gib: PosFloat = 256.0
    bandwidth_gb_s: PosFloat = 25.0


KvPolicy = Annotated[Union[DropKv, LruKv, PinKv, OffloadKv], Field(discriminator="kind")]


class SessionSpec(Frozen):
    """An agent session: ``turns`` model calls; after each, tool calls (one tool drawn from
    ``tools`` per call, run one after another) and ``think_s``; the next turn's prompt is the
    whole history plus ``context_growth_tokens`` (tool results, new instructions). The first
    prompt is the class's ``prompt_tokens``. Unset fields take the defaults fitted to real
    coding-agent sessions (sim/workloads/sessions.py). ``affinity`` keeps a session on the replica holding
    its KV unless that replica's KV load exceeds ``affinity_max_load`` (then the pool's router
    picks another and the KV there is lost)."""

    turns: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    context_growth_tokens: Optional[LengthDist] = None
    tools: Optional[list[Tool]] = None
    tool_calls_per_turn: Optional[LengthDist] = None
    think_s: TimeDist = FixedTime(kind="fixed", value=0.0)
    kv: KvPolicy = LruKv(kind="lru")
    affinity: bool = True
    affinity_max_load: Annotated[float, Field(gt=0, le=1)] = 0.95

    @model_validator(mode="after")
    def _unique_tools(self):
        if self.tools is not None:
            if not self.tools:
                raise ValueError("'tools' must not be empty")
            _check_unique([t.name for t in self.tools], "tools")
        return self


class VideoSpec(Frozen):
    """Image / video generation requests for a diffusion pool: ``frames`` output frames (None:
    the card's default; 1 for an image), ``steps`` denoising steps (None: the card's default),
    ``resolution_scale`` pixel area relative to the card's default resolution."""

    frames: Optional[PosInt] = None
    steps: Optional[PosInt] = None
    resolution_scale: PosFloat = 1.0


class WorkloadClass(Frozen):
    """A stream of independent calls (chat turns, completions) sent to one pool, or, with
    ``job``, of test-time-compute jobs whose calls go to that pool, or, with ``session``, of
    agent sessions, or, with ``video``, of image / video generations for a diffusion pool."""

    name: str = Field(min_length=1)
    pool: str
    arrival: Arrivals
    prompt_tokens: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    priority: int = 0
    slo: Slo = Slo()
    start_s: NonNegFloat = 0.0
    stop_s: Optional[PosFloat] = None
    job: Optional[JobSpec] = None
    session: Optional[SessionSpec] = None
    video: Optional[VideoSpec] = None

    @model_validator(mode="after")
    def _lengths_known(self):
        from_trace = isinstance(self.arrival, TraceArrivals)
        if self.video is not None:
            if self.job is not None or self.session is not None or self.output_tokens is not None:
                raise ValueError("a 'video' class sends generation requests: drop 'job', 'session' and 'output_tokens'")
            return self
        if self.prompt_tokens is None and not (from_trace and self.arrival.prompt_column):
            raise ValueError("'prompt_tokens' is required (or a trace arrival with 'prompt_column')")
        if self.job is not None and self.session is not None:
            raise ValueError("a class is either a 'job' or a 'session' class, not both")
        if self.session is not None:
            if self.output_tokens is not None:
                raise ValueError("a session class takes its output lengths from 'session.output_tokens'; drop 'output_tokens'")
        elif self.job is not None:
            if self.output_tokens is not None:
                raise ValueError("a job class takes its output lengths from 'job.levels'; drop 'output_tokens'")
        elif self.output_tokens is None and not (from_trace and self.arrival.output_column):
            raise ValueError("'output_tokens' is required (or a trace arrival with 'output_column')")
        return self


class Workload(Frozen):
    classes: list[WorkloadClass] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        _check_unique([c.name for c in self.classes], "classes")
        return self


# --------------------------------------------------------------------------- pools
class ContinuousBatcher(Frozen):
    """vLLM-v1 style continuous batching: chunked prefills mixed with decodes in one
    iteration under a token budget; running calls first, then waiting ones (FIFO)."""

    kind: Literal["continuous"]
    # vLLM's max_num_batched_tokens for the OpenAI server on large-memory GPUs
    # (vllm/engine/arg_utils.py, v0.8+ default 8192).
    max_num_batched_tokens: PosInt = 8192
    # vLLM's long-standing max_num_seqs default (vllm/config.py: 256).
    max_num_seqs: PosInt = 256
    # vLLM's --scheduling-policy: "fcfs", or "priority": waiting calls are taken highest class
    # priority first, and a waiting call that outranks running ones preempts the lowest
    # (newest first) to get a seat and its blocks; they recompute later.
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    # Admission control: a call arriving when this many wait is turned away (dropped), unless,
    # with priority scheduling, it outranks the lowest waiting call, which is shed instead.
    # None: no limit.
    max_waiting: Optional[PosInt] = None


class PrefillFirstBatcher(Frozen):
    """Older (vLLM v0 / Orca-without-chunking) scheduling: an iteration either admits
    whole prompts (prefill only, no decodes) or decodes every running call."""

    kind: Literal["prefill_first"]
    max_num_batched_tokens: PosInt = 8192
    max_num_seqs: PosInt = 256


Batcher = Annotated[Union[ContinuousBatcher, PrefillFirstBatcher], Field(discriminator="kind")]


class RoundRobinRouter(Frozen):
    kind: Literal["round_robin"]


class RandomRouter(Frozen):
    kind: Literal["random"]


class ShortestQueueRouter(Frozen):
    """Join-shortest-queue: fewest calls outstanding (waiting + running)."""

    kind: Literal["jsq"]


class LeastKvRouter(Frozen):
    """Least KV load: smallest fraction of KV blocks in use plus those waiting calls need."""

    kind: Literal["least_kv"]


class PowerOfTwoRouter(Frozen):
    """Power of two choices: the less loaded (calls outstanding) of two random replicas."""

    kind: Literal["p2c"]


class PrefixAffinityRouter(Frozen):
    """Cache-aware: the replica holding the longest cached prefix of the call, unless its KV
    load exceeds ``max_load`` (then the least KV load)."""

    kind: Literal["prefix_affinity"]
    max_load: Annotated[float, Field(gt=0, le=1)] = 0.9
    # SGLang router's balance_abs_threshold default
    balance_abs: Annotated[int, Field(ge=0)] = 32


Router = Annotated[
    Union[RoundRobinRouter, RandomRouter, ShortestQueueRouter, LeastKvRouter, PowerOfTwoRouter, PrefixAffinityRouter],
    Field(discriminator="kind"),
]


class RooflinePerf(Frozen):
    """Per-operator roofline over the model card and accelerator card.

    Efficiency factors are the fraction of datasheet peak that real kernels reach;
    overheads are the CPU-side scheduling / launch cost of an iteration. ``None``
    takes the calibrated value for the accelerator (see hardware/calibration)."""

    kind: Literal["roofline"]
    gemm_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    attention_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    memory_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    link_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    iteration_overhead_s: Optional[NonNegFloat] = None
    per_seq_overhead_s: Optional[NonNegFloat] = None
    kernel_latency_s: Optional[NonNegFloat] = None  # minimum time of one GEMM / elementwise kernel
    gemm_blend: Optional[Annotated[float, Field(ge=1)]] = None  # roofline ridge sharpness p
    moe_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None  # grouped expert GEMMs vs dense
    quantized_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None  # fp8/int4 expert GEMMs vs bf16
    # fp8/fp4 dense GEMMs: share of the bf16 efficiency they reach against their own peak
    quantized_dense_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    link_latency_s: Optional[NonNegFloat] = None  # per ring hop of an all-reduce (2(n-1) hops over n devices)


class FixedPerf(Frozen):
    """An iteration takes ``iteration_s + per_token_s * tokens``: for queueing-theory
    checks and for users who measured their own engine."""

    kind: Literal["fixed"]
    iteration_s: PosFloat
    per_token_s: NonNegFloat = 0.0


class ProfilePerf(Frozen):
    """Interpolates measured per-operator GPU times (vidur's profiling CSV layout: one row per
    ``num_tokens`` x ``num_tensor_parallel_workers`` with ``time_stats.<op>.median`` in ms per
    layer) for the linear layers and elementwise ops; attention, the LM head and overheads
    come from the roofline terms. ``path`` is relative to the scenario file, or a file name
    under hardware/profiles/. ``network_path`` optionally gives measured all-reduce times."""

    kind: Literal["profile"]
    path: str
    network_path: Optional[str] = None
    attention_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    memory_efficiency: Optional[Annotated[float, Field(gt=0, le=1)]] = None
    iteration_overhead_s: Optional[NonNegFloat] = None
    per_seq_overhead_s: Optional[NonNegFloat] = None


Performance = Annotated[Union[RooflinePerf, FixedPerf, ProfilePerf], Field(discriminator="kind")]


class Speculative(Frozen):
    """Speculative decoding: each decode step proposes ``num_speculative_tokens`` (k) tokens
    with a ``draft`` model (``draft_model``, run on the same devices) or the model's own
    multi-token-prediction heads (``mtp``), and the target verifies them in one pass.
    ``acceptance_rate`` is the per-token probability a proposal is accepted (i.i.d.), so a
    step yields (1 - a^(k+1)) / (1 - a) tokens on average (Leviathan et al., 2023)."""

    method: Literal["draft", "mtp"]
    num_speculative_tokens: PosInt
    acceptance_rate: Annotated[float, Field(ge=0, lt=1)]
    draft_model: Optional[str] = None

    @model_validator(mode="after")
    def _draft_named(self):
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method 'draft' needs 'draft_model' (a model card name)")
        if self.method == "mtp" and self.draft_model:
            raise ValueError("method 'mtp' uses the model's own heads; drop 'draft_model'")
        return self


class EngineParams(Frozen):
    """KV-cache and memory parameters of the serving engine (vLLM names and defaults)."""

    block_size: PosInt = 16
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    # Activation workspace and CUDA-graph memory set aside per device before the KV pool
    # is sized; None estimates it from the batch token budget and the model width.
    activation_reserve_gib: Optional[NonNegFloat] = None
    # Override the KV pool size (blocks per replica), e.g. to match a real engine's log line
    # "# GPU blocks: N".
    num_gpu_blocks: Optional[PosInt] = None
    # Automatic prefix caching (vLLM's enable_prefix_caching, on by default in v1): blocks of
    # ended calls stay cached, reclaimed least-recently-used first, for later calls with the
    # same prefix (job samples, session turns, traces with prefix hashes) to find.
    prefix_caching: bool = True


class PowerParams(Frozen):
    """Overrides of the device power model (sim/models/power.py); None keeps the accelerator's
    calibrated value (hardware/calibration) or the default."""

    idle_w: Optional[NonNegFloat] = None  # bare idle, nothing loaded
    resident_w: Optional[NonNegFloat] = None  # added while a model is resident
    compute_weight: Optional[NonNegFloat] = None
    memory_weight: Optional[NonNegFloat] = None
    active_w: Optional[NonNegFloat] = None  # added while an iteration runs
    link_active_w: Optional[NonNegFloat] = None  # per device of a multi-device replica, while busy
    # Board power limit in place of the card's: for cards with no public TDP (TPU, Trainium,
    # Inferentia), or another SKU's limit. Your own figure: the run's energy rests on it.
    tdp_w: Optional[PosFloat] = None


class Faults(Frozen):
    """Replica failures: time to failure exponential with mean ``mtbf_s`` (or Weibull with
    ``weibull_shape``, same mean), repair exponential with mean ``mttr_s``. A failure loses the
    iteration in flight and the KV cache; its calls are retried on other replicas
    (``on_failure: retry``, from scratch, keeping their arrival time) or fail."""

    mtbf_s: PosFloat
    mttr_s: PosFloat
    distribution: Literal["exponential", "weibull"] = "exponential"
    weibull_shape: PosFloat = 1.0
    on_failure: Literal["retry", "fail"] = "retry"


class Stragglers(Frozen):
    """A ``fraction`` of the pool's replicas (drawn once) run every iteration ``slowdown``
    times slower (thermal throttling, a bad link, a noisy neighbour)."""

    fraction: Annotated[float, Field(ge=0, le=1)]
    slowdown: Annotated[float, Field(ge=1)]


class KvTransfer(Frozen):
    """How a prefilled call's KV cache reaches the decode pool: over the scale-out network
    (each device's NIC, ``network_gb_s`` of the accelerator card) or, for pools in one
    NVLink / Infinity Fabric domain, the scale-up link. ``bandwidth_gb_s`` (per device, one
    direction) and ``latency_s`` (per transfer) override the link's figures."""

    link: Literal["network", "scale_up"] = "network"
    bandwidth_gb_s: Optional[PosFloat] = None
    latency_s: Optional[NonNegFloat] = None


class ReplicaSchedule(Frozen):
    """Replicas to keep serving as a step function of time (an operator's diurnal plan):
    ``replicas[i]`` from ``times_s[i]``; repeated every ``period_s`` if given."""

    times_s: list[NonNegFloat] = Field(min_length=1)
    replicas: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    period_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _shape(self):
        check_step_function(self.times_s, self.replicas, self.period_s, "replicas")
        return self


class Autoscale(Frozen):
    """Replicas switched on and off by a control loop every ``interval_s``; the pool's
    ``replicas`` are the installed ones (the most that can serve).

    Policies: ``queue`` (calls outstanding per serving replica near ``target_queue``),
    ``utilization`` (mean KV-cache load of the serving replicas near ``target_utilization``,
    the signal vLLM exports as gpu_cache_usage_perc), ``latency`` (p90 TTFT of the calls
    that ended in the last interval against ``target_ttft_s``: one replica more above it, one
    less below ``scale_down_ratio`` x it), ``schedule`` (replica counts over time) and
    ``rate`` (predictive: the arrival rate the pool's classes will send ``lead_s`` ahead,
    known from their arrival specs, over ``capacity_rps`` per replica).

    A replica switched on boots for ``boot_s`` (default: ``startup_s`` plus the weights per
    device read at ``storage_gb_s``) drawing idle power, then serves; one switched off first
    drains (takes no new calls, finishes its own) and then draws nothing. Scale-downs wait
    until the lower target has held for ``scale_down_delay_s``."""

    policy: Literal["queue", "utilization", "latency", "schedule", "rate"]
    min_replicas: PosInt = 1
    initial_replicas: Optional[PosInt] = None  # serving at t=0 (default: min_replicas, schedule/rate: their t=0 value)
    interval_s: PosFloat = 30.0
    boot_s: Optional[NonNegFloat] = None
    # vLLM engine start (process, CUDA context, profiling run, CUDA-graph capture): tens of
    # seconds; an assumption to override with a measured figure.
    startup_s: NonNegFloat = 30.0
    # Weight read bandwidth per device: a PCIe Gen4 NVMe drive reads ~7 GB/s sequentially,
    # network storage and safetensors deserialization usually give less. An assumption.
    storage_gb_s: PosFloat = 2.0
    scale_down_delay_s: NonNegFloat = 0.0
    target_queue: PosFloat = 32.0
    target_utilization: Annotated[float, Field(gt=0, le=1)] = 0.7
    target_ttft_s: Optional[PosFloat] = None
    scale_down_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.5
    schedule: Optional[ReplicaSchedule] = None
    capacity_rps: Optional[PosFloat] = None
    lead_s: Optional[NonNegFloat] = None  # default: the boot time

    @model_validator(mode="after")
    def _policy_inputs(self):
        need = {"latency": "target_ttft_s", "schedule": "schedule", "rate": "capacity_rps"}.get(self.policy)
        if need is not None and getattr(self, need) is None:
            raise ValueError(f"policy '{self.policy}' needs '{need}'")
        return self


class Pool(Frozen):
    """Identical replicas of one model on one accelerator type. ``kind: diffusion`` serves an
    image / video model (a card in hardware/diffusion/) to ``video`` classes, batching up to
    ``max_batch`` same-shape requests."""

    name: str = Field(min_length=1)
    kind: Literal["llm", "diffusion"] = "llm"
    accelerator: str
    model: str
    max_batch: PosInt = 4
    # A diffusion pool on the devices of an LLM pool (same accelerator, devices per replica and
    # replica count): each batch takes its replica's devices at an iteration boundary.
    share_with: Optional[str] = None
    faults: Optional[Faults] = None
    stragglers: Optional[Stragglers] = None
    # Prefill/decode disaggregation: this pool only prefills (each call up to its first token);
    # the KV cache then moves over ``kv_transfer`` to a replica of pool ``decode_pool``, which
    # serves the rest of the call.
    decode_pool: Optional[str] = None
    kv_transfer: KvTransfer = KvTransfer()
    autoscale: Optional[Autoscale] = None

    @model_validator(mode="after")
    def _llm_only(self):
        if self.kind == "diffusion" and (self.faults is not None or self.stragglers is not None
                                         or self.decode_pool is not None or self.autoscale is not None):
            raise ValueError("faults, stragglers, disaggregation and autoscaling are modelled for LLM pools only")
        a = self.autoscale
        if a is not None and (a.min_replicas > self.replicas or (a.initial_replicas or 0) > self.replicas):
            raise ValueError(f"autoscale: min_replicas and initial_replicas must not exceed replicas ({self.replicas})")
        return self
    replicas: PosInt = 1
    tp: PosInt = 1
    # Pipeline stages: layers split over ``pp`` groups of ``tp`` devices (replica = tp x pp devices).
    pp: PosInt = 1
    # MoE experts sharded whole over the replica's devices (vLLM --enable-expert-parallel)
    # instead of tensor-sliced; every device holds every token and one all-reduce sums the
    # experts' outputs (vLLM without data parallelism).
    expert_parallel: bool = False
    # With expert_parallel: attention, dense and shared-expert layers run data-parallel, each
    # device serving its own sequences with those weights whole (TensorRT-LLM
    # enable_attention_dp, SGLang --enable-dp-attention); tokens meet only for the experts.
    attention_dp: bool = False
    weight_dtype: Optional[Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4"]] = None
    kv_dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    engine: EngineParams = EngineParams()
    batcher: Batcher = ContinuousBatcher(kind="continuous")
    router: Router = RoundRobinRouter(kind="round_robin")
    performance: Performance = RooflinePerf(kind="roofline")
    # Board power limit per device (nvidia-smi -pl); None runs at TDP.
    power_cap_w: Optional[PosFloat] = None
    power: PowerParams = PowerParams()
    speculative: Optional[Speculative] = None


class CarbonSchedule(Frozen):
    """Grid carbon intensity as a step function of simulated time: ``g_per_kwh[i]`` from
    ``times_s[i]`` until the next time; repeated every ``period_s`` if given (86400 for a
    daily profile, e.g. from a grid operator's hourly data)."""

    times_s: list[NonNegFloat] = Field(min_length=1)
    g_per_kwh: list[NonNegFloat] = Field(min_length=1)
    period_s: Optional[PosFloat] = None

    @model_validator(mode="after")
    def _shape(self):
        check_step_function(self.times_s, self.g_per_kwh, self.period_s, "g_per_kwh")
        return self

    def at(self, t):
        """Intensity (g/kWh) at simulated times ``t`` (numpy array)."""
        return step_at(self.times_s, self.g_per_kwh, self.period_s, t)


class Datacenter(Frozen):
    """Pools plus the facility: PUE, energy tariff, grid carbon, host power."""

    pools: list[Pool] = Field(min_length=1)
    # Power usage effectiveness: facility energy / IT energy. 1.2 is typical of new
    # hyperscale halls (Uptime Institute Global Data Center Survey 2024 reports 1.56
    # as the industry average; hyperscalers publish 1.1-1.2).
    pue: Annotated[float, Field(ge=1)] = 1.2
    # Industrial electricity price, US average 2024 ~0.08 $/kWh (EIA Electric Power Monthly).
    energy_usd_per_kwh: NonNegFloat = 0.08
    # Grid carbon intensity; US average ~370 gCO2/kWh (EIA 2023).
    carbon_g_per_kwh: NonNegFloat = 370.0
    # Carbon intensity over time (overrides carbon_g_per_kwh): a step function.
    carbon_schedule: Optional[CarbonSchedule] = None
    # Host (CPU, NIC, fans, switches) power per device; None derives it from the
    # accelerator card: half of (node max power - devices x TDP) / devices.
    host_w_per_device: Optional[NonNegFloat] = None
    # Power budget of the accelerators (a row's or rack's share for GPUs), enforced by power
    # capping: each device is capped at the budget's share in proportion to its TDP (or its
    # pool's own power_cap_w if lower), so the accelerators never draw more than the budget.
    power_budget_w: Optional[PosFloat] = None
    # Economics (sim/models/economics.py, docs/economics.md): owned-fleet TCO or cloud rental, a
    # time-of-day tariff, prices per class and reasoning-effort tier. None: each card's hourly
    # cloud price plus energy at energy_usd_per_kwh, and no revenue.
    economics: Optional[Economics] = None

    @model_validator(mode="after")
    def _unique(self):
        _check_unique([p.name for p in self.pools], "pools")
        return self


class TraceOptions(Frozen):
    """What tables to write and how."""

    calls: bool = True
    steps: bool = True
    events: bool = True
    jobs: bool = True
    sessions: bool = True
    videos: bool = True
    row_group_rows: Annotated[int, Field(ge=1024)] = 65536
    compression: Literal["zstd", "snappy", "none"] = "zstd"


class Scenario(Frozen):
    """One simulation: datacenter, workload, horizon, seed."""

    name: str = "scenario"
    description: str = ""
    seed: int = 0
    run: Annotated[int, Field(ge=0)] = 0
    duration_s: PosFloat
    warmup_s: NonNegFloat = 0.0
    # After arrivals stop at duration_s, in-flight calls may finish for at most this long;
    # calls still unfinished then are recorded as timed-out.
    drain_s: NonNegFloat = 600.0
    # "macro" plans runs of iterations at once; "per_iteration" is the reference mode.
    engine_mode: Literal["macro", "per_iteration"] = "macro"
    datacenter: Datacenter
    workload: Workload
    trace: TraceOptions = TraceOptions()
    sweep: Optional[SweepSpec] = None
    # dcsim plan's search (sim/plan/spec.py validates it); run, sweep and validate ignore it
    plan: Optional[dict[str, Any]] = Field(default=None, exclude=True)  # (not in dumps: point ids unchanged)

    _base_dir: str = PrivateAttr(default=".")

    @model_validator(mode="after")
    def _cross_refs(self):
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be < duration_s ({self.duration_s})")
        pools = {p.name for p in self.datacenter.pools}
        for p in self.datacenter.pools:
            if p.share_with is None:
                continue
            key = f"datacenter.pools.{p.name}.share_with"
            host = next((q for q in self.datacenter.pools if q.name == p.share_with), None)
            if p.kind != "diffusion" or host is None or host.kind != "llm":
                raise _KeyedError(key, "a diffusion pool can share the devices of an LLM pool (name one)")
            if (host.accelerator, host.tp * host.pp, host.replicas) != (p.accelerator, p.tp * p.pp, p.replicas):
                raise _KeyedError(key, f"pool '{host.name}' has other devices: accelerator, devices per replica and "
                                       "replicas must be the same")
        for p in self.datacenter.pools:
            if p.decode_pool is not None:
                self._check_decode_pool(p)
            if p.autoscale is not None and any(q.share_with == p.name for q in self.datacenter.pools):
                raise _KeyedError(f"datacenter.pools.{p.name}.autoscale",
                                  "a pool whose devices a diffusion pool shares cannot be autoscaled")
        for c in self.workload.classes:
            if c.session is not None and self.pool(c.pool).decode_pool is not None:
                raise _KeyedError(f"workload.classes.{c.name}.pool",
                                  f"pool '{c.pool}' is a disaggregated prefill pool; agent sessions keep their KV "
                                  "on one replica between turns, send them to a pool that serves whole calls")
        for c in self.workload.classes:
            if c.pool not in pools:
                raise _KeyedError(
                    f"workload.classes.{c.name}.pool",
                    f"unknown pool '{c.pool}' (pools: {', '.join(sorted(pools))})",
                )
            kind = next(p.kind for p in self.datacenter.pools if p.name == c.pool)
            if (kind == "diffusion") != (c.video is not None):
                raise _KeyedError(f"workload.classes.{c.name}.pool",
                                  f"pool '{c.pool}' is {'an LLM' if kind == 'llm' else 'a diffusion'} pool; "
                                  + ("'video' classes need a diffusion pool"
                                                                          if c.video is not None else
                                                                          "only 'video' classes can use it"))
            if c.job is not None:
                for key, pool in _verifier_pools(c.job.strategy):
                    if pool is not None and pool not in pools:
                        raise _KeyedError(f"workload.classes.{c.name}.job.strategy.{key}.pool",
                                          f"unknown pool '{pool}' (pools: {', '.join(sorted(pools))})")
                    if pool is not None and self.pool(pool).kind != "llm":
                        raise _KeyedError(f"workload.classes.{c.name}.job.strategy.{key}.pool",
                                          f"pool '{pool}' is a diffusion pool, not a language model")
        return self

    def _check_decode_pool(self, p) -> None:
        key = f"datacenter.pools.{p.name}.decode_pool"
        d = next((q for q in self.datacenter.pools if q.name == p.decode_pool), None)
        if d is None or d.kind != "llm" or d.name == p.name:
            names = ", ".join(q.name for q in self.datacenter.pools if q.kind == "llm" and q.name != p.name)
            raise _KeyedError(key, f"unknown decode pool '{p.decode_pool}' (another LLM pool: {names or 'none'})")
        if d.decode_pool is not None:
            raise _KeyedError(key, f"pool '{d.name}' is itself a prefill pool; a decode pool serves whole calls")
        if (d.model, d.kv_dtype, d.engine.block_size) != (p.model, p.kv_dtype, p.engine.block_size):
            raise _KeyedError(key, f"pool '{d.name}' must serve the same model with the same kv_dtype and block_size "
                                   "(the KV cache moves between them as it is)")

    @model_validator(mode="after")
    def _economics_refs(self):
        """Price lists of datacenter.economics name workload classes of this scenario."""
        eco = self.datacenter.economics
        bad = eco.pricing.unknown_class([c.name for c in self.workload.classes]) if eco is not None else None
        if bad is not None:
            raise _KeyedError(*bad)
        return self

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the scenario (trace files) are relative to."""
        return Path(self._base_dir)

    def pool(self, name: str) -> Pool:
        return next(p for p in self.datacenter.pools if p.name == name)


class _KeyedError(ValueError):
    """A validation error that knows its key path better than pydantic's location."""

    def __init__(self, key_path: str, message: str):
        super().__init__(message)
        self.key_path = key_path
        self.message = message


def _verifier_pools(strategy, prefix: str = ""):
    """(key path, pool) of every verifier / PRM a strategy names."""
    if isinstance(strategy, Adaptive):
        for level, s in strategy.policies.items():
            yield from _verifier_pools(s, f"policies.{level}.")
    elif isinstance(strategy, BestOfN):
        yield prefix + "verifier", strategy.verifier.pool
    elif isinstance(strategy, BeamSearch):
        yield prefix + "prm", strategy.prm.pool


def _check_unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"duplicate {what[:-1]} name '{n}'")
        seen.add(n)


# --------------------------------------------------------------------------- loading
def load_raw(path: str | Path) -> dict:
    """Read a scenario file as a plain dict (no validation)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ScenarioError(str(path), "", f"cannot read file ({e.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ScenarioError(str(path), "", f"{where}invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ScenarioError(str(path), "", "a scenario must be a YAML mapping of keys to values")
    return raw


def validate(raw: dict, source: str = "<scenario>", base_dir: str | Path | None = None) -> Scenario:
    """Validate a raw scenario dict; raise ScenarioError naming ``source`` and the key path."""
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as e:
        raise _to_scenario_error(e, raw, source) from None
    scenario._base_dir = str(base_dir if base_dir is not None else Path(source).parent)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    return validate(load_raw(path), str(path), Path(path).parent)


def _to_scenario_error(err: ValidationError, raw: dict, source: str) -> ScenarioError:
    errors = err.errors(include_url=False)
    first = errors[0]
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyedError):
        return ScenarioError(source, ctx_err.key_path, ctx_err.message)
    path = _key_path(first["loc"], raw)
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "union_tag_invalid":
        msg = f"unknown kind {first['input'].get('kind')!r} (expected {first['ctx']['expected_tags']})"
    elif first["type"] == "union_tag_not_found":
        msg = "missing 'kind' (which variant this is)"
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        msg = f"{msg} (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return ScenarioError(source, path, msg + more)


def _key_path(loc: tuple, raw: Any) -> str:
    """Dotted path for a pydantic error location; list items named by their ``name``."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            if name:
                parts.append(str(name))
            else:
                parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            if isinstance(node, dict) and item in node:
                node = node[item]
                parts.append(str(item))
            elif isinstance(node, dict) and node.get("kind") == item:
                continue  # discriminated-union tag, not a key the user wrote
            else:
                parts.append(str(item))
                node = None
    out = ""
    for p in parts:
        out += p if p.startswith("[") else ("." + p if out else p)
    return out
