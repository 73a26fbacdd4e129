"""TensorRT-LLM max-load throughput: the simulator with a TRT-LLM engine profile against NVIDIA's tables.

hardware/calibration/trtllm_throughput.csv (derived by derive_trtllm.py from TensorRT-LLM's
perf-overview, Apache-2.0) lists the total output throughput ``trtllm-bench throughput``
reached per model, GPU, TP degree, precision and input / output length: every request of the
run (1,000-30,000 of fixed lengths) queued at once, throughput = output tokens / time from the
first request to the last completion.

TensorRT-LLM is a different engine from the vLLM the per-accelerator calibration describes:
its kernels run on the same hardware (the kernel, link and expert efficiencies of
hardware/calibration/<accelerator>.yaml are kept), but its scheduler and runtime cost a
different time per step, and its fp8 / fp4 GEMMs reach their own share of the quantized
tensor-core peak. The **engine profile** hardware/calibration/trtllm.yaml holds those
per-step and per-sequence overheads and that quantized dense-GEMM efficiency per
accelerator, fitted (:func:`fit_profile`, ``dcsim
calibrate --engine trtllm``) to the rows marked ``fit``: one model per GPU, the smallest dense
model published for it. Every other row with a model and accelerator card is held out.

:func:`simulate` runs the benchmark as trtllm-bench does: the whole request set arrives at
once, the KV pool takes 95% of the memory left after the weights (``kv_cache_free_gpu_mem_
fraction 0.95``) in fp8 (ModelOpt FP8 / FP4 checkpoints quantize the KV cache too), the batch
cap and token budget follow trtllm-bench's heuristic (``finetune_setting``: the requests that
fit in the KV pool, capped at 4,096; tokens = batch x (1 + ISL / OSL), capped at 32,768), and,
as TensorRT-LLM's default capacity scheduler (guaranteed no evict) admits a request only
with room for its whole sequence, the running batch is capped at the requests whose full
ISL + OSL fits in the pool. MoE models run expert-parallel with data-parallel attention
(``attention_dp``), as perf-overview.md's options for MoE models (``enable_attention_dp``) set.

``python -m sim.tools.validation_trtllm`` rewrites only this section of docs/validation.md
(``--fit`` refits the profile first); ``python -m sim.tools.validation`` appends it to the report.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import yaml

from sim.hardware import catalog

BEGIN, END = "<!-- trtllm:begin -->", "<!-- trtllm:end -->"
ENGINE = "trtllm"
KV_FRACTION = 0.95  # trtllm-bench --kv_cache_free_gpu_mem_fraction in NVIDIA's runs
KV_DTYPE = "fp8"
MAX_BATCH = 4096  # trtllm-bench's cap on the batch size
MAX_TOKENS = 32768  # ... and on the tokens per iteration
OVERHEAD_KEYS = ("iteration_overhead_s", "per_seq_overhead_s")
PROFILE_KEYS = OVERHEAD_KEYS + ("quantized_dense_efficiency",)
# Bounds of the overhead fit (s) and the solver's unit for each key
PROFILE_FIT = {"iteration_overhead_s": (0.0, 0.02, 1e-3), "per_seq_overhead_s": (0.0, 5e-4, 1e-6)}
# Bounds of the quantized dense-GEMM efficiency, and the search's tolerance
DENSE_Q_BOUNDS, DENSE_Q_TOL = (0.3, 1.0), 0.02
# Accelerators built on another's compute die, whose quantized dense-GEMM efficiency is taken from it
# (`dcsim calibrate --engine trtllm --kernels-from`): H200 is H100's GH100 die with 141 GB of HBM3e
# (NVIDIA H200 datasheet: the same 989 / 1,979 TFLOPS dense bf16 / fp8 peaks as H100 SXM)
SAME_DIE = {"h200": "h100-sxm"}
# Held-out mean |error| bound tests/test_validation.py keeps (docs/validation.md states it)
HOLDOUT_BOUND = 0.15


def data_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "trtllm_throughput.csv"


def profile_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "trtllm.yaml"


def load_rows(roles: tuple[str, ...] = ("fit", "holdout")) -> list[dict]:
    """Rows of the derived table with the given roles, numbers parsed."""
    out = []
    with open(data_path(), newline="") as fh:
        for r in csv.DictReader(fh):
            if r["role"] in roles:
                r = dict(r)
                for k in ("tp", "isl", "osl", "num_requests"):
                    r[k] = int(r[k])
                r["output_tokens_per_s"] = float(r["output_tokens_per_s"])
                out.append(r)
    return out


def load_profile() -> dict[str, dict[str, float]]:
    """accelerator -> the engine profile's overrides (empty where none was fitted)."""
    f = profile_path()
    if not f.is_file():
        return {}
    card = yaml.safe_load(f.read_text()) or {}
    return {acc: {k: float(v["value"]) for k, v in keys.items()} for acc, keys in (card.get("accelerators") or {}).items()}


