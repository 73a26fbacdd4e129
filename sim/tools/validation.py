"""Predicted vs measured: the validation report (docs/validation.md).

Every row of hardware/calibration/measurements.csv is a published steady-state
measurement of a real server (model, hardware, parallelism, precision, batch cap,
prompt and output lengths) with its measured output throughput, median inter-token
latency, GPU power and energy per output token. :func:`predict` simulates the same
configuration as the benchmark measured it (:func:`sim.tools.burst.burst`: its ``requests``
sent at once to a server capped at ``concurrency`` running sequences, figures over the
steady-state window in which the batch stays full), and :func:`report` tabulates the errors, keeping
the points used by ``dcsim calibrate`` (role ``fit``) apart from the held-out ones.

Regenerate with ``python -m sim.tools.validation --out docs/validation.md``; the sections on
accelerators beyond NVIDIA (sim/tools/validation_accel.py), on TensorRT-LLM's max-load
throughput tables (sim/tools/validation_trtllm.py), on the prediction intervals fitted to the
held-out errors (sim/tools/validation_intervals.py, which also rewrites the shipped
hardware/calibration/intervals.json and residuals.csv) and on the sensitivity to the assumed
inputs (sim/tools/validation_sensitivity.py) are appended, and the MLPerf Inference Offline rows
(sim/tools/validation_mlperf.py) get their own section and count in the held-out summary; ``python -m`` of the accelerator,
TensorRT-LLM or interval module rewrites only its section (the interval one from the stored
residuals, without simulating), and ``--sensitivity-only`` only the sensitivity section.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from sim.hardware import catalog
from sim.tools import validation_sensitivity as VS
from sim.tools.validation_notes import HELDOUT_NOTE, MODEL_NOTES

METRICS = {  # metric -> (measured column, predicted key, label)
    "throughput": ("output_tokens_per_s", "output_tokens_per_s", "output tok/s"),
    "itl": ("itl_p50_s", "itl_p50_s", "median ITL (s)"),
    "power": ("gpu_power_w", "gpu_power_w", "GPU power (W)"),
    "energy": ("energy_per_token_j", "energy_per_output_token_j", "J / output token"),
}
# Held-out error bounds the tests keep (mean absolute percentage error over the report).
BOUNDS = {"throughput": 0.15, "itl": 0.15, "power": 0.20, "energy": 0.20}


def measurements_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "measurements.csv"


def heldout_path() -> Path:
    """More held-out rows (ML.ENERGY models measurements.csv leaves out, NVIDIA NIM closed-loop
    sweeps), derived by hardware/calibration/derive_heldout.py; never read by a fit."""
    return catalog.hardware_dir() / "calibration" / "heldout_serving.csv"


def _number(v: str, kind):
    """A cell as ``kind``; an empty cell (a metric the source does not publish) is NaN."""
    return kind(v) if v.strip() else math.nan


def load_points(path: Path | None = None, roles: tuple[str, ...] = ("fit", "holdout")) -> list[dict]:
    """The measurement rows with the given roles, numbers parsed: those of ``path``, or by
    default measurements.csv followed by the held-out rows of heldout_serving.csv. Rows of the
    latter carry ``kv_dtype``, ``itl_stat`` (median or mean ITL), ``bench`` (burst, closed_loop or
    max_load) and ``assumptions``; metrics they lack are NaN."""
    ints = {"tp", "concurrency", "requests", "prompt_tokens"}
    floats = {"output_mean", "output_cv", "measured_batch", "output_tokens_per_s", "itl_p50_s", "gpu_power_w",
              "energy_per_token_j"}
    out = []
    extra = [heldout_path()] if heldout_path().is_file() else []  # (a user's own hardware folder may lack it)
    for f in [path] if path else [measurements_path(), *extra]:
        with open(f, newline="") as fh:
            for r in csv.DictReader(fh):
                if r["role"] not in roles:
                    continue
                r = dict(r)
                for k in ints:
                    r[k] = int(r[k])
                for k in floats:
                    r[k] = _number(r[k], float)
                r["expert_parallel"] = r["expert_parallel"] == "True"
                out.append(r)
    return out


def output_distribution(mean: float, cv: float) -> dict:
    """Lognormal output lengths with the measured mean and coefficient of variation."""
    sigma2 = math.log(1.0 + cv * cv)
    return {"kind": "lognormal", "median": mean / math.sqrt(1.0 + cv * cv), "sigma": math.sqrt(sigma2)}


# The ML.ENERGY benchmark starts vLLM with --gpu-memory-utilization 0.95 (ml-energy/benchmark,
# mlenergy/llm/benchmark.py, spawn_vllm); the configurations' own server options leave it so.
GPU_MEMORY_UTILIZATION = 0.95


def predict(point: dict, performance: dict | None = None, power: dict | None = None) -> dict:
    """Simulated steady state of one measured configuration, measured as the benchmark did.

    The point's ``requests`` calls are sent at once to one replica capped at ``concurrency``
    running sequences, and the figures come from the benchmark's steady-state window
    (:func:`sim.tools.burst.burst`). ``performance`` overrides efficiency parameters of the
    roofline model (as a pool's ``performance:`` block would); ``power`` overrides
    PowerModel parameters (for fitting).
    """
    from sim.tools.burst import burst

    if point.get("bench") == "closed_loop":
        return predict_closed_loop(point, performance, power)
    if point.get("bench") == "max_load":
        return predict_max_load(point, performance, power)
    perf = {"kind": "roofline", **performance} if performance else None
    return burst(
        point["accelerator"], point["model"], point["requests"], point["concurrency"], point["prompt_tokens"],
        int(round(point["output_mean"])), tp=point["tp"], weight_dtype=point["weight_dtype"],
        expert_parallel=point["expert_parallel"], gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
        output_dist=point.get("output_dist") or output_distribution(point["output_mean"], point["output_cv"]),
        performance=perf, power=power,
    )


# A closed-loop row's engine token budget (TensorRT-LLM max_num_tokens; NIM does not publish its own),
# and the waves of its running batch simulated (the steady-state throughput settles within ~2% by 16).
CLOSED_LOOP_TOKENS, CLOSED_LOOP_WAVES = 8192, 16


def predict_closed_loop(point: dict, performance: dict | None = None, power: dict | None = None) -> dict:
    """Steady state of ``concurrency`` closed-loop clients (NVIDIA NIM's AIPerf tables) on TensorRT-LLM.

    The clients keep ``concurrency`` requests outstanding; in steady state that is a server with
    the whole request set queued and its running batch capped at ``concurrency``, or lower where
    the KV pool holds fewer whole sequences (TensorRT-LLM's default capacity scheduler admits a
    request only with room for its prompt and all its output). So the row runs as a burst
    (:func:`sim.tools.burst.burst`) of 16 waves of that cap (at most ``requests``) of fixed-length calls, the engine
    profile of hardware/calibration/trtllm.yaml in place of vLLM's overheads and trtllm-bench's
    KV pool (sim/tools/validation_trtllm.py); throughput over the steady-state window, ITL the
    mean time per output token of the calls inside it (what AIPerf reports)."""
    from sim.tools import validation_trtllm as VT
    from sim.tools.burst import burst

    prof = {**VT.load_profile().get(point["accelerator"], {}), **(performance or {})}
    isl, osl = point["prompt_tokens"], int(round(point["output_mean"]))
    bench_row = {"model": point["model"], "accelerator": point["accelerator"], "tp": point["tp"],
                 "weight_dtype": point["weight_dtype"], "num_requests": point["requests"], "isl": isl, "osl": osl}
    fits = VT.kv_tokens(bench_row, prof, point["concurrency"], CLOSED_LOOP_TOKENS) // (isl + osl)
    if fits < 1:
        raise ValueError(f"a request of {isl} + {osl} tokens does not fit the KV pool")
    cap = min(point["concurrency"], fits)
    out = burst(point["accelerator"], point["model"], min(point["requests"], max(CLOSED_LOOP_WAVES * cap, 16)), cap,
                isl, osl,
                tp=point["tp"], weight_dtype=point["weight_dtype"], kv_dtype=VT.KV_DTYPE,
                max_num_batched_tokens=CLOSED_LOOP_TOKENS, gpu_memory_utilization=VT.KV_FRACTION, output_dist="fixed",
                performance={"kind": "roofline", "mixed_layer_overhead_s": 0.0, **prof}, power=power)
    return {**out, "batch_cap": cap}


# vLLM's own defaults, for a max-load row whose source does not give them (AMD's ROCm tables)
MAX_LOAD_MEMORY, MAX_LOAD_TOKENS = 0.9, 8192


def predict_max_load(point: dict, performance: dict | None = None, power: dict | None = None) -> dict:
    """vLLM's offline throughput benchmark (AMD's ROCm tables): ``requests`` prompts of fixed length
    handed to one engine at once, its running batch capped at ``concurrency`` (max_num_seqs), every
    call generating exactly its output length. The benchmark's output tokens/s is every output token
    over the whole run, the opening prefill and the drain included: not a steady-state window."""
    from sim.tools.burst import burst

    perf = {"kind": "roofline", **performance} if performance else None
    osl = int(round(point["output_mean"]))
    out = burst(point["accelerator"], point["model"], point["requests"], point["concurrency"], point["prompt_tokens"],
                osl, tp=point["tp"], weight_dtype=point["weight_dtype"], kv_dtype=point["kv_dtype"],
                max_num_batched_tokens=MAX_LOAD_TOKENS, gpu_memory_utilization=MAX_LOAD_MEMORY, output_dist="fixed",
                performance=perf, power=power)
    return {**out, "output_tokens_per_s": out["calls_finished"] * osl / out["last_finish_s"]}


def _predict_one(args) -> dict:
    point, performance, power = args
    # parameters a calibration card may set but a scenario may not (no key in the performance schema, so
    # that adding one leaves every scenario's point id alone) reach the model through the card, for this call
    from sim.config.datacenter import PowerParams, RooflinePerf

    card_only = {k: v for k, v in (performance or {}).items() if k not in RooflinePerf.model_fields}
    card_only_w = {k: v for k, v in (power or {}).items() if k not in PowerParams.model_fields}
    card = catalog.calibration(point["accelerator"])
    cal, cal_w = card.perf, card.power
    saved, saved_w = dict(cal), dict(cal_w)
    cal.update(card_only)
    cal_w.update(card_only_w)
    try:
        return predict(point, {k: v for k, v in performance.items() if k not in card_only} if performance else None,
                       {k: v for k, v in power.items() if k not in card_only_w} if power else None)
    except Exception as e:  # a point the simulator cannot run is reported, not hidden
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        cal.clear()
        cal.update(saved)
        cal_w.clear()
        cal_w.update(saved_w)


def predict_all(points: list[dict], performance: dict | None = None, power: dict | None = None,
                workers: int = 1) -> list[dict]:
    """Predictions for many points, in parallel processes when ``workers`` > 1."""
    jobs = [(p, performance, power) for p in points]
    if workers <= 1:
        return [_predict_one(j) for j in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_predict_one, jobs))


def errors(points: list[dict], predictions: list[dict]) -> list[dict]:
    """Per point and metric: measured, predicted, signed relative error."""
    rows = []
    for p, pred in zip(points, predictions):
        row = {"point": p, "error": pred.get("error"), "mean_batch_seqs": pred.get("mean_batch_seqs", math.nan)}
        for name, (mcol, pkey, _) in METRICS.items():
            if name == "itl" and p.get("itl_stat") == "mean":  # the source reports the mean ITL
                pkey = "tpot_mean_s"
            meas, got = p[mcol], pred.get(pkey, math.nan)
            row[name] = (meas, got, got / meas - 1.0 if meas else math.nan)
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean and worst absolute relative error per metric."""
    out = {}
    for name in METRICS:
        e = np.array([abs(r[name][2]) for r in rows if not r["error"] and math.isfinite(r[name][2])])
        out[name] = {"n": int(len(e)), "mean": float(e.mean()) if len(e) else math.nan,
                     "worst": float(e.max()) if len(e) else math.nan}
    return out


def _fmt(v: float, metric: str) -> str:
    if not math.isfinite(v):
        return "n/a"
    if metric == "itl":
        return f"{v * 1000:.1f} ms"
    if metric == "energy":
        return f"{v:.3f}"
    return f"{v:,.0f}"


def report(rows: list[dict], excluded: list[dict], wall_s: float) -> str:
    """The markdown report: method, summary per role, and every point."""
    lines = [
        "# Validation: predicted vs measured",
        "",
        "Generated by `python -m sim.tools.validation --out docs/validation.md`; do not edit by hand.",
        "",
        "Each row is a published steady-state measurement of a real server (hardware/calibration/",
        "measurements.csv, derived by hardware/calibration/derive_measurements.py with its source).",
        "The simulator runs the same configuration the way the benchmark measured it (sim/tools/burst.py):",
        "the run's requests (198 GPQA or 1,024 Arena prompts, times the configuration's repeats) are",
        "sent at once to one vLLM server with the batch cap and gpu_memory_utilization 0.95, with the",
        "measured mean output length (lognormal with the measured spread) and the task's assumed",
        "prompt length. Output throughput, total GPU power and GPU energy per output token are taken",
        "over the benchmark's steady-state window (from the batch cap's worth of first tokens to the",
        "point where only the batch cap plus one requests remain unfinished); median inter-token",
        "latency (ITL) over the whole run. Error = predicted / measured - 1.",
        "",
        "Rows marked **fit** (Qwen3-8B, and Qwen3-235B-A22B in bf16 and fp8, on lm-arena-chat; on H100 also",
        "Qwen3-32B on 2 GPUs; batch cap",
        "<= 512) were used by `dcsim calibrate`, jointly, for the engine overheads (per step, per sequence,",
        "per layer of a step that carries a prefill), the all-reduce latency inside the engine, the",
        "grouped-expert and fp8-expert efficiencies (on median ITL and output throughput) and the power",
        "model (active adder, activity weights, draws during collectives, slow expert kernels and the",
        "per-sequence time); **held-out** rows (every other model and task) were not",
        "used for any fit. Kernel efficiencies and link bandwidth come from separate per-operator and",
        "NCCL tables (hardware/calibration/*.yaml).",
        "",
        *HELDOUT_NOTE,
        "",
        "Bounds tests/test_validation.py keeps on a spread sample of held-out points (batch cap <= 128), as mean |error|: "
        + ", ".join(f"{METRICS[m][2]} {b:.0%}" for m, b in BOUNDS.items()) + ".",
        "",
        "## Summary",
        "",
        "| set | metric | points | mean abs error | worst abs error |",
        "|---|---|---|---|---|",
    ]
    for role in ("holdout", "fit"):
        sub = [r for r in rows if r["point"]["role"] == role]
        for name, s in summarize(sub).items():
            lines.append(f"| {role} | {METRICS[name][2]} | {s['n']} | {s['mean']:.1%} | {s['worst']:.1%} |")
    lines += ["", "Held-out rows by source:", "", "| source | metric | points | mean abs error | worst abs error |",
              "|---|---|---|---|---|"]
    for label, keep in SOURCES:
        for name, s in summarize([r for r in rows if r["point"]["role"] == "holdout" and keep(r["point"])]).items():
            if s["n"]:
                what = "mean ITL (s)" if name == "itl" and "closed loop" in label else METRICS[name][2]
                lines.append(f"| {label} | {what} | {s['n']} | {s['mean']:.1%} | {s['worst']:.1%} |")
    failed = [r for r in rows if r["error"]]
    lines += ["", f"{len(rows)} points simulated in {wall_s:.0f} s wall time; {len(failed)} could not run."]
    for role, title in (("holdout", "Held-out points"), ("fit", "Fitting points")):
        lines += ["", f"## {title}", "",
                  "| model | hardware | task | batch cap | " + " | ".join(
                      f"{METRICS[m][2]} meas / pred / err" for m in METRICS) + " |",
                  "|---|---|---|---|" + "---|" * len(METRICS)]
        for r in rows:
            p = r["point"]
            if p["role"] != role or p.get("bench") == "mlperf_offline":  # (listed in their own section)
                continue
            hw = f"{p['tp']}x {p['accelerator']}" + (" EP" if p["expert_parallel"] else "") + f" {p['weight_dtype']}"
            experts = catalog.model(p["model"]).expert_weight_dtype  # a card's own expert storage (gpt-oss)
            hw += f"+{experts} experts" if experts else ""
            if r["error"]:
                cells = [f"error: {r['error']}"] + [""] * (len(METRICS) - 1)
            else:
                cells = [f"{_fmt(r[m][0], m)} / {_fmt(r[m][1], m)} / "
                         + (f"{r[m][2]:+.0%}" if math.isfinite(r[m][2]) else "n/a") for m in METRICS]
            lines.append(f"| {p['model']} | {hw} | {p['task']} | {p['concurrency']} | " + " | ".join(cells) + " |")
    if excluded:
        lines += ["", "## Excluded measurements", "",
                  "Published but not compared, with the reason (see derive_measurements.py):", ""]
        seen = set()
        for p in excluded:
            key = (p["model"], p["accelerator"], p["task"], p["reason"])
            if key not in seen:
                seen.add(key)
                lines.append(f"- {p['model']} on {p['accelerator']}, {p['task']}: {p['reason']}")
    sources = sorted({r["point"]["source"].split(" public/data/")[0] if r["point"]["id"].startswith("mlenergy")
                      else r["point"]["source"].split("), ")[0] + ")" for r in rows})
    lines += ["", "Sources (each row's exact table is in its `source` column): " + "; ".join(sources) + ".", ""]
    return "\n".join(lines + MODEL_NOTES)


# Which held-out rows come from where (the summary's per-source table)
SOURCES = (
    ("ML.ENERGY v3, measurements.csv models", lambda p: p["id"].startswith("mlenergy") and "assumptions" not in p),
    ("ML.ENERGY v3, more models (heldout_serving.csv)", lambda p: p["id"].startswith("mlenergy") and "assumptions" in p),
    ("NVIDIA NIM 1.8.0 closed loop (heldout_serving.csv)", lambda p: p.get("bench") == "closed_loop"),
    ("AMD ROCm vLLM max load, 8 MI300X (heldout_serving.csv)", lambda p: p.get("bench") == "max_load"),
    ("MLPerf Inference v4.1 / v5.1 Offline (mlperf_offline.csv)", lambda p: p.get("bench") == "mlperf_offline"),
)


SHAPE_CONCURRENCY = (1, 4, 16, 64, 256, 512, 1024)


def concurrency_shape(hardware: str = "h100-sxm", model: str = "llama-3.1-8b", prompt: int = 1000,
                      output: int = 400, max_num_seqs: int = 256) -> list[dict]:
    """The closed-loop sweep over concurrency that real servers show: throughput rises then
    saturates at the batch cap, time per token rises with batch, TTFT explodes once calls queue."""
    from sim.tools.estimate import estimate

    return [estimate(hardware, model, n, prompt, output, max_num_seqs=max_num_seqs) for n in SHAPE_CONCURRENCY]


def shape_section(rows: list[dict]) -> list[str]:
    r0 = rows[0]
    lines = ["", "## Shape of a concurrency sweep", "",
             f"{r0['model']} on one {r0['hardware']}, {r0['prompt_tokens']} prompt / {r0['output_tokens']} output "
             f"tokens, max_num_seqs {r0['max_num_seqs']}, closed loop (`dcsim estimate`):", "",
             "| concurrency | output tok/s | median ITL | TTFT p50 | GPU power | J / output token |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['concurrency']} | {r['output_tokens_per_s']:,.0f} | {r['itl_p50_s'] * 1000:.1f} ms | "
                     f"{r['ttft_p50_s']:.3f} s | {r['gpu_power_w']:.0f} W | {r['energy_per_output_token_j']:.3f} |")
    lines += ["", "Throughput rises and saturates once the batch cap is reached, time per token grows with the "
              "batch, and beyond the cap the extra clients wait in the queue, so TTFT grows with them.", ""]
    return lines


def sensitivity_lines(workers: int) -> list[str]:
    """The section on the assumed inputs: a spread of held-out rows, each input changed alone."""
    points = VS.sample(load_points(measurements_path()))  # the ML.ENERGY rows of measurements.csv
    runs = [q if VS.has_window(q["requests"], q["concurrency"]) else {**q, "requests": q["concurrency"] + 2}
            for q in VS.variants(points)]  # (too short a burst: reported n/a, simulated as the shortest valid one)
    return VS.section(points, VS.regroup(points, predict_all(runs, workers=workers)), METRICS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.tools.validation", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/validation.md")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="simulate only the first N points (a quick look)")
    ap.add_argument("--max-concurrency", type=int, default=None, help="only points with at most this batch cap")
    ap.add_argument("--skip-trtllm", action="store_true",
                    help="leave out the TensorRT-LLM section (python -m sim.tools.validation_trtllm writes only that one)")
    ap.add_argument("--sensitivity-only", action="store_true",
                    help="rewrite only the section on the assumed inputs of --out")
    args = ap.parse_args(argv)
    if args.sensitivity_only:
        out = Path(args.out)
        out.write_text(VS.replace_section(out.read_text() if out.exists() else "", sensitivity_lines(args.workers)))
        return 0
    points = load_points()
    if args.max_concurrency:
        points = [p for p in points if p["concurrency"] <= args.max_concurrency]
    if args.limit:
        points = points[: args.limit]
    t0 = time.perf_counter()
    rows = errors(points, predict_all(points, workers=args.workers))
    mlperf_section, mlperf = [], []
    if args.limit is None and args.max_concurrency is None:
        from sim.tools import validation_mlperf as VM  # MLPerf Offline rows: own section, and the held-out summary

        mlperf_section, mlperf = VM.report_lines(args.workers)
        mlperf = VM.as_validation_rows(mlperf)
    text = report(rows + mlperf, load_points(roles=("excluded",)), time.perf_counter() - t0)
    text += "\n".join(shape_section(concurrency_shape()))
    from sim.tools import validation_accel  # non-NVIDIA accelerators vs published bounds (its own section)

    t1 = time.perf_counter()
    text = validation_accel.replace_section(text, validation_accel.section(validation_accel.rows(),
                                                                          time.perf_counter() - t1))
    if mlperf_section:
        text = VM.replace_section(text, mlperf_section)
    trt = []
    if not args.skip_trtllm:
        from sim.tools import validation_trtllm  # TensorRT-LLM max-load throughput tables (its own section)

        section, held, trt = validation_trtllm.report_lines(args.workers)
        text = validation_trtllm.replace_section(text, section)
        print("trtllm holdout", f"mean {held['mean']:.1%} worst {held['worst']:.1%} (n={held['n']})")
    if args.limit is None and args.max_concurrency is None and not args.skip_trtllm:
        from sim.tools import validation_intervals as VI  # held-out errors -> the shipped prediction intervals

        resid = VI.residual_rows(rows + mlperf, trt)
        prov = VI.provenance()
        table = VI.write(resid, {**prov, "residuals_simulated": f"in this run, at {prov.get('git_commit')}"})
        text = VI.replace_section(text, VI.section(resid, table, VI.coverage(resid)))
    if args.limit is None and args.max_concurrency is None:
        text = VS.replace_section(text, sensitivity_lines(args.workers))
    Path(args.out).write_text(text)
    for role in ("holdout", "fit"):
        s = summarize([r for r in rows if r["point"]["role"] == role])
        print(role, {k: f"mean {v['mean']:.1%} worst {v['worst']:.1%} (n={v['n']})" for k, v in s.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
