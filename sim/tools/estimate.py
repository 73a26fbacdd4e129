"""Quick what-if: steady-state figures of one replica under a fixed concurrency.

:func:`estimate` builds a one-pool, one-class scenario whose class is a closed loop
of ``concurrency`` clients sending calls back to back (the load of ``vllm bench
serve --max-concurrency N``), runs it in-process with the tables kept in memory,
and measures over ``[warmup_s, duration_s]``: latency over the calls that arrived
in the window, throughput and power over the steps inside it. The clients keep
sending for about a client cycle after ``duration_s``, so the last calls of the
window see the same load as the rest and finish before the run stops.

``dcsim estimate`` is the command-line face of the same function.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from sim.hardware import catalog
from sim.config import validate
from sim.errors import ScenarioError
from sim.models.perf import Batch
from sim.models.uncertainty import figure_intervals
from sim.output.summary import overlap, latency_metrics, resource_metrics
from sim.output.memory import MemoryRecorder
from sim.cluster.world import build
from sim.cluster.pools import resolve_pool

SOURCE = "dcsim estimate"
POOL, CLASS = "replica", "bench"
# Default window: each client completes about this many calls ...
WINDOW_CYCLES = 10
# ... unless that would simulate more than this many calls in the window (wall time is
# roughly proportional to calls), but at least one each.
WINDOW_CALLS = 1000
# Clients keep sending this many estimated cycles after the window (the rest drain).
TAIL_CYCLES = 1.25
# Scenario keys and the options that set them, for error messages; keys of the dicts
# passed through (performance, speculative, power) keep their own path.
OPTIONS = {
    "accelerator": "--hardware", "model": "--model", "tp": "--tp", "pp": "--pp", "weight_dtype": "--weight-dtype",
    "kv_dtype": "--kv-dtype", "max_num_seqs": "--max-num-seqs", "max_num_batched_tokens": "--max-num-batched-tokens",
    "power_cap_w": "--power-cap-w", "expert_parallel": "--expert-parallel", "attention_dp": "--attention-dp",
    "concurrency": "--concurrency",
    "prompt_tokens": "--prompt-tokens", "output_tokens": "--output-tokens", "duration_s": "--duration-s",
    "warmup_s": "--warmup-s", "gpu_memory_utilization": "--gpu-memory-utilization", "requests": "--requests",
    "performance": None, "speculative": None, "power": None,
}


def estimate(hardware: str, model: str, concurrency: int, prompt_tokens: int, output_tokens: int, *, tp: int = 1,
             pp: int = 1, weight_dtype: str | None = None, kv_dtype: str = "bf16", output_dist: str = "fixed",
             max_num_seqs: int | None = None, max_num_batched_tokens: int = 8192, power_cap_w: float | None = None,
             expert_parallel: bool = False, attention_dp: bool = False, performance: dict | None = None,
             speculative: dict | None = None, power: dict | None = None, gpu_memory_utilization: float | None = None,
             duration_s: float | None = None, warmup_s: float | None = None, seed: int = 0) -> dict:
    """Steady-state throughput, latency and power of one replica under ``concurrency`` clients.

    ``output_dist`` is ``fixed``, ``exponential`` (geometric with mean ``output_tokens``)
    or a length distribution as in a scenario (``{"kind": "lognormal", ...}``; then
    ``output_tokens`` only sizes the default window); outputs are capped where a call
    would no longer fit. ``performance``, ``speculative`` and ``power`` are passed into
    the pool as its keys of the same names. ``duration_s`` is the
    end of the measured window in simulated seconds (default: about ten calls per
    client, fewer for large concurrencies, in whole client cycles) and ``warmup_s`` its
    start (default: the service time of one call, by when the first burst is served).
    Raises :class:`~sim.errors.ScenarioError` keyed by option name for
    unknown names, impossible configurations and calls that cannot fit.
    """
    hardware, model = hardware.strip().lower(), model.strip().lower()
    max_num_seqs = max_num_seqs if max_num_seqs is not None else max(256, concurrency)
    raw, spec, card = one_class_scenario(
        "estimate", {"kind": "closed", "concurrency": concurrency}, hardware, model, prompt_tokens, output_tokens,
        output_dist, seed, tp=tp, pp=pp, weight_dtype=weight_dtype, kv_dtype=kv_dtype, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, power_cap_w=power_cap_w, expert_parallel=expert_parallel,
        attention_dp=attention_dp, performance=performance, speculative=speculative, power=power,
        gpu_memory_utilization=gpu_memory_utilization)

    service, cycle = _cycle_s(spec, concurrency, prompt_tokens, output_tokens, max_num_batched_tokens, max_num_seqs)
    if warmup_s is None:
        warmup_s = service if duration_s is None else min(service, duration_s / 2)
    if duration_s is not None and not 0 <= warmup_s < duration_s:
        raise ScenarioError(SOURCE, "--warmup-s", f"must be >= 0 and < --duration-s ({duration_s:g}), got {warmup_s:g}")
    cycles = max(1, min(WINDOW_CYCLES, math.ceil(WINDOW_CALLS / concurrency)))
    window_end = duration_s if duration_s is not None else warmup_s + cycles * cycle
    # the clients keep sending past the window, so its last calls run under the same load
    horizon = window_end + TAIL_CYCLES * cycle
    # fixed lengths: the window's calls are done by the horizon; long random outputs may not be
    drain = 0.0 if output_dist == "fixed" else cycle
    raw.update(duration_s=horizon, warmup_s=warmup_s, drain_s=drain)
    scenario = validate_raw(raw)

    recorder = MemoryRecorder()
    world = build(scenario, recorder, SOURCE)
    t_end = world.run()
    calls, steps = recorder.table("calls"), recorder.table("steps")
    if duration_s is None:
        duration_s = _whole_cycles(calls, warmup_s, window_end, horizon, cycles)

    inputs = {
        "hardware": hardware, "model": model, "tp": tp, "pp": pp, "concurrency": concurrency,
        "prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "output_dist": output_dist,
        "weight_dtype": weight_dtype or card.weight_dtype, "kv_dtype": kv_dtype, "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens, "power_cap_w": power_cap_w,
        "expert_parallel": expert_parallel, "attention_dp": attention_dp, "performance": performance, "speculative": speculative,
        "power": power, "gpu_memory_utilization": gpu_memory_utilization, "seed": seed, "warmup_s": warmup_s,
        "duration_s": duration_s,
    }
    figures = _metrics(calls, steps, world, warmup_s, duration_s)
    return {**inputs, **figures, **with_intervals(figures, hardware, card), "sim_end_s": float(t_end)}


def with_intervals(figures: dict, hardware: str, card) -> dict:
    """80% prediction intervals (``<figure>_p10_p90``) of the figures, from the validation's
    held-out errors of similar rows (sim/models/uncertainty.py)."""
    return figure_intervals(figures, [(hardware, card.params_billion)], figures["mean_batch_seqs"])


def one_class_scenario(name: str, arrival: dict, hardware: str, model: str, prompt_tokens: int, output_tokens: int,
                       output_dist, seed: int, **pool_options) -> tuple[dict, object, catalog.ModelCard]:
    """A scenario (raw dict) of one pool (``pool_options`` as :func:`_pool` takes them) and one
    class with ``arrival``, fixed prompts and ``output_dist`` outputs (random ones capped where
    a call no longer fits); with its resolved pool and the model card. Names are lower-case."""
    pool, card = _pool(hardware, model, **pool_options)
    _check_output_dist(output_dist)
    cls = {"name": CLASS, "pool": POOL, "arrival": arrival, "prompt_tokens": {"kind": "fixed", "value": prompt_tokens},
           "output_tokens": {"kind": "fixed", "value": output_tokens}}
    raw = {"name": name, "seed": seed, "duration_s": 1.0, "datacenter": {"pools": [pool]},
           "workload": {"classes": [cls]}}
    spec = _resolve(raw)
    cls["output_tokens"] = _output_spec(output_dist, output_tokens,
                                        _room(spec, card, model, hardware, prompt_tokens, output_tokens))
    return raw, spec, card


def _pool(hardware: str, model: str, *, tp: int, pp: int, weight_dtype, kv_dtype: str, max_num_seqs: int,
          max_num_batched_tokens: int, power_cap_w, expert_parallel: bool, performance, speculative, power,
          attention_dp: bool = False, gpu_memory_utilization: float | None = None) -> tuple[dict, catalog.ModelCard]:
    """The one pool of an estimate (a scenario's pool dict) and the model card; unknown
    names fail keyed by their option."""
    catalog.accelerator(hardware, SOURCE, "--hardware")
    card = catalog.model(model, SOURCE, "--model")
    pool = {"name": POOL, "accelerator": hardware, "model": model, "tp": tp, "kv_dtype": kv_dtype,
            "batcher": {"kind": "continuous", "max_num_batched_tokens": max_num_batched_tokens,
                        "max_num_seqs": max_num_seqs}}
    optional = {"pp": pp if pp != 1 else None, "weight_dtype": weight_dtype, "power_cap_w": power_cap_w,
                "expert_parallel": True if expert_parallel else None, "attention_dp": True if attention_dp else None,
                "performance": performance,
                "speculative": speculative, "power": power,
                "engine": {"gpu_memory_utilization": gpu_memory_utilization} if gpu_memory_utilization else None}
    pool.update({k: v for k, v in optional.items() if v is not None})
    return pool, card


def _check_output_dist(output_dist) -> None:
    if not isinstance(output_dist, dict) and output_dist not in ("fixed", "exponential"):
        raise ScenarioError(SOURCE, "--output-dist", f"unknown distribution {output_dist!r} (fixed, exponential)")


def _room(spec, card, model: str, hardware: str, prompt_tokens: int, output_tokens: int) -> int:
    """Output tokens a call can hold after its prompt (context and KV pool); a fixed
    ``output_tokens`` beyond it is refused."""
    room = min(card.max_context_tokens, spec.kv_blocks * spec.block_size) - prompt_tokens
    if room < output_tokens:
        raise ScenarioError(SOURCE, "--prompt-tokens", f"a call of {prompt_tokens} + {output_tokens} tokens does not fit "
                            f"{model} (context {card.max_context_tokens} tokens, KV pool {spec.kv_blocks * spec.block_size} "
                            f"tokens on {hardware})")
    return room


def _output_spec(output_dist, output_tokens: int, room: int) -> dict:
    """The class's output length distribution; random lengths are capped at ``room``."""
    if output_dist == "exponential":
        return {"kind": "exponential", "mean": output_tokens, "max": room}
    if isinstance(output_dist, dict):
        capped = output_dist.get("kind") in ("lognormal", "exponential", "empirical") and "max" not in output_dist
        return {**output_dist, "max": room} if capped else output_dist
    return {"kind": "fixed", "value": output_tokens}


def _metrics(calls: pa.Table, steps: pa.Table, world, t0: float, t1: float) -> dict:
    """Figures of the window [t0, t1]: latency of the calls that arrived in it, throughput,
    batch and power of the steps inside it (the summary's functions, plus ITL)."""
    lat = latency_metrics(calls, t0, t1)
    res = resource_metrics(steps, t0, t1, world.specs, world.tariff)
    spec = world.specs[0]
    span = t1 - t0
    finish = calls["finish_s"].to_numpy()
    arrival = calls["arrival_s"].to_numpy()
    itl = itl_quantiles(steps, t0, t1, (50, 90, 99))
    return {
        "output_tokens_per_s": res["output_tokens_per_s"],
        "prompt_tokens_per_s": res["prompt_tokens_per_s"],
        "requests_per_s": int(((finish >= t0) & (finish < t1)).sum()) / span,
        **{f"{m}_{s}_s": lat[f"{m}_{s}_s"] for m in ("ttft", "tpot", "e2e") for s in ("mean", "p50", "p90", "p99")},
        **{f"itl_p{q}_s": v for q, v in itl.items()},
        "mean_batch_seqs": res["mean_batch_seqs"],
        "utilization": res["utilization"],
        "gpu_power_w": res["device_energy_j"] / span,
        "energy_per_output_token_j": res["device_energy_per_output_token_j"],
        "devices": res["devices"],
        "kv_blocks": spec.kv_blocks,
        "kv_gib": spec.kv_gib,
        "weight_gib": spec.weight_gib,
        "calls_measured": lat["calls_measured"],
        # arrived in the window but not finished when the run stopped (excluded from latency)
        "calls_unfinished": lat["calls_measured"] - int(((arrival >= t0) & (arrival < t1) & (finish == finish)).sum()),
        "calls_dropped": lat["calls_dropped"],
        "preemptions": int(calls["preemptions"].to_numpy()[(arrival >= t0) & (arrival < t1)].sum()),
    }


def validate_raw(raw: dict):
    try:
        return validate(raw, SOURCE, ".")
    except ScenarioError as e:
        raise _as_option(e) from None


def _resolve(raw: dict):
    try:
        return resolve_pool(validate_raw(raw), 0, SOURCE)
    except ScenarioError as e:
        raise _as_option(e) from None


def _as_option(e: ScenarioError) -> ScenarioError:
    """The error keyed by the command-line option that set the offending scenario key."""
    parts = e.key_path.split(".")
    for i in reversed(range(len(parts))):
        if parts[i] in OPTIONS:
            return ScenarioError(SOURCE, OPTIONS[parts[i]] or ".".join(parts[i:]), e.message)
    return ScenarioError(SOURCE, e.key_path, e.message)


def _whole_cycles(calls: pa.Table, t0: float, t1: float, horizon: float, cycles: int) -> float:
    """End of a default window: ``cycles`` measured client cycles after ``t0``.

    With fixed lengths the clients fall into lockstep cohorts and the token rate is
    periodic with the client cycle (prefill bursts, then decoding), so a window of whole
    cycles has no partial-period bias. The measured cycle is the mean end-to-end time
    of the calls that arrived in the planned window ``[t0, t1)`` (no think time)."""
    a = calls["arrival_s"].to_numpy()
    e2e = calls["finish_s"].to_numpy() - a
    done = (a >= t0) & (a < t1) & np.isfinite(e2e)
    if not done.any():
        return t1
    cycle = float(e2e[done].mean())
    whole = min(cycles, math.floor((horizon - t0) / cycle - 1))  # and a cycle of load after it
    return t0 + whole * cycle if whole >= 1 else t1


def _cycle_s(spec, n: int, prompt: int, output: int, budget: int, max_seqs: int) -> tuple[float, float]:
    """Rough (service time of a call, time between a client's calls) from the performance
    model: the running batch decodes ``output`` iterations and prefills its prompts in
    budget-sized chunks; clients beyond the batch wait for their turn."""
    fit = max(1, spec.kv_blocks * spec.block_size // (prompt + output))
    b = max(1, min(n, max_seqs, fit))
    ctx = np.array([b * (prompt + output / 2)])
    decode = float(spec.perf.cost(Batch(b, b, b, ctx, ctx)).time_s[0])
    chunk = min(budget, b * prompt)
    pairs = np.array([chunk * prompt / 2.0])
    mixed = float(spec.perf.cost(Batch(chunk, b, b, pairs, ctx)).time_s[0])
    run = output * decode + math.ceil(b * prompt / budget) * mixed
    return run, run * max(1.0, n / b)


def itl_quantiles(steps: pa.Table, t0: float, t1: float, qs) -> dict:
    """Quantiles of the time between consecutive output tokens of a call, over [t0, t1].

    Every call decoding in an iteration gets its next token when the iteration ends, so an
    iteration of duration d contributes one interval d per decoding call: the distribution
    is that of iteration durations weighted by the steps table's decode tokens (one per
    decoding call; with speculative decoding a constant width per call, and an interval
    may deliver several tokens, as a streamed chunk in ``vllm bench serve``). A step row
    is a run of iterations, taken at its mean duration, clipped to the window."""
    n = steps["iterations"].to_numpy()
    weight = steps["decode_tokens"].to_numpy() * overlap(steps, t0, t1)
    keep = (n > 0) & (weight > 0)
    if not keep.any():
        return {q: math.nan for q in qs}
    dt = ((steps["end_s"].to_numpy() - steps["start_s"].to_numpy())[keep]) / n[keep]
    w = weight[keep]
    order = np.argsort(dt, kind="stable")
    dt, cum = dt[order], np.cumsum(w[order])
    return {q: float(dt[min(len(dt) - 1, np.searchsorted(cum, q / 100 * cum[-1]))]) for q in qs}