# --------------------------------------------------------------------------- simulation
def bench_settings(kv_tokens: int, isl: int, osl: int) -> tuple[int, int]:
    """trtllm-bench's (max batch size, max num tokens) for a KV pool of ``kv_tokens`` tokens
    (tensorrt_llm/bench/build/tuning.py, finetune_setting, pp = 1)."""
    raw_bs = min(kv_tokens / (isl + osl), MAX_BATCH)
    raw_tok = min(raw_bs * (1 + isl / osl), MAX_TOKENS)
    bs = _round_up(raw_bs, 64, ((256, 32), (1024, 128), (math.inf, 256)))
    tok = _round_up(raw_tok, 2048, ((4096, 256), (8192, 512), (math.inf, 1024)))
    return bs, tok


def _round(v: float) -> float:
    """Four significant figures (as the calibration cards keep them)."""
    return float(f"{v:.4g}") if v else 0.0


def _round_up(x: float, floor: int, tiers) -> int:
    """``x`` rounded up to the step of the first tier ``(below, step)`` with ``x < below``,
    and at least ``floor`` in the first tier (trtllm-bench's tuning rule)."""
    for i, (below, step) in enumerate(tiers):
        if x < below:
            v = step * math.ceil(x / step)
            return max(floor, v) if i == 0 else v
    raise ValueError(x)


def _raw(row: dict, overrides: dict, max_seqs: int, max_tokens: int, drain_s: float) -> dict:
    model = catalog.model(row["model"])
    pool = {"name": "trtllm", "accelerator": row["accelerator"], "model": row["model"], "tp": row["tp"],
            "weight_dtype": row["weight_dtype"], "kv_dtype": KV_DTYPE, "engine": {"gpu_memory_utilization": KV_FRACTION},
            "batcher": {"kind": "continuous", "max_num_seqs": max_seqs, "max_num_batched_tokens": max_tokens},
            # the profile's overheads replace the vLLM engine's, its cost of prefill-carrying steps too
            "performance": {"kind": "roofline", "mixed_layer_overhead_s": 0.0, **overrides}}
    if model.is_moe:  # perf-overview.md's llm_options for MoE models: enable_attention_dp
        pool["expert_parallel"] = pool["attention_dp"] = True
    cls = {"name": "bench", "pool": "trtllm", "arrival": {"kind": "burst", "count": row["num_requests"]},
           "prompt_tokens": {"kind": "fixed", "value": row["isl"]}, "output_tokens": {"kind": "fixed", "value": row["osl"]}}
    return {"name": "trtllm-bench", "seed": 0, "duration_s": 1.0, "drain_s": drain_s,
            "datacenter": {"pools": [pool]}, "workload": {"classes": [cls]}}


def kv_tokens(row: dict, overrides: dict, max_seqs: int, max_tokens: int) -> int:
    from sim.config import validate
    from sim.cluster.pools import resolve_pool

    spec = resolve_pool(validate(_raw(row, overrides, max_seqs, max_tokens, 1.0), "trtllm-bench", "."), 0, "trtllm-bench")
    return spec.kv_blocks * spec.block_size


