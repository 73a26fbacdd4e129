"""How much the validation's assumed inputs move its predictions: the sensitivity section.

The ML.ENERGY rows publish the batch cap, the output lengths (mean and spread) and the
measured figures, but not every input of the run: the prompt length is a per-task
assumption (hardware/calibration/derive_measurements.py, ``PROMPT_TOKENS``: 200 tokens for
lm-arena-chat, 300 for gpqa), the request count is the task's prompt set times the repeats,
and the output lengths are drawn lognormal with the measured mean and spread. This module
re-simulates a spread of held-out rows with each assumption changed alone (prompt x0.5 and
x2, requests x0.5 and x2, fixed and geometric output lengths of the same mean) and reports
how far each figure moves and what the row's error becomes.

``python -m sim.tools.validation_sensitivity`` rewrites only this section of
docs/validation.md; ``python -m sim.tools.validation`` regenerates it with the rest.
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

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
ROWS = 8  # held-out rows re-simulated (spread over the table)
LABELS = {"throughput": "output tok/s", "itl": "median ITL", "power": "GPU power", "energy": "J / output token"}


def sample(points: list[dict], n: int = ROWS) -> list[dict]:
    """``n`` held-out rows spread over models, GPUs, tasks and batch caps (every k-th row of
    the table sorted by task, batch cap and model), capped at batch 256 to stay quick."""
    rows = sorted((p for p in points if p["role"] == "holdout" and p["concurrency"] <= 256),
                  key=lambda p: (p["task"], p["concurrency"], p["model"], p["accelerator"]))
    step = max(1, len(rows) // n)
    return rows[step // 2::step][:n]


def _variant(point: dict, change: dict) -> dict:
    from sim.tools.burst import burst
    from sim.tools.validation import GPU_MEMORY_UTILIZATION, output_distribution

    p = point
    prompt = max(1, int(round(p["prompt_tokens"] * change.get("prompt_scale", 1.0))))
    requests = max(p["concurrency"], int(round(p["requests"] * change.get("requests_scale", 1.0))))
    mean = int(round(p["output_mean"]))
    kind = change.get("output")
    dist = (output_distribution(p["output_mean"], p["output_cv"]) if kind is None
            else "fixed" if kind == "fixed" else {"kind": "exponential", "mean": p["output_mean"]})
    try:
        return burst(p["accelerator"], p["model"], requests, p["concurrency"], prompt, mean, tp=p["tp"],
                     weight_dtype=p["weight_dtype"], expert_parallel=p["expert_parallel"],
                     gpu_memory_utilization=GPU_MEMORY_UTILIZATION, output_dist=dist)
    except Exception as e:  # reported, not hidden
        return {"error": f"{type(e).__name__}: {e}"}


def _one(args):
    return _variant(*args)


def simulate(points: list[dict], workers: int = 2) -> list[list[dict]]:
    """Per point, the prediction under every variant."""
    jobs = [(p, change) for p in points for _, change in VARIANTS]
    if workers <= 1:
        flat = [_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            flat = list(pool.map(_one, jobs))
    k = len(VARIANTS)
    return [flat[i * k:(i + 1) * k] for i in range(len(points))]


def section(points: list[dict], preds: list[list[dict]]) -> list[str]:
    from sim.tools.validation import METRICS

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
    lines += ["", "A variant's effect larger than the row's error says the assumption, not the model, may set "
              "that row's error; effects well below it say the row tests the model.", "", END, ""]
    return lines


def replace_section(text: str, new: list[str]) -> str:
    from sim.tools.validation_accel import replace_marked

    return replace_marked(text, new, BEGIN, END)


def report_lines(workers: int = 2) -> list[str]:
    from sim.tools.validation import load_points

    points = sample(load_points())
    return section(points, simulate(points, workers))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.tools.validation_sensitivity", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/validation.md", help="report whose sensitivity section is rewritten")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.write_text(replace_section(out.read_text() if out.exists() else "", report_lines(args.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
