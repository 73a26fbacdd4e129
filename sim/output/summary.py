"""Headline metrics of one run, computed from its Parquet tables.

The summary reads the same calls and steps tables a notebook would, so what
the CLI prints and what analysis code computes from the traces agree. Latency
metrics cover calls that arrived in the measurement window ``[warmup_s,
duration_s)``; throughput, utilization, energy and cost cover the steps inside
that window (rows crossing an edge count pro rata).

The calls, steps and jobs tables can be given as open Parquet files
(``pyarrow.parquet.ParquetFile``): they are then read one row group at a time, only the
columns needed, so the summary's memory does not grow with run length beyond a few
numbers per measured call (latency percentiles need every value). Sums then add the
row groups' sums (equal to a whole-table sum to float rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sim.output.arrow import mask, to_numpy


def _parts(table, columns: list[str]):
    """A table's parts: the table itself, or each row group of an open Parquet file (with only
    ``columns``)."""
    if isinstance(table, pq.ParquetFile):
        for i in range(table.num_row_groups):
            yield table.read_row_group(i, columns=columns)
    else:
        yield table


def _cat(arrays: list) -> np.ndarray:
    if not arrays:
        return np.empty(0)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else math.nan


def _calls_only(part: pa.Table):
    """(the part without prefill-only rows, its statuses, prefill-only rows dropped): with
    disaggregation a call has a prefill-only row beside its own row."""
    status = to_numpy(part["status"])
    prefilled = status == "prefilled"
    if not prefilled.any():
        return part, status, 0
    return part.filter(mask(~prefilled)), status[~prefilled], int(prefilled.sum())


CALL_COLUMNS = ["status", "arrival_s", "first_token_s", "finish_s", "admitted_s", "generated_tokens", "prompt_tokens",
                "cached_tokens", "kv_transfer_s"]
STATUSES = ("finished", "dropped", "timed-out", "failed", "cancelled")


def latency_metrics(calls, t0: float, t1: float) -> dict:
    """Counts and latency percentiles of the calls that arrived in [t0, t1) (``calls``: a table
    or an open Parquet file)."""
    counts = dict.fromkeys(STATUSES, 0)
    rows = measured = prefilled_rows = 0
    prompt_sum = cached_sum = finished_tokens = np.int64(0)
    kept = {"ttft": [], "tpot": [], "e2e": [], "wait": [], "moved": []}
    unmoved = 0  # leading parts whose KV transfer times were not kept (no prefill row seen yet)
    for part in _parts(calls, CALL_COLUMNS):
        part, status, had = _calls_only(part)
        prefilled_rows += had
        arrival = to_numpy(part["arrival_s"])
        rows += part.num_rows
        for s in STATUSES:
            counts[s] += int((status == s).sum())
        win = (arrival >= t0) & (arrival < t1)
        fin = win & (status == "finished")
        measured += int(win.sum())
        a = arrival[fin]
        first = to_numpy(part["first_token_s"])[fin]
        finish = to_numpy(part["finish_s"])[fin]
        admitted = to_numpy(part["admitted_s"])[fin]
        gen = to_numpy(part["generated_tokens"])[fin]
        finished_tokens += gen.sum()
        kept["ttft"].append(first - a)
        kept["e2e"].append(finish - a)
        kept["wait"].append(admitted - a)
        multi = gen > 1
        kept["tpot"].append((finish[multi] - first[multi]) / (gen[multi] - 1))
        if prefilled_rows:  # (kept once a run is known to disaggregate: only then reported)
            kept["moved"].append(to_numpy(part["kv_transfer_s"])[fin])
        else:
            unmoved += 1
        prompt_sum += to_numpy(part["prompt_tokens"])[win].sum()
        cached_sum += to_numpy(part["cached_tokens"])[win].sum()
    out = {
        "calls_created": rows,
        "calls_finished": counts["finished"],
        "calls_dropped": counts["dropped"],
        "calls_timed_out": counts["timed-out"],
        "calls_failed": counts["failed"],
        "calls_cancelled": counts["cancelled"],
        "calls_measured": measured,
    }
    out["completed_per_s"] = sum(len(x) for x in kept["ttft"]) / (t1 - t0)
    # useful throughput: only calls that finished (output_tokens_per_s counts every generated token)
    out["finished_output_tokens_per_s"] = float(finished_tokens) / (t1 - t0)
    for name in ("ttft", "tpot", "e2e"):
        x = _cat(kept.pop(name))  # one metric's values at a time: its parts are let go
        out[f"{name}_mean_s"] = _mean(x)
        for q in (50, 90, 99):
            out[f"{name}_p{q}_s"] = _pct(x, q)
    wait = _cat(kept.pop("wait"))
    out["wait_mean_s"] = _mean(wait)
    out["wait_p99_s"] = _pct(wait, 99)
    if prefilled_rows:
        if unmoved:  # the first prefill row came after some parts: read their transfer times now
            head = []
            for part in _parts(calls, CALL_COLUMNS):
                if len(head) == unmoved:
                    break
                part, status, _ = _calls_only(part)
                arrival = to_numpy(part["arrival_s"])
                fin = (arrival >= t0) & (arrival < t1) & (status == "finished")
                head.append(to_numpy(part["kv_transfer_s"])[fin])
            kept["moved"] = head + kept["moved"]
        moved = _cat(kept["moved"])
        out["calls_prefilled"] = prefilled_rows
        out["kv_transfer_mean_s"] = _mean(moved)
        out["kv_transfer_p99_s"] = _pct(moved, 99)
    out["prompt_cached_share"] = float(cached_sum / prompt_sum) if prompt_sum else 0.0
    return out


def overlap(steps: pa.Table, t0: float, t1: float) -> np.ndarray:
    """Fraction of each step row that lies inside [t0, t1]."""
    s = to_numpy(steps["start_s"])
    e = to_numpy(steps["end_s"])
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


def _device_carbon(steps: pa.Table, device_j: np.ndarray, t0: float, t1: float, tariff) -> float:
    """Grams of CO2 of step rows' device energies ``device_j`` (in the window), each at the
    intensity of its midpoint (0 without an intensity schedule: see :func:`_carbon`)."""
    if tariff.schedule is None:
        return 0.0
    start, end = to_numpy(steps["start_s"]), to_numpy(steps["end_s"])
    mid = (np.maximum(start, t0) + np.minimum(end, t1)) / 2
    return tariff.carbon_g_over(tariff.facility_j(device_j), mid)


def _carbon(device_carbon: float, device_j: float, host_w: float, t0: float, t1: float, tariff) -> float:
    """Grams of CO2 of the window: each step row's facility energy at the intensity of its
    midpoint (``device_carbon``; ``device_j`` in all at a constant intensity), and the hosts'
    constant power over the intensity schedule's pieces."""
    s = tariff.schedule
    if s is None:
        return tariff.carbon_g(tariff.facility_j(device_j + host_w * (t1 - t0)))
    edges = np.array(sorted({t0, t1, *_changes(s, t0, t1)}))
    pieces = np.diff(edges)
    return device_carbon + tariff.carbon_g_over(tariff.facility_j(host_w * pieces), (edges[:-1] + edges[1:]) / 2)


