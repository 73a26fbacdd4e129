"""How much the validation's assumed inputs move its predictions: the sensitivity section.

The ML.ENERGY rows publish the batch cap, the output lengths (mean and spread) and the
measured figures, but not every input of the run: the prompt length is a per-task
assumption (hardware/calibration/derive_measurements.py, ``PROMPT_TOKENS``: 200 tokens for
lm-arena-chat, 300 for gpqa), the request count is the task's prompt set times the repeats,
and the output lengths are drawn lognormal with the measured mean and spread. This module
re-simulates a spread of held-out rows with each assumption changed alone (prompt x0.5 and
x2, requests x0.5 and x2, fixed and geometric output lengths of the same mean) and reports
how far each figure moves and what the row's error becomes.

``python -m sim.tools.validation`` simulates the variants and regenerates this section with the
rest; ``--sensitivity-only`` rewrites only this one.
"""

from __future__ import annotations

import math

import numpy as np

BEGIN, END = "<!-- sensitivity:begin -->", "<!-- sensitivity:end -->"
# (label, change to the point): each changes one assumed input
VARIANTS = (
    ("as assumed", {}),
    ("prompt x0.5", {"prompt_scale": 0.5}),
    ("prompt x2", {"prompt_scale": 2.0}),
    ("requests x0.5", {"requests_scale": 0.5}),
    ("requests x2", {"requests_scale": 2.0}),
    ("fixed outputs", {"output": "fixed"}),
    ("geometric outputs", {"output": "exponential"}),
)
ROWS = 10  # held-out rows re-simulated (spread over the table) ...
LARGE = 3  # ... and rows at large batch caps
LABELS = {"throughput": "output tok/s", "itl": "median ITL", "power": "GPU power", "energy": "J / output token"}


def _nearest(points: list[dict], target: int, keep) -> list[dict]:
    """Per configuration (model, GPUs, precision, task), its held-out row kept by ``keep`` whose
    batch cap is nearest ``target``, in table order."""
    best: dict[tuple, dict] = {}
    for p in points:
        if p["role"] != "holdout" or not keep(p["concurrency"]):
            continue
        key = (p["model"], p["accelerator"], p["tp"], p["weight_dtype"], p["task"])
        if key not in best or abs(math.log(p["concurrency"] / target)) < abs(math.log(best[key]["concurrency"] / target)):
            best[key] = p
    return [best[k] for k in sorted(best)]


def _spread(rows: list[dict], n: int) -> list[dict]:
    return [rows[int(i * len(rows) / n)] for i in range(min(n, len(rows)))]


def sample(points: list[dict], n: int = ROWS, large: int = LARGE) -> list[dict]:
    """Up to ``n`` held-out rows of distinct configurations (model, GPUs, precision, task), each
    at the batch cap nearest 64, spread over the table, and ``large`` more at the cap nearest
    1,024 among caps above 256 (where a call's prompt is prefilled while the most calls decode)."""
    return _spread(_nearest(points, 64, lambda c: c <= 256), n) + \
        _spread(_nearest(points, 1024, lambda c: c > 256), large)


def has_window(requests: int, cap: int) -> bool:
    """Whether a burst of ``requests`` calls under batch cap ``cap`` has a steady window."""
    return requests > cap + 1


def variants(points: list[dict]) -> list[dict]:
    """Every point under every variant, in order (a point's variants together): the point with
    its prompt length, request count or output-length distribution (``output_dist``) changed."""
    out = []
    for p in points:
        for _, change in VARIANTS:
            q = dict(p)
            q["prompt_tokens"] = max(1, int(round(p["prompt_tokens"] * change.get("prompt_scale", 1.0))))
            q["requests"] = int(round(p["requests"] * change.get("requests_scale", 1.0)))
            kind = change.get("output")
            if kind == "fixed":
                q["output_dist"] = "fixed"
            elif kind == "exponential":
                q["output_dist"] = {"kind": "exponential", "mean": p["output_mean"]}
            out.append(q)
    return out


def regroup(points: list[dict], flat: list[dict]) -> list[list[dict]]:
    """The predictions of :func:`variants` regrouped per point."""
    k = len(VARIANTS)
    return [flat[i * k:(i + 1) * k] for i in range(len(points))]


def section(points: list[dict], preds: list[list[dict]], metrics: dict) -> list[str]:
    """The section; ``metrics`` maps a metric to (measured column, predicted key, label)."""
    METRICS = metrics
    lines = [BEGIN, "", "## Sensitivity to the assumed inputs", "",
             "The ML.ENERGY rows do not publish every input of their runs: the prompt length is assumed per task "
             "(200 tokens for lm-arena-chat, 300 for gpqa; hardware/calibration/derive_measurements.py), the request "
             "count is the task's prompt set times the repeats, and output lengths are drawn lognormal with the "
             "measured mean and spread. Below, a spread of held-out rows re-simulated with one assumption changed "
             "at a time (sim/tools/validation_sensitivity.py): the change of each figure against the run as "
             "assumed, and the row's error (predicted / measured - 1) in brackets.", "",
             "| row | variant | " + " | ".join(f"{LABELS[m]}: change (error)" for m in METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    moves: dict[tuple[str, str], list[float]] = {}
    for p, runs in zip(points, preds):
        base = runs[0]
        name = f"{p['model']} {p['tp']}x {p['accelerator']} {p['weight_dtype']} {p['task']} cap {p['concurrency']}"
        for (label, _), r in zip(VARIANTS, runs):
            if not has_window(round(p["requests"] * dict(VARIANTS)[label].get("requests_scale", 1.0)), p["concurrency"]):
                lines.append(f"| {name} | {label} | n/a: too few requests for a steady window |"
                             + " |" * (len(METRICS) - 1))
                continue
            if r.get("error") or base.get("error"):
                lines.append(f"| {name} | {label} | error: {r.get('error') or base.get('error')} |" + " |" * (len(METRICS) - 1))
                continue
            cells = []
            for m, (mcol, pkey, _) in METRICS.items():
                got, ref, meas = r[pkey], base[pkey], p[mcol]
                change = got / ref - 1.0 if ref else math.nan
                cells.append(f"{change:+.1%} ({got / meas - 1.0:+.0%})")
                if label != VARIANTS[0][0]:
                    moves.setdefault((label, m), []).append(abs(change))
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Mean |change| over these rows:", "",
              "| variant | " + " | ".join(LABELS[m] for m in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for label, _ in VARIANTS[1:]:
        lines.append(f"| {label} | " + " | ".join(
            f"{np.mean(moves.get((label, m), [math.nan])):.1%}" for m in METRICS) + " |")
    lines += ["", "A variant with at most the batch cap plus one requests is not run (the benchmark's steady "
              "window, from the cap's worth of first tokens to the cap plus one unfinished, would be empty). "
              "A variant's effect larger than the row's error says the assumption, not the model, may set "
              "that row's error; effects well below it say the row tests the model.", "", END, ""]
    return lines


def replace_section(text: str, new: list[str]) -> str:
    from sim.tools.validation_accel import replace_marked

    return replace_marked(text, new, BEGIN, END)
