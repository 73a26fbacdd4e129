"""The held-out rows of hardware/calibration/heldout_serving.csv (derive_heldout.py): they load,
no fit reads them but the one dense multi-GPU configuration the H100 fit set takes from here, and rows
simulate where the model's physics puts them.

The file adds published measurements in the regimes issue 21 names (ML.ENERGY v3 dense models
the main table leaves out: Llama 3.1 8B / 70B / 405B, Llama 3.3 70B, Qwen3-32B with ~7,000-token
reasoning outputs; NVIDIA NIM 1.8.0 closed-loop sweeps of Llama 3.1 8B on one H100 and Llama 3.3
70B on two, 200-20,000-token prompts). The full comparison is in docs/validation.md.
"""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest

from sim.hardware import catalog
from sim.tools import validation as V
from sim.tools.burst import mean_tpot


def _rows() -> list[dict]:
    with open(V.heldout_path(), newline="") as fh:
        return list(csv.DictReader(fh))


def _point(row_id: str) -> dict:
    return next(p for p in V.load_points(roles=("holdout",)) if p["id"] == row_id)


def _derive():
    sys.path.insert(0, str(catalog.hardware_dir() / "calibration"))
    try:
        import derive_heldout as D
    finally:
        sys.path.pop(0)
    return D


def test_rows_load_with_a_source_and_only_the_named_dense_config_is_fitted():
    rows = _rows()
    assert len(rows) >= 190
    assert {r["role"] for r in rows} <= {"holdout", "excluded", "fit"}
    assert all(r["reason"] for r in rows if r["role"] in ("excluded", "fit"))
    # the fit rows are exactly the configurations derive_heldout.FIT names: Qwen3-32B on 2 H100s, lm-arena-chat
    fit = [r for r in rows if r["role"] == "fit"]
    assert len(_derive().FIT) == 1 and len(fit) == 9
    assert {(r["model"], r["accelerator"], r["tp"], r["task"]) for r in fit} == {("qwen3-32b", "h100-sxm", "2",
                                                                                 "lm-arena-chat")}
    assert all(r["source"] and r["assumptions"] for r in rows)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    main = {p["id"] for p in V.load_points(V.measurements_path(), roles=("fit", "holdout", "excluded"))}
    assert not main & set(ids)
    # the default load (validation, intervals) carries them by role; the calibration reads the 'fit' rows of
    # both shipped tables (those only, and of a user's own table only its own)
    from sim.tools.calibrate import fit_points

    held = {p["id"] for p in V.load_points(roles=("holdout",))}
    assert {r["id"] for r in rows if r["role"] == "holdout"} <= held
    fitted = {p["id"] for p in fit_points(V.measurements_path())}
    assert fitted & set(ids) == {r["id"] for r in fit}
    assert fitted - set(ids) == {p["id"] for p in V.load_points(V.measurements_path(), roles=("fit",))}
    assert not held & fitted
    for r in rows:
        catalog.accelerator(r["accelerator"])
        catalog.model(r["model"])


def test_a_users_own_table_is_fitted_alone(tmp_path):
    from sim.tools.calibrate import fit_points

    own = tmp_path / "mine.csv"
    own.write_text(V.measurements_path().read_text())
    assert {p["id"] for p in fit_points(own)} == {p["id"] for p in V.load_points(own, roles=("fit",))}
    assert not {p["id"] for p in fit_points(own)} & {r["id"] for r in _rows()}


def test_metrics_a_source_does_not_publish_are_left_out():
    nim = [p for p in V.load_points(roles=("holdout",)) if p.get("bench") == "closed_loop"]
    assert len(nim) >= 70 and all(p["itl_stat"] == "mean" for p in nim)
    assert all(math.isnan(p["gpu_power_w"]) and math.isnan(p["energy_per_token_j"]) for p in nim)
    rows = V.errors(nim[:1], [{"output_tokens_per_s": 100.0, "tpot_mean_s": 0.01, "itl_p50_s": 0.5,
                               "gpu_power_w": 500.0, "energy_per_output_token_j": 1.0, "mean_batch_seqs": 1.0}])
    s = V.summarize(rows)
    assert s["power"]["n"] == 0 and s["energy"]["n"] == 0 and s["throughput"]["n"] == s["itl"]["n"] == 1
    assert rows[0]["itl"][1] == 0.01  # compared with the mean time per output token, as AIPerf reports


def test_nim_rows_are_the_transcribed_tables():
    derived = _derive().nim_rows()
    shipped = [r for r in _rows() if r["bench"] == "closed_loop"]
    assert len(derived) == len(shipped)
    for d, s in zip(derived, shipped):
        assert {k: str(v) for k, v in d.items()} == s


