"""Per-pool time series of one point, binned: what the queue, the running batch, the KV cache
and the power draw did over the run.

Derived from the Parquet tables alone: the queue from ``calls`` (a call waits from
``arrival_s`` until ``admitted_s``, or until it ended if never admitted), the running batch,
KV blocks in use and power from ``steps`` (each row holds its values from ``start_s`` to
``end_s``), and preemptions, drops and failures from ``events``. Every value is a time
average over its bin (so a bin's power is the energy in it over its length), computed from
cumulative integrals in O((rows + bins) log rows), so a run with millions of steps bins fast.
The KV share divides by the pool's blocks, read from each point's ``manifest.json`` (written
beside the tables by the run); without it the share is NaN and the block count stays.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis import metrics as M
from sim.output import storage

__all__ = ["integral_in_bins", "pool_timelines", "pool_kv_blocks", "event_times"]


def integral_in_bins(start: np.ndarray, end: np.ndarray, value: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Integral over each bin ``[edges[i], edges[i+1])`` of the sum of boxes that are ``value[k]``
    on ``[start[k], end[k])`` (value x seconds). Boxes may overlap (replicas of a pool)."""
    start, end, value = (np.asarray(a, float) for a in (start, end, value))
    ok = np.isfinite(start) & np.isfinite(end) & np.isfinite(value) & (end > start)
    start, end, value = start[ok], end[ok], value[ok]

    def area(points: np.ndarray) -> np.ndarray:  # sum_k value_k * max(0, t - points_k) at each edge t
        o = np.argsort(points, kind="stable")
        p, v = points[o], value[o]
        cv = np.concatenate([[0.0], np.cumsum(v)])
        cvp = np.concatenate([[0.0], np.cumsum(v * p)])
        k = np.searchsorted(p, edges, side="right")
        return cv[k] * edges - cvp[k]

    return np.diff(area(start) - area(end))


def pool_kv_blocks(out: str, point_id: str) -> dict[str, int]:
    """``{pool: KV blocks of one replica}`` from the point's ``manifest.json`` ({} if absent)."""
    fs, base = storage.open_output(out)
    try:
        manifest = json.loads(storage.read_text(fs, storage.join(base, point_id, "manifest.json")))
    except (OSError, ValueError):
        return {}
    return {p["name"]: int(p["kv_blocks"]) for p in manifest.get("pools") or [] if p.get("kv_blocks")}


def _of_point(t: pa.Table | None, point_id: str) -> pa.Table | None:
    return None if t is None else t.filter(pc.equal(t["point_id"], point_id))


def _queue_entry(calls: pa.Table, part: pa.Table) -> np.ndarray:
    """When each call of ``part`` (rows of one pool) joined that pool's queue: its arrival, or,
    for the decode half of a disaggregated call, the end of its prefill (the ``prefilled`` row
    of the same call) plus the KV transfer."""
    a = M._np(part, "arrival_s").astype(float)
    pre = calls.filter(pc.equal(calls["status"], "prefilled"))
    if not pre.num_rows:
        return a
    ids, done = M._np(pre, "call_id"), M._np(pre, "finish_s")
    o = np.argsort(ids)
    ids, done = ids[o], done[o]
    mine = M._np(part, "call_id")
    k = np.clip(np.searchsorted(ids, mine), 0, len(ids) - 1)
    hit = (ids[k] == mine) & (M._np(part, "status") != "prefilled")
    moved = done[k] + np.nan_to_num(M._np(part, "kv_transfer_s").astype(float))
    return np.where(hit, np.fmax(a, moved), a)


