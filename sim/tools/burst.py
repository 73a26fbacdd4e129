"""A burst benchmark: every request sent at once, measured over its steady-state window.

This is how the ML.ENERGY benchmark (v3; Chung et al., NeurIPS'25 D&B; the measurements
in hardware/calibration/measurements.csv) measures a server, and a run of ``vllm bench
serve --request-rate inf`` looks the same: ``requests`` calls arrive together at a
server whose running batch is capped at ``max_num_seqs`` (B), which admits B of them
and queues the rest. The steady state is the span in which the batch stays full:

- it starts when B calls have received their first token (the opening prefill burst
  is over), and
- it ends when ``requests - B - 1`` calls have finished (soon after, the queue runs dry
  and the batch starts to shrink)

(ml-energy/benchmark, ``mlenergy/llm/benchmark.py``, ``RequestTracker``). Output
throughput, GPU power and energy per token are taken over that window; inter-token
latency is taken over the whole run, as the benchmark's client reports it.

The window matters for long outputs: the calls in it are young (the first B started
together and are part-way through; the others were admitted as those ended), so their
KV cache and attention reads are smaller than in an endless closed loop, whose batch
holds calls at every age, weighted towards long ones.
"""

from __future__ import annotations

import functools
import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from sim.output.memory import MemoryRecorder
from sim.tools.estimate import SOURCE, itl_quantiles, validate_raw, one_class_scenario, with_intervals
from sim.errors import ScenarioError
from sim.output.summary import resource_metrics
from sim.cluster.world import build

# Upper bound on simulated time after the burst; every call finishes long before it.
DRAIN_S = 1e7


def steady_window(first_token_s: np.ndarray, finish_s: np.ndarray, requests: int, max_num_seqs: int) -> tuple[float, float]:
    """The benchmark's steady-state window: from the ``max_num_seqs``-th first token to the
    ``requests - max_num_seqs - 1``-th finished call. Where that end comes first (too few
    requests behind the batch), the window runs to the last finished call, and where that is
    no later either (single-token calls), the window is the whole run from the burst at 0."""
    first = np.sort(first_token_s[np.isfinite(first_token_s)])
    done = np.sort(finish_s[np.isfinite(finish_s)])
    if not len(first) or not len(done):
        raise ScenarioError(SOURCE, "--requests", "no call of the burst was served")
    t0 = float(first[min(max_num_seqs, len(first)) - 1])
    k = requests - max_num_seqs - 1
    t1 = float(done[min(k, len(done)) - 1]) if k >= 1 else -math.inf
    if t1 > t0:
        return t0, t1
    last = float(done[-1])
    return (t0, last) if last > t0 else (0.0, last)


def mean_tpot(first_token_s: np.ndarray, finish_s: np.ndarray, generated: np.ndarray, t0: float, t1: float) -> float:
    """Mean time per output token after the first, per call, over the calls served inside the
    steady-state window (first token at or after ``t0``, finished by ``t1``), or over every
    finished call where none is: what closed-loop clients (AIPerf, genai-perf, ``vllm bench
    serve``'s TPOT) report as the mean inter-token latency."""
    ok = np.isfinite(first_token_s) & np.isfinite(finish_s) & (generated > 1)
    inside = ok & (first_token_s >= t0) & (finish_s <= t1)
    sel = inside if inside.any() else ok
    if not sel.any():
        return math.nan
    return float(np.mean((finish_s[sel] - first_token_s[sel]) / (generated[sel] - 1)))


