"""One point of a run as a Chrome trace (JSON trace event format): open it in ui.perfetto.dev or
chrome://tracing to see what every replica did and how every call went through the datacenter.

Built from the Parquet tables of the point alone (``calls``, ``steps``, ``events``, plus
``manifest.json`` for the KV pool sizes):

* a process per pool (``pool h100``), a thread per replica (``replica 0``) whose slices
  (``X`` events, category ``engine``) are its engine runs -- ``decode``, ``mixed``,
  ``prefill``, or ``down`` / ``off`` / ``booting`` -- with batch size, iterations, prefill,
  decode and output tokens, waiting calls, KV blocks and energy in ``args``; idle time is a gap;
* a process per pool for its calls (``calls -> h100``): each call a slice from arrival to
  finish named by its class, with ``queued``, ``prefill`` and ``decode`` child slices, laid on
  as few lanes (threads) as never overlap; a flow arrow (``s`` / ``f``) from the call to the
  engine run of the replica that admitted it;
* counters (``C``): per replica, KV cache in use (% of its blocks, or blocks) and device power
  (W); per pool, calls waiting and total device power (kW);
* instant events (``i``) for preemptions, drops, failures, repairs and scaling.

Timestamps and durations are microseconds of simulated time. Big runs are bounded: the trace
covers ``[start_s, end_s)`` and its end moves earlier so that at most ``max_calls`` calls and
``max_steps`` engine runs fall in it (0: no cap); ``otherData`` says which window was kept.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sim.errors import ScenarioError
from sim.output import storage

__all__ = ["TraceWindow", "choose_window", "build_trace", "export_trace", "DEFAULT_MAX_CALLS", "DEFAULT_MAX_STEPS"]

DEFAULT_MAX_CALLS = 10_000  # calls in the trace at most (about 1 kB of JSON each)
DEFAULT_MAX_STEPS = 100_000  # engine runs at most (about 0.4 kB each, counters included)
US = 1e6  # microseconds per second
CALL_PID0 = 1000  # pids of the call processes start here (pools are 1, 2, ...)
ENGINE_ARGS = ("iterations", "batch_seqs", "prefill_tokens", "decode_tokens", "output_tokens", "waiting",
               "kv_blocks_used", "energy_j", "avg_power_w")


@dataclass(frozen=True)
class TraceWindow:
    """The simulated-time window a trace covers and whether a cap shortened it."""

    start_s: float
    end_s: float
    truncated: bool


def _np(t: pa.Table, col: str) -> np.ndarray:
    return t[col].to_numpy(zero_copy_only=False) if t.num_rows else np.array([])


def _us(t: float) -> float:
    return round(float(t) * US, 3)


def choose_window(calls: pa.Table, steps: pa.Table, start_s: float | None = None, end_s: float | None = None,
                  max_calls: int = DEFAULT_MAX_CALLS, max_steps: int = DEFAULT_MAX_STEPS) -> TraceWindow:
    """``[start_s, end_s)`` (default: the whole point), its end moved earlier to the arrival of
    the first call past ``max_calls`` or the start of the first engine run past ``max_steps``."""
    ends = [0.0]
    for t, col in ((steps, "end_s"), (calls, "finish_s"), (calls, "arrival_s")):
        x = _np(t, col).astype(float)
        if len(x) and np.isfinite(x).any():
            ends.append(float(np.nanmax(x)))
    t0 = 0.0 if start_s is None else float(start_s)
    t1 = max(ends) + 1e-6 if end_s is None else float(end_s)
    truncated = False
    arr = np.sort(_np(calls, "arrival_s").astype(float))
    arr = arr[(arr >= t0) & (arr < t1)]
    if max_calls and len(arr) > max_calls:
        t1, truncated = float(arr[max_calls]), True
    st = _np(steps, "start_s").astype(float)
    busy = _np(steps, "kind") != "idle"
    st = np.sort(st[busy & (st >= t0) & (st < t1)])
    if max_steps and len(st) > max_steps:
        t1, truncated = float(st[max_steps]), True
    return TraceWindow(t0, t1, truncated)


def _meta(pid: int, tid: int | None, kind: str, value) -> dict:
    e = {"ph": "M", "name": kind, "pid": pid, "args": {"name" if kind.endswith("_name") else "sort_index": value}}
    e["tid"] = 0 if tid is None else tid
    return e


def _lanes(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """A lane per interval, the lowest free one, so no two intervals of a lane overlap
    (intervals visited in order of start)."""
    lanes = np.zeros(len(start), np.int64)
    busy: list[tuple[float, int]] = []  # (end, lane)
    free: list[int] = []
    n = 0
    for i in np.lexsort((end, start)):
        while busy and busy[0][0] <= start[i]:
            heapq.heappush(free, heapq.heappop(busy)[1])
        lane = heapq.heappop(free) if free else n
        n = max(n, lane + 1)
        lanes[i] = lane
        heapq.heappush(busy, (end[i], lane))
    return lanes


def _counter_steps(t: np.ndarray, v: np.ndarray, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """A step function (times ascending) without repeated values, cut at ``end_s``."""
    inside = t < end_s
    t, v = t[inside], v[inside]
    if not len(t):
        return t, v
    keep = np.concatenate([[True], v[1:] != v[:-1]])
    return t[keep], v[keep]


def _sum_of_boxes(start: np.ndarray, end: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step function sum_k value_k on [start_k, end_k): (change times, value from each)."""
    t = np.concatenate([start, end])
    d = np.concatenate([value, -value])
    o = np.argsort(t, kind="stable")
    t, d = t[o], d[o]
    times, idx = np.unique(t, return_index=True)
    return times, np.round(np.cumsum(np.add.reduceat(d, idx)), 6) if len(t) else np.array([])