def pool_timelines(out: str, point_id: str, bin_s: float | None = None) -> pa.Table:
    """Per pool and time bin of one point: ``pool``, ``t_s`` (bin start), ``bin_s``,
    ``queue_calls`` (calls waiting for admission), ``running_seqs`` (sequences in the running
    batches of all its replicas), ``kv_blocks_used`` (all replicas), ``kv_used_share`` (of the
    pool's blocks: replicas seen x blocks per replica; NaN without a manifest), ``power_kw``
    (devices of all its replicas) and ``replicas`` (replicas with steps). All time averages
    over the bin; bins of ``bin_s`` seconds (default: 80 bins over the run) from 0 to the last
    step or call."""
    steps = _of_point(M.read(out, "steps"), point_id)
    calls = _of_point(M.read(out, "calls"), point_id)
    ends = [0.0]
    if steps is not None and steps.num_rows:
        ends.append(float(pc.max(steps["end_s"]).as_py()))
    if calls is not None and calls.num_rows:
        ends.append(float(np.nanmax(np.fmax(M._np(calls, "finish_s"), M._np(calls, "arrival_s")))))
    end = max(ends)
    if not bin_s:
        bin_s = end / 80 if end > 0 else 1.0
    edges = np.arange(0.0, end + bin_s, bin_s)
    if len(edges) < 2:
        edges = np.array([0.0, bin_s])
    kv_per_replica = pool_kv_blocks(out, point_id)
    pools = set()
    for t in (steps, calls):
        if t is not None and t.num_rows:
            pools |= {p for p in t["pool"].to_pylist() if p is not None}
    rows = []
    widths = np.diff(edges)
    for pool in sorted(pools):
        zero = np.zeros(len(widths))
        queue = running = kv = power = zero
        n = 0
        if steps is not None and steps.num_rows:
            s = steps.filter(pc.equal(steps["pool"], pool))
            if s.num_rows:
                st, en = M._np(s, "start_s"), M._np(s, "end_s")
                busy = M._np(s, "kind") != "idle"
                running = integral_in_bins(st, en, np.where(busy, M._np(s, "batch_seqs"), 0), edges) / widths
                kv = integral_in_bins(st, en, M._np(s, "kv_blocks_used"), edges) / widths
                power = integral_in_bins(st, en, M._np(s, "avg_power_w"), edges) / widths / 1e3
                n = len(set(M._np(s, "replica").tolist()))
        if calls is not None and calls.num_rows:
            c = calls.filter(pc.equal(calls["pool"], pool))
            if c.num_rows:
                a, adm, fin = _queue_entry(calls, c), M._np(c, "admitted_s"), M._np(c, "finish_s")
                leave = np.where(np.isnan(adm), fin, adm)
                leave = np.where(np.isnan(leave), edges[-1], leave)
                queue = integral_in_bins(a, leave, np.ones(len(a)), edges) / widths
        cap = kv_per_replica.get(pool, 0) * n
        share = kv / cap if cap else np.full(len(widths), math.nan)
        for i, lo in enumerate(edges[:-1]):
            rows.append({"pool": pool, "t_s": float(lo), "bin_s": float(widths[i]), "queue_calls": float(queue[i]),
                         "running_seqs": float(running[i]), "kv_blocks_used": float(kv[i]),
                         "kv_used_share": float(share[i]), "power_kw": float(power[i]), "replicas": n})
    schema = pa.schema([("pool", pa.string()), ("t_s", pa.float64()), ("bin_s", pa.float64()),
                        ("queue_calls", pa.float64()), ("running_seqs", pa.float64()), ("kv_blocks_used", pa.float64()),
                        ("kv_used_share", pa.float64()), ("power_kw", pa.float64()), ("replicas", pa.int64())])
    return pa.Table.from_pylist(rows, schema=schema)


def event_times(out: str, point_id: str) -> dict[str, np.ndarray]:
    """``{event kind: times (s)}`` of one point's events (preempted, dropped, failure, scale, ...)."""
    ev = _of_point(M.read(out, "events"), point_id)
    if ev is None or not ev.num_rows:
        return {}
    kinds, times = M._np(ev, "kind"), M._np(ev, "time_s")
    return {k: np.sort(times[kinds == k]) for k in sorted(set(kinds.tolist()))}
