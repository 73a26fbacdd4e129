"""The datacenter: pools of replicas (accelerator, model, parallelism, batcher, router, engine,
power, faults, autoscaling, disaggregation) and the facility around them."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from sim.config.base import Frozen, NonNegFloat, NonNegInt, PosFloat, PosInt, check_step_function, check_unique, step_at

# Power of one device, W: the largest accelerator boards draw ~1-2 kW; 100 kW is no device.
Watts = Annotated[float, Field(ge=0, le=1e5)]
PosWatts = Annotated[float, Field(gt=0, le=1e5)]
# Seconds of one engine iteration or per-token cost: an hour is no iteration.
IterSeconds = Annotated[float, Field(ge=0, le=3600)]
from sim.config.economics import Economics


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
    balance_abs: NonNegInt = 32


class LeastWorkRouter(Frozen):
    """Shortest expected work: fewest prompt tokens still to prefill plus expected output tokens
    left, over the calls a replica holds."""

    kind: Literal["least_work"]
    expected_output_tokens: PosInt = 256


Router = Annotated[
    Union[RoundRobinRouter, RandomRouter, ShortestQueueRouter, LeastKvRouter, PowerOfTwoRouter, PrefixAffinityRouter,
          LeastWorkRouter],
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
    # extra time per layer of a step carrying prefill chunks (piecewise CUDA graphs, new requests)
    mixed_layer_overhead_s: Optional[NonNegFloat] = None


class FixedPerf(Frozen):
    """An iteration takes ``iteration_s + per_token_s * tokens``: for queueing-theory
    checks and for users who measured their own engine."""

    kind: Literal["fixed"]
    iteration_s: Annotated[float, Field(gt=0, le=3600)]
    per_token_s: IterSeconds = 0.0


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

    block_size: Annotated[int, Field(ge=1, le=65536)] = 16
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    # Activation workspace and CUDA-graph memory set aside per device before the KV pool
    # is sized; None estimates it from the batch token budget and the model width.
    activation_reserve_gib: Optional[NonNegFloat] = None
    # Override the KV pool size (blocks per replica), e.g. to match a real engine's log line
    # "# GPU blocks: N".
    # (at most 1e8: 1.6 billion tokens at block size 16; the memory check is the pool's)
    num_gpu_blocks: Optional[Annotated[int, Field(ge=1, le=10**8)]] = None
    # Automatic prefix caching (vLLM's enable_prefix_caching, on by default in v1): blocks of
    # ended calls stay cached, reclaimed least-recently-used first, for later calls with the
    # same prefix (job samples, session turns, traces with prefix hashes) to find.
    prefix_caching: bool = True


class PowerParams(Frozen):
    """Overrides of the device power model (sim/models/power.py); None keeps the accelerator's
    calibrated value (hardware/calibration) or the default."""

    idle_w: Optional[Watts] = None  # bare idle, nothing loaded
    resident_w: Optional[Watts] = None  # added while a model is resident
    compute_weight: Optional[Watts] = None
    memory_weight: Optional[Watts] = None
    active_w: Optional[Watts] = None  # added while an iteration runs
    link_active_w: Optional[Watts] = None  # per device of a multi-device replica, during its collectives
    # Board power limit in place of the card's: for cards with no public TDP (TPU, Trainium,
    # Inferentia), or another SKU's limit. Your own figure: the run's energy rests on it.
    tdp_w: Optional[PosWatts] = None


class Faults(Frozen):
    """Replica failures: time to failure exponential with mean ``mtbf_s`` (or Weibull with
    ``weibull_shape``, same mean), repair exponential with mean ``mttr_s``. A failure loses the
    iteration in flight and the KV cache; its calls are retried on other replicas
    (``on_failure: retry``, from scratch, keeping their arrival time) or fail."""

    mtbf_s: PosFloat
    mttr_s: PosFloat
    distribution: Literal["exponential", "weibull"] = "exponential"
    weibull_shape: Annotated[float, Field(ge=0.01, le=100)] = 1.0
    on_failure: Literal["retry", "fail"] = "retry"


class Stragglers(Frozen):
    """A ``fraction`` of the pool's replicas (drawn once) run every iteration ``slowdown``
    times slower (thermal throttling, a bad link, a noisy neighbour)."""

    fraction: Annotated[float, Field(ge=0, le=1)]
    slowdown: Annotated[float, Field(ge=1, le=1000)]


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
    replicas: list[NonNegInt] = Field(min_length=1)
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
    # 1 ms: a control loop faster than the engine's iterations decides nothing
    interval_s: Annotated[float, Field(ge=1e-3)] = 30.0
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
    weight_dtype: Optional[Literal["bf16", "fp16", "fp8", "int8", "int4", "fp4", "mxfp4"]] = None
    kv_dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    engine: EngineParams = EngineParams()
    batcher: Batcher = ContinuousBatcher(kind="continuous")
    router: Router = RoundRobinRouter(kind="round_robin")
    performance: Performance = RooflinePerf(kind="roofline")
    # Board power limit per device (nvidia-smi -pl); None runs at TDP.
    power_cap_w: Optional[PosWatts] = None
    power: PowerParams = PowerParams()
    speculative: Optional[Speculative] = None


class CarbonSchedule(Frozen):
    """Grid carbon intensity as a step function of simulated time: ``g_per_kwh[i]`` from
    ``times_s[i]`` until the next time; repeated every ``period_s`` if given (86400 for a
    daily profile, e.g. from a grid operator's hourly data)."""

    times_s: list[NonNegFloat] = Field(min_length=1)
    g_per_kwh: list[Annotated[float, Field(ge=0, le=1e5)]] = Field(min_length=1)
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
    pue: Annotated[float, Field(ge=1, le=10)] = 1.2
    # Industrial electricity price, US average 2024 ~0.08 $/kWh (EIA Electric Power Monthly).
    energy_usd_per_kwh: Annotated[float, Field(ge=0, le=1e3)] = 0.08
    # Grid carbon intensity; US average ~370 gCO2/kWh (EIA 2023).
    carbon_g_per_kwh: Annotated[float, Field(ge=0, le=1e5)] = 370.0
    # Carbon intensity over time (overrides carbon_g_per_kwh): a step function.
    carbon_schedule: Optional[CarbonSchedule] = None
    # Host (CPU, NIC, fans, switches) power per device; None derives it from the
    # accelerator card: half of (node max power - devices x TDP) / devices.
    host_w_per_device: Optional[Watts] = None
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
        check_unique([p.name for p in self.pools], "pools")
        return self
