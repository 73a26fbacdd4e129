"""Derive hardware/calibration/heldout_serving.csv: held-out serving rows from three more public sources.

Every row written here is marked ``holdout`` (or ``excluded`` with its reason), except the one
configuration :data:`FIT` names, marked ``fit`` with its reason: ``dcsim calibrate`` fits the ``fit``
rows of measurements.csv and these, no other row of this file. The rows cover the
regimes issue 21 names (long prompts under a closed loop, multi-GPU energy at large batch, power
of an 8B model at batch >= 128, ITL at batch 256-512+, long reasoning decodes of a 32B model on
2 GPUs) with the columns of measurements.csv plus:

- ``kv_dtype`` (the KV-cache precision the engine ran),
- ``itl_stat`` (``median``: the median inter-token latency; ``mean``: the mean time per output
  token after the first, which is what NIM's AIPerf/genai-perf tables call ITL),
- ``bench`` (``burst``: the ML.ENERGY benchmark, every request sent at once to a server capped at
  ``concurrency`` running sequences; ``closed_loop``: ``concurrency`` clients, each sending its
  next request when the last one ends, figures over the steady state; ``max_load``: vLLM's offline
  throughput benchmark, every prompt handed to the engine at once, output tokens over the whole run),
- ``assumptions`` (what the published text does not say and the row assumes).

Sources
-------
1. **ML.ENERGY Leaderboard v3** (Chung et al., NeurIPS'25 D&B; github.com/ml-energy/leaderboard
   @0cd52da, ``public/data/models/<org>__<model>__<task>.json``, the same release
   measurements.csv comes from): the dense models measurements.csv leaves out and the project has
   cards for (Llama 3.1 8B / 70B / 405B, Llama 3.3 70B, Qwen3-32B), and gpt-oss-120b / gpt-oss-20b
   on GPQA (MXFP4 experts, sliding-window layers), vLLM on H100 and B200, with GPU power and
   energy. Only derived figures are kept (the source has no licence file). Requests
   per run: the task's prompt set times ``num_request_repeats`` of the model's
   ``configs/vllm/<task>/<org>/<model>/<GPU>/sweeps.yaml`` (github.com/ml-energy/benchmark
   @c1d6557); prompt lengths are the per-task assumptions of derive_measurements.py.
2. **NVIDIA NIM LLM benchmarking, Performance page** (docs.nvidia.com/nim/benchmarking/llm/
   1.0.0/performance; the tables for NIM 1.8.0, transcribed by hand into nim_tables.csv with the
   table each row comes from): Llama 3.1 8B on 1 H100 and Llama 3.3 70B on 2 H100 (fp8, TP1 /
   TP2), fixed input / output lengths (200/200, 500/2000, 1000/1000, 5000/500, 20000/2000),
   client concurrency 1-250, AIPerf closed loop; output throughput and mean ITL, no power.
   Transcription: the 70B 5000/500 and the 8B 200/200 tables were checked cell by cell against the
   page; the other tables follow the copy of the same 1.8.0 tables in the public repository
   github.com/zivbeker42/llm-guesstimator (tested_benchmarks/), which agrees with the page in every
   cell read from both.
   The page does not name the engine: NIM's optimized fp8 profiles for H100 run TensorRT-LLM,
   so the rows are simulated with the project's TensorRT-LLM engine profile (trtllm.yaml).
3. **AMD ROCm developer hub, AI performance results, vLLM on MI300X** (amd.com/en/developer/
   resources/rocm-hub/dev-ai/performance-results.html, the "Throughput Measurements" table of the
   docker image rocm/vllm:rocm7.0.0_vllm_0.11.1_20251103; transcribed into amd_vllm_tables.csv):
   Llama 3.1 70B and 405B (AMD's FP8-KV checkpoints: fp8 weights and KV cache), TP 8 on 8 MI300X,
   fixed input / output lengths (128/2048, 128/4096, 500/2000, 2048/2048), 500-3,200 prompts handed
   to the engine at once with max_num_seqs equal to them ("a local inference client fed requests at
   an infinite rate"). The table's "Throughput" is read as output tokens/s (vLLM's throughput
   benchmark prints total and output tokens/s; the table itself tells them apart: read as total
   tokens, the 2048/2048 rows would decode 3.3x slower than the 128/2048 ones at the same batch, as
   output tokens 1.7x, which the prompts' KV reads and prefill account for). Throughput only.

Usage: python hardware/calibration/derive_heldout.py LEADERBOARD_DIR  (a checkout of
github.com/ml-energy/leaderboard at 0cd52da; nim_tables.csv is read from this folder)
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "heldout_serving.csv"
NIM_TABLES = HERE / "nim_tables.csv"

MLENERGY = ("ML.ENERGY Leaderboard v3 (Chung et al., NeurIPS'25 D&B), github.com/ml-energy/leaderboard @0cd52da "
            "public/data/models/{file}; requests from github.com/ml-energy/benchmark @c1d6557 sweeps.yaml")
# model id -> (model card, tasks): the dense models of the v3 release the project has a card for
# and measurements.csv does not carry (Llama 3.3 70B has Llama 3.1 70B's architecture).
MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": ("llama-3.1-8b", ("lm-arena-chat",)),
    "meta-llama/Llama-3.1-70B-Instruct": ("llama-3.1-70b", ("lm-arena-chat",)),
    "meta-llama/Llama-3.3-70B-Instruct": ("llama-3.1-70b", ("lm-arena-chat",)),
    "meta-llama/Llama-3.1-405B-Instruct": ("llama-3.1-405b", ("lm-arena-chat",)),
    "meta-llama/Llama-3.1-405B-Instruct-FP8": ("llama-3.1-405b", ("lm-arena-chat",)),
    "Qwen/Qwen3-32B": ("qwen3-32b", ("lm-arena-chat", "gpqa")),
    # MoE with MXFP4 experts and sliding-window layers: held out whole (no gpt-oss row is fitted)
    "openai/gpt-oss-120b": ("gpt-oss-120b", ("gpqa",)),
    "openai/gpt-oss-20b": ("gpt-oss-20b", ("gpqa",)),
}
GPUS = {"H100": "h100-sxm", "B200": "b200"}
# gpt-oss's "mxfp4" names its routed experts (the card's expert_weight_dtype); its other weights,
# what a pool's weight_dtype sets, are bf16 (config quantization_config modules_to_not_convert).
DTYPES = {"bfloat16": "bf16", "fp8": "fp8", "mxfp4": "bf16"}
PROMPT_TOKENS = {"lm-arena-chat": 200, "gpqa": 300}  # as derive_measurements.py assumes
NUM_REQUESTS = {"gpqa": 198, "lm-arena-chat": 1024}
# (model id, task, GPU) -> {max_num_seqs: num_request_repeats}, from the model's sweeps.yaml @c1d6557
REPEATS = {
    ("meta-llama/Llama-3.1-8B-Instruct", "lm-arena-chat", "H100"): {256: 2, 384: 2, 512: 2, 768: 3, 1024: 3},
    ("meta-llama/Llama-3.1-8B-Instruct", "lm-arena-chat", "B200"):
        {128: 2, 256: 2, 512: 3, 1024: 4, 2048: 8, 4096: 16},
    ("meta-llama/Llama-3.1-70B-Instruct", "lm-arena-chat", "H100"): {512: 2, 768: 2, 1024: 2, 1536: 3, 2048: 3},
    ("meta-llama/Llama-3.1-70B-Instruct", "lm-arena-chat", "B200"): {512: 2, 1024: 2, 1536: 3, 2048: 3, 3072: 5},
    ("meta-llama/Llama-3.3-70B-Instruct", "lm-arena-chat", "H100"): {512: 2, 768: 2, 1024: 2, 1536: 3, 2048: 3},
    ("meta-llama/Llama-3.3-70B-Instruct", "lm-arena-chat", "B200"): {512: 2, 1024: 2, 1536: 2, 2048: 3, 3072: 4},
    ("meta-llama/Llama-3.1-405B-Instruct", "lm-arena-chat", "B200"): {768: 2, 1024: 2, 2048: 3, 3072: 4, 4096: 6},
    ("meta-llama/Llama-3.1-405B-Instruct-FP8", "lm-arena-chat", "B200"): {768: 2, 1024: 2},
    ("Qwen/Qwen3-32B", "gpqa", "B200"): {256: 2},
    ("Qwen/Qwen3-32B", "lm-arena-chat", "B200"): {256: 2, 384: 2, 512: 2},
    ("openai/gpt-oss-120b", "gpqa", "B200"):
        {128: 2, 256: 3, 512: 4, 1024: 7, 2048: 12, 3072: 18, 4096: 24},
    ("openai/gpt-oss-120b", "gpqa", "H100"): {192: 2, 256: 2, 384: 3, 512: 4, 768: 5, 1024: 6, 1536: 9, 2048: 12},
    ("openai/gpt-oss-20b", "gpqa", "B200"): {128: 2, 256: 3, 384: 3, 512: 4, 1024: 6, 2048: 11, 4096: 21},
    ("openai/gpt-oss-20b", "gpqa", "H100"):
        {96: 2, 128: 2, 192: 2, 256: 2, 384: 3, 512: 3, 768: 5, 1024: 6, 1536: 9, 2048: 12},
}
# The same platform problem derive_measurements.py excludes for Qwen3 8B / 14B / 30B-A3B: on one
# B200 with long reasoning outputs Qwen3-32B runs 2.6x slower per token at batch 8 (44.1 ms) than
# on two H100s (16.7 ms), though one B200 has 1.2x their combined HBM bandwidth.
_B200_LONG = "single-B200 run 2.6x slower per token than 2x H100 on long outputs (engine issue, see derive_measurements.py)"
EXCLUDED = {("Qwen/Qwen3-32B", "gpqa", "B200", 1): _B200_LONG}
# The one configuration of this file the H100 calibration fits: measurements.csv's H100 fit rows have
# no dense multi-GPU configuration (their multi-GPU rows are all Qwen3-235B-A22B MoE, on 4 and 8
# GPUs), so without it those MoE rows alone set every multi-GPU power term, and dense tensor-parallel
# replicas inherit what fp8 / bf16 expert kernels draw (docs/validation.md, "What changed in the
# model, and why"). One dense config on 2 GPUs, the same task as the other fit rows (lm-arena-chat);
# Llama 3.1 / 3.3 70B on 4 H100s, 405B on 8, Qwen3-32B's GPQA runs and the NIM 70B rows stay held out.
_DENSE_TP = ("dense multi-GPU H100 configuration of the fit set: with it the calibration tells the dense "
             "tensor-parallel power terms from the MoE rows' (derive_heldout.py, FIT)")
FIT = {("Qwen/Qwen3-32B", "lm-arena-chat", "H100", 2): _DENSE_TP}
# a fitted model and task is held out nowhere (docs/validation.md): its runs on other GPUs are excluded
_FIT_TASK = ("same model and task as the fit configuration Qwen3-32B on 2 H100s, lm-arena-chat (derive_heldout.py, "
             "FIT): not held out")
ML_ASSUME = "prompt tokens per task as derive_measurements.py; vLLM gpu_memory_utilization 0.95; bf16 KV"
GPT_OSS_ASSUME = ML_ASSUME + ("; MXFP4 experts, bf16 rest (the card's); harmony prompt overhead not counted; "
                              "H100 runs used cudagraph_mode PIECEWISE, B200 FULL_AND_PIECEWISE with MXFP8 MoE activations")

# NIM: the page's model and GPU names -> cards; every other input is in the table's heading.
NIM_MODELS = {"meta/llama-3.1-8b-instruct": "llama-3.1-8b", "meta/llama-3.3-70b-instruct": "llama-3.1-70b"}
NIM_GPUS = {"H100 80G": "h100-sxm"}
# Requests of a closed-loop row: 16 waves of its concurrency (the simulation runs 16 waves of the
# batch the KV pool allows, at most this; sim/tools/validation.py, predict_closed_loop): the
# throughput over the steady-state window settles within ~2% by then.
CLOSED_LOOP_WAVES, CLOSED_LOOP_MIN = 16, 16
NIM_ASSUME = ("TensorRT-LLM engine (NIM's fp8 H100 profile; page does not name it) with the trtllm.yaml profile; "
              "KV pool as trtllm-bench (fp8 KV, 0.95 of free memory; admits a request only if its whole sequence fits); "
              "max_num_tokens 8192; H100 80G = SXM")

# AMD: the checkpoints and GPU of the ROCm tables -> cards; vLLM's own defaults for what they do not say
AMD_TABLES = HERE / "amd_vllm_tables.csv"
AMD_MODELS = {"amd/Llama-3.1-70B-Instruct-FP8-KV": "llama-3.1-70b", "amd/Llama-3.1-405B-Instruct-FP8-KV": "llama-3.1-405b"}
AMD_GPUS = {"MI300X": "mi300x"}
AMD_ASSUME = ("vLLM on ROCm with its defaults: gpu_memory_utilization 0.9, max_num_batched_tokens 8192; fp8 KV "
              "(the FP8-KV checkpoints' scales); 'Throughput' read as output tokens/s over the whole run")

COLUMNS = ["id", "role", "reason", "source", "engine", "task", "model", "accelerator", "tp", "expert_parallel",
           "weight_dtype", "kv_dtype", "concurrency", "requests", "prompt_tokens", "output_mean", "output_cv",
           "measured_batch", "output_tokens_per_s", "itl_p50_s", "itl_stat", "gpu_power_w", "energy_per_token_j",
           "bench", "assumptions"]


def _cv(dist: dict) -> float:
    """Coefficient of variation of a published output-length histogram (bin midpoints)."""
    edges, counts = dist["bins"], dist["counts"]
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    n = sum(counts)
    mean = sum(m * c for m, c in zip(mids, counts)) / n
    var = sum(c * (m - mean) ** 2 for m, c in zip(mids, counts)) / n
    return math.sqrt(var) / mean


def mlenergy_rows(leaderboard: Path) -> list[dict]:
    rows = []
    for model_id, (card, tasks) in MODELS.items():
        for task in tasks:
            name = f"{model_id.replace('/', '__')}__{task}.json"
            data = json.loads((leaderboard / "public" / "data" / "models" / name).read_text())
            cv = _cv(data["output_length_distribution"])
            seen: dict[str, int] = {}
            for c in data["configurations"]:
                gpu, n, par = c["gpu_model"], int(c["num_gpus"]), c["parallelization"]
                if gpu not in GPUS or par["expert_parallel"] != 1 or par["data_parallel"] != 1:
                    continue
                b = int(c["max_num_seqs"])
                reason = EXCLUDED.get((model_id, task, gpu, n), "")
                fit = FIT.get((model_id, task, gpu, n), "")
                if not reason and not fit and any(k[:2] == (model_id, task) for k in FIT):
                    reason = _FIT_TASK
                repeats = REPEATS.get((model_id, task, gpu), {}).get(b, 1)
                rid = f"mlenergy3/{model_id.split('/')[1]}/{task}/{gpu}x{n}/ep1/b{b}"
                seen[rid] = seen.get(rid, 0) + 1
                if seen[rid] > 1:  # the source runs some configurations twice (gpt-oss-20b H100 b96)
                    rid += f"/run{seen[rid]}"
                rows.append({
                    "id": rid,
                    "role": "excluded" if reason else "fit" if fit else "holdout", "reason": reason or fit,
                    "source": MLENERGY.format(file=name), "engine": "vllm", "task": task, "model": card,
                    "accelerator": GPUS[gpu], "tp": int(par["tensor_parallel"]), "expert_parallel": False,
                    "weight_dtype": DTYPES[data["weight_precision"]], "kv_dtype": "bf16", "concurrency": b,
                    "requests": NUM_REQUESTS[task] * repeats, "prompt_tokens": PROMPT_TOKENS[task],
                    "output_mean": round(float(c["avg_output_len"]), 1), "output_cv": round(cv, 3),
                    "measured_batch": round(float(c["avg_batch_size"]), 1),
                    "output_tokens_per_s": round(float(c["output_throughput_tokens_per_sec"]), 1),
                    "itl_p50_s": round(float(c["median_itl_ms"]) / 1000, 5), "itl_stat": "median",
                    "gpu_power_w": round(float(c["avg_power_watts"]), 1),
                    "energy_per_token_j": round(float(c["energy_per_token_joules"]), 4),
                    "bench": "burst", "assumptions": GPT_OSS_ASSUME if card.startswith("gpt-oss") else ML_ASSUME,
                })
    return rows


def _table_row(**fields) -> dict:
    """A held-out row of a hand-transcribed fixed-length table (NIM, AMD): ``fields`` over the columns
    such a table leaves as they are (fixed lengths, fp8 KV, no batch, power or energy)."""
    return {"role": "holdout", "reason": "", "expert_parallel": False, "kv_dtype": "fp8", "output_cv": 0.0,
            "measured_batch": "", "itl_p50_s": "", "itl_stat": "", "gpu_power_w": "", "energy_per_token_j": "", **fields}


def nim_rows(path: Path = NIM_TABLES) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            conc, isl, osl = int(r["concurrency"]), int(r["isl"]), int(r["osl"])
            rows.append(_table_row(
                id=f"nim{r['nim_version']}/{r['model_id'].split('/')[1]}/{r['gpus']}xH100/{r['precision']}-tp{r['tp']}/"
                   f"{isl}-{osl}/c{conc}",
                source=r["source"], engine="trtllm", task=f"{isl}/{osl} closed loop", model=NIM_MODELS[r["model_id"]],
                accelerator=NIM_GPUS[r["gpu"]], tp=int(r["tp"]), weight_dtype=r["precision"], concurrency=conc,
                requests=max(CLOSED_LOOP_WAVES * conc, CLOSED_LOOP_MIN), prompt_tokens=isl, output_mean=float(osl),
                output_tokens_per_s=float(r["output_tokens_per_s"]), itl_p50_s=round(float(r["itl_ms"]) / 1000, 6),
                itl_stat="mean", bench="closed_loop", assumptions=NIM_ASSUME))
    return rows


def amd_rows(path: Path = AMD_TABLES) -> list[dict]:
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            isl, osl, n = int(r["isl"]), int(r["osl"]), int(r["num_prompts"])
            rows.append(_table_row(
                id=f"amd-rocm/{r['docker'].split(':')[1]}/{r['model_id'].split('/')[1]}/{r['gpus']}x{r['gpu']}/"
                   f"tp{r['tp']}/{isl}-{osl}/n{n}",
                source=r["source"], engine="vllm", task=f"{isl}/{osl} max load", model=AMD_MODELS[r["model_id"]],
                accelerator=AMD_GPUS[r["gpu"]], tp=int(r["tp"]), weight_dtype=r["precision"].lower(),
                concurrency=int(r["max_num_seqs"]), requests=n, prompt_tokens=isl, output_mean=float(osl),
                output_tokens_per_s=float(r["throughput_tokens_per_s"]), bench="max_load", assumptions=AMD_ASSUME))
    return rows


def main(leaderboard: Path) -> None:
    rows = sorted(mlenergy_rows(leaderboard), key=lambda x: x["id"]) + nim_rows() + amd_rows()
    with open(OUT, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
