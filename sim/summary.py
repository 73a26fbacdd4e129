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


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else math.nan


def latency_metrics(calls: pa.Table, t0: float, t1: float) -> dict:
    """Counts and latency percentiles of the calls that arrived in [t0, t1)."""
    status = calls["status"].to_numpy(zero_copy_only=False)
    prefilled = status == "prefilled"
    if prefilled.any():  # disaggregation: a prefill-only row per call, beside the call's own row
        calls = calls.filter(pa.array(~prefilled))
        status = status[~prefilled]
    arrival = calls["arrival_s"].to_numpy()
    out = {
        "calls_created": calls.num_rows,
        "calls_finished": int((status == "finished").sum()),
        "calls_dropped": int((status == "dropped").sum()),
        "calls_timed_out": int((status == "timed-out").sum()),
        "calls_failed": int((status == "failed").sum()),
        "calls_cancelled": int((status == "cancelled").sum()),
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
    prompt = calls["prompt_tokens"].to_numpy()[win]
    if prefilled.any():
        moved = calls["kv_transfer_s"].to_numpy()[fin]
        out["calls_prefilled"] = int(prefilled.sum())
        out["kv_transfer_mean_s"] = _mean(moved)
        out["kv_transfer_p99_s"] = _pct(moved, 99)
    out["prompt_cached_share"] = float(calls["cached_tokens"].to_numpy()[win].sum() / prompt.sum()) if prompt.sum() else 0.0
    return out


def _overlap(steps: pa.Table, t0: float, t1: float) -> np.ndarray:
    """Fraction of each step row that lies inside [t0, t1]."""
    s = steps["start_s"].to_numpy()
    e = steps["end_s"].to_numpy()
    dur = e - s
    inside = np.clip(np.minimum(e, t1) - np.maximum(s, t0), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dur > 0, inside / dur, 0.0)


def _changes(s, t0: float, t1: float) -> list[float]:
    """Times in (t0, t1) where a carbon schedule changes intensity."""
    if s.period_s is None:
        return [x for x in s.times_s if t0 < x < t1]
    out, k = [], math.floor(t0 / s.period_s)
    while k * s.period_s < t1:
        out += [k * s.period_s + x for x in s.times_s if t0 < k * s.period_s + x < t1]
        k += 1
    return out


def _carbon(steps: pa.Table, f: np.ndarray, host_w: float, t0: float, t1: float, tariff) -> float:
    """Grams of CO2 of the window: each step row's facility energy at the intensity of its
    midpoint, and the hosts' constant power over the intensity schedule's pieces."""
    s = tariff.schedule
    device_j = steps["energy_j"].to_numpy() * f
    if s is None:
        return tariff.carbon_g(tariff.facility_j(float(device_j.sum()) + host_w * (t1 - t0)))
    start, end = steps["start_s"].to_numpy(), steps["end_s"].to_numpy()
    mid = (np.maximum(start, t0) + np.minimum(end, t1)) / 2
    carbon = tariff.carbon_g_over(tariff.facility_j(device_j), mid)
    edges = np.array(sorted({t0, t1, *_changes(s, t0, t1)}))
    pieces = np.diff(edges)
    return carbon + tariff.carbon_g_over(tariff.facility_j(host_w * pieces), (edges[:-1] + edges[1:]) / 2)


def resource_metrics(steps: pa.Table, t0: float, t1: float, pools: list, tariff) -> dict:
    """Throughput, utilization, energy, cost and carbon over [t0, t1].

    ``pools`` are resolved pool specs (devices, tp, price, host power)."""
    span = t1 - t0
    f = _overlap(steps, t0, t1)
    kind = steps["kind"].to_numpy(zero_copy_only=False)
    busy_kind = ~np.isin(kind, ("idle", "down", "off", "booting"))
    dur = (steps["end_s"].to_numpy() - steps["start_s"].to_numpy()) * f
    out_tok = float((steps["output_tokens"].to_numpy() * f).sum())
    prefill_tok = float((steps["prefill_tokens"].to_numpy() * f).sum())
    device_j = float((steps["energy_j"].to_numpy() * f).sum())
    pools = [p for p in pools if not getattr(p, "shares_devices", False)]  # devices counted once
    replicas = sum(p.replicas for p in pools)
    devices = sum(p.devices for p in pools)
    busy_s = float(dur[busy_kind].sum())
    seq_s = float((steps["batch_seqs"].to_numpy() * dur)[busy_kind].sum())
    # hosts draw power except while their replica is switched off (autoscaling)
    off = kind == "off"
    pool_col = steps["pool"].to_numpy(zero_copy_only=False)
    off_device_s = {p.name: float(dur[off & (pool_col == p.name)].sum()) * p.devices_per_replica for p in pools} \
        if off.any() else {}
    host_j = sum(p.host_w_per_device * (p.devices * span - off_device_s.get(p.name, 0.0)) for p in pools)
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
        "availability": 1.0 - float(dur[kind == "down"].sum()) / (replicas * span),  # replicas up (not failed)
        "replicas_on_mean": replicas - float(dur[off].sum()) / span,  # not switched off (autoscaling)
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
        "facility_overhead_energy_j": facility_j - it_j,  # cooling and power delivery (PUE - 1)
        "carbon_g": _carbon(steps, f, host_j / span, t0, t1, tariff),  # hosts at their mean power
    }