def _engine_events(steps: pa.Table, pid_of: dict[str, int], kv_blocks: dict[str, int], win: TraceWindow) -> list[dict]:
    ev: list[dict] = []
    st, en = _np(steps, "start_s").astype(float), _np(steps, "end_s").astype(float)
    keep = (st < win.end_s) & (en > win.start_s)
    s = steps.filter(pa.array(keep))
    st, en, kind = st[keep], en[keep], _np(s, "kind")
    pool, rep = _np(s, "pool"), _np(s, "replica")
    cols = {k: _np(s, k) for k in ENGINE_ARGS}
    power = np.nan_to_num(cols["avg_power_w"].astype(float))
    for i in np.flatnonzero(kind != "idle"):
        args = {k: (round(float(cols[k][i]), 3) if cols[k].dtype.kind == "f" else int(cols[k][i])) for k in ENGINE_ARGS}
        args = {k: v for k, v in args.items() if not (isinstance(v, float) and not math.isfinite(v))}
        ev.append({"ph": "X", "cat": "engine", "name": str(kind[i]), "pid": pid_of[pool[i]], "tid": int(rep[i]) + 1,
                   "ts": _us(st[i]), "dur": max(0.0, round(_us(en[i]) - _us(st[i]), 3)), "args": args})
    for p in sorted(set(pool.tolist())):
        m = pool == p
        cap = kv_blocks.get(p)
        for r in sorted(set(rep[m].tolist())):
            mr = m & (rep == r)
            o = np.argsort(st[mr], kind="stable")
            t = st[mr][o]
            kv = cols["kv_blocks_used"][mr][o].astype(float)
            kv = np.round(100.0 * kv / cap, 3) if cap else kv
            for tt, v in zip(*_counter_steps(t, kv, win.end_s)):
                ev.append({"ph": "C", "name": f"replica {r} KV cache", "pid": pid_of[p], "tid": 0, "ts": _us(tt),
                           "args": {"% used" if cap else "blocks used": float(v)}})
            for tt, v in zip(*_counter_steps(t, np.round(power[mr][o], 1), win.end_s)):
                ev.append({"ph": "C", "name": f"replica {r} power", "pid": pid_of[p], "tid": 0, "ts": _us(tt),
                           "args": {"W": float(v)}})
        times, total = _sum_of_boxes(st[m], en[m], power[m] / 1e3)
        for tt, v in zip(*_counter_steps(times, np.round(total, 4), win.end_s)):
            ev.append({"ph": "C", "name": "pool power", "pid": pid_of[p], "tid": 0, "ts": _us(tt), "args": {"kW": float(v)}})
    return ev