def burst(hardware: str, model: str, requests: int, max_num_seqs: int, prompt_tokens: int, output_tokens: int, *,
          output_dist="fixed", tp: int = 1, pp: int = 1, weight_dtype: str | None = None, kv_dtype: str = "bf16",
          max_num_batched_tokens: int = 8192, gpu_memory_utilization: float | None = None,
          power_cap_w: float | None = None, expert_parallel: bool = False, attention_dp: bool = False,
          performance: dict | None = None, speculative: dict | None = None, power: dict | None = None,
          seed: int = 0) -> dict:
    """Steady-state figures of one replica serving ``requests`` calls sent at once.

    Options are those of :func:`sim.tools.estimate.estimate`, plus ``requests`` (calls in the
    burst) and ``gpu_memory_utilization`` (the engine's memory share; the ML.ENERGY
    server runs vLLM with 0.95). Returns the window, throughput, power and energy over
    it, the mean running batch in it, ITL quantiles over the whole run, and TTFT and
    end-to-end latency quantiles over every call.
    """
    if requests < 1:
        raise ScenarioError(SOURCE, "--requests", f"must be >= 1, got {requests}")
    hardware, model = hardware.strip().lower(), model.strip().lower()
    raw, spec, card = one_class_scenario(
        "burst", {"kind": "burst", "count": requests}, hardware, model, prompt_tokens, output_tokens, output_dist, seed,
        tp=tp, pp=pp, weight_dtype=weight_dtype, kv_dtype=kv_dtype, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, power_cap_w=power_cap_w, expert_parallel=expert_parallel,
        attention_dp=attention_dp, performance=performance, speculative=speculative, power=power,
        gpu_memory_utilization=gpu_memory_utilization)
    raw["drain_s"] = DRAIN_S
    recorder = MemoryRecorder()
    world = build(validate_raw(raw), recorder, SOURCE)
    t_end = world.run()
    calls, steps = recorder.table("calls"), recorder.table("steps")
    first, finish = calls["first_token_s"].to_numpy(), calls["finish_s"].to_numpy()
    t0, t1 = steady_window(first, finish, requests, max_num_seqs)
    res = resource_metrics(steps, t0, t1, world.specs, world.tariff)
    ttft, e2e = first - calls["arrival_s"].to_numpy(), finish - calls["arrival_s"].to_numpy()
    q = lambda x, p: float(np.percentile(x[np.isfinite(x)], p)) if np.isfinite(x).any() else math.nan
    out = {
        "hardware": hardware, "model": model, "tp": tp, "pp": pp, "requests": requests, "max_num_seqs": max_num_seqs,
        "prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "weight_dtype": weight_dtype or card.weight_dtype,
        "kv_dtype": kv_dtype, "gpu_memory_utilization": gpu_memory_utilization, "seed": seed,
        "window_start_s": t0, "window_end_s": t1,
        "output_tokens_per_s": res["output_tokens_per_s"],
        "mean_batch_seqs": res["mean_batch_seqs"],
        "utilization": res["utilization"],
        "gpu_power_w": res["device_energy_j"] / (t1 - t0),
        "energy_per_output_token_j": res["device_energy_per_output_token_j"],
        **{f"itl_p{p}_s": v for p, v in itl_quantiles(steps, 0.0, float(t_end), (50, 90, 99)).items()},
        **{f"ttft_p{p}_s": q(ttft, p) for p in (50, 90, 99)},
        **{f"e2e_p{p}_s": q(e2e, p) for p in (50, 90, 99)},
        "tpot_mean_s": mean_tpot(first, finish, calls["generated_tokens"].to_numpy(), t0, t1),
        "calls_finished": int(np.isfinite(finish).sum()),
        "last_finish_s": float(np.max(finish[np.isfinite(finish)])) if np.isfinite(finish).any() else math.nan,
        "preemptions": int(calls["preemptions"].to_numpy().sum()),
        "devices": res["devices"], "kv_blocks": spec.kv_blocks, "kv_gib": spec.kv_gib, "weight_gib": spec.weight_gib,
        "sim_end_s": float(t_end),
    }
    return {**out, **with_intervals(out, hardware, card)}


def _guarded(fn, args: tuple) -> dict:
    try:
        return fn(*args)
    except Exception as e:  # a row the simulator cannot run is reported, not hidden
        return {"error": f"{type(e).__name__}: {e}"}


def map_rows(fn, jobs: list[tuple], workers: int = 1) -> list[dict]:
    """``fn(*job)`` for every job (validation rows), in a pool of ``workers`` processes when more than
    one; a job the simulator cannot run gives ``{"error": ...}`` instead of stopping the others
    (``fn`` must be a module-level function, for the pool)."""
    call = functools.partial(_guarded, fn)
    if workers <= 1:
        return [call(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(call, jobs))
