"""Tidy per-point, per-class metrics of a run or sweep, from its Parquet tables only.

Every function takes the output folder ``out`` of ``dcsim run`` / ``dcsim sweep`` (a local
path or an object-store URI) and reads the tables with pyarrow. Unless a docstring says
otherwise a function returns a **pyarrow Table** in long ("tidy") form: one row per point
(``point_id``) or per point and workload class (``point_id``, ``class``), where the class
``"(all)"`` aggregates every class of the point. Convert with ``.to_pylist()``,
``.to_pandas()`` or ``polars.from_arrow``.

Metrics cover the measurement window of each point, ``[warmup_s, duration_s)``, read from
``summary.parquet``, with the same conventions as :mod:`sim.output.summary` (what ``dcsim`` prints):
latency and goodput over the calls that *arrived* in the window; throughput, utilization
and power over the engine steps inside it (rows crossing an edge count pro rata).

The lower-level helpers (:func:`queue_length`, :func:`littles_law`, :func:`waiting_times`,
:func:`step_timeline`) take Arrow tables of one point, so they also work on hand-built traces.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from sim.output import storage
from sim.output.summary import jobs_by_strategy

__all__ = [
    "ALL", "points", "swept_parameters", "windows", "scenario", "class_slos", "read", "read_calls", "latency",
    "goodput", "throughput", "utilization", "step_timeline", "waiting_times", "wait_distribution",
    "queue_length", "littles_law", "littles_law_table", "energy_per_token", "class_energy", "per_job",
    "per_session", "jobs_by_strategy_table",
]

ALL = "(all)"  # the class label of rows that aggregate every class
NOT_SWEPT = ("point_id", "run", "seed", "status", "error", "node_id", "wall_s")
PCTS = (50, 90, 99)


# --------------------------------------------------------------------------- reading
def _pq(out: str, name: str) -> pa.Table:
    fs, base = storage.open_output(out)
    return pq.read_table(storage.join(base, name), filesystem=fs)


def points(out: str) -> list[dict]:
    """Rows of ``points.parquet`` (point_id, swept parameters, run, seed, status, ...), a list of dicts."""
    return _pq(out, "points.parquet").to_pylist()


def swept_parameters(out: str) -> list[str]:
    """Names of the swept parameters (the columns of ``points.parquet`` that are not bookkeeping)."""
    return [c for c in _pq(out, "points.parquet").column_names if c not in NOT_SWEPT]


def windows(out: str) -> dict[str, tuple[float, float]]:
    """``{point_id: (warmup_s, duration_s)}``: the measurement window of every summarised point."""
    s = _pq(out, "summary.parquet")
    return {p: (float(a), float(b)) for p, a, b in zip(s["point_id"].to_pylist(), s["warmup_s"].to_pylist(),
                                                        s["duration_s"].to_pylist())}


def scenario(out: str, point_id: str) -> dict:
    """The resolved scenario of one point (``<out>/<point_id>/scenario.yaml``) as a dict."""
    fs, base = storage.open_output(out)
    return yaml.safe_load(storage.read_text(fs, storage.join(base, point_id, "scenario.yaml")))


def class_slos(out: str, point_id: str) -> dict[str, dict]:
    """``{class: {"ttft_s": .., "tpot_s": .., "e2e_s": ..}}`` from the point's scenario (None: no target)."""
    sc = scenario(out, point_id)
    slos = {}
    for c in (sc.get("workload") or {}).get("classes") or []:
        slo = c.get("slo") or {}
        slos[c["name"]] = {k: slo.get(k) for k in ("ttft_s", "tpot_s", "e2e_s")}
    return slos


def read(out: str, table: str) -> pa.Table | None:
    """One table of every committed point (with ``point_id``), or None where the run has none."""
    try:
        return storage.read_table(out, table)
    except (FileNotFoundError, OSError):
        return None


def read_calls(out: str) -> pa.Table | None:
    """The calls table with one row per call, as the summary counts them: with disaggregation
    the prefill half of a call (status ``prefilled``) is dropped, its own row kept."""
    t = read(out, "calls")
    return t.filter(pc.not_equal(t["status"], "prefilled")) if t is not None else None