def test_mean_tpot_takes_calls_inside_the_window():
    first = np.array([0.0, 1.0, 2.0, np.nan])
    finish = np.array([10.0, 5.0, 4.0, np.nan])
    gen = np.array([11, 5, 3, 0])
    assert mean_tpot(first, finish, gen, 0.5, 6.0) == pytest.approx(np.mean([1.0, 1.0]))
    assert mean_tpot(first, finish, gen, 50.0, 60.0) == pytest.approx(np.mean([1.0, 1.0, 1.0]))


def test_long_prompt_closed_loop_saturates_at_the_kv_pool():
    """20,000-token prompts of Llama 3.3 70B on 2 H100s: NIM's throughput is flat from 25 to 250
    clients (415-427 tok/s): the KV pool, not the clients, caps the batch. The simulator's cap is
    the whole sequences its KV pool holds, so its throughput must be flat there too, and not
    above the decode roofline: per step every GPU reads its half of the fp8 weights from HBM."""
    lo = V.predict(_point("nim1.8.0/llama-3.3-70b-instruct/2xH100/fp8-tp2/20000-2000/c50"))
    hi = V.predict(_point("nim1.8.0/llama-3.3-70b-instruct/2xH100/fp8-tp2/20000-2000/c250"))
    assert lo["batch_cap"] == hi["batch_cap"] < 50
    assert hi["output_tokens_per_s"] == pytest.approx(lo["output_tokens_per_s"], rel=0.02)
    card, acc = catalog.model("llama-3.1-70b"), catalog.accelerator("h100-sxm")
    step_floor = card.params_billion * 1e9 * 1.0 / 2 / (acc.memory_bandwidth_tb_s * 1e12)
    assert hi["tpot_mean_s"] > step_floor
    assert hi["output_tokens_per_s"] < hi["batch_cap"] / step_floor


@pytest.mark.parametrize("row_id", [
    "mlenergy3/Qwen3-32B/gpqa/H100x2/ep1/b32",  # long reasoning decode, 32B on 2 GPUs
    "nim1.8.0/llama-3.3-70b-instruct/2xH100/fp8-tp2/5000-500/c50",  # long prompts, closed loop
])
def test_rows_simulate_within_the_held_out_bounds(row_id):
    """Throughput and ITL within the held-out bounds docs/validation.md states (validation.BOUNDS),
    power and J / token too where the source publishes them."""
    p = _point(row_id)
    r = V.errors([p], [V.predict(p)])[0]
    assert not r["error"]
    for m in V.METRICS:
        if math.isfinite(r[m][0]):
            assert abs(r[m][2]) <= V.BOUNDS[m], (m, r[m])


def test_amd_max_load_rows_match_their_table_and_are_priced_over_the_whole_run():
    """AMD's ROCm vLLM tables (amd_vllm_tables.csv -> derive_heldout.amd_rows): every row of the table is a
    held-out max-load row of the CSV; a row's throughput is its calls' output tokens over the whole run
    (vLLM's offline throughput benchmark), which the opening prefill and the drain make lower than the
    steady window's; the 70B row at 128/2048 lands where the model's physics puts it (within 15%)."""
    D = _derive()
    derived = {r["id"]: r for r in D.amd_rows()}
    shipped = {r["id"]: r for r in _rows() if r["bench"] == "max_load"}
    assert len(derived) == 8 and set(shipped) == set(derived)
    for rid, r in shipped.items():
        assert r["role"] == "holdout" and r["accelerator"] == "mi300x" and "AMD ROCm" in r["source"]
        assert float(r["output_tokens_per_s"]) == pytest.approx(float(derived[rid]["output_tokens_per_s"]))
        assert r["itl_p50_s"] == "" and r["gpu_power_w"] == ""  # throughput only: nothing else is published
    p = _point(next(i for i in shipped if "70B" in i and "/128-2048/" in i))
    pred = V.predict(p)
    assert pred["output_tokens_per_s"] == pytest.approx(pred["calls_finished"] * 2048 / pred["last_finish_s"])
    from sim.tools.burst import burst

    window = burst("mi300x", p["model"], p["requests"], p["concurrency"], 128, 2048, tp=8, weight_dtype="fp8",
                   kv_dtype="fp8", gpu_memory_utilization=V.MAX_LOAD_MEMORY, output_dist="fixed")
    assert pred["output_tokens_per_s"] < window["output_tokens_per_s"]
    assert pred["output_tokens_per_s"] == pytest.approx(p["output_tokens_per_s"], rel=0.15)