def job_metrics(jobs: pa.Table, t0: float, t1: float, cost_usd: float, facility_j: float) -> dict:
    """Answer quality, latency and cost of the jobs that arrived in [t0, t1).

    Accuracy counts failed and timed-out jobs as wrong. Cost and energy per job and per
    right answer divide the fleet's cost and facility energy over the window (idle and
    host power included: what this fleet costs) by the jobs measured; the ``_attributed``
    figures sum the jobs' own shares (``cost_usd``, ``energy_j`` of the jobs table)."""
    arrival = jobs["arrival_s"].to_numpy()
    status = jobs["status"].to_numpy(zero_copy_only=False)
    win = (arrival >= t0) & (arrival < t1)
    fin = win & (status == "finished")
    correct = jobs["correct"].to_numpy(zero_copy_only=False)[win]
    n, right = int(win.sum()), int(correct.sum())
    latency = jobs["latency_s"].to_numpy()[fin]
    out = {
        "jobs_created": jobs.num_rows,
        "jobs_finished": int((status == "finished").sum()),
        "jobs_failed": int((status == "failed").sum()),
        "jobs_timed_out": int((status == "timed-out").sum()),
        "jobs_measured": n,
        "accuracy": right / n if n else math.nan,
        "expected_accuracy": _mean(jobs["expected_accuracy"].to_numpy()[win]),
        "jobs_per_s": int(fin.sum()) / (t1 - t0),
        "usd_per_1k_jobs": 1000 * cost_usd / n if n else math.nan,
        "usd_per_correct": cost_usd / right if right else math.nan,
        "energy_per_correct_j": facility_j / right if right else math.nan,
        # the jobs' own device time and energy, without idle capacity: the cost of a job on a
        # fleet sized to its load
        "usd_per_1k_jobs_attributed": 1000 * float(jobs["cost_usd"].to_numpy()[win].sum()) / n if n else math.nan,
        "device_energy_per_correct_j_attributed": float(jobs["energy_j"].to_numpy()[win].sum()) / right if right else math.nan,
        "job_output_tokens_mean": _mean(jobs["output_tokens"].to_numpy()[win]),
    }
    for q in (50, 90, 99):
        out[f"job_latency_p{q}_s"] = _pct(latency, q)
    return out


def jobs_by_strategy(jobs: pa.Table, t0: float, t1: float) -> list[dict]:
    """Per strategy (and width) of the jobs that arrived in [t0, t1): jobs, accuracy,
    expected accuracy, attributed cost per job and per right answer, energy per right
    answer, latency percentiles."""
    arrival = jobs["arrival_s"].to_numpy()
    win = (arrival >= t0) & (arrival < t1)
    t = jobs.filter(pa.array(win))
    strategy = t["strategy"].to_numpy(zero_copy_only=False)
    width = t["width"].to_numpy()
    rows = []
    for s, w in sorted(set(zip(strategy.tolist(), width.tolist()))):
        m = (strategy == s) & (width == w)
        right = t["correct"].to_numpy(zero_copy_only=False)[m]
        fin = m & (t["status"].to_numpy(zero_copy_only=False) == "finished")
        lat = t["latency_s"].to_numpy()[fin]
        cost = float(t["cost_usd"].to_numpy()[m].sum())
        energy = float(t["energy_j"].to_numpy()[m].sum())
        k = int(right.sum())
        rows.append({
            "strategy": s, "width": int(w), "jobs": int(m.sum()), "accuracy": float(right.mean()),
            "expected_accuracy": float(t["expected_accuracy"].to_numpy()[m].mean()),
            "usd_per_1k_jobs": 1000 * cost / int(m.sum()), "usd_per_correct": cost / k if k else math.nan,
            "device_energy_per_correct_j": energy / k if k else math.nan,
            "latency_p50_s": _pct(lat, 50), "latency_p90_s": _pct(lat, 90), "latency_p99_s": _pct(lat, 99),
        })
    return rows