STEP_COLUMNS = ["pool", "kind", "start_s", "end_s", "output_tokens", "prefill_tokens", "energy_j", "batch_seqs"]


def resource_metrics(steps, t0: float, t1: float, pools: list, tariff) -> dict:
    """Throughput, utilization, energy, cost and carbon over [t0, t1] (``steps``: a table or
    an open Parquet file).

    ``pools`` are resolved pool specs (devices, tp, price, host power)."""
    span = t1 - t0
    pools = [p for p in pools if not getattr(p, "shares_devices", False)]  # devices counted once
    replicas = sum(p.replicas for p in pools)
    devices = sum(p.devices for p in pools)
    out_tok = prefill_tok = device_j = busy_s = seq_s = down_s = off_s = device_carbon = 0.0
    off_device_s: dict = {}
    for part in _parts(steps, STEP_COLUMNS):
        f = overlap(part, t0, t1)
        kind = to_numpy(part["kind"])
        busy_kind = ~np.isin(kind, ("idle", "down", "off", "booting"))
        dur = (to_numpy(part["end_s"]) - to_numpy(part["start_s"])) * f
        out_tok += float((to_numpy(part["output_tokens"]) * f).sum())
        prefill_tok += float((to_numpy(part["prefill_tokens"]) * f).sum())
        part_j = to_numpy(part["energy_j"]) * f
        device_j += float(part_j.sum())
        device_carbon += _device_carbon(part, part_j, t0, t1, tariff)
        busy_s += float(dur[busy_kind].sum())
        seq_s += float((to_numpy(part["batch_seqs"]) * dur)[busy_kind].sum())
        down_s += float(dur[kind == "down"].sum())
        # hosts draw power except while their replica is switched off (autoscaling)
        off = kind == "off"
        off_s += float(dur[off].sum())
        if off.any():
            pool_col = to_numpy(part["pool"])
            for p in pools:
                off_device_s[p.name] = off_device_s.get(p.name, 0.0) \
                    + float(dur[off & (pool_col == p.name)].sum()) * p.devices_per_replica
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
        "availability": 1.0 - down_s / (replicas * span),  # replicas up (not failed)
        "replicas_on_mean": replicas - off_s / span,  # not switched off (autoscaling)
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
        "carbon_g": _carbon(device_carbon, device_j, host_j / span, t0, t1, tariff),  # hosts at their mean power
    }