def simulate(row: dict, overrides: dict | None = None) -> dict:
    """Simulated ``trtllm-bench throughput`` of one row: throughput, batch cap, token budget, and
    the run's iterations and sequence-iterations (what a change of the per-step and per-sequence
    overheads adds to its duration)."""
    from sim.config import validate
    from sim.output.memory import MemoryRecorder
    from sim.cluster.world import build

    overrides = dict(overrides if overrides is not None else load_profile().get(row["accelerator"], {}))
    isl, osl, n = row["isl"], row["osl"], row["num_requests"]
    kv = kv_tokens(row, overrides, 256, 8192)
    bs, tok = bench_settings(kv, isl, osl)
    kv = kv_tokens(row, overrides, bs, tok)  # the token budget sizes the activation reserve
    fits = kv // (isl + osl)
    if fits < 1:
        raise ValueError(f"a request of {isl} + {osl} tokens does not fit the KV pool ({kv} tokens)")
    cap = min(bs, fits)
    rec = MemoryRecorder()
    world = build(validate(_raw(row, overrides, cap, tok, 1e7), "trtllm-bench", "."), rec, "trtllm-bench")
    world.run()
    calls, steps = rec.table("calls"), rec.table("steps")
    finish = calls["finish_s"].to_numpy()
    done = np.isfinite(finish)
    span = float(finish[done].max() - calls["arrival_s"].to_numpy().min())
    kind = np.array(steps["kind"].to_pylist())
    busy = ~np.isin(kind, ("idle", "down", "off", "booting"))
    it = steps["iterations"].to_numpy()[busy]
    seqs = steps["batch_seqs"].to_numpy()[busy]
    out_tokens = float(calls["generated_tokens"].to_numpy()[done].sum())
    return {"output_tokens_per_s": out_tokens / span, "span_s": span, "output_tokens": out_tokens,
            "iterations": float(it.sum()), "seq_iterations": float((it * seqs).sum()), "max_num_seqs": cap,
            "mean_batch_seqs": float((it * seqs).sum() / it.sum()) if it.sum() > 0 else 0.0,
            "max_num_batched_tokens": tok, "bench_batch": bs, "calls_done": int(done.sum()), "calls": len(finish)}


def simulate_all(rows: list[dict], overrides: dict | None = None, workers: int = 1) -> list[dict]:
    """Simulations of many rows (``overrides``: accelerator -> profile; default the stored one)."""
    from sim.tools.burst import map_rows

    prof = load_profile() if overrides is None else overrides
    return map_rows(simulate, [(r, prof.get(r["accelerator"], {})) for r in rows], workers)


# --------------------------------------------------------------------------- profile fit
def fit_profile(accelerator: str, workers: int = 2, kernels_from: str | None = None) -> dict:
    """The TRT-LLM profile for ``accelerator``: per-step and per-sequence overheads and the
    quantized dense-GEMM efficiency, least squares on log throughput over its ``fit`` rows.

    The rows mix decode-heavy runs (overheads, memory-bound steps) and prefill-heavy ones
    (compute-bound GEMMs), which is what separates the efficiency from the overheads. For a
    given efficiency the overheads are a linear fit (:func:`_fit_overheads`); a golden-section
    search over the efficiency minimizes what that fit leaves. Rows with bf16 weights do
    not depend on it: with none quantized it stays 1.0. The errors reported are those of
    a last simulation at the result.

    With ``kernels_from`` the quantized dense-GEMM efficiency is that accelerator's fitted one
    (the same kernels on the same compute die: H200 is H100's GH100 with more, faster HBM) and
    only the engine overheads are fitted here: one model's rows at small batches separate a
    kernel efficiency from the overheads only weakly.
    """
    rows = [r for r in load_rows(("fit",)) if r["accelerator"] == accelerator]
    if not rows:
        raise ValueError(f"no 'fit' rows for {accelerator} in {data_path()}")
    meas = np.array([r["output_tokens_per_s"] for r in rows])
    if kernels_from is not None:
        other = load_profile().get(kernels_from, {})
        if "quantized_dense_efficiency" not in other:
            raise ValueError(f"{kernels_from} has no fitted TensorRT-LLM profile in {profile_path().name}")
        q = other["quantized_dense_efficiency"]
        x, got = _fit_overheads(accelerator, rows, q, workers, resimulate=True)
        err = np.abs(got / meas - 1.0)
        return {**x, "quantized_dense_efficiency": q, "n": len(rows), "kernels_from": kernels_from,
                "models": sorted({f"{r['source_model']} ({r['weight_dtype']}, TP{r['tp']})" for r in rows}),
                "mean_abs_error": float(err.mean()), "worst_abs_error": float(err.max())}
    cache: dict[float, float] = {}

    def loss(q: float) -> float:
        if q not in cache:
            _, got = _fit_overheads(accelerator, rows, q, workers)
            cache[q] = float(np.mean(np.log(got / meas) ** 2))
        return cache[q]

    lo, hi = DENSE_Q_BOUNDS
    if all(catalog.DTYPE_BYTES[r["weight_dtype"]] >= 2 for r in rows):
        lo = hi
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    while hi - lo > DENSE_Q_TOL:
        if loss(a) <= loss(b):
            hi, b = b, a
            a = hi - golden * (hi - lo)
        else:
            lo, a = a, b
            b = lo + golden * (hi - lo)
    best = min(cache, key=cache.get) if cache else hi
    x, got = _fit_overheads(accelerator, rows, best, workers, resimulate=True)
    err = np.abs(got / meas - 1.0)
    return {**x, "quantized_dense_efficiency": best, "n": len(rows),
            "models": sorted({f"{r['source_model']} ({r['weight_dtype']}, TP{r['tp']})" for r in rows}),
            "mean_abs_error": float(err.mean()), "worst_abs_error": float(err.max())}


