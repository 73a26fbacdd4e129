"""Derive hardware/calibration/trtllm_throughput.csv from NVIDIA's TensorRT-LLM performance tables.

Source: NVIDIA/TensorRT-LLM, docs/source/performance/perf-overview.md @ commit
00f37686aa854010d68bcbd0f4ab000221541ca6 (Apache-2.0): ``trtllm-bench throughput`` with the
PyTorch backend, offline maximum load (every request queued at once), ModelOpt-quantized
checkpoints (FP8 on Hopper, FP4 on Blackwell), synthetic requests of fixed input / output length
(ISL / OSL); the metric is the total output throughput of the TP group (tokens/s). The input is
the table as extracted to CSV (one row per model x GPU x TP x precision x ISL/OSL).

Each row is mapped to the simulator's cards and marked ``fit`` (the TRT-LLM engine profile's
per-step overheads are fitted to these rows, `dcsim calibrate --engine trtllm`), ``holdout``
(only compared against, docs/validation.md) or ``skipped`` (no model or accelerator card, with
the reason). The split is by model and GPU: one model per GPU is fitted (the smallest dense
model published for it), every other model on that GPU is held out.

Usage: python hardware/calibration/derive_trtllm.py PATH/trtllm_perf_overview_throughput.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

OUT = Path(__file__).with_name("trtllm_throughput.csv")
SOURCE = ("NVIDIA TensorRT-LLM perf-overview.md @00f3768 (trtllm-bench throughput, PyTorch backend, "
          "offline max load; Apache-2.0)")
MODELS = {  # TRT-LLM table name -> model card (None: no card)
    "Llama-3.1-8B": "llama-3.1-8b",
    # Llama 3.3 70B has the Llama 3.1 70B architecture (same shapes, vocabulary and context)
    "Llama-3.3-70B": "llama-3.1-70b",
    "Llama-3.1-405B": "llama-3.1-405b",
    "Qwen3-235B-A22B": "qwen3-235b-a22b",
    "Llama-4-Scout-17B-16E": None,
    "Llama-4-Maverick-17B-128E": None,
}
GPUS = {"H100": "h100-sxm", "H200": "h200", "B200": "b200", "GB200": "gb200"}
DTYPES = {"FP8": "fp8", "FP4": "fp4"}
# One model per GPU fits the engine profile: the smallest dense model published for that GPU.
FIT = {("h100-sxm", "llama-3.1-8b"), ("h200", "llama-3.1-8b"), ("b200", "llama-3.1-70b"),
       ("gb200", "llama-3.1-70b")}
# Requests per benchmark run, by (ISL, OSL): perf-overview.md, "Preparing a Dataset".
NUM_REQUESTS = {(128, 128): 30000, (128, 2048): 3000, (128, 4096): 1500, (1000, 2000): 1500, (2048, 128): 3000,
                (2048, 2048): 1500, (5000, 500): 1500, (1000, 1000): 3000, (500, 2000): 3000, (20000, 2000): 1000}
COLUMNS = ["id", "role", "reason", "source", "engine", "model", "source_model", "accelerator", "tp", "weight_dtype",
           "isl", "osl", "num_requests", "output_tokens_per_s"]


def main(path: Path) -> None:
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            model, gpu = MODELS.get(r["model"]), GPUS.get(r["gpu"])
            isl, osl = int(r["isl"]), int(r["osl"])
            role, reason = "holdout", ""
            if model is None:
                role, reason = "skipped", f"no model card for {r['model']}"
            elif gpu is None:
                role, reason = "skipped", f"no accelerator card for {r['gpu']}"
            elif (gpu, model) in FIT:
                role = "fit"
            rows.append({
                "id": f"trtllm/{r['model']}/{r['gpu']}x{r['tp']}/{r['precision']}/{isl}-{osl}",
                "role": role, "reason": reason, "source": SOURCE, "engine": "trtllm", "model": model or "",
                "source_model": r["model"], "accelerator": gpu or "", "tp": int(r["tp"]),
                "weight_dtype": DTYPES[r["precision"]], "isl": isl, "osl": osl,
                "num_requests": NUM_REQUESTS[(isl, osl)],
                "output_tokens_per_s": float(r["output_throughput_tok_s_total"]),
            })
    rows.sort(key=lambda x: x["id"])
    with open(OUT, "w", newline="") as fh:
        w = csv.DictWriter(fh, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