def finished_token_metrics(summary: dict, t0: float, t1: float) -> dict:
    """Energy and cost per output token of a *finished* call (``finished_output_tokens_per_s``),
    next to the per-generated-token ones of :func:`resource_metrics`: under faults, timeouts
    or cancellations the tokens of lost attempts still cost energy and device time, and these
    charge them to the tokens that were delivered."""
    tokens = summary["finished_output_tokens_per_s"] * (t1 - t0)
    per = lambda x: x / tokens if tokens > 0 else math.nan
    return {"energy_per_finished_output_token_j": per(summary["facility_energy_j"]),
            "usd_per_million_finished_output_tokens": per(summary["cost_usd"]) * 1e6}


JOB_COLUMNS = ["arrival_s", "status", "correct", "latency_s", "expected_accuracy", "cost_usd", "energy_j", "output_tokens"]


def job_metrics(jobs, t0: float, t1: float, cost_usd: float, facility_j: float) -> dict:
    """Answer quality, latency and cost of the jobs that arrived in [t0, t1).

    Accuracy counts failed and timed-out jobs as wrong. Cost and energy per job and per
    right answer divide the fleet's cost and facility energy over the window (idle and
    host power included: what this fleet costs) by the jobs measured; the ``_attributed``
    figures sum the jobs' own shares (``cost_usd``, ``energy_j`` of the jobs table).
    ``jobs``: a table or an open Parquet file."""
    rows = n = right = finished_measured = 0
    counts = dict.fromkeys(("finished", "failed", "timed-out"), 0)
    latency, expected, output = [], [], []
    cost_attr = energy_attr = 0.0
    for part in _parts(jobs, JOB_COLUMNS):
        arrival = to_numpy(part["arrival_s"])
        status = to_numpy(part["status"])
        rows += part.num_rows
        for s in counts:
            counts[s] += int((status == s).sum())
        win = (arrival >= t0) & (arrival < t1)
        fin = win & (status == "finished")
        correct = to_numpy(part["correct"])[win]
        n, right, finished_measured = n + int(win.sum()), right + int(correct.sum()), finished_measured + int(fin.sum())
        latency.append(to_numpy(part["latency_s"])[fin])
        expected.append(to_numpy(part["expected_accuracy"])[win])
        output.append(to_numpy(part["output_tokens"])[win])
        cost_attr += float(to_numpy(part["cost_usd"])[win].sum())
        energy_attr += float(to_numpy(part["energy_j"])[win].sum())
    latency = _cat(latency)
    out = {
        "jobs_created": rows,
        "jobs_finished": counts["finished"],
        "jobs_failed": counts["failed"],
        "jobs_timed_out": counts["timed-out"],
        "jobs_measured": n,
        "accuracy": right / n if n else math.nan,
        "expected_accuracy": _mean(_cat(expected)),
        "jobs_per_s": finished_measured / (t1 - t0),
        "usd_per_1k_jobs": 1000 * cost_usd / n if n else math.nan,
        "usd_per_correct": cost_usd / right if right else math.nan,
        "energy_per_correct_j": facility_j / right if right else math.nan,
        # the jobs' own device time and energy, without idle capacity: the cost of a job on a
        # fleet sized to its load
        "usd_per_1k_jobs_attributed": 1000 * cost_attr / n if n else math.nan,
        "device_energy_per_correct_j_attributed": energy_attr / right if right else math.nan,
        "job_output_tokens_mean": _mean(_cat(output)),
    }
    for q in (50, 90, 99):
        out[f"job_latency_p{q}_s"] = _pct(latency, q)
    return out