def _fit_overheads(accelerator: str, rows: list[dict], dense_q: float, workers: int,
                   resimulate: bool = False) -> tuple[dict, np.ndarray]:
    """Per-step and per-sequence overheads for the rows at quantized dense-GEMM efficiency
    ``dense_q``, and the throughputs at them.

    A run's duration grows by (iterations x d overhead + sequence-iterations x d per-sequence
    overhead) when the overheads change (the offline batch is set by the KV pool, not by
    speed), so one simulation at the accelerator's vLLM overheads gives a linear model of
    every row's duration, solved by least squares on log throughput. The throughputs
    returned are that model's, or with ``resimulate`` a second simulation's.
    """
    from scipy.optimize import least_squares

    from sim.models.efficiency import DEFAULT_EFFICIENCY

    cal = catalog.calibration(accelerator).perf
    x = {k: cal.get(k, DEFAULT_EFFICIENCY[k]) for k in OVERHEAD_KEYS}
    meas = np.array([r["output_tokens_per_s"] for r in rows])
    lo = [PROFILE_FIT[k][0] / PROFILE_FIT[k][2] for k in OVERHEAD_KEYS]
    hi = [PROFILE_FIT[k][1] / PROFILE_FIT[k][2] for k in OVERHEAD_KEYS]
    units = np.array([PROFILE_FIT[k][2] for k in OVERHEAD_KEYS])
    sims = _simulated(accelerator, rows, {**x, "quantized_dense_efficiency": dense_q}, workers)
    span = np.array([s["span_s"] for s in sims])
    tokens = np.array([s["output_tokens"] for s in sims])
    its = np.array([s["iterations"] for s in sims])
    seq_its = np.array([s["seq_iterations"] for s in sims])
    x0 = np.array([x[k] for k in OVERHEAD_KEYS]) / units

    def model(v):
        d = (v - x0) * units
        return tokens / np.maximum(span + its * d[0] + seq_its * d[1], 1e-9)

    sol = least_squares(lambda v: np.log(model(v)) - np.log(meas), x0=np.clip(x0, lo, hi), bounds=(lo, hi),
                        x_scale="jac")
    # (a value at its lower bound is exactly 0, not the solver's round-off: under 1 ns per sequence or
    # 1 us per step)
    x = {k: float(v * u) if v > 1e-3 else 0.0 for k, v, u in zip(OVERHEAD_KEYS, sol.x, units)}
    if not resimulate:
        return x, model(sol.x)
    sims = _simulated(accelerator, rows, {**x, "quantized_dense_efficiency": dense_q}, workers)
    return x, np.array([s["output_tokens_per_s"] for s in sims])


def _simulated(accelerator: str, rows: list[dict], profile: dict, workers: int) -> list[dict]:
    sims = simulate_all(rows, {accelerator: profile}, workers)
    bad = [s["error"] for s in sims if "error" in s]
    if bad:
        raise ValueError(f"{accelerator}: {bad[0]}")
    return sims