def _call_events(calls: pa.Table, pid_of: dict[str, int], win: TraceWindow) -> list[dict]:
    ev: list[dict] = []
    a = _np(calls, "arrival_s").astype(float)
    fin = _np(calls, "finish_s").astype(float)
    end = np.where(np.isnan(fin), win.end_s, fin)
    keep = np.isfinite(a) & (a < win.end_s) & (end >= win.start_s)
    c = calls.filter(pa.array(keep))
    a, end, fin = a[keep], end[keep], fin[keep]
    adm, first = _np(c, "admitted_s").astype(float), _np(c, "first_token_s").astype(float)
    pool, rep, cls, status = _np(c, "pool"), _np(c, "replica"), _np(c, "class"), _np(c, "status")
    ids = _np(c, "call_id")
    info = {k: _np(c, k) for k in ("prompt_tokens", "generated_tokens", "cached_tokens", "preemptions")}
    flow = 0
    for k, p in enumerate(sorted(set(pool.tolist()))):
        m = np.flatnonzero(pool == p)
        cpid = CALL_PID0 + k
        ev += [_meta(cpid, None, "process_name", f"calls -> {p}"), _meta(cpid, None, "process_sort_index", cpid)]
        lanes = _lanes(a[m], np.maximum(end[m], a[m]))
        for lane in range(int(lanes.max()) + 1 if len(lanes) else 0):
            ev += [_meta(cpid, lane + 1, "thread_name", f"lane {lane}"), _meta(cpid, lane + 1, "thread_sort_index", lane)]
        for i, lane in zip(m, lanes):
            tid = int(lane) + 1
            t_end = max(end[i], a[i])
            args = {"call_id": int(ids[i]), "status": str(status[i]), "replica": int(rep[i]),
                    **{key: int(v[i]) for key, v in info.items()}}
            if not math.isnan(first[i]):
                args["ttft_s"] = round(float(first[i] - a[i]), 6)
            if math.isnan(fin[i]):
                args["unfinished_at_trace_end"] = True
            ev.append({"ph": "X", "cat": "call", "name": str(cls[i]), "pid": cpid, "tid": tid, "ts": _us(a[i]),
                       "dur": max(0.0, round(_us(t_end) - _us(a[i]), 3)), "args": args})
            b1 = min(max(adm[i], a[i]), t_end) if not math.isnan(adm[i]) else t_end
            b2 = min(max(first[i], b1), t_end) if not math.isnan(first[i]) else t_end
            for name, lo, hi in (("queued", a[i], b1), ("prefill", b1, b2), ("decode", b2, t_end)):
                if hi > lo:
                    ev.append({"ph": "X", "cat": "call", "name": name, "pid": cpid, "tid": tid, "ts": _us(lo),
                               "dur": round(_us(hi) - _us(lo), 3)})
            if not math.isnan(adm[i]) and rep[i] >= 0 and a[i] <= adm[i] < min(t_end, win.end_s) and p in pid_of:
                flow += 1
                ev.append({"ph": "s", "cat": "admit", "name": "admitted", "id": flow, "pid": cpid, "tid": tid,
                           "ts": _us(adm[i])})
                ev.append({"ph": "f", "bp": "e", "cat": "admit", "name": "admitted", "id": flow, "pid": pid_of[p],
                           "tid": int(rep[i]) + 1, "ts": _us(adm[i])})
        times, lengths = _queue(a[m], adm[m], end[m])
        for tt, v in zip(*_counter_steps(times, lengths, win.end_s)):
            ev.append({"ph": "C", "name": "waiting calls", "pid": pid_of.get(p, cpid), "tid": 0, "ts": _us(tt),
                       "args": {"calls": int(v)}})
    return ev


