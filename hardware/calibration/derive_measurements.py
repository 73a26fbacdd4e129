"""Derive hardware/calibration/measurements.csv from public benchmark results.

Reads the ML.ENERGY Leaderboard v3 results (github.com/ml-energy/leaderboard, commit
0cd52dab897c5d91a45f4d413038f3b8b4251b0f; Chung et al., "The ML.ENERGY Benchmark",
NeurIPS 2025 D&B): ``llm_configs.csv`` (one row per model x task x GPU x parallelism x
max_num_seqs) and ``output_length_hist.csv``. The source has no licence file, so the
project keeps only figures derived from it: for each configuration the measured running
batch, output throughput, median inter-token latency, GPU power and energy per token,
and for each model and task the mean and coefficient of variation of output length.

Each row is marked ``fit`` (used by ``dcsim calibrate``), ``holdout`` (only compared
against, in docs/validation.md) or ``excluded`` (with the reason). The split is by
model, never by point: the fit set is Qwen3-8B on lm-arena-chat, one model per GPU,
and every other model and task is held out.

Usage: python hardware/calibration/derive_measurements.py DATA_DIR  (the folder holding
llm_configs.csv and output_length_hist.csv)
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).with_name("measurements.csv")
SOURCE = "ML.ENERGY Leaderboard v3 (Chung et al., NeurIPS'25 D&B), github.com/ml-energy/leaderboard @0cd52da"

MODELS = {  # ML.ENERGY model id -> model card
    "Qwen/Qwen3-8B": "qwen3-8b",
    "Qwen/Qwen3-14B": "qwen3-14b",
    "Qwen/Qwen3-30B-A3B-Instruct-2507": "qwen3-30b-a3b",
    "Qwen/Qwen3-30B-A3B-Thinking-2507": "qwen3-30b-a3b",
    "Qwen/Qwen3-235B-A22B-Instruct-2507": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-Instruct-2507-FP8": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-Thinking-2507": "qwen3-235b-a22b",
    "Qwen/Qwen3-235B-A22B-Thinking-2507-FP8": "qwen3-235b-a22b",
    "deepseek-ai/DeepSeek-R1-0528": "deepseek-r1",
    "deepseek-ai/DeepSeek-V3.1": "deepseek-v3",
}
GPUS = {"H100": "h100-sxm", "B200": "b200"}
DTYPES = {"bfloat16": "bf16", "fp8": "fp8"}
# Prompt lengths are not published per configuration; these are per-task assumptions.
# lm-arena-chat: single-turn Chatbot Arena prompts plus chat template (LMSYS-Chat-1M
# reports a mean user prompt of 69.5 tokens, Zheng et al. 2023; Arena prompts run
# longer); gpqa: a GPQA Diamond question with four options and the instruction.
PROMPT_TOKENS = {"lm-arena-chat": 200, "gpqa": 300}
# One dense model on one GPU (engine overheads, power weights), one MoE model with expert
# parallelism over several GPUs in bf16 (grouped-expert efficiency, link power) and the same
# model in fp8 (quantized-GEMM efficiency); all on lm-arena-chat. Everything else is held out.
FIT = {("Qwen/Qwen3-8B", "lm-arena-chat"), ("Qwen/Qwen3-235B-A22B-Instruct-2507", "lm-arena-chat"),
       ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "lm-arena-chat")}
# Single-GPU Qwen3 runs on B200 with long reasoning outputs run 2.5-4x slower per token than
# the same model and batch on one H100 (e.g. Qwen3-8B batch 8: 32.5 ms vs 9.7 ms; Qwen3-30B-A3B
# batch 8: 35.0 ms vs 12.3 ms), although B200 has 2.4x the HBM bandwidth and the same models on
# lm-arena-chat are faster on B200: an engine problem on that platform, not hardware behaviour.
_B200_LONG = "single-B200 run 2.5-4x slower per token than one H100 on long outputs (engine issue, see script)"
EXCLUDED = {
    ("Qwen/Qwen3-8B", "gpqa", "B200"): _B200_LONG,
    ("Qwen/Qwen3-14B", "gpqa", "B200"): _B200_LONG,
    ("Qwen/Qwen3-30B-A3B-Thinking-2507", "gpqa", "B200"): _B200_LONG,
}
# Requests sent in one run: num_requests of the task (github.com/ml-energy/benchmark,
# configs/vllm/{task}/benchmark.yaml: gpqa 198 @036891a, lm-arena-chat 1024 @4ceff26) times
# num_request_repeats for the batch cap, from the task's sweep_defaults or the model and GPU's own
# configs/vllm/{task}/{org}/{model}/{GPU}/sweeps.yaml (newest stored version; commits below). All
# are sent at once, and the steady-state window the figures come from depends on it (sim/tools/burst.py).
NUM_REQUESTS = {"gpqa": 198, "lm-arena-chat": 1024}
REPEATS_DEFAULT = {"gpqa": {192: 2, 256: 2, 384: 3, 512: 4}, "lm-arena-chat": {}}  # sweep_defaults
REPEATS = {  # (model id, task, GPU) -> {max_num_seqs: repeats}, from the model's sweeps.yaml
    ("deepseek-ai/DeepSeek-R1-0528", "gpqa", "B200"): {256: 2},  # @00e1252
    ("deepseek-ai/DeepSeek-V3.1", "gpqa", "B200"): {256: 2, 512: 3, 768: 4, 1024: 6},  # @e7c1113
    ("Qwen/Qwen3-14B", "gpqa", "B200"): {256: 2, 384: 3, 512: 3},  # @60f99cc
    ("Qwen/Qwen3-235B-A22B-Thinking-2507", "gpqa", "B200"): {256: 2, 384: 3, 512: 3, 768: 5},  # @60f99cc
    ("Qwen/Qwen3-235B-A22B-Thinking-2507-FP8", "gpqa", "B200"): {256: 2, 384: 3, 512: 3, 1024: 6},  # @60f99cc
    ("Qwen/Qwen3-30B-A3B-Thinking-2507", "gpqa", "B200"): {256: 2, 512: 3, 1024: 6},  # @6bba9e6
    ("deepseek-ai/DeepSeek-V3.1", "lm-arena-chat", "B200"): {768: 2, 1024: 2, 2048: 3, 3072: 4},  # @219253e
    ("Qwen/Qwen3-14B", "lm-arena-chat", "B200"): {512: 2, 1024: 2, 2048: 3, 4096: 7},  # @6bba9e6
    ("Qwen/Qwen3-235B-A22B-Instruct-2507", "lm-arena-chat", "B200"):
        {512: 2, 1024: 2, 1536: 3, 2048: 3, 3072: 4, 4096: 6},  # @6bba9e6
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "lm-arena-chat", "H100"): {256: 2, 512: 2, 768: 2, 1024: 2, 1536: 3},  # @cda9e5c
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "lm-arena-chat", "B200"): {256: 2, 512: 2, 768: 2, 1024: 2, 1536: 3},  # @e7c1113
    ("Qwen/Qwen3-8B", "lm-arena-chat", "B200"): {256: 2, 512: 2, 1024: 4, 1536: 4, 2048: 6},  # @60f99cc
}


def requests_per_run(model_id: str, task: str, gpu: str, max_num_seqs: int) -> int:
    """Requests the benchmark sent in the run of this configuration."""
    repeats = REPEATS.get((model_id, task, gpu), REPEATS_DEFAULT[task]).get(max_num_seqs, 1)
    return NUM_REQUESTS[task] * repeats


COLUMNS = ["id", "role", "reason", "source", "engine", "task", "model", "accelerator", "tp", "expert_parallel",
           "weight_dtype", "concurrency", "requests", "prompt_tokens", "output_mean", "output_cv", "measured_batch",
           "output_tokens_per_s", "itl_p50_s", "gpu_power_w", "energy_per_token_j"]


def length_stats(path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(model id, task) -> (mean, cv) of output length from the pooled histograms."""
    bins = defaultdict(list)
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["scope"] == "model":
                mid = (float(r["bin_lo"]) + float(r["bin_hi"])) / 2
                bins[(r["model_id"], r["task"])].append((mid, float(r["count"])))
    out = {}
    for key, pairs in bins.items():
        n = sum(c for _, c in pairs)
        mean = sum(x * c for x, c in pairs) / n
        var = sum(c * (x - mean) ** 2 for x, c in pairs) / n
        out[key] = (mean, math.sqrt(var) / mean)
    return out


