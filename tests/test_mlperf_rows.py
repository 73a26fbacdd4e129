"""The MLPerf Inference Offline rows of hardware/calibration/mlperf_offline.csv (derive_mlperf.py):
they load, name their source files, no fit reads them, and a row simulates where the model puts it.

The full comparison (118 held-out Llama-2-70B results on H100, H200, B200, GB200, MI300X, MI325X) is
the "MLPerf Inference: Offline throughput" section of docs/validation.md.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from sim.hardware import catalog
from sim.tools import validation as V
from sim.tools import validation_mlperf as M


def _all() -> list[dict]:
    with open(M.data_path(), newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_load_name_their_results_file_and_are_held_out():
    rows = _all()
    assert {r["role"] for r in rows} == {"holdout", "excluded"}
    assert all(r["reason"] for r in rows if r["role"] == "excluded")
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    held = M.load_rows()
    assert len(held) >= 60 and len({r["accelerator"] for r in held}) >= 3
    # one run filed for both accuracy targets counts once
    runs = [(r["version"], r["submitter"], r["system"], r["output_tokens_per_s"], r["samples_per_s"]) for r in held]
    assert len(set(runs)) == len(runs)
    for r in held:
        assert r["version"] in ("v4.1", "v5.1") and len(r["commit"]) == 12
        assert r["results_file"].startswith("closed/") and r["results_file"].endswith("mlperf_log_summary.txt")
        assert r["config_file"].startswith("closed/")
        assert r["engine"] in ("trtllm", "vllm") and r["tp"] >= 1 and r["max_batch"] >= 1
        assert r["replicas"] * r["tp"] * max(r["pp"], 1) == r["gpus"]
        # the run's mean output length is its tokens / samples
        assert r["mean_output_tokens"] == pytest.approx(r["output_tokens_per_s"] / r["samples_per_s"], rel=1e-3)
        catalog.accelerator(r["accelerator"])
    catalog.model(M.MODEL)


def test_no_fit_reads_the_rows():
    # the model's fits never see them; the prediction intervals take them as held-out residuals
    # (tests/test_intervals.py checks that every residual is a held-out row)
    root = Path(V.__file__).resolve().parent
    for module in ("calibrate.py", "calibrate_kernels.py", "validation_trtllm.py"):
        assert "mlperf" not in (root / module).read_text()


def test_rows_count_in_the_held_out_summary_as_throughput_only():
    row = M.load_rows()[0]
    res = M.errors([row], [{"output_tokens_per_s": row["output_tokens_per_s"] * 1.1, "mean_batch_seqs": 5.0}])
    vrows = M.as_validation_rows(res)
    s = V.summarize(vrows)
    assert s["throughput"]["n"] == 1 and s["throughput"]["mean"] == pytest.approx(0.1)
    assert s["itl"]["n"] == s["power"]["n"] == s["energy"]["n"] == 0
    label, keep = V.SOURCES[-1]
    assert "MLPerf" in label and keep(vrows[0]["point"])


def test_an_h100_tensorrt_llm_row_simulates_within_ten_percent():
    """DGX-H100 class system, 4 engines of TP2, fp8, batch 896 (NVIDIA's v4.1 config): its tokens/s
    within 10% (the H100 TensorRT-LLM profile was fitted to Llama 3.1 8B tables, not to this)."""
    row = next(r for r in M.load_rows() if r["version"] == "v4.1" and r["accelerator"] == "h100-sxm"
               and r["gpus"] == 8 and r["submitter"] == "NVIDIA" and r["benchmark"] == "llama2-70b-99")
    assert (row["tp"], row["max_batch"], row["weight_dtype"]) == (2, 896, "fp8")
    sim = M.simulate(row)
    assert sim["output_tokens_per_s"] == pytest.approx(sim["engine_tokens_per_s"] * 4)
    assert abs(sim["output_tokens_per_s"] / row["output_tokens_per_s"] - 1) < 0.10
    assert sim["mean_batch_seqs"] > 0.9 * row["max_batch"]  # the batch cap, not the KV pool, binds here
    assert math.isfinite(sim["kv_gib"])