def session_metrics(sessions: pa.Table, calls: pa.Table, t0: float, t1: float) -> dict:
    """Agent sessions that arrived in [t0, t1): counts, end-to-end time, per-turn TTFT (from
    their calls), KV held, recomputation, energy and cost per session."""
    arrival = sessions["arrival_s"].to_numpy()
    status = sessions["status"].to_numpy(zero_copy_only=False)
    win = (arrival >= t0) & (arrival < t1)
    fin = win & (status == "finished")
    col = lambda name, m=win: sessions[name].to_numpy()[m]
    e2e = col("e2e_s", fin)
    sid = calls["session_id"].to_numpy()
    measured = set(sessions["session_id"].to_numpy()[win].tolist())
    turn = np.isin(sid, list(measured)) & (calls["status"].to_numpy(zero_copy_only=False) == "finished")
    ttft = calls["first_token_s"].to_numpy()[turn] - calls["arrival_s"].to_numpy()[turn]
    n = int(win.sum())
    out = {
        "sessions_created": sessions.num_rows,
        "sessions_finished": int((status == "finished").sum()),
        "sessions_timed_out": int((status == "timed-out").sum()),
        "sessions_failed": int((status == "failed").sum()),
        "sessions_measured": n,
        "session_turns_mean": _mean(col("turns_done")),
        "session_e2e_p50_s": _pct(e2e, 50),
        "session_e2e_p90_s": _pct(e2e, 90),
        "turn_ttft_p50_s": _pct(ttft, 50),
        "turn_ttft_p90_s": _pct(ttft, 90),
        "turn_ttft_p99_s": _pct(ttft, 99),
        "session_kv_device_gib_s_mean": _mean(col("kv_device_gib_s")),
        "session_kv_pinned_gib_s_mean": _mean(col("kv_pinned_gib_s")),
        "session_kv_host_gib_s_mean": _mean(col("kv_host_gib_s")),
        "session_recomputed_tokens_mean": _mean(col("recomputed_tokens")),
        "session_cached_share": float(col("cached_tokens").sum() / max(1, col("prompt_tokens").sum())),
        "session_energy_j_mean": _mean(col("energy_j")),
        "session_cost_usd_mean": _mean(col("cost_usd")),
    }
    return out


def video_metrics(videos: pa.Table, t0: float, t1: float) -> dict:
    """Image / video requests that arrived in [t0, t1), per class (``video_<class>_...``):
    counts, latency, batch, energy and cost per request (attributed shares of their batches)."""
    arrival = videos["arrival_s"].to_numpy()
    status = videos["status"].to_numpy(zero_copy_only=False)
    cls = videos["class"].to_numpy(zero_copy_only=False)
    win = (arrival >= t0) & (arrival < t1)
    out = {"videos_created": videos.num_rows, "videos_finished": int((status == "finished").sum()),
           "videos_measured": int(win.sum())}
    for name in sorted(set(cls.tolist())):
        fin = win & (status == "finished") & (cls == name)
        lat = videos["latency_s"].to_numpy()[fin]
        p = f"video_{name}_"
        out.update({
            p + "per_s": int(fin.sum()) / (t1 - t0),
            p + "latency_p50_s": _pct(lat, 50),
            p + "latency_p90_s": _pct(lat, 90),
            p + "latency_p99_s": _pct(lat, 99),
            p + "batch_mean": _mean(videos["batch"].to_numpy()[fin]),
            p + "energy_j_mean": _mean(videos["energy_j"].to_numpy()[fin]),
            p + "cost_usd_mean": _mean(videos["cost_usd"].to_numpy()[fin]),
        })
    return out