def main(data_dir: Path) -> None:
    stats = length_stats(data_dir / "output_length_hist.csv")
    rows = []
    with open(data_dir / "llm_configs.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            model = MODELS.get(r["model_id"])
            task = r["task"]
            if model is None or task not in PROMPT_TOKENS or r["gpu_model"] not in GPUS:
                continue
            gpus, ep = int(r["num_gpus"]), int(r["expert_parallel"])
            key = (r["model_id"], task, r["gpu_model"])
            role, reason = "holdout", ""
            if (r["model_id"], task) in FIT:
                role = "fit"
            if key in EXCLUDED:
                role, reason = "excluded", EXCLUDED[key]
            cv = stats.get((r["model_id"], task), (0.0, 1.0))[1]
            rows.append({
                "id": f"mlenergy3/{r['model_id'].split('/')[1]}/{task}/{r['gpu_model']}x{gpus}/ep{ep}/b{r['max_num_seqs']}",
                "role": role, "reason": reason, "source": SOURCE, "engine": "vllm", "task": task, "model": model,
                "accelerator": GPUS[r["gpu_model"]], "tp": gpus, "expert_parallel": ep > 1,
                "weight_dtype": DTYPES.get(r["weight_precision"], r["weight_precision"]),
                "concurrency": int(r["max_num_seqs"]),
                "requests": requests_per_run(r["model_id"], task, r["gpu_model"], int(r["max_num_seqs"])),
                "prompt_tokens": PROMPT_TOKENS[task],
                "output_mean": round(float(r["avg_output_len"]), 1), "output_cv": round(cv, 3),
                "measured_batch": round(float(r["avg_batch_size"]), 1),
                "output_tokens_per_s": round(float(r["output_throughput_tokens_per_sec"]), 1),
                "itl_p50_s": round(float(r["median_itl_ms"]) / 1000, 5),
                "gpu_power_w": round(float(r["avg_power_watts"]), 1),
                "energy_per_token_j": round(float(r["energy_per_token_joules"]), 4),
            })
    rows.sort(key=lambda x: x["id"])
    seen = set()
    with open(OUT, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        for row in rows:
            if row["id"] in seen:  # repeated runs of one configuration: keep the first
                continue
            seen.add(row["id"])
            w.writerow(row)
    print(f"wrote {len(seen)} rows to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