def _by_point(t: pa.Table | None, ids) -> Iterator[tuple[str, pa.Table]]:
    """``(point_id, rows of that point)`` for each id in ``ids`` (empty tables included)."""
    for pid in ids:
        yield pid, t.filter(pc.equal(t["point_id"], pid)) if t is not None else None


def _np(t: pa.Table, col: str) -> np.ndarray:
    return t[col].to_numpy(zero_copy_only=False) if t.num_rows else np.array([])


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else math.nan


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _classes(calls: pa.Table) -> list[str]:
    return sorted(set(calls["class"].to_pylist())) if calls.num_rows else []


def _class_masks(calls: pa.Table) -> list[tuple[str, np.ndarray]]:
    """``(class, row mask)`` for every class, then ``(ALL, all rows)``."""
    cls = _np(calls, "class")
    return [(c, cls == c) for c in _classes(calls)] + [(ALL, np.ones(calls.num_rows, bool))]


# --------------------------------------------------------------------------- latency
def call_latencies(calls: pa.Table) -> dict[str, np.ndarray]:
    """Per call of ``calls`` (any rows): ``ttft``, ``tpot``, ``e2e`` and ``wait`` in seconds
    (NaN where undefined: unfinished calls; ``tpot`` also for calls of one token)."""
    a, first, fin = _np(calls, "arrival_s"), _np(calls, "first_token_s"), _np(calls, "finish_s")
    gen = _np(calls, "generated_tokens").astype(float)
    done = _np(calls, "status") == "finished"
    nan = np.full(len(a), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(done & (gen > 1), (fin - first) / (gen - 1), nan)
    return {"ttft": np.where(done, first - a, nan), "tpot": tpot, "e2e": np.where(done, fin - a, nan),
            "wait": np.where(done, _np(calls, "admitted_s") - a, nan)}


def _latency_rows(calls: pa.Table, t0: float, t1: float) -> list[dict]:
    a = _np(calls, "arrival_s")
    win = (a >= t0) & (a < t1)
    done = _np(calls, "status") == "finished"
    lat = call_latencies(calls)
    gen = _np(calls, "generated_tokens")
    rows = []
    for c, m in _class_masks(calls):
        m = m & win
        f = m & done
        row = {"class": c, "calls_measured": int(m.sum()), "calls_finished": int(f.sum()),
               "completed_per_s": int(f.sum()) / (t1 - t0),
               "output_tokens_per_s": float(gen[f].sum()) / (t1 - t0)}
        for name in ("ttft", "tpot", "e2e"):
            x = lat[name][f]
            x = x[~np.isnan(x)]
            row[f"{name}_mean_s"] = _mean(x)
            for q in PCTS:
                row[f"{name}_p{q}_s"] = _pct(x, q)
        rows.append(row)
    return rows


def latency(out: str) -> pa.Table:
    """Per point and class: calls measured / finished, completed calls per second, output
    tokens per second of the finished calls (``generated_tokens``, credited to the call's
    class; the fleet figure from engine steps is :func:`throughput`), and mean / p50 / p90 /
    p99 of TTFT, time per output token (``tpot``, calls of more than one token) and end-to-end
    latency (``e2e``) of finished calls, all over calls arriving in the window."""
    win = windows(out)
    rows = []
    for pid, calls in _by_point(read_calls(out), win):
        rows += [{"point_id": pid, **r} for r in _latency_rows(calls, *win[pid])]
    return pa.Table.from_pylist(rows)


# --------------------------------------------------------------------------- goodput
def slo_met(calls: pa.Table, slos: dict[str, dict]) -> np.ndarray:
    """Boolean per call: finished and within every target its class sets in ``slos`` (a class
    without targets, or missing from ``slos``, counts every finished call; the TPOT target is
    not checked for calls of one token)."""
    lat = call_latencies(calls)
    cls = _np(calls, "class")
    ok = _np(calls, "status") == "finished"
    for c, slo in slos.items():
        m = cls == c
        for key, name in (("ttft_s", "ttft"), ("tpot_s", "tpot"), ("e2e_s", "e2e")):
            if slo.get(key) is not None:
                x = lat[name]
                bad = m & ~np.isnan(x) & (x > slo[key]) if name == "tpot" else m & ~(x <= slo[key])
                ok &= ~bad
    return ok


def goodput(out: str) -> pa.Table:
    """Per point and class, over calls arriving in the window: the class's SLO targets
    (``slo_ttft_s``, ``slo_tpot_s``, ``slo_e2e_s``; null when not set), calls measured,
    finished and meeting the SLO, ``slo_attainment`` (SLO-meeting share of the measured calls;
    dropped, failed and unfinished calls count as misses) and ``goodput_per_s`` (SLO-meeting
    finished calls per second). Targets come from each point's ``scenario.yaml``."""
    win = windows(out)
    rows = []
    for pid, calls in _by_point(read_calls(out), win):
        t0, t1 = win[pid]
        slos = class_slos(out, pid)
        a = _np(calls, "arrival_s")
        inwin = (a >= t0) & (a < t1)
        met = slo_met(calls, slos)
        done = _np(calls, "status") == "finished"
        for c, m in _class_masks(calls):
            m = m & inwin
            n, good = int(m.sum()), int((m & met).sum())
            slo = slos.get(c, {}) if c != ALL else {}
            rows.append({"point_id": pid, "class": c, "slo_ttft_s": slo.get("ttft_s"), "slo_tpot_s": slo.get("tpot_s"),
                         "slo_e2e_s": slo.get("e2e_s"), "calls_measured": n, "calls_finished": int((m & done).sum()),
                         "calls_slo_met": good, "slo_attainment": good / n if n else math.nan,
                         "goodput_per_s": good / (t1 - t0)})
    schema = pa.schema([("point_id", pa.string()), ("class", pa.string()), ("slo_ttft_s", pa.float64()),
                        ("slo_tpot_s", pa.float64()), ("slo_e2e_s", pa.float64()), ("calls_measured", pa.int64()),
                        ("calls_finished", pa.int64()), ("calls_slo_met", pa.int64()), ("slo_attainment", pa.float64()),
                        ("goodput_per_s", pa.float64())])
    return pa.Table.from_pylist(rows, schema=schema)


# --------------------------------------------------------------------------- steps: throughput, utilization
def _overlap(steps: pa.Table, t0: float, t1: float) -> np.ndarray:
    """Fraction of each step row inside [t0, t1] (as :mod:`sim.output.summary` counts it)."""
    s, e = _np(steps, "start_s"), _np(steps, "end_s")
    dur = e - s
    inside = np.clip(np.minimum(e, t1) - np.maximum(s, t0), 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dur > 0, inside / dur, 0.0)


def throughput(out: str) -> pa.Table:
    """Per point: ``completed_per_s`` (finished calls that arrived in the window, per second),
    ``output_tokens_per_s`` and ``prompt_tokens_per_s`` (tokens the engines produced and
    prefilled inside the window, from the steps table, pro rata at the edges)."""
    win = windows(out)
    calls, steps = read(out, "calls"), read(out, "steps")
    rows = []
    for (pid, c), (_, s) in zip(_by_point(calls, win), _by_point(steps, win)):
        t0, t1 = win[pid]
        a = _np(c, "arrival_s")
        fin = (a >= t0) & (a < t1) & (_np(c, "status") == "finished")
        f = _overlap(s, t0, t1) if s is not None else np.array([])
        tok = lambda col: float((_np(s, col) * f).sum()) / (t1 - t0) if s is not None and s.num_rows else 0.0
        rows.append({"point_id": pid, "completed_per_s": int(fin.sum()) / (t1 - t0),
                     "output_tokens_per_s": tok("output_tokens"), "prompt_tokens_per_s": tok("prefill_tokens")})
    return pa.Table.from_pylist(rows)


def utilization(out: str) -> pa.Table:
    """Per point and pool over the window, from the steps table: ``replicas`` (distinct
    replicas with steps), ``utilization`` (busy, i.e. non-idle, replica-seconds over replicas x
    window), ``mean_batch_seqs`` (running sequences averaged over busy time) and
    ``avg_replica_power_w`` (device energy of a replica over the window; all its devices)."""
    win = windows(out)
    rows = []
    for pid, s in _by_point(read(out, "steps"), win):
        t0, t1 = win[pid]
        if s is None or not s.num_rows:
            continue
        f = _overlap(s, t0, t1)
        dur = (_np(s, "end_s") - _np(s, "start_s")) * f
        busy = _np(s, "kind") != "idle"
        pool, rep = _np(s, "pool"), _np(s, "replica")
        for p in sorted(set(pool.tolist())):
            m = pool == p
            n = len(set(rep[m].tolist()))
            busy_s = float(dur[m & busy].sum())
            rows.append({"point_id": pid, "pool": p, "replicas": n, "utilization": busy_s / (n * (t1 - t0)),
                         "mean_batch_seqs": float((_np(s, "batch_seqs") * dur)[m & busy].sum()) / busy_s if busy_s else 0.0,
                         "avg_replica_power_w": float((_np(s, "energy_j") * f)[m].sum()) / (n * (t1 - t0))})
    return pa.Table.from_pylist(rows)


def step_timeline(steps: pa.Table, bin_s: float, t0: float = 0.0, t1: float | None = None) -> pa.Table:
    """Busy fraction and average power per pool in time bins of ``bin_s`` seconds, from the
    steps of one point: columns ``pool``, ``t_s`` (bin start), ``busy_fraction`` (busy
    replica-seconds over replicas x bin) and ``avg_replica_power_w`` (energy over replicas x bin)."""
    s, e = _np(steps, "start_s"), _np(steps, "end_s")
    if t1 is None:
        t1 = float(e.max()) if len(e) else t0 + bin_s
    edges = np.arange(t0, t1 + bin_s, bin_s)
    dur = e - s
    busy = _np(steps, "kind") != "idle"
    energy = _np(steps, "energy_j")
    pool, rep = _np(steps, "pool"), _np(steps, "replica")
    rows = []
    for p in sorted(set(pool.tolist())):
        m = pool == p
        n = len(set(rep[m].tolist()))
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = np.clip(np.minimum(e[m], hi) - np.maximum(s[m], lo), 0.0, None)
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = np.where(dur[m] > 0, inside / dur[m], 0.0)
            rows.append({"pool": p, "t_s": float(lo), "busy_fraction": float(inside[busy[m]].sum()) / (n * (hi - lo)),
                         "avg_replica_power_w": float((energy[m] * frac).sum()) / (n * (hi - lo))})
    return pa.Table.from_pylist(rows)


# --------------------------------------------------------------------------- queueing
def waiting_times(calls: pa.Table) -> np.ndarray:
    """``admitted_s - arrival_s`` of every call that was admitted (seconds, row order)."""
    w = _np(calls, "admitted_s") - _np(calls, "arrival_s")
    return w[~np.isnan(w)]


def wait_distribution(out: str) -> pa.Table:
    """Per point and class: waiting time (arrival to admission) of the admitted calls that
    arrived in the window: count, mean, p50, p90, p99 and max."""
    win = windows(out)
    rows = []
    for pid, calls in _by_point(read_calls(out), win):
        t0, t1 = win[pid]
        a = _np(calls, "arrival_s")
        w = _np(calls, "admitted_s") - a
        ok = (a >= t0) & (a < t1) & ~np.isnan(w)
        for c, m in _class_masks(calls):
            x = w[m & ok]
            rows.append({"point_id": pid, "class": c, "calls": len(x), "wait_mean_s": _mean(x),
                         **{f"wait_p{q}_s": _pct(x, q) for q in PCTS},
                         "wait_max_s": float(x.max()) if len(x) else math.nan})
    return pa.Table.from_pylist(rows)


def _count_process(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step function counting intervals [start, stop): event times and the count just after each."""
    t = np.concatenate([start, stop])
    d = np.concatenate([np.ones(len(start), np.int64), -np.ones(len(stop), np.int64)])
    keep = np.isfinite(t)
    t, d = t[keep], d[keep]
    order = np.argsort(t, kind="stable")
    t, d = t[order], d[order]
    times, idx = np.unique(t, return_index=True)
    counts = np.cumsum(np.add.reduceat(d, idx)) if len(t) else np.array([], np.int64)
    return times, counts


def queue_length(calls: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Number of calls waiting (arrived, not yet admitted) over time, from the calls of one
    point: ``(times, lengths)``, where ``lengths[i]`` holds from ``times[i]`` until the next
    time. A call leaves the queue when admitted; one never admitted (dropped, timed out) when
    it ended (``finish_s``), or never if that is missing too."""
    a, adm, fin = _np(calls, "arrival_s"), _np(calls, "admitted_s"), _np(calls, "finish_s")
    leave = np.where(np.isnan(adm), fin, adm)
    return _count_process(a, leave)


def _time_average(times: np.ndarray, counts: np.ndarray, t0: float, t1: float) -> float:
    """Time average of a right-continuous step function over [t0, t1] (0 before the first time)."""
    if not len(times):
        return 0.0
    edges = np.clip(np.append(times, t1), t0, t1)
    return float((counts * np.diff(edges)).sum()) / (t1 - t0)


def littles_law(calls: pa.Table, t0: float, t1: float) -> dict:
    """Little's law L = lambda W for the calls of one point over the window [t0, t1).

    ``L`` is the time average over the window of the number of calls in the system (arrived,
    not yet ended: ``finish_s``, or still in it when that is missing); ``lambda`` the arrivals
    per second in the window; ``W`` the mean time in system (``finish_s - arrival_s``) of the
    calls that arrived in it. Returns a dict with ``L``, ``lambda_per_s``, ``W_s``,
    ``lambda_W`` and ``rel_error = |L - lambda W| / L``. The two sides differ only by the
    calls crossing the window's edges, so they agree closely over a long window."""
    a, fin = _np(calls, "arrival_s"), _np(calls, "finish_s")
    times, n = _count_process(a, fin)
    big_l = _time_average(times, n, t0, t1)
    win = (a >= t0) & (a < t1)
    lam = int(win.sum()) / (t1 - t0)
    w = _mean(fin[win] - a[win])
    lw = lam * w
    return {"L": big_l, "lambda_per_s": lam, "W_s": w, "lambda_W": lw,
            "rel_error": abs(big_l - lw) / big_l if big_l > 0 else math.nan}


def littles_law_table(out: str) -> pa.Table:
    """:func:`littles_law` of every point (columns ``point_id``, ``L``, ``lambda_per_s``, ``W_s``,
    ``lambda_W``, ``rel_error``) over its window."""
    win = windows(out)
    return pa.Table.from_pylist([{"point_id": pid, **littles_law(calls, *win[pid])}
                                 for pid, calls in _by_point(read_calls(out), win)])


# --------------------------------------------------------------------------- energy, cost, carbon
def energy_per_token(out: str) -> pa.Table:
    """Per point, the fleet's energy, cost and carbon per output token over the window (from
    ``summary.parquet``, i.e. :func:`sim.output.summary.resource_metrics`: device plus host power,
    PUE, device rental and energy price, idle capacity included): ``output_tokens``,
    ``energy_per_output_token_j`` (facility), ``device_energy_per_output_token_j``,
    ``usd_per_output_token``, ``usd_per_million_output_tokens``, ``carbon_g_per_output_token``."""
    rows = []
    for s in _pq(out, "summary.parquet").to_pylist():
        tok = s["output_tokens_per_s"] * (s["duration_s"] - s["warmup_s"])
        per = (lambda x: x / tok) if tok > 0 else (lambda x: math.nan)
        rows.append({"point_id": s["point_id"], "output_tokens": tok,
                     "energy_per_output_token_j": s["energy_per_output_token_j"],
                     "device_energy_per_output_token_j": s["device_energy_per_output_token_j"],
                     "usd_per_output_token": per(s["cost_usd"]),
                     "usd_per_million_output_tokens": s["usd_per_million_output_tokens"],
                     "carbon_g_per_output_token": per(s["carbon_g"])})
    return pa.Table.from_pylist(rows)


def _facility(out: str, point_id: str) -> tuple[float, float]:
    """``(pue, carbon g per kWh)`` of a point's datacenter."""
    dc = scenario(out, point_id).get("datacenter") or {}
    return float(dc.get("pue") or 1.0), float(dc.get("carbon_g_per_kwh") or 0.0)


def class_energy(out: str) -> pa.Table:
    """Per point and class: device energy attributed to the finished calls that arrived in the
    window (each call's share of its iterations, ``calls.energy_j``), their output tokens,
    ``device_energy_per_output_token_j`` and ``carbon_g_per_output_token`` (that energy times
    PUE and the grid's carbon intensity; idle and host power not included)."""
    win = windows(out)
    rows = []
    for pid, calls in _by_point(read(out, "calls"), win):
        t0, t1 = win[pid]
        pue, g_kwh = _facility(out, pid)
        a = _np(calls, "arrival_s")
        ok = (a >= t0) & (a < t1) & (_np(calls, "status") == "finished")
        e, tok = _np(calls, "energy_j"), _np(calls, "generated_tokens")
        for c, m in _class_masks(calls):
            j, n = float(e[m & ok].sum()), int(tok[m & ok].sum())
            rows.append({"point_id": pid, "class": c, "device_energy_j": j, "output_tokens": n,
                         "device_energy_per_output_token_j": j / n if n else math.nan,
                         "carbon_g_per_output_token": j * pue / 3.6e6 * g_kwh / n if n else math.nan})
    return pa.Table.from_pylist(rows)


def _per_unit(out: str, table: str, keys: tuple[str, ...]) -> pa.Table | None:
    t = read(out, table)
    if t is None or not t.num_rows:
        return None
    parts = []
    for pid in sorted(set(t["point_id"].to_pylist())):
        r = t.filter(pc.equal(t["point_id"], pid))
        pue, g_kwh = _facility(out, pid)
        tok = _np(r, "output_tokens").astype(float)
        e, usd = _np(r, "energy_j"), _np(r, "cost_usd")
        carbon = e * pue / 3.6e6 * g_kwh
        with np.errstate(invalid="ignore", divide="ignore"):
            cols = {"energy_per_output_token_j": np.where(tok > 0, e / tok, np.nan),
                    "usd_per_output_token": np.where(tok > 0, usd / tok, np.nan),
                    "carbon_g": carbon, "carbon_g_per_output_token": np.where(tok > 0, carbon / tok, np.nan)}
        base = r.select(["point_id", *keys, "status", "arrival_s", "output_tokens", "energy_j", "cost_usd"])
        for k, v in cols.items():
            base = base.append_column(k, pa.array(v, pa.float64()))
        parts.append(base)
    return pa.concat_tables(parts)


def per_job(out: str) -> pa.Table | None:
    """One row per job (all points, no window): ``point_id``, ``job_id``, ``class``,
    ``strategy``, ``width``, ``status``, ``arrival_s``, ``correct``, ``output_tokens``,
    ``energy_j`` (attributed device energy), ``cost_usd``, and per output token
    ``energy_per_output_token_j``, ``usd_per_output_token``, plus ``carbon_g`` (energy x PUE x
    grid intensity) and ``carbon_g_per_output_token``. None when the run has no jobs."""
    return _per_unit(out, "jobs", ("job_id", "class", "strategy", "width", "correct"))


def per_session(out: str) -> pa.Table | None:
    """One row per agent session, with the columns of :func:`per_job` (``session_id``,
    ``kv_policy`` and ``turns_done`` instead of the job keys). None when there are no sessions."""
    return _per_unit(out, "sessions", ("session_id", "class", "kv_policy", "turns_done"))


def jobs_by_strategy_table(out: str) -> pa.Table | None:
    """Per point, strategy and width (:func:`sim.output.summary.jobs_by_strategy` over the window)
    plus ``accuracy_per_usd``: the accuracy bought per dollar of attributed cost per job
    (accuracy / (usd_per_1k_jobs / 1000)), i.e. right answers per dollar. None without jobs."""
    jobs = read(out, "jobs")
    if jobs is None or not jobs.num_rows:
        return None
    win = windows(out)
    rows = []
    for pid, t in _by_point(jobs, win):
        if not t.num_rows:
            continue
        for r in jobs_by_strategy(t, *win[pid]):
            usd_job = r["usd_per_1k_jobs"] / 1000
            rows.append({"point_id": pid, **r, "accuracy_per_usd": r["accuracy"] / usd_job if usd_job > 0 else math.nan})
    return pa.Table.from_pylist(rows)
