"""Prediction intervals from the validation's held-out errors: residuals.csv and intervals.json.

``python -m sim.tools.validation`` simulates every measured row; :func:`residual_rows` keeps the
**held-out** ones (ML.ENERGY rows: output throughput, median ITL, GPU power, J / output token;
NIM rows: throughput and ITL; TensorRT-LLM, AMD vLLM and MLPerf Offline rows: output
throughput), one row per metric, with the group keys of
:mod:`sim.models.uncertainty` taken from the *prediction* (accelerator, model, simulated mean
running batch: what a run knows), and :func:`write` stores them as
``hardware/calibration/residuals.csv`` and their quantiles per group as
``hardware/calibration/intervals.json`` (with provenance). Runs and estimates read only the
latter. ``python -m sim.tools.validation_intervals`` refits the quantiles from the stored
residuals (no simulation) and rewrites the report's interval section.

:func:`coverage` is the out-of-sample check: over random halves of the residual rows (fixed
seeds), quantiles fitted on one half, the share of the other half's errors inside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from sim.hardware import catalog
from sim.models import uncertainty as U

BEGIN, END = "<!-- intervals:begin -->", "<!-- intervals:end -->"
FIELDS = ("source", "id", "accelerator", "model", "tp", "params_billion", "mean_batch", "family", "size_band",
          "batch_band", "metric", "measured", "predicted", "error")
COVERAGE_SEEDS = 20
# a validation row's bench kind -> its source label (ML.ENERGY's burst runs: "mlenergy")
SOURCES = {"closed_loop": "nim", "max_load": "amd", "mlperf_offline": "mlperf"}


def residuals_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "residuals.csv"


def _keys(accelerator: str, model: str, tp: int, batch: float) -> dict:
    params = catalog.model(model).params_billion
    return {"accelerator": accelerator, "model": model, "tp": int(tp), "params_billion": params,
            "mean_batch": round(float(batch), 2),
            "family": U.family(accelerator), "size_band": U.size_band(params), "batch_band": U.batch_band(batch)}


def residual_rows(mlenergy: list[dict], trtllm: list[dict]) -> list[dict]:
    """Held-out errors, one row per (measurement, metric). ``mlenergy``: validation.errors rows
    (ML.ENERGY, NIM closed loops, AMD's max-load table; MLPerf Offline results in the same shape,
    validation_mlperf.as_validation_rows); ``trtllm``: validation_trtllm.errors results
    (simulations carry ``mean_batch_seqs``)."""
    out = []
    for r in mlenergy:
        p = r["point"]
        if p["role"] != "holdout" or r["error"] or U.family(p["accelerator"]) is None:
            continue
        keys = _keys(p["accelerator"], p["model"], p["tp"], r["mean_batch_seqs"])
        src = SOURCES.get(p.get("bench"), "mlenergy")
        for metric in U.METRICS:
            meas, pred, err = r[metric]
            if math.isfinite(err):
                out.append({"source": src, "id": p["id"], **keys, "metric": metric, "measured": meas,
                            "predicted": pred, "error": err})
    for x in trtllm:
        row, sim = x["row"], x["sim"]
        if row["role"] != "holdout" or x["error"] or not math.isfinite(x["rel"]):
            continue
        keys = _keys(row["accelerator"], row["model"], row["tp"], sim["mean_batch_seqs"])
        out.append({"source": "trtllm", "id": row["id"], **keys, "metric": "throughput",
                    "measured": row["output_tokens_per_s"], "predicted": sim["output_tokens_per_s"], "error": x["rel"]})
    return out


def _round(v):
    return float(f"{v:.6g}") if isinstance(v, float) else v


def write(rows: list[dict], provenance: dict, csv_path: Path | None = None, json_path: Path | None = None) -> dict:
    """Store the residual rows and the interval table fitted on them; return the table."""
    csv_path, json_path = csv_path or residuals_path(), json_path or U.intervals_path()
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _round(r[k]) for k in FIELDS})
    table = U.fit(load_residuals(csv_path))
    doc = {"generated_by": "python -m sim.tools.validation (sim/tools/validation_intervals.py)",
           "method": f"{U.LEVEL:.0%} quantile intervals (plotting positions p (n + 1)) of held-out error = predicted / measured - 1, per "
                     "(accelerator family, model-size band, batch band), coarser group below "
                     f"{U.MIN_ROWS} rows (sim/models/uncertainty.py)",
           "residuals": csv_path.name, "rows": len(rows),
           "rows_by_metric": {m: sum(r["metric"] == m for r in rows) for m in U.METRICS},
           "provenance": provenance,
           "intervals": {m: {g: {k: _round(v) for k, v in e.items()} for g, e in t.items()} for m, t in table.items()}}
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    U._load.cache_clear()
    return table


def load_residuals(path: Path | None = None) -> list[dict]:
    with open(path or residuals_path(), newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("params_billion", "mean_batch", "measured", "predicted", "error"):
            r[k] = float(r[k])
        r["tp"] = int(r["tp"])
        r["family"] = r["family"] or None
    return rows


def covered(table: dict, r: dict) -> bool | None:
    """Whether a residual row's error lies in its group's interval (None: no group)."""
    hit = U.lookup(table, r["metric"], r["family"], r["size_band"], r["batch_band"])
    if hit is None:
        return None
    return hit[0] <= r["error"] <= hit[1]


def coverage(rows: list[dict], seeds: int = COVERAGE_SEEDS, share: float = 0.5) -> dict:
    """Out-of-sample coverage per metric (and ``all``): for each seed the *measurements* (all
    metrics of a row together) are split at random, quantiles fitted on ``share`` of them and
    checked on the rest; the mean share covered over the seeds, and the rows checked per seed."""
    ids = sorted({(r["source"], r["id"]) for r in rows})
    hits: dict[str, list[float]] = {m: [] for m in (*U.METRICS, "all")}
    checked: dict[str, list[int]] = {m: [] for m in hits}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        fit_ids = {ids[i] for i in rng.permutation(len(ids))[: int(round(share * len(ids)))]}
        table = U.fit([r for r in rows if (r["source"], r["id"]) in fit_ids])
        res: dict[str, list[bool]] = {m: [] for m in hits}
        for r in rows:
            if (r["source"], r["id"]) in fit_ids:
                continue
            c = covered(table, r)
            if c is not None:
                res[r["metric"]].append(c)
                res["all"].append(c)
        for m, v in res.items():
            if v:
                hits[m].append(float(np.mean(v)))
                checked[m].append(len(v))
    return {m: {"coverage": float(np.mean(v)) if v else math.nan, "rows": int(np.mean(checked[m])) if v else 0}
            for m, v in hits.items()}


def section(rows: list[dict], table: dict, cov: dict) -> list[str]:
    """The report's section on prediction intervals."""
    labels = {"throughput": "output tok/s", "itl": "median ITL", "power": "GPU power", "energy": "J / output token"}
    accs = sorted({r["accelerator"] for r in rows})
    counts = {m: sum(r["metric"] == m for r in rows) for m in U.METRICS}
    lines = [BEGIN, "", "## Prediction intervals", "",
             "Every `dcsim estimate` figure of throughput, ITL / time per output token, power and energy per token, "
             "and the same headline figures of every run (summary columns `<figure>_p10` / `<figure>_p90`, "
             "`interval_group`), carry an 80% prediction interval built from the held-out errors above "
             "(sim/models/uncertainty.py; per-row errors in hardware/calibration/residuals.csv, quantiles in "
             "hardware/calibration/intervals.json, both regenerated by this command):", "",
             "* rows are grouped by accelerator family (Hopper: H100, H200; Blackwell: B200, GB200; CDNA 3: MI300X, "
             "MI325X), model-size band "
             "(total parameters < 20 B, 20-150 B, >= 150 B) and batch band (simulated mean running batch <= 32, "
             "33-256, > 256); the group of a prediction is known before any measurement;",
             f"* per group the interval of error = predicted / measured - 1 runs between its n held-out errors at "
             f"plotting positions 0.1 (n+1) and 0.9 (n+1) (Weibull quantiles: the k-th smallest of n exchangeable "
             f"errors lies below a new one with probability k / (n+1), so a new row's error falls inside with "
             f"probability 80% on average; split-conformal's outward rounding would give 82-89% on groups of 10-20 "
             f"rows); a group with fewer than "
             f"{U.MIN_ROWS} rows falls back to (family, size), then family, then all rows of the family's vendor (never "
             "another vendor's); another card of NVIDIA or AMD takes its vendor's interval, other vendors' cards (no "
             "validated rows) none (`nan`), and so does a metric no row of the vendor measures (AMD's rows publish "
             "throughput only);",
             "* a prediction p has the measured value in [p / (1 + e90), p / (1 + e10)]; a run with several pools "
             "takes the union of their intervals; energy per token is the GPU energy's interval (the host and "
             "facility shares are scaled with it); TTFT and end-to-end latency have no interval: the only published TTFTs "
             "here, NIM's mean TTFT beside its closed-loop rows, are matched for Llama 3.1 70B at one client (1000/1000: "
             "82 ms simulated, 83 measured), not for 8B there (200/200: 6.4 against 10.3 ms) nor under load (8B, "
             "200/200, 250 clients: 117 against 606 "
             "ms; 70B, 1000/1000, 250 clients: 0.69 against 3.5 s): the measured TTFT grows far faster with the "
             "clients, some queue before the first token that the simulator does not model and the tables do not "
             "name, so their errors would say nothing about a vLLM run's TTFT. "
             "The throughput rows were measured at capacity (a full batch); a run whose throughput its offered load "
             "sets (an open loop below capacity) gets the same interval, conservative there: a faster real server "
             "would not serve more than is offered.",
             "",
             f"{len(rows)} held-out residuals ({', '.join(f'{labels[m]} {counts[m]}' for m in U.METRICS)}) "
             f"on {len(accs)} accelerators ({', '.join(accs)}).", "",
             f"**Coverage out of sample** (tests/test_intervals.py): over {COVERAGE_SEEDS} random halves of the "
             "measurements (fixed seeds), intervals fitted on one half cover this share of the other half's errors:", "",
             "| metric | rows checked per split | coverage of the 80% interval |", "|---|---|---|"]
    for m in (*U.METRICS, "all"):
        lines.append(f"| {labels.get(m, 'all metrics')} | {cov[m]['rows']} | {cov[m]['coverage']:.1%} |")
    lines += ["", "**Held-out rows, all sources** (ML.ENERGY, NVIDIA NIM, TensorRT-LLM, AMD's vLLM table, MLPerf Offline), against the fidelity targets "
              "(mean |error| <= 8% for throughput, ITL and power, <= 12% for J / token; worst row <= 25%):", "",
              "| metric | rows | accelerators | mean abs error | worst abs error | worst row |", "|---|---|---|---|---|---|"]
    for m in U.METRICS:
        sub = [r for r in rows if r["metric"] == m]
        if not sub:
            continue
        worst = max(sub, key=lambda r: abs(r["error"]))
        lines.append(f"| {labels[m]} | {len(sub)} | {len({r['accelerator'] for r in sub})} | "
                     f"{np.mean([abs(r['error']) for r in sub]):.1%} | {abs(worst['error']):.1%} | "
                     f"{worst['id']} ({worst['error']:+.0%}) |")
    lines += ["", "Shipped intervals (error quantiles e10 / e90 per group):", "",
              "| metric | group | rows | e10 | e90 |", "|---|---|---|---|---|"]
    for m in U.METRICS:
        for g, e in table[m].items():
            lines.append(f"| {labels[m]} | {g} | {e['n']} | {e['lo']:+.1%} | {e['hi']:+.1%} |")
    return lines + misses(rows) + ["", END, ""]


