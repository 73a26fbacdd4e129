"""The calibrated simulator against published measurements it was not fitted to.

hardware/calibration/measurements.csv marks each published point ``fit`` or
``holdout``; the split is by model (and task), so no held-out model shaped any fitted
parameter. These tests simulate a spread of held-out points and keep the mean error
under the bounds stated in docs/validation.md (which covers every point).
"""

from __future__ import annotations

import math

import numpy as np

import pytest

from sim.hardware import catalog
from sim.tools.validation import BOUNDS, METRICS, errors, load_points, measurements_path, predict_all, report, summarize

# Held-out points across models, GPUs, tasks and batch sizes, at most this batch cap so
# the test stays quick; the full set is in docs/validation.md.
MAX_CONCURRENCY = 128
SAMPLE = 14


def _sample(points: list[dict], n: int) -> list[dict]:
    """Every k-th point in file order: deterministic and spread over the table."""
    step = max(1, len(points) // n)
    return points[::step][:n]


def test_fit_and_holdout_share_no_model_and_task():
    fit = {(p["model"], p["task"]) for p in load_points(roles=("fit",))}
    held = {(p["model"], p["task"]) for p in load_points(roles=("holdout",))}
    assert fit and held
    assert not fit & held


def test_every_measurement_names_known_hardware_and_models():
    for p in load_points(roles=("fit", "holdout", "excluded")):
        catalog.accelerator(p["accelerator"])
        catalog.model(p["model"])
        assert p["source"]


@pytest.fixture(scope="module")
def held_out_rows():
    # measurements.csv's held-out rows (the bounds were set on them; heldout_serving.csv's rows, some
    # without power, are checked in tests/test_heldout_rows.py and reported in full in docs/validation.md)
    points = [p for p in load_points(measurements_path(), roles=("holdout",)) if p["concurrency"] <= MAX_CONCURRENCY]
    sample = _sample(points, SAMPLE)
    assert len({p["model"] for p in sample}) >= 3
    return errors(sample, predict_all(sample, workers=1))


def test_held_out_points_all_simulate(held_out_rows):
    failed = [r["error"] for r in held_out_rows if r["error"]]
    assert not failed


@pytest.mark.parametrize("metric", list(METRICS))
def test_held_out_mean_error_within_bound(held_out_rows, metric):
    s = summarize(held_out_rows)[metric]
    assert s["n"] == len(held_out_rows)
    assert s["mean"] <= BOUNDS[metric], f"{metric}: mean |error| {s['mean']:.1%} > {BOUNDS[metric]:.0%}"


def test_report_lists_every_point(held_out_rows):
    text = report(held_out_rows, [], 1.0)
    rows = [line for line in text.splitlines() if line.startswith("| qwen") or line.startswith("| deepseek")]
    assert len(rows) == len(held_out_rows)
    assert "## Summary" in text and "holdout" in text
    for r in held_out_rows:
        assert all(math.isfinite(r[m][1]) for m in METRICS)


# --------------------------------------------------------------------------- TensorRT-LLM tables
def test_trtllm_fit_and_holdout_share_no_model_on_a_gpu():
    from sim.tools.validation_trtllm import load_rows

    fit = {(r["model"], r["accelerator"]) for r in load_rows(("fit",))}
    held = {(r["model"], r["accelerator"]) for r in load_rows(("holdout",))}
    assert fit and held and not fit & held
    # one model per GPU is fitted
    assert len(fit) == len({a for _, a in fit})
    for r in load_rows(("fit", "holdout")):
        catalog.accelerator(r["accelerator"])
        catalog.model(r["model"])
    assert all(r["reason"] for r in load_rows(("skipped",)))


def test_trtllm_bench_heuristic():
    from sim.tools.validation_trtllm import bench_settings

    # tensorrt_llm/bench/build/tuning.py finetune_setting: rounded batch and token budget
    assert bench_settings(10_000_000, 128, 128) == (4096, 8192)
    assert bench_settings(549 * 2000, 1000, 1000) == (640, 2048)
    assert bench_settings(50 * 22000, 20000, 2000) == (64, 2048)


def test_trtllm_same_die_takes_the_kernel_efficiency_and_fits_only_the_overheads(monkeypatch):
    """``--kernels-from``: an accelerator on another's compute die (H200 on H100's GH100) takes that
    one's quantized dense-GEMM efficiency and fits only the engine overheads at it (no search over
    the efficiency); the shipped profile was fitted so; a card without a profile is refused."""
    from sim.tools import validation_trtllm as VT

    profile = VT.load_profile()
    for acc, src in VT.SAME_DIE.items():
        assert profile[acc]["quantized_dense_efficiency"] == profile[src]["quantized_dense_efficiency"]
    tried = []

    def fake_overheads(accelerator, rows, dense_q, workers, resimulate=False):
        tried.append(dense_q)
        return {"iteration_overhead_s": 0.0, "per_seq_overhead_s": 1e-6}, np.array(
            [r["output_tokens_per_s"] for r in rows])

    monkeypatch.setattr(VT, "_fit_overheads", fake_overheads)
    fit = VT.fit_profile("h200", kernels_from="h100-sxm")
    assert tried == [profile["h100-sxm"]["quantized_dense_efficiency"]]
    assert fit["quantized_dense_efficiency"] == tried[0] and fit["kernels_from"] == "h100-sxm"
    tried.clear()
    VT.fit_profile("h200")  # its own search tries several efficiencies
    assert len(set(tried)) > 3
    with pytest.raises(ValueError, match="no fitted TensorRT-LLM profile"):
        VT.fit_profile("h200", kernels_from="a100-80gb")


def test_trtllm_held_out_rows_within_bound():
    """Held-out TensorRT-LLM rows that simulate quickly (1,000 long requests, 20000 in / 2000 out)
    of the dense models the engine profile was not fitted to, on every GPU: mean |error| under the
    bound docs/validation.md states (the MoE rows, run with attention data parallelism the
    simulator does not model, are in the report, not in this sample)."""
    from sim.tools.validation_trtllm import HOLDOUT_BOUND, errors, load_rows, simulate_all, summarize

    rows = [r for r in load_rows(("holdout",)) if (r["isl"], r["osl"]) == (20000, 2000)
            and r["model"] in ("llama-3.1-70b", "llama-3.1-405b")]
    assert len({r["accelerator"] for r in rows}) >= 3
    res = errors(rows, simulate_all(rows))
    assert not [x["error"] for x in res if x["error"]]
    s = summarize(res)
    assert s["mean"] <= HOLDOUT_BOUND, f"TensorRT-LLM held-out mean |error| {s['mean']:.1%} > {HOLDOUT_BOUND:.0%}"


def test_fit_harness_passes_card_only_parameters_to_the_simulation():
    """A calibration fit tries values of every efficiency parameter, including those a scenario may
    not set (no performance-schema key, e.g. ``moe_weight_reread``): they reach the simulated engine
    through the accelerator's card for that one prediction, and the card is restored afterwards."""
    from sim.tools.calibrate import serving_keys
    from sim.tools.validation import _predict_one

    row = "Qwen3-30B-A3B-Instruct-2507/lm-arena-chat/H100x1/ep1/b16"
    point = next(p for p in load_points(roles=("holdout",)) if p["id"].endswith(row))
    card = dict(catalog.calibration("h100-sxm").perf)
    slow = _predict_one((point, {"moe_weight_reread": 0.25, "mx_moe_efficiency": 1.0}, None))
    fast = _predict_one((point, {"moe_weight_reread": 0.0}, None))
    assert "error" not in slow and "error" not in fast
    assert slow["itl_p50_s"] > 1.05 * fast["itl_p50_s"]
    assert catalog.calibration("h100-sxm").perf == card
    assert "moe_weight_reread" in serving_keys([point])