def write_profile(accelerator: str, fit: dict) -> Path:
    """Merge one accelerator's fitted profile into the profile card, with its source."""

    f = profile_path()
    card = yaml.safe_load(f.read_text()) if f.is_file() else {}
    card = card or {}
    card.setdefault("engine", ENGINE)
    card["fitted_by"] = "dcsim calibrate --engine trtllm (sim/tools/validation_trtllm.py fit_profile)"
    card["notes"] = [
        "TensorRT-LLM engine profile: per-step and per-sequence overheads of TensorRT-LLM (PyTorch backend) "
        "replacing the vLLM ones of hardware/calibration/<accelerator>.yaml, and the share of the bf16 GEMM "
        "efficiency its quantized (fp8 / fp4) dense GEMMs reach; kernel, link and expert efficiencies stay the "
        "accelerator's",
        f"fitted to the 'fit' rows of {data_path().name} (one model per GPU); every other row is held out "
        "(docs/validation.md, TensorRT-LLM section)",
    ]
    src = (f"fit to the output throughput of {fit['n']} 'fit' rows of {data_path().name} "
           f"({', '.join(fit['models'])}; mean |error| {fit['mean_abs_error']:.1%}, worst {fit['worst_abs_error']:.1%})")
    accs = card.setdefault("accelerators", {})
    accs[accelerator] = {k: {"value": _round(fit[k]), "source": src} for k in PROFILE_KEYS}
    if fit.get("kernels_from"):
        accs[accelerator]["quantized_dense_efficiency"]["source"] = (
            f"taken from {fit['kernels_from']} (the same compute die and kernels; its own rows fit only the "
            f"overheads: {src[len('fit to '):]})")
    card["accelerators"] = dict(sorted(accs.items()))
    f.write_text(yaml.safe_dump(card, sort_keys=False, width=110))
    return f


# --------------------------------------------------------------------------- report
def errors(rows: list[dict], sims: list[dict]) -> list[dict]:
    out = []
    for r, s in zip(rows, sims):
        got = s.get("output_tokens_per_s", math.nan)
        out.append({"row": r, "sim": s, "error": s.get("error"), "rel": got / r["output_tokens_per_s"] - 1.0})
    return out


def summarize(results: list[dict]) -> dict:
    e = np.array([abs(x["rel"]) for x in results if not x["error"] and math.isfinite(x["rel"])])
    return {"n": int(len(e)), "mean": float(e.mean()) if len(e) else math.nan,
            "worst": float(e.max()) if len(e) else math.nan}