def misses(rows: list[dict]) -> list[str]:
    """Where the held-out errors concentrate: mean signed and absolute error per metric,
    accelerator, one or several GPUs and batch band (the ML.ENERGY rows, which carry all four
    metrics; groups of 4 rows or more)."""
    labels = {"throughput": "output tok/s", "itl": "median ITL", "power": "GPU power", "energy": "J / output token"}
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["source"] == "mlenergy":
            key = (r["accelerator"], "1 GPU" if r["tp"] == 1 else "2-8 GPUs", r["batch_band"])
            groups.setdefault(key, {m: [] for m in U.METRICS})[r["metric"]].append(r["error"])
    lines = ["", "### Where the held-out errors concentrate", "",
             "Mean signed error (mean |error|) of the ML.ENERGY held-out rows per accelerator, GPU count and batch "
             "band: a systematic sign is a model miss, a large |error| with a small mean is scatter.", "",
             "| accelerator | GPUs | batch | rows | " + " | ".join(labels[m] for m in U.METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(U.METRICS)]
    order = {name: i for i, (_, name) in enumerate(U.BATCH_BANDS)}
    for key in sorted(groups, key=lambda k: (k[0], k[1], order[k[2]])):
        g = groups[key]
        n = len(g["throughput"])
        if n < 4:
            continue
        cells = [f"{np.mean(g[m]):+.0%} ({np.mean(np.abs(g[m])):.0%})" if g[m] else "" for m in U.METRICS]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {n} | " + " | ".join(cells) + " |")
    return lines


def replace_section(text: str, new: list[str]) -> str:
    from sim.tools.validation_accel import replace_marked

    return replace_marked(text, new, BEGIN, END)


def provenance() -> dict:
    from sim.run import source_provenance

    return {**source_provenance(), "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.tools.validation_intervals", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/validation.md", help="report whose interval section is rewritten")
    args = ap.parse_args(argv)
    rows = load_residuals()
    old = json.loads(U.intervals_path().read_text()) if U.intervals_path().is_file() else {}
    simulated = old.get("provenance", {}).get("residuals_simulated", "unknown")  # the stored rows' own run
    table = write(rows, {**provenance(), "residuals_simulated": simulated})
    cov = coverage(rows)
    out = Path(args.out)
    out.write_text(replace_section(out.read_text() if out.exists() else "", section(rows, table, cov)))
    print("coverage", {m: f"{v['coverage']:.1%}" for m, v in cov.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