def _queue(a: np.ndarray, adm: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    leave = np.where(np.isnan(adm), end, adm)
    return _sum_of_boxes(a, np.maximum(leave, a), np.ones(len(a)))


def _instant_events(events: pa.Table, pid_of: dict[str, int], win: TraceWindow) -> list[dict]:
    ev = []
    t = _np(events, "time_s").astype(float)
    for i in np.flatnonzero((t >= win.start_s) & (t < win.end_s)):
        row = {k: events[k][int(i)].as_py() for k in ("kind", "pool", "replica", "call_id", "detail")}
        if row["pool"] not in pid_of:
            continue
        e = {"ph": "i", "cat": "event", "name": row["kind"], "pid": pid_of[row["pool"]], "ts": _us(t[i]),
             "args": {"call_id": row["call_id"], "detail": row["detail"] or ""}}
        if row["replica"] is not None and row["replica"] >= 0:
            e.update(tid=int(row["replica"]) + 1, s="t")
        else:
            e.update(tid=0, s="p")
        ev.append(e)
    return ev


def build_trace(calls: pa.Table, steps: pa.Table, events: pa.Table, win: TraceWindow,
                kv_blocks: dict[str, int] | None = None, other: dict | None = None) -> dict:
    """The Chrome trace (a JSON-ready dict) of one point's tables over ``win``: metadata
    events first, then every other event in order of time (a parent slice before its children)."""
    pools = sorted({*(_np(steps, "pool").tolist()), *(_np(calls, "pool").tolist())} - {None})
    pid_of = {p: k + 1 for k, p in enumerate(pools)}
    meta: list[dict] = []
    for p, pid in pid_of.items():
        meta += [_meta(pid, None, "process_name", f"pool {p}"), _meta(pid, None, "process_sort_index", pid)]
        reps = sorted(set(_np(steps, "replica")[_np(steps, "pool") == p].tolist()) |
                      set(_np(calls, "replica")[_np(calls, "pool") == p].tolist()))
        for r in reps:
            if r is not None and r >= 0:
                meta += [_meta(pid, int(r) + 1, "thread_name", f"replica {r}"), _meta(pid, int(r) + 1, "thread_sort_index", int(r))]
    body = _engine_events(steps, pid_of, kv_blocks or {}, win) + _call_events(calls, pid_of, win)
    body += _instant_events(events, pid_of, win)
    meta += [e for e in body if e["ph"] == "M"]
    body = [e for e in body if e["ph"] != "M"]
    body.sort(key=lambda e: (e["ts"], -e.get("dur", 0.0)))
    return {"traceEvents": meta + body, "displayTimeUnit": "ms",
            "otherData": {"window_start_s": win.start_s, "window_end_s": win.end_s, "truncated": win.truncated,
                          **(other or {})}}


def _point_table(out: str, table: str, point_id: str, schema_cols: list[str]) -> pa.Table:
    import pyarrow.dataset as ds

    try:
        t = storage.read_table(out, table, filter=ds.field("point_id") == point_id)
    except (FileNotFoundError, OSError):
        return pa.table({c: pa.array([], pa.null()) for c in schema_cols})
    return t


def export_trace(out: str, point_id: str | None, path: str | None = None, start_s: float | None = None,
                 end_s: float | None = None, max_calls: int = DEFAULT_MAX_CALLS, max_steps: int = DEFAULT_MAX_STEPS) -> tuple[str, dict]:
    """Write the Chrome trace of one point of the run or sweep at ``out`` to ``path`` (default
    ``<out>/<point_id>/trace.json``); return the path and the trace's ``otherData``. Raises
    :class:`~sim.errors.ScenarioError` naming the folder and option for a bad request."""
    import pyarrow.parquet as pq

    fs, base = storage.open_output(out)
    try:
        summary = pq.read_table(storage.join(base, "summary.parquet"), filesystem=fs, columns=["point_id", "scenario"])
    except (FileNotFoundError, OSError):
        raise ScenarioError(out, "", "not a dcsim run or sweep folder (no summary.parquet)") from None
    ids = summary["point_id"].to_pylist()
    if point_id is None:
        if len(ids) != 1:
            raise ScenarioError(out, "--point", f"{len(ids)} points: name one ({', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''})")
        point_id = ids[0]
    if point_id not in ids:
        raise ScenarioError(out, "--point", f"no point {point_id!r} (points: {', '.join(ids[:8])}{' ...' if len(ids) > 8 else ''})")
    if start_s is not None and end_s is not None and end_s <= start_s:
        raise ScenarioError(out, "--end-s", f"must be after --start-s ({start_s:g})")
    if max_calls < 0 or max_steps < 0:
        raise ScenarioError(out, "--max-calls" if max_calls < 0 else "--max-steps", "must be 0 (no cap) or more")
    from sim.output.trace import CALLS_SCHEMA, EVENTS_SCHEMA, STEPS_SCHEMA

    calls = _point_table(out, "calls", point_id, CALLS_SCHEMA.names)
    steps = _point_table(out, "steps", point_id, STEPS_SCHEMA.names)
    events = _point_table(out, "events", point_id, EVENTS_SCHEMA.names)
    win = choose_window(calls, steps, start_s, end_s, max_calls, max_steps)
    try:
        manifest = json.loads(storage.read_text(fs, storage.join(base, point_id, "manifest.json")))
        kv = {p["name"]: int(p["kv_blocks"]) for p in manifest.get("pools") or [] if p.get("kv_blocks")}
    except (OSError, ValueError):
        kv = {}
    scenario = summary.filter(pc.equal(summary["point_id"], point_id))["scenario"][0].as_py()
    trace = build_trace(calls, steps, events, win, kv, {"point_id": point_id, "scenario": scenario,
                                                        "time_unit": "simulated microseconds"})
    text = json.dumps(trace, separators=(",", ":"), allow_nan=False)
    if path:  # a local file the user named
        from pathlib import Path

        Path(path).write_text(text, encoding="utf-8")
        return str(path), trace["otherData"]
    target = storage.join(base, point_id, "trace.json")
    storage.write_text_atomic(fs, target, text)
    return target, trace["otherData"]