def jobs_by_strategy(jobs: pa.Table, t0: float, t1: float) -> list[dict]:
    """Per strategy (and width) of the jobs that arrived in [t0, t1): jobs, accuracy,
    expected accuracy, attributed cost per job and per right answer, energy per right
    answer, latency percentiles."""
    arrival = to_numpy(jobs["arrival_s"])
    win = (arrival >= t0) & (arrival < t1)
    t = jobs.filter(mask(win))
    strategy = to_numpy(t["strategy"])
    width = to_numpy(t["width"])
    rows = []
    for s, w in sorted(set(zip(strategy.tolist(), width.tolist()))):
        m = (strategy == s) & (width == w)
        right = to_numpy(t["correct"])[m]
        fin = m & (to_numpy(t["status"]) == "finished")
        lat = to_numpy(t["latency_s"])[fin]
        cost = float(to_numpy(t["cost_usd"])[m].sum())
        energy = float(to_numpy(t["energy_j"])[m].sum())
        k = int(right.sum())
        rows.append({
            "strategy": s, "width": int(w), "jobs": int(m.sum()), "accuracy": float(right.mean()),
            "expected_accuracy": float(to_numpy(t["expected_accuracy"])[m].mean()),
            "usd_per_1k_jobs": 1000 * cost / int(m.sum()), "usd_per_correct": cost / k if k else math.nan,
            "device_energy_per_correct_j": energy / k if k else math.nan,
            "latency_p50_s": _pct(lat, 50), "latency_p90_s": _pct(lat, 90), "latency_p99_s": _pct(lat, 99),
        })
    return rows


def session_metrics(sessions: pa.Table, calls, t0: float, t1: float) -> dict:
    """Agent sessions that arrived in [t0, t1): counts, end-to-end time, per-turn TTFT (from
    their calls, a table or an open Parquet file), KV held, recomputation, energy and cost per
    session."""
    arrival = to_numpy(sessions["arrival_s"])
    status = to_numpy(sessions["status"])
    win = (arrival >= t0) & (arrival < t1)
    fin = win & (status == "finished")
    col = lambda name, m=win: to_numpy(sessions[name])[m]
    e2e = col("e2e_s", fin)
    measured = list(set(to_numpy(sessions["session_id"])[win].tolist()))
    ttft = []
    for part in _parts(calls, ["session_id", "status", "first_token_s", "arrival_s"]):
        turn = np.isin(to_numpy(part["session_id"]), measured) \
            & (to_numpy(part["status"]) == "finished")
        ttft.append(to_numpy(part["first_token_s"])[turn] - to_numpy(part["arrival_s"])[turn])
    ttft = _cat(ttft)
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
    arrival = to_numpy(videos["arrival_s"])
    status = to_numpy(videos["status"])
    cls = to_numpy(videos["class"])
    win = (arrival >= t0) & (arrival < t1)
    out = {"videos_created": videos.num_rows, "videos_finished": int((status == "finished").sum()),
           "videos_measured": int(win.sum())}
    for name in sorted(set(cls.tolist())):
        fin = win & (status == "finished") & (cls == name)
        lat = to_numpy(videos["latency_s"])[fin]
        p = f"video_{name}_"
        out.update({
            p + "per_s": int(fin.sum()) / (t1 - t0),
            p + "latency_p50_s": _pct(lat, 50),
            p + "latency_p90_s": _pct(lat, 90),
            p + "latency_p99_s": _pct(lat, 99),
            p + "batch_mean": _mean(to_numpy(videos["batch"])[fin]),
            p + "energy_j_mean": _mean(to_numpy(videos["energy_j"])[fin]),
            p + "cost_usd_mean": _mean(to_numpy(videos["cost_usd"])[fin]),
        })
    return out
