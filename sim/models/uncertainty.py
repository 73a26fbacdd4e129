"""Prediction intervals: how far a simulated figure may be from what a real server measures.

The validation (docs/validation.md) compares simulated and published measurements row by row;
the relative errors of its **held-out** rows (error = predicted / measured - 1, rows no fit has
seen) are the evidence of how sure a prediction is. This module turns them into quantile
intervals, per group of similar rows, and looks the interval of a new prediction up:

* a row's group is (accelerator family, model-size band, batch band): the family of the card
  (Hopper, Blackwell, CDNA 3; another card of a validated vendor falls to its vendor's group,
  all NVIDIA or all AMD rows, and a card of any other vendor has no validated rows and gets no
  interval), the model's total parameters (< 20 B, 20-150 B, >= 150 B) and the mean running
  batch (<= 32, 33-256, > 256 sequences);
* per group and metric the interval of the error runs between the group's n held-out errors
  at plotting positions ``0.1 (n + 1)`` and ``0.9 (n + 1)`` (:func:`quantile_pair`: under
  exchangeability a new row's error lies between them with probability 80% on average);
  a group with fewer than :data:`MIN_ROWS` rows falls back to the coarser group (family and
  size, then family, then the vendor's rows; never another vendor's);
* a prediction ``p`` with error quantiles ``(e10, e90)`` has the measured value in
  ``[p / (1 + e90), p / (1 + e10)]``: the ``_p10_p90`` pair.

The quantiles are fitted once, by the validation command, and shipped as
``hardware/calibration/intervals.json`` (with the per-row errors in ``residuals.csv`` beside it
and their provenance); a run only reads them.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from sim.hardware import catalog

LEVEL = 0.8  # central coverage of the intervals (p10 - p90)
MIN_ROWS = 10  # a group with fewer held-out rows falls back to a coarser one
FAMILIES = {"h100-sxm": "hopper", "h100-pcie": "hopper", "h200": "hopper", "b200": "blackwell", "gb200": "blackwell",
            "mi300x": "cdna3", "mi325x": "cdna3"}
VENDORS = {"hopper": "nvidia", "blackwell": "nvidia", "cdna3": "amd"}  # family -> its vendor's group
SIZE_BANDS = ((20.0, "<20B"), (150.0, "20-150B"), (math.inf, ">=150B"))  # total parameters, billions
BATCH_BANDS = ((32.0, "<=32"), (256.0, "33-256"), (math.inf, ">256"))  # mean running sequences
METRICS = ("throughput", "itl", "power", "energy")
# Figures that carry an interval, and the validated metric whose errors they take: a run's
# and an estimate's keys.
FIGURES = {
    "output_tokens_per_s": "throughput",
    "completed_per_s": "throughput",
    "requests_per_s": "throughput",
    "itl_p50_s": "itl",
    "tpot_p50_s": "itl",
    "gpu_power_w": "power",
    "avg_device_power_w": "power",
    "energy_per_output_token_j": "energy",
    "device_energy_per_output_token_j": "energy",
}


def intervals_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "intervals.json"


def family(accelerator: str) -> str | None:
    """The validation family of an accelerator card: hopper, blackwell, cdna3, a vendor (nvidia,
    amd: another card of that vendor, to which only its vendor's group applies) or None (no
    validated rows of its vendor)."""
    if accelerator in FAMILIES:
        return FAMILIES[accelerator]
    try:
        vendor = str(getattr(catalog.accelerator(accelerator), "vendor", "")).lower()
    except Exception:  # not a card of the catalog
        return None
    return vendor if vendor in VENDORS.values() else None


def size_band(params_billion: float) -> str:
    """The model-size band of a model of ``params_billion`` total parameters."""
    return next(name for top, name in SIZE_BANDS if params_billion < top)


def batch_band(batch: float) -> str:
    """The batch band of a mean running batch of ``batch`` sequences."""
    return next(name for top, name in BATCH_BANDS if batch <= top)


def group_keys(fam: str | None, size: str, batch: str) -> list[str]:
    """The groups a row belongs to, finest first (none for a card of a vendor without validated rows)."""
    if fam is None:
        return []
    if fam not in VENDORS:  # a vendor's other card
        return [fam]
    return [f"{fam}/{size}/{batch}", f"{fam}/{size}", fam, VENDORS[fam]]


def quantile_pair(errors: list[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Lower and upper error quantiles of a central ``level`` interval, or None where ``errors``
    are fewer than :data:`MIN_ROWS`.

    The quantiles sit at the plotting positions ``p (n + 1)`` of the sorted errors (Weibull's,
    the order statistics interpolated): the k-th smallest of n exchangeable errors lies below a
    new one with probability k / (n + 1), so the interval between positions ``0.1 (n + 1)`` and
    ``0.9 (n + 1)`` holds a new row's error with probability 80% on average. (Split-conformal's
    order statistics rounded outwards guarantee at least 80% but give 82-89% on groups of 10-20
    rows.)"""
    e = np.array([x for x in errors if math.isfinite(x)], dtype=float)
    if len(e) < MIN_ROWS:
        return None
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(e, [a, 1.0 - a], method="weibull")
    return float(lo), float(hi)