def section(results: list[dict], skipped: list[dict], wall_s: float) -> list[str]:
    prof = load_profile()
    lines = [BEGIN, "", "## TensorRT-LLM: max-load throughput", "",
             "Generated by `python -m sim.tools.validation_trtllm` (sim/tools/validation_trtllm.py). NVIDIA's TensorRT-LLM "
             "performance tables (perf-overview.md, `trtllm-bench throughput`, PyTorch backend, every request queued "
             "at once, fixed input / output lengths; hardware/calibration/trtllm_throughput.csv, derived by "
             "derive_trtllm.py) against the simulator running the same offline benchmark: the request set arrives at "
             "once, fp8 KV pool in 95% of the memory left after the weights, trtllm-bench's batch and token-budget "
             "heuristic, the running batch capped at the requests whose whole sequence fits the pool (TensorRT-LLM's "
             "guaranteed-no-evict scheduler); throughput = output tokens / (last completion - first arrival).", "",
             "TensorRT-LLM is its own engine: the kernel, link and expert efficiencies of "
             "hardware/calibration/<accelerator>.yaml are kept, and the **TRT-LLM engine profile** "
             "(hardware/calibration/trtllm.yaml, `dcsim calibrate --engine trtllm`) replaces the vLLM per-step and "
             "per-sequence overheads and sets the efficiency of quantized dense GEMMs (against the fp8 / fp4 peak, "
             "as a share of the bf16 GEMM efficiency), fitted per GPU to one model's rows (**fit**: the smallest dense model published "
             "for that GPU); every other model on that GPU is **held out**. MoE models run expert-parallel with "
             "data-parallel attention (`attention_dp`, perf-overview.md's `enable_attention_dp`).", ""]
    if prof:
        lines += ["| accelerator | per-step overhead | per-sequence overhead | quantized dense-GEMM efficiency |",
                  "|---|---|---|---|"]
        for acc, v in sorted(prof.items()):
            lines.append(f"| {acc} | {v.get('iteration_overhead_s', math.nan) * 1e3:.2f} ms | "
                         f"{v.get('per_seq_overhead_s', math.nan) * 1e6:.1f} us | "
                         f"{v.get('quantized_dense_efficiency', 1.0):.2f} |")
        lines.append("")
    lines += [f"Held-out bound tests/test_validation.py keeps on the quick held-out rows (the dense models at "
              f"20000 / 2000 tokens, every GPU): mean |error| <= {HOLDOUT_BOUND:.0%}. The Qwen3-235B-A22B rows run "
              "with data-parallel attention, whose sequences the simulator spreads evenly over the GPUs; a long "
              "prompt, prefilled whole on one GPU while the others wait at the experts, is not, so the "
              "prefill-heavy rows come out fast.", "",
              "| set | rows | mean abs error | worst abs error |", "|---|---|---|---|"]
    for role in ("holdout", "fit"):
        s = summarize([x for x in results if x["row"]["role"] == role])
        lines.append(f"| {role} | {s['n']} | {s['mean']:.1%} | {s['worst']:.1%} |")
    by = {}
    for x in results:
        if x["row"]["role"] == "holdout" and not x["error"]:
            by.setdefault((x["row"]["source_model"], x["row"]["accelerator"]), []).append(abs(x["rel"]))
    if by:
        lines += ["", "Held-out mean |error| by model and GPU: " + "; ".join(
            f"{m} on {a} {np.mean(v):.0%} (n={len(v)})" for (m, a), v in sorted(by.items())) + "."]
    failed = [x for x in results if x["error"]]
    lines += ["", f"{len(results)} rows simulated in {wall_s:.0f} s wall time; {len(failed)} could not run."]
    for role, title in (("holdout", "Held-out rows"), ("fit", "Fitting rows")):
        lines += ["", f"### {title}", "",
                  "| model | hardware | ISL / OSL | requests | batch cap | output tok/s meas / pred / err |",
                  "|---|---|---|---|---|---|"]
        for x in results:
            r, s = x["row"], x["sim"]
            if r["role"] != role:
                continue
            hw = f"{r['tp']}x {r['accelerator']} {r['weight_dtype']}"
            if x["error"]:
                cell, cap = f"error: {x['error']}", ""
            else:
                cell = f"{r['output_tokens_per_s']:,.0f} / {s['output_tokens_per_s']:,.0f} / {x['rel']:+.0%}"
                cap = str(s["max_num_seqs"])
            lines.append(f"| {r['source_model']} ({r['model']}) | {hw} | {r['isl']} / {r['osl']} | {r['num_requests']} | "
                         f"{cap} | {cell} |")
    if skipped:
        seen = {}
        for r in skipped:
            seen.setdefault(r["reason"], set()).add(f"{r['source_model']} on {r['accelerator'] or '?'}")
        lines += ["", "Skipped (no card in the simulator): " + "; ".join(
            f"{reason} ({len([r for r in skipped if r['reason'] == reason])} rows)" for reason in sorted(seen)) + "."]
    lines += ["", f"Source: {results[0]['row']['source'] if results else ''}; the table's figures are kept in "
              "hardware/calibration/trtllm_throughput.csv under that licence.", "", END, ""]
    return lines


def replace_section(text: str, new: list[str]) -> str:
    """``text`` with its TensorRT-LLM section replaced by ``new`` (appended if it has none)."""
    from sim.tools.validation_accel import replace_marked

    return replace_marked(text, new, BEGIN, END)


def report_lines(workers: int = 2) -> tuple[list[str], dict, list[dict]]:
    """The section, the held-out summary and the per-row results."""
    t0 = time.perf_counter()
    rows = load_rows()
    results = errors(rows, simulate_all(rows, workers=workers))
    skipped = load_rows(("skipped",))
    held = summarize([x for x in results if x["row"]["role"] == "holdout"])
    return section(results, skipped, time.perf_counter() - t0), held, results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.tools.validation_trtllm", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/validation.md", help="report whose TensorRT-LLM section is rewritten")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fit", action="store_true", help="refit the engine profile of every accelerator first")
    args = ap.parse_args(argv)
    if args.fit:
        for acc in sorted({r["accelerator"] for r in load_rows(("fit",))}, key=lambda a: a in SAME_DIE):
            f = fit_profile(acc, args.workers, SAME_DIE.get(acc))
            print(f"{acc}: {write_profile(acc, f)}: " + ", ".join(f"{k} {f[k]:.4g}" for k in PROFILE_KEYS)
                  + f" (fit mean |error| {f['mean_abs_error']:.1%})")
    lines, s, _ = report_lines(args.workers)
    out = Path(args.out)
    out.write_text(replace_section(out.read_text() if out.exists() else "", lines))
    print(f"held out: mean |error| {s['mean']:.1%}, worst {s['worst']:.1%} (n={s['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
