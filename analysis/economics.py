"""Economics of a run or sweep from its Parquet tables: operating points at a latency SLO, and the
per-class / per-tier revenue, cost and margin table (written when a scenario has
``datacenter.economics``; see docs/economics.md).

:func:`at_slo` answers "what does a token (or a right answer) cost on each accelerator when it
is loaded as far as the latency SLO allows": among the points of each group (e.g. each
accelerator) whose p90 TTFT and p90 time per output token meet the SLO, it keeps the cheapest.
:func:`margins` returns the economics table of every point joined with its swept parameters,
and :func:`losing` the rows (class, tier, point) whose margin is negative.
"""

from __future__ import annotations

import math

import pyarrow as pa

from analysis import summary as read_summary
from sim.output import storage

_POINT_META = ("point_id", "run", "seed", "status", "error", "node_id", "wall_s")


def _points(out: str) -> dict[str, dict]:
    import pyarrow.parquet as pq

    fs, base = storage.open_output(out)
    rows = pq.read_table(storage.join(base, "points.parquet"), filesystem=fs).to_pylist()
    return {r["point_id"]: {k: v for k, v in r.items() if k not in _POINT_META} for r in rows}


def at_slo(out: str, group_by: str, ttft_p90_s: float, tpot_p90_s: float,
           metric: str = "usd_per_million_output_tokens") -> list[dict]:
    """Per value of the swept parameter ``group_by``: the point with the lowest ``metric`` among
    those whose ``ttft_p90_s`` and ``tpot_p90_s`` are within the SLO, with its swept parameters,
    latency, throughput, cost per hour, $ per million output tokens and $ per right answer (if it
    ran jobs), and how many of the group's points met the SLO. A group where no point meets it
    comes back with ``meets_slo`` False and NaN metrics."""
    points = _points(out)
    groups: dict = {}
    for s in read_summary(out).to_pylist():
        groups.setdefault(points[s["point_id"]].get(group_by), []).append(s)
    keep = ("ttft_p90_s", "tpot_p90_s", "output_tokens_per_s", "utilization", "cost_usd_per_hour",
            "capex_usd_per_hour", "facility_usd_per_hour", "energy_usd_per_hour", "usd_per_million_output_tokens",
            "usd_per_correct", "accuracy")
    result = []
    for key in sorted(groups, key=str):
        ok = [s for s in groups[key] if s["ttft_p90_s"] <= ttft_p90_s and s["tpot_p90_s"] <= tpot_p90_s
              and not math.isnan(s.get(metric, math.nan))]
        row = {group_by: key, "points": len(groups[key]), "points_meeting_slo": len(ok), "meets_slo": bool(ok)}
        if ok:
            best = min(ok, key=lambda s: s[metric])
            row.update({"point_id": best["point_id"], **points[best["point_id"]]})
            row.update({k: best.get(k, math.nan) for k in keep})
        else:
            row.update({k: math.nan for k in keep})
        result.append(row)
    return result


def margins(out: str) -> pa.Table:
    """The economics table (one row per point, class and effort tier: revenue, own and shared
    cost, margin, cost per unit, per million output tokens and per right answer) of every
    committed point, with the point's swept parameters as extra columns."""
    table = storage.read_table(out, "economics")
    points = _points(out)
    params = sorted({k for p in points.values() for k in p})
    ids = table["point_id"].to_pylist()
    for k in params:
        values = [points[i].get(k) for i in ids]
        table = table.append_column(k, pa.array([v if not isinstance(v, (dict, list)) else str(v) for v in values]))
    return table


def losing(out: str) -> list[dict]:
    """Rows of :func:`margins` (classes and tiers with revenue) whose margin is negative."""
    return [r for r in margins(out).to_pylist() if r["revenue_usd"] > 0 and r["margin_usd"] < 0]