def fit(rows: list[dict], level: float = LEVEL) -> dict:
    """Interval table from residual rows (``metric``, ``error``, ``family``, ``size_band``,
    ``batch_band``): metric -> group -> {lo, hi, n}, for every group with enough rows."""
    out: dict = {}
    for metric in METRICS:
        groups: dict[str, list[float]] = {}
        for r in rows:
            if r["metric"] != metric:
                continue
            for g in group_keys(r["family"], r["size_band"], r["batch_band"]):
                groups.setdefault(g, []).append(float(r["error"]))
        table = {}
        for g, errs in sorted(groups.items()):
            pair = quantile_pair(errs, level)
            if pair is not None:
                table[g] = {"lo": pair[0], "hi": pair[1], "n": len(errs)}
        out[metric] = table
    return out


def lookup(table: dict, metric: str, fam: str | None, size: str, batch: str) -> tuple[float, float, str] | None:
    """The (lo, hi) error quantiles of the finest group with enough rows, and its name."""
    groups = table.get(metric, {})
    for g in group_keys(fam, size, batch):
        if g in groups:
            return groups[g]["lo"], groups[g]["hi"], g
    return None


def bounds(value: float, pair: tuple[float, float]) -> tuple[float, float]:
    """The measured-value interval of a prediction whose error lies in ``pair``."""
    lo, hi = pair
    if not math.isfinite(value):
        return math.nan, math.nan
    return value / (1.0 + hi), value / (1.0 + lo)


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        return {}
    return json.loads(p.read_text()).get("intervals", {})


def shipped() -> dict:
    """The shipped interval table (empty where the hardware folder has none)."""
    return _load(str(intervals_path()))


def figure_intervals(values: dict, pools: list[tuple[str, float]], batch: float, table: dict | None = None) -> dict:
    """``{figure}_p10_p90: [lo, hi]`` for every figure of :data:`FIGURES` in ``values``.

    ``pools`` are (accelerator, model total parameters in billions) of the pools that served
    the figures and ``batch`` their mean running batch; with several pools the interval is the
    union of theirs. A figure without a validated group gets ``[nan, nan]``; ``interval_group``
    names the groups used (per metric, ';'-joined)."""
    table = shipped() if table is None else table
    out, used = {}, {}
    for key, metric in FIGURES.items():
        if key not in values:
            continue
        pairs = []
        for acc, params in pools:
            hit = lookup(table, metric, family(acc), size_band(params), batch_band(batch))
            if hit is None:
                pairs = []
                break
            pairs.append(hit)
        if pairs:
            pair = (min(p[0] for p in pairs), max(p[1] for p in pairs))
            used[metric] = "+".join(sorted({p[2] for p in pairs}))
            out[f"{key}_p10_p90"] = list(bounds(float(values[key]), pair))
        else:
            out[f"{key}_p10_p90"] = [math.nan, math.nan]
    out["interval_group"] = ";".join(f"{m}:{g}" for m, g in sorted(used.items()))
    return out


def flat(intervals: dict) -> dict:
    """The pairs of :func:`figure_intervals` as scalar columns ``{figure}_p10`` and ``{figure}_p90``
    (a summary row holds scalars only)."""
    out = {}
    for k, v in intervals.items():
        if k.endswith("_p10_p90"):
            base = k[: -len("_p10_p90")]
            out[f"{base}_p10"], out[f"{base}_p90"] = float(v[0]), float(v[1])
        else:
            out[k] = v
    return out
