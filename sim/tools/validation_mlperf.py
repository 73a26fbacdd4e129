"""MLPerf Inference Offline throughput: the simulator against audited Llama-2-70B results.

hardware/calibration/mlperf_offline.csv (derived by derive_mlperf.py from mlcommons/inference_results
v4.1 and v5.1, every row naming its results file and the engine configuration it was read from)
lists the closed-division Llama-2-70B Offline results on accelerators the project has a card for:
tokens/s of the whole system, the run's mean output length (tokens/s / samples/s), and the engine
the submitter ran: TensorRT-LLM (NVIDIA and the OEMs running NVIDIA's code: tensor / pipeline
degree, batch size, token budget, KV-cache share and dtype of its config), or vLLM on ROCm (AMD and
its OEMs: the same from its engine YAML / launch script). Every row is held out: nothing is fitted
to them.

Offline means every sample is queued at once and the metric is tokens over the run (24,576-sample
draws, 10-40 minutes): a max-load throughput run on ``replicas`` independent engines (GPUs / (tp x
pp)), each fed its share. :func:`simulate` runs one engine with :func:`sim.tools.burst.burst` (the
whole burst queued, throughput over the steady-state window in which the batch stays full, which is
what a 40-minute run measures) and multiplies by the replicas:

- TensorRT-LLM rows take the TensorRT-LLM engine profile of hardware/calibration/trtllm.yaml (its
  per-step and per-sequence overheads and quantized-GEMM efficiency replace the vLLM ones, as in
  sim/tools/validation_trtllm.py; fitted to NVIDIA's trtllm-bench tables, not to these rows), the
  config's KV share taken as the engine's memory share (as that module does for trtllm-bench's);
- vLLM rows take the card's own calibration (hardware/calibration/<card>.yaml: for MI300X / MI325X
  AMD's measured GEMM ceilings and H100's engine host costs, nothing fitted to a serving row, the
  defaults of sim/models/perf.py for the rest) and the config's gpu_memory_utilization;
- lengths: output lognormal with the run's measured mean and an assumed spread (CV
  :data:`OUTPUT_CV`), capped at the benchmark's 1,024 generated tokens; input a fixed
  :data:`INPUT_TOKENS` tokens (the dataset's input-length statistics are not in any source read
  here; the dataset's filter keeps prompts under 1,024 tokens). :func:`sensitivity` reports how
  much the input assumption moves a prediction.

Power: some rows carry the PTDaemon system wall power of the run (closed power division). It is the
whole system, CPUs and fans included, so it is listed beside the row and not compared with the
simulator's GPU power (no GPU share is invented).

``python -m sim.tools.validation_mlperf`` rewrites only this section of docs/validation.md;
``python -m sim.tools.validation`` adds it to the report and its rows to the held-out summary.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from sim.hardware import catalog

BEGIN, END = "<!-- mlperf:begin -->", "<!-- mlperf:end -->"
MODEL = "llama-2-70b"
# Assumed input length (tokens) and output-length spread: not published in a source read here (see above)
INPUT_TOKENS, OUTPUT_CV, MAX_OUTPUT = 300, 1.0, 1024
# Requests per engine in the simulated burst, per slot of its batch cap (the steady window needs a queue)
REQUESTS_PER_SLOT = 3
INTS = ("gpus", "nodes", "tp", "pp", "replicas", "max_batch", "max_tokens")
FLOATS = ("kv_fraction", "power_limit_w", "output_tokens_per_s", "samples_per_s", "mean_output_tokens", "system_power_w")


def data_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "mlperf_offline.csv"


def load_rows(roles: tuple[str, ...] = ("holdout",)) -> list[dict]:
    """Rows of the derived table with the given roles, numbers parsed (empty cells are NaN / 0)."""
    out = []
    with open(data_path(), newline="") as fh:
        for r in csv.DictReader(fh):
            if r["role"] not in roles:
                continue
            r = dict(r)
            for k in INTS:
                r[k] = int(float(r[k])) if r[k].strip() else 0
            for k in FLOATS:
                r[k] = float(r[k]) if r[k].strip() else math.nan
            out.append(r)
    return out


def engine_settings(row: dict) -> dict:
    """burst() options of one engine of the row (the engine's profile, memory share, batch cap)."""
    perf = None
    if row["engine"] == "trtllm":
        from sim.tools.validation_trtllm import load_profile

        # the profile's overheads replace the vLLM engine's, its cost of prefill-carrying steps too
        perf = {"kind": "roofline", "mixed_layer_overhead_s": 0.0, **load_profile().get(row["accelerator"], {})}
    return {"tp": row["tp"], "pp": max(row["pp"], 1), "weight_dtype": row["weight_dtype"], "kv_dtype": row["kv_dtype"],
            "max_num_batched_tokens": row["max_tokens"], "gpu_memory_utilization": row["kv_fraction"],
            "power_cap_w": row["power_limit_w"] if math.isfinite(row["power_limit_w"]) else None, "performance": perf}


def simulate(row: dict, input_tokens: int = INPUT_TOKENS) -> dict:
    """Predicted system tokens/s of one row: one engine's steady-state burst throughput x replicas."""
    from sim.tools.burst import burst

    # lognormal with the run's mean and CV OUTPUT_CV: sigma^2 = ln(1 + CV^2), median = mean / sqrt(1 + CV^2)
    dist = {"kind": "lognormal", "median": row["mean_output_tokens"] / math.sqrt(1.0 + OUTPUT_CV ** 2),
            "sigma": math.sqrt(math.log(1.0 + OUTPUT_CV ** 2)), "max": MAX_OUTPUT}
    cap = row["max_batch"]
    r = burst(row["accelerator"], MODEL, REQUESTS_PER_SLOT * cap, cap, input_tokens, int(round(row["mean_output_tokens"])),
              output_dist=dist, **engine_settings(row))
    return {"engine_tokens_per_s": r["output_tokens_per_s"], "output_tokens_per_s": r["output_tokens_per_s"] * row["replicas"],
            "mean_batch_seqs": r["mean_batch_seqs"], "kv_gib": r["kv_gib"], "preemptions": r["preemptions"]}


def simulate_all(rows: list[dict], workers: int = 1, input_tokens: int = INPUT_TOKENS) -> list[dict]:
    from sim.tools.burst import map_rows

    return map_rows(simulate, [(r, input_tokens) for r in rows], workers)


def errors(rows: list[dict], sims: list[dict]) -> list[dict]:
    return [{"row": r, "sim": s, "error": s.get("error"),
             "rel": s.get("output_tokens_per_s", math.nan) / r["output_tokens_per_s"] - 1.0} for r, s in zip(rows, sims)]


def summarize(results: list[dict]) -> dict:
    e = np.array([abs(x["rel"]) for x in results if not x["error"] and math.isfinite(x["rel"])])
    return {"n": int(len(e)), "mean": float(e.mean()) if len(e) else math.nan,
            "worst": float(e.max()) if len(e) else math.nan}


def as_validation_rows(results: list[dict]) -> list[dict]:
    """The results in the shape of sim/tools/validation.py's rows (throughput only; the other
    metrics NaN), so its held-out summary counts them."""
    nan = (math.nan, math.nan, math.nan)
    out = []
    for x in results:
        r, pred = x["row"], x["sim"].get("output_tokens_per_s", math.nan)
        point = {**r, "role": "holdout", "bench": "mlperf_offline", "model": MODEL, "task": "mlperf offline",
                 "concurrency": r["max_batch"], "expert_parallel": False,
                 "source": f"MLCommons MLPerf Inference {r['version']} results (closed division), {r['results_file']}"}
        out.append({"point": point, "pred": x["sim"], "error": x["error"],
                    "mean_batch_seqs": x["sim"].get("mean_batch_seqs", math.nan),
                    "throughput": (r["output_tokens_per_s"], pred, x["rel"]), "itl": nan, "power": nan, "energy": nan})
    return out


def sensitivity(rows: list[dict], workers: int = 1) -> list[tuple[int, float]]:
    """Mean signed change of the prediction when the assumed input length is 200 or 400 tokens."""
    base = simulate_all(rows, workers)
    out = []
    for isl in (200, 400):
        alt = simulate_all(rows, workers, isl)
        d = [a["output_tokens_per_s"] / b["output_tokens_per_s"] - 1 for a, b in zip(alt, base)
             if "error" not in a and "error" not in b]
        out.append((isl, float(np.mean(d)) if d else math.nan))
    return out


# --------------------------------------------------------------------------- report
# Rows the quick sensitivity check re-simulates: the first of each (version, accelerator, engine)
def _spread(rows: list[dict]) -> list[dict]:
    seen = {}
    for r in rows:
        seen.setdefault((r["version"], r["accelerator"], r["engine"]), r)
    return list(seen.values())


def section(results: list[dict], excluded: list[dict], wall_s: float, sens: list[tuple[int, float]]) -> list[str]:
    lines = [BEGIN, "", "## MLPerf Inference: Offline throughput", "",
             "Generated by `python -m sim.tools.validation_mlperf` (sim/tools/validation_mlperf.py). Audited "
             "closed-division MLPerf Inference results (MLCommons inference_results v4.1 and v5.1; v5.0 could not be "
             "read here), Llama-2-70B Offline, on the accelerators the project has a card for "
             "(hardware/calibration/mlperf_offline.csv, derived by derive_mlperf.py: each row names its results file "
             "and the engine configuration file its tensor-parallel degree, batch size, token budget and KV-cache share "
             "and dtype were read from). All rows are held out: nothing is fitted to them.", "",
             "Offline queues every sample at once; the metric is the system's tokens/s over a 10-40 minute run. The "
             "simulator runs one engine (tp x pp GPUs) on a burst of "
             f"{REQUESTS_PER_SLOT}x its batch cap, takes the steady-state throughput (sim/tools/burst.py) and multiplies "
             "by the engines in the system (GPUs / (tp x pp)). TensorRT-LLM rows (NVIDIA and OEMs running NVIDIA's "
             "code) use the TensorRT-LLM engine profile (hardware/calibration/trtllm.yaml, fitted to trtllm-bench "
             "tables of other models); vLLM-on-ROCm rows (AMD and OEMs running AMD's code) use the card's vLLM "
             "profile (hardware/calibration/mi300x.yaml, mi325x.yaml: AMD's measured GEMM ceilings and H100's engine "
             "host costs, nothing fitted to a serving row; the defaults of sim/models/perf.py for the rest). Output "
             f"lengths are lognormal with each run's measured mean (tokens/s / samples/s), CV {OUTPUT_CV:g} (assumed), "
             f"capped at {MAX_OUTPUT}; input lengths a fixed {INPUT_TOKENS} tokens (assumed: the dataset's input "
             "statistics are not in a source read here; its filter keeps prompts under 1,024 tokens)."]
    if sens:
        lines += ["", "Sensitivity to that assumption (one row per version, accelerator and engine, re-simulated): "
                  + "; ".join(f"{isl} input tokens moves the prediction by {d:+.1%} on average" for isl, d in sens) + "."]
    lines += ["", "| set | rows | mean abs error | worst abs error |", "|---|---|---|---|"]
    s = summarize(results)
    lines.append(f"| all held-out | {s['n']} | {s['mean']:.1%} | {s['worst']:.1%} |")
    groups: dict = {}
    for x in results:
        groups.setdefault((x["row"]["accelerator"], x["row"]["engine"]), []).append(x)
    for (acc, eng), xs in sorted(groups.items()):
        g = summarize(xs)
        lines.append(f"| {acc}, {eng} | {g['n']} | {g['mean']:.1%} | {g['worst']:.1%} |")
    signed = {k: np.mean([x["rel"] for x in v if not x["error"]]) for k, v in groups.items()}
    lines += ["", "Signed mean error by accelerator: " + "; ".join(
        f"{a} ({e}) {v:+.0%}" for (a, e), v in sorted(signed.items())) + ". Not tuned to these rows: "
        "where a group is off as a whole, that is the engine profile or the card's default efficiencies missing "
        "this engine's speed, not noise."]
    lines += ["", "The 99% and 99.9% accuracy targets are separate audited results, but most systems file the same "
              "run for both (identical log figures): that run is one row here, the 99.9 copy listed as excluded. "
              "MaxQ rows (closed power division) ran with each GPU capped at the config's power_limit; the "
              "simulator applies that cap."]
    failed = [x for x in results if x["error"]]
    lines += ["", f"{len(results)} rows simulated in {wall_s:.0f} s wall time; {len(failed)} could not run.", "",
              "| version | submitter | system | benchmark | accelerator | GPUs | software | tp x pp, engines | batch cap "
              "| output tok/s meas / pred / err | system power (W) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in results:
        r, sim = x["row"], x["sim"]
        cell = (f"error: {x['error']}" if x["error"] else
                f"{r['output_tokens_per_s']:,.0f} / {sim['output_tokens_per_s']:,.0f} / {x['rel']:+.0%}")
        watts = f"{r['system_power_w']:,.0f}" if math.isfinite(r["system_power_w"]) else ""
        sw = "TensorRT-LLM" if r["engine"] == "trtllm" else "vLLM (ROCm)"
        lines.append(f"| {r['version']} | {r['submitter']} | {r['system']} | {r['benchmark']} | {r['accelerator']} | "
                     f"{r['gpus']} | {sw} {r['weight_dtype']}, KV {r['kv_dtype']} | {r['tp']} x {max(r['pp'], 1)}, "
                     f"{r['replicas']} | {r['max_batch']} | {cell} | {watts} |")
    lines += ["", "System power is the mean PTDaemon wall-power reading of the run (closed power division): the whole "
              "system, so it is listed, not compared with the simulator's GPU power."]
    if excluded:
        reasons: dict = {}
        for r in excluded:
            reasons.setdefault(r["reason"], []).append(f"{r['submitter']}/{r['system']}")
        lines += ["", "Excluded (published, not simulated):", ""]
        for reason, systems in sorted(reasons.items()):
            lines.append(f"- {reason}: {len(systems)} rows ({', '.join(sorted(set(systems)))})")
    lines += ["", "Not read: the Mixtral-8x7B and Llama-3.1-405B Offline results of the same rounds (their datasets' "
              "input-length statistics are not in a source read here, and the 405B runs use pipeline parallelism "
              "over 2-72 GPUs); the v4.1 B200 preview (its configuration was private)."]
    lines += ["", "Source: MLCommons MLPerf Inference results, mlcommons/inference_results_v4.1 and _v5.1 (Apache-2.0); "
              "each row's results file and commit are in hardware/calibration/mlperf_offline.csv.", "", END, ""]
    return lines


def replace_section(text: str, new: list[str]) -> str:
    """``text`` with its MLPerf section replaced by ``new`` (appended if it has none)."""
    from sim.tools.validation_accel import replace_marked

    return replace_marked(text, new, BEGIN, END)


def report_lines(workers: int = 2, with_sensitivity: bool = True) -> tuple[list[str], list[dict]]:
    """The section and the per-row results."""
    t0 = time.perf_counter()
    rows = load_rows()
    results = errors(rows, simulate_all(rows, workers))
    wall = time.perf_counter() - t0
    sens = sensitivity(_spread(rows), workers) if with_sensitivity else []
    return section(results, load_rows(("excluded",)), wall, sens), results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.tools.validation_mlperf", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/validation.md", help="report whose MLPerf section is rewritten")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    lines, results = report_lines(args.workers)
    out = Path(args.out)
    out.write_text(replace_section(out.read_text() if out.exists() else "", lines))
    s = summarize(results)
    print(f"mlperf held out: mean |error| {s['mean']:.1%}, worst {s['worst']:.1%} (n={s['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
