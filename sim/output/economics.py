"""Economics tables of a run: the fleet's cost over the window (capex, facility, energy under a
time-of-day tariff, from the steps table) and revenue, cost and margin per workload class and
reasoning-effort tier (the economics table). Reads tables; the rates come from
:mod:`sim.models.economics`, the schema from :mod:`sim.config.economics`."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from sim.config.economics import Economics
from sim.models.economics import J_PER_KWH, Rates
from sim.output.arrow import mask, rows_table, to_numpy

IDLE_KINDS = ("idle", "down", "off", "booting")  # steps rows of a replica doing no work


def pool_costs(steps: pa.Table, t0: float, t1: float, specs, rates: Rates) -> dict[str, dict[str, float]]:
    """Capex, facility and energy cost (USD) of each pool over ``[t0, t1]``, and the part of it that
    paid for idle capacity (``idle_usd``).

    Capex and facility: every device of the pool for the whole window (a rented device switched
    off by an autoscaler is not paid for). Energy: each steps row's device energy spread evenly
    over the row and priced by the tariff's integral over the part of the row inside the window,
    plus the hosts' power while their replica is not switched off, times PUE. A diffusion pool on
    another pool's devices takes a share of those devices' capex, facility and host energy in
    proportion to its busy device-seconds in the window. Idle capacity: the devices' capex,
    facility and host energy times the share of device-seconds not busy, plus the energy of idle
    rows."""
    span = t1 - t0
    pool = to_numpy(steps["pool"])
    kind = to_numpy(steps["kind"])
    start, end = to_numpy(steps["start_s"]), to_numpy(steps["end_s"])
    energy = to_numpy(steps["energy_j"])
    a, b = np.maximum(start, t0), np.minimum(end, t1)
    dur = end - start
    inside = (b > a) & (dur > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = np.where(inside, (rates.price_integral(np.where(inside, b, 0.0))
                                   - rates.price_integral(np.where(inside, a, 0.0))) / dur, 0.0)
    in_s = np.where(inside, b - a, 0.0)
    busy = ~np.isin(kind, IDLE_KINDS)
    off = kind == "off"
    host_price = float(rates.price_integral(t1) - rates.price_integral(t0))
    rented = rates.economics is None or rates.economics.capex.kind == "cloud"
    usd_per_price_j = rates.pue / J_PER_KWH if rates.energy_billed else 0.0
    out: dict[str, dict[str, float]] = {}
    fixed: dict[str, dict[str, float]] = {}  # group -> its devices' capex, facility, host energy, device-s
    busy_s: dict[str, float] = {}
    for s in specs:
        mine = pool == s.name
        per = s.devices_per_replica
        busy_s[s.name] = float(in_s[mine & busy].sum()) * per
        out[s.name] = {"capex_usd": 0.0, "facility_usd": 0.0,
                       "energy_usd": float((energy[mine] * weight[mine]).sum()) * usd_per_price_j,
                       "idle_usd": float((energy[mine & ~busy] * weight[mine & ~busy]).sum()) * usd_per_price_j}
        if not s.shares_devices:  # a shared diffusion pool's devices are its host pool's
            r = rates.devices[s.name]
            on_device_s = s.devices * span - per * float(in_s[mine & off].sum())
            off_price = float((weight[mine & off] * dur[mine & off]).sum())  # price integral while off
            fixed[s.name] = {
                "capex_usd": r.capex_usd_per_hour * (on_device_s if rented else s.devices * span) / 3600,
                "facility_usd": r.facility_usd_per_hour * s.devices * span / 3600,
                "host_usd": r.host_w * (s.devices * host_price - per * off_price) * usd_per_price_j,
                "device_s": s.devices * span,
            }
    for g, f in fixed.items():
        members = [s.name for s in specs if rates.group[s.name] == g]
        total_busy = sum(busy_s[m] for m in members)
        idle_share = max(0.0, 1.0 - total_busy / f["device_s"]) if f["device_s"] > 0 else 0.0
        for m in members:
            share = busy_s[m] / total_busy if total_busy > 0 else float(m == g)
            d = out[m]
            d["capex_usd"] += f["capex_usd"] * share
            d["facility_usd"] += f["facility_usd"] * share
            d["energy_usd"] += f["host_usd"] * share
            d["idle_usd"] += (f["capex_usd"] + f["facility_usd"] + f["host_usd"]) * share * idle_share
    return out


def fleet_metrics(pools: dict[str, dict[str, float]], t0: float, t1: float, output_tokens: float) -> dict:
    """Summary figures of the fleet's cost over ``[t0, t1]`` (``pools``: :func:`pool_costs`): capex,
    facility and energy in USD and per simulated hour, total, per million output tokens, and the
    share of the cost that paid for idle capacity."""
    hours = (t1 - t0) / 3600
    capex = sum(g["capex_usd"] for g in pools.values())
    facility = sum(g["facility_usd"] for g in pools.values())
    energy = sum(g["energy_usd"] for g in pools.values())
    idle = sum(g["idle_usd"] for g in pools.values())
    cost = capex + facility + energy
    return {
        "device_cost_usd": capex,
        "capex_cost_usd": capex,
        "facility_cost_usd": facility,
        "energy_cost_usd": energy,
        "cost_usd": cost,
        "usd_per_million_output_tokens": cost / output_tokens * 1e6 if output_tokens > 0 else math.nan,
        "capex_usd_per_hour": capex / hours,
        "facility_usd_per_hour": facility / hours,
        "energy_usd_per_hour": energy / hours,
        "cost_usd_per_hour": cost / hours,
        "idle_cost_share": idle / cost if cost > 0 else math.nan,
    }


# --------------------------------------------------------------------------- classes and tiers
ECONOMICS_SCHEMA = pa.schema(
    [
        ("class", pa.string()),
        ("tier", pa.string()),  # reasoning-effort tier of the class's jobs ("" otherwise)
        ("kind", pa.string()),  # call | job | session | video ("" for the (unused) row)
        ("units", pa.int64()),  # calls / jobs / sessions / videos that arrived in the window
        ("billed_units", pa.int64()),  # of which finished (they earn their price)
        ("correct", pa.int64()),  # jobs answered right
        ("input_tokens", pa.int64()),  # prompt tokens computed (not from the prefix cache)
        ("cached_tokens", pa.int64()),  # prompt tokens served from the prefix cache
        ("output_tokens", pa.int64()),  # generated tokens, reasoning included
        ("revenue_usd", pa.float64()),
        ("cost_usd", pa.float64()),  # its share of the fleet's cost over the window
        ("idle_cost_usd", pa.float64()),  # of which idle capacity
        ("margin_usd", pa.float64()),  # revenue - cost
        ("margin_share", pa.float64()),  # margin / revenue
        ("cost_per_unit_usd", pa.float64()),
        ("revenue_per_unit_usd", pa.float64()),
        ("cost_per_million_output_tokens_usd", pa.float64()),
        ("cost_per_correct_usd", pa.float64()),
    ]
)

UNUSED = "(unused)"


def _col(t: pa.Table, name: str) -> np.ndarray:
    return to_numpy(t[name])


def _in_window(t: pa.Table, cls: str, t0: float, t1: float) -> pa.Table:
    arrival = _col(t, "arrival_s")
    return t.filter(mask((_col(t, "class") == cls) & (arrival >= t0) & (arrival < t1)))


class _Acc:
    """Totals of one (class, tier) row being built."""

    def __init__(self, kind: str):
        self.kind = kind
        self.units = self.billed = self.correct = self.inp = self.cached = self.out = 0
        self.revenue = 0.0
        self.work: dict[str, float] = {}  # pool -> work run there (tokens; device-seconds for diffusion)

    def add_work(self, pool: str, amount: float) -> None:
        self.work[pool] = self.work.get(pool, 0.0) + amount


def class_table(scenario, rates: Rates, pools: dict[str, dict[str, float]], calls: pa.Table, jobs, sessions,
                videos, t0: float, t1: float) -> pa.Table:
    """One row per workload class and effort tier (jobs) of the units that arrived in ``[t0, t1)``:
    counts, tokens, revenue, cost, idle-capacity cost, margin (:data:`ECONOMICS_SCHEMA`), plus a row
    ``(unused)`` for pools no class used. ``pools``: :func:`pool_costs` of the same window.

    Allocation: each pool's cost in the window is shared among the rows in proportion to the work
    their units ran on it: tokens run (prompt tokens computed plus tokens generated, by every call
    of the unit, prefill-only rows of disaggregated calls included) on LLM pools, device-seconds on
    diffusion pools. In a steady state that is the engine's own attribution (decode iterations
    split equally among their calls, mixed ones by tokens run), without its bias for units that
    end in the near-empty fleet after arrivals stop. The rows' costs add up to the fleet's."""
    eco = rates.economics or Economics()
    pricing = eco.pricing
    rows: dict[tuple[str, str], _Acc] = {}
    call_cls = _col(calls, "class")
    call_pool = _col(calls, "pool")
    call_work = (_col(calls, "prompt_tokens") - _col(calls, "cached_tokens") + _col(calls, "generated_tokens")).astype(float)

    def work_of(acc: _Acc, mask: np.ndarray) -> None:
        for p in sorted(set(call_pool[mask].tolist())):
            acc.add_work(p, float(call_work[mask & (call_pool == p)].sum()))

    def bill(acc: _Acc, cls: str, tier: str, billed: np.ndarray, inp, cached, out) -> None:
        acc.billed += int(billed.sum())
        acc.inp += int(inp.sum())
        acc.cached += int(cached.sum())
        acc.out += int(out.sum())
        prices = pricing.classes.get(cls)
        if prices is None:
            return
        p_in, p_cached, p_out, p_req = prices.effective(tier)
        acc.revenue += float(((inp * p_in + cached * p_cached + out * p_out) / 1e6 + p_req)[billed].sum())

    for c in scenario.workload.classes:
        name = c.name
        if c.job is not None:
            for tier, _ in pricing.ordered_tiers() or [("", 0)]:
                rows.setdefault((name, tier), _Acc("job"))
            if jobs is None:
                continue
            t = _in_window(jobs, name, t0, t1)
            tiers = pricing.tier_of(_col(t, "thinking_budget_tokens"))
            ids = _col(t, "job_id")
            call_job = _col(calls, "job_id")
            for tier in sorted(set(tiers.tolist())):
                m = tiers == tier
                acc = rows.setdefault((name, tier), _Acc("job"))
                cached = _col(t, "cached_tokens")[m]
                acc.units += int(m.sum())
                acc.correct += int(_col(t, "correct")[m].sum())
                bill(acc, name, tier, _col(t, "status")[m] == "finished", _col(t, "input_tokens")[m] - cached, cached,
                     _col(t, "output_tokens")[m])
                work_of(acc, (call_cls == name) & np.isin(call_job, ids[m]))
        elif c.session is not None:
            acc = rows.setdefault((name, ""), _Acc("session"))
            if sessions is None:
                continue
            t = _in_window(sessions, name, t0, t1)
            cached = _col(t, "cached_tokens")
            acc.units += t.num_rows
            bill(acc, name, "", _col(t, "status") == "finished", _col(t, "prompt_tokens") - cached, cached,
                 _col(t, "output_tokens"))
            work_of(acc, (call_cls == name) & np.isin(_col(calls, "session_id"), _col(t, "session_id")))
        elif c.video is not None:
            acc = rows.setdefault((name, ""), _Acc("video"))
            if videos is None:
                continue
            t = _in_window(videos, name, t0, t1)
            zero = np.zeros(t.num_rows, dtype=np.int64)
            acc.units += t.num_rows
            bill(acc, name, "", _col(t, "status") == "finished", zero, zero, zero)
            acc.add_work(c.pool, float(_col(t, "device_s").sum()))
        else:
            acc = rows.setdefault((name, ""), _Acc("call"))
            arrival = _col(calls, "arrival_s")
            m = (call_cls == name) & (arrival >= t0) & (arrival < t1)
            own = m & (_col(calls, "status") != "prefilled")  # one row per call (and a prefill row if disaggregated)
            cached = _col(calls, "cached_tokens")[own]
            acc.units += int(own.sum())
            bill(acc, name, "", _col(calls, "status")[own] == "finished", _col(calls, "prompt_tokens")[own] - cached,
                 cached, _col(calls, "generated_tokens")[own])
            work_of(acc, m)

    total_work = {p: sum(acc.work.get(p, 0.0) for acc in rows.values()) for p in pools}
    pool_total = {p: v["capex_usd"] + v["facility_usd"] + v["energy_usd"] for p, v in pools.items()}
    out_rows = []
    for (cls, tier), acc in rows.items():
        share = {p: w / total_work[p] for p, w in acc.work.items() if total_work.get(p, 0) > 0}
        cost = sum(pool_total[p] * f for p, f in share.items())
        idle = sum(pools[p]["idle_usd"] * f for p, f in share.items())
        out_rows.append(_row(cls, tier, acc, cost, idle))
    unused = [p for p in pools if total_work[p] <= 0 and pool_total[p] > 0]
    if unused:
        out_rows.append(_row(UNUSED, "", _Acc(""), sum(pool_total[p] for p in unused),
                             sum(pools[p]["idle_usd"] for p in unused)))
    return rows_table(out_rows, ECONOMICS_SCHEMA)


def _row(cls: str, tier: str, acc: _Acc, cost: float, idle: float) -> dict:
    div = lambda x, n: x / n if n else math.nan
    margin = acc.revenue - cost
    return {
        "class": cls, "tier": tier, "kind": acc.kind, "units": acc.units, "billed_units": acc.billed,
        "correct": acc.correct, "input_tokens": acc.inp, "cached_tokens": acc.cached, "output_tokens": acc.out,
        "revenue_usd": acc.revenue, "cost_usd": cost, "idle_cost_usd": idle, "margin_usd": margin,
        "margin_share": div(margin, acc.revenue), "cost_per_unit_usd": div(cost, acc.units),
        "revenue_per_unit_usd": div(acc.revenue, acc.units), "cost_per_million_output_tokens_usd": div(cost * 1e6, acc.out),
        "cost_per_correct_usd": div(cost, acc.correct),
    }


def class_summary(table: pa.Table) -> dict:
    """Flat summary keys of a :func:`class_table`: fleet revenue and margin, and per class
    (``econ_<class>_...``) and per class and tier (``econ_<class>_<tier>_...``) revenue, cost,
    margin and cost per unit."""
    rows = table.to_pylist()
    revenue = sum(r["revenue_usd"] for r in rows)
    cost = sum(r["cost_usd"] for r in rows)
    out = {"revenue_usd": revenue, "margin_usd": revenue - cost,
           "margin_share": (revenue - cost) / revenue if revenue else math.nan}
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        if r["class"] != UNUSED:
            by_class.setdefault(r["class"], []).append(r)
    for cls, rs in by_class.items():
        units = sum(r["units"] for r in rs)
        rev, cst = sum(r["revenue_usd"] for r in rs), sum(r["cost_usd"] for r in rs)
        p = f"econ_{cls}_"
        out.update({p + "revenue_usd": rev, p + "cost_usd": cst, p + "margin_usd": rev - cst,
                    p + "cost_per_unit_usd": cst / units if units else math.nan})
        for r in rs:
            if r["tier"]:
                q = f"econ_{cls}_{r['tier']}_"
                out.update({q + "revenue_usd": r["revenue_usd"], q + "cost_usd": r["cost_usd"],
                            q + "margin_usd": r["margin_usd"], q + "cost_per_unit_usd": r["cost_per_unit_usd"]})
    return out
