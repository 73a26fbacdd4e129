"""Headline metrics of one run, computed from its Parquet tables.

The summary reads the same calls and steps tables a notebook would, so what
the CLI prints and what analysis code computes from the traces agree. Latency
metrics cover calls that arrived in the measurement window ``[warmup_s,
duration_s)``; throughput, utilization, energy and cost cover the steps inside
that window (rows crossing an edge count pro rata).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else math.nan


def latency_metrics(calls: pa.Table, t0: float, t1: float) -> dict:
    """Counts and latency percentiles of the calls that arrived in [t0, t1)."""
    arrival = calls["arrival_s"].to_numpy()
    status = calls["status"].to_numpy(zero_copy_only=False)
    out = {
        "calls_created": calls.num_rows,
        "calls_finished": int((status == "finished").sum()),
        "calls_dropped": int((status == "dropped").sum()),
        "calls_timed_out": int((status == "timed-out").sum()),
        "calls_failed": int((status == "failed").sum()),
    }
    win = (arrival >= t0) & (arrival < t1)
    fin = win & (status == "finished")
    out["calls_measured"] = int(win.sum())
    a = arrival[fin]
    first = calls["first_token_s"].to_numpy()[fin]
    finish = calls["finish_s"].to_numpy()[fin]
    admitted = calls["admitted_s"].to_numpy()[fin]
    gen = calls["generated_tokens"].to_numpy()[fin]
    ttft = first - a
    e2e = finish - a
    wait = admitted - a
    multi = gen > 1
    tpot = (finish[multi] - first[multi]) / (gen[multi] - 1)
    out["completed_per_s"] = len(a) / (t1 - t0)
    for name, x in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        out[f"{name}_mean_s"] = _mean(x)
        for q in (50, 90, 99):
            out[f"{name}_p{q}_s"] = _pct(x, q)
    out["wait_mean_s"] = _mean(wait)
    out["wait_p99_s"] = _pct(wait, 99)
    return out


def _overlap(steps: pa.Table, t0: float, t1: float) -> np.ndarray:
    """Fraction of each step row that lies inside [t0, t1]."""
    s = steps["start_s"].to_numpy()
    e = steps["end_s"].to_numpy()
    dur = e - s
    inside = np.clip(np.minimum(e, t1) - np.maximum(s, t0), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dur > 0, inside / dur, 0.0)


def resource_metrics(steps: pa.Table, t0: float, t1: float, pools: list, tariff) -> dict:
    """Throughput, utilization, energy, cost and carbon over [t0, t1].

    ``pools`` are resolved pool specs (devices, tp, price, host power)."""
    span = t1 - t0
    f = _overlap(steps, t0, t1)
    busy_kind = pc.not_equal(steps["kind"], "idle").to_numpy(zero_copy_only=False)
    dur = (steps["end_s"].to_numpy() - steps["start_s"].to_numpy()) * f
    out_tok = float((steps["output_tokens"].to_numpy() * f).sum())
    prefill_tok = float((steps["prefill_tokens"].to_numpy() * f).sum())
    device_j = float((steps["energy_j"].to_numpy() * f).sum())
    replicas = sum(p.replicas for p in pools)
    devices = sum(p.devices for p in pools)
    busy_s = float(dur[busy_kind].sum())
    seq_s = float((steps["batch_seqs"].to_numpy() * dur)[busy_kind].sum())
    host_j = sum(p.host_w_per_device * p.devices for p in pools) * span
    it_j = device_j + host_j
    facility_j = tariff.facility_j(it_j)
    device_usd = sum(p.acc.price_usd_per_hour * p.devices for p in pools) * span / 3600
    energy_usd = tariff.energy_usd(facility_j)
    cost = device_usd + energy_usd
    per_tok = lambda x: x / out_tok if out_tok > 0 else math.nan
    return {
        "replicas": replicas,
        "devices": devices,
        "output_tokens_per_s": out_tok / span,
        "prompt_tokens_per_s": prefill_tok / span,
        "utilization": busy_s / (replicas * span),
        "mean_batch_seqs": seq_s / busy_s if busy_s > 0 else 0.0,
        "device_energy_j": device_j,
        "host_energy_j": host_j,
        "facility_energy_j": facility_j,
        "avg_device_power_w": device_j / (devices * span),
        "device_energy_per_output_token_j": per_tok(device_j),
        "energy_per_output_token_j": per_tok(facility_j),
        "device_cost_usd": device_usd,
        "energy_cost_usd": energy_usd,
        "cost_usd": cost,
        "usd_per_million_output_tokens": per_tok(cost) * 1e6,
        "carbon_g": tariff.carbon_g(facility_j),
    }
