"""Prediction intervals: quantiles of the validation's held-out errors.

The shipped table (hardware/calibration/intervals.json) must be what the shipped residuals
(residuals.csv) give, the residuals must come from held-out rows only, and intervals fitted on
one part of the rows must cover about 80% of the rows of the other part (out of sample).
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from sim.models import uncertainty as U
from sim.tools import validation_intervals as VI
from sim.tools.validation import load_points, measurements_path
from sim.tools.validation_mlperf import load_rows as mlperf_rows
from sim.tools.validation_trtllm import load_rows as trtllm_rows


@pytest.fixture(scope="module")
def residuals():
    return VI.load_residuals()


def test_residuals_come_from_held_out_rows_only(residuals):
    held = {p["id"] for p in load_points(roles=("holdout",))} | {r["id"] for r in trtllm_rows(("holdout",))} | \
        {r["id"] for r in mlperf_rows(("holdout",))}
    fit = {p["id"] for p in load_points(roles=("fit",))} | {r["id"] for r in trtllm_rows(("fit",))} | \
        {r["id"] for r in mlperf_rows(("fit", "excluded"))}
    ids = {r["id"] for r in residuals}
    assert ids <= held and not ids & fit
    assert len({(r["source"], r["id"]) for r in residuals}) >= 150
    assert len({r["accelerator"] for r in residuals}) >= 3
    # every held-out source is there, AMD's cards included
    assert {r["source"] for r in residuals} == {"mlenergy", "nim", "trtllm", "amd", "mlperf"}
    assert {"mi300x", "mi325x"} <= {r["accelerator"] for r in residuals}


def test_shipped_table_is_the_fit_of_the_shipped_residuals(residuals):
    doc = json.loads(U.intervals_path().read_text())
    assert doc["provenance"] and doc["rows"] == len(residuals)
    fitted = U.fit(residuals)
    assert fitted.keys() == doc["intervals"].keys()
    for metric, groups in fitted.items():
        assert groups.keys() == doc["intervals"][metric].keys()
        for g, e in groups.items():
            got = doc["intervals"][metric][g]
            assert got["n"] == e["n"] and got["lo"] == pytest.approx(e["lo"], rel=1e-5)
            assert got["hi"] == pytest.approx(e["hi"], rel=1e-5)


def test_group_keys_of_residuals_follow_from_the_prediction(residuals):
    for r in residuals[:: max(1, len(residuals) // 50)]:
        assert r["family"] == U.family(r["accelerator"])
        assert r["size_band"] == U.size_band(r["params_billion"])
        assert r["batch_band"] == U.batch_band(r["mean_batch"])


@pytest.mark.parametrize("metric", [*U.METRICS, "all"])
def test_80_percent_intervals_cover_75_to_85_percent_out_of_sample(residuals, metric):
    cov = VI.coverage(residuals)[metric]
    assert cov["rows"] >= 40
    assert 0.75 <= cov["coverage"] <= 0.85, cov


def test_quantiles_cover_fresh_draws():
    rng = np.random.default_rng(7)
    hits = []
    for _ in range(200):
        pair = U.quantile_pair(list(rng.normal(0.05, 0.1, 30)))
        fresh = rng.normal(0.05, 0.1, 50)
        hits.append(np.mean((fresh >= pair[0]) & (fresh <= pair[1])))
    assert 0.78 <= float(np.mean(hits)) <= 0.86
    assert U.quantile_pair([0.1] * (U.MIN_ROWS - 1)) is None


def test_small_groups_fall_back_to_coarser_ones():
    rows = [{"metric": "power", "family": "hopper", "size_band": "<20B", "batch_band": "<=32", "error": e}
            for e in np.linspace(-0.2, 0.2, 12)]
    rows += [{"metric": "power", "family": "hopper", "size_band": "<20B", "batch_band": ">256", "error": 0.5}] * 3
    table = U.fit(rows)
    assert "hopper/<20B/<=32" in table["power"] and "hopper/<20B/>256" not in table["power"]
    lo, hi, g = U.lookup(table, "power", "hopper", "<20B", ">256")
    assert g == "hopper/<20B" and lo < 0 < hi
    assert U.lookup(table, "power", None, "<20B", ">256") is None
    # a family falls back to its own vendor's rows, never to another vendor's
    assert U.group_keys("hopper", "<20B", "<=32")[-1] == "nvidia"
    assert U.group_keys("cdna3", "<20B", "<=32")[-1] == "amd"
    assert U.lookup(table, "power", "cdna3", "<20B", "<=32") is None
    assert U.family("gaudi3") is None and U.family("a100-80gb") == "nvidia" and U.group_keys("nvidia", "<20B", "<=32") == ["nvidia"]
    assert U.lookup(table, "throughput", "hopper", "<20B", "<=32") is None


def test_interval_bounds_invert_the_error():
    # predicted 110 with errors in [-10%, +10%]: measured in [100, 122.2]
    lo, hi = U.bounds(110.0, (-0.1, 0.1))
    assert lo == pytest.approx(100.0) and hi == pytest.approx(110.0 / 0.9)
    assert all(math.isnan(x) for x in U.bounds(math.nan, (-0.1, 0.1)))


def test_figure_intervals_on_shipped_table():
    vals = {"output_tokens_per_s": 3000.0, "gpu_power_w": 600.0, "itl_p50_s": 0.02, "energy_per_output_token_j": 0.2}
    out = U.figure_intervals(vals, [("h100-sxm", 8.0)], 64.0)
    for k, v in vals.items():
        lo, hi = out[f"{k}_p10_p90"]
        assert lo < hi and lo <= v * 1.5 and hi >= v / 1.5
    assert "throughput:" in out["interval_group"]
    # an AMD card: a throughput interval from AMD's own rows (they publish nothing else), never
    # the NVIDIA rows'
    amd = U.figure_intervals(vals, [("mi300x", 70.0)], 600.0)
    lo, hi = amd["output_tokens_per_s_p10_p90"]
    assert lo < 3000.0 < hi and "throughput:cdna3" in amd["interval_group"]
    assert all(math.isnan(x) for x in amd["gpu_power_w_p10_p90"]) and "power:" not in amd["interval_group"]
    # another vendor's card: no validated rows, no interval
    other = U.figure_intervals(vals, [("gaudi3", 8.0)], 64.0)
    assert all(math.isnan(x) for x in other["output_tokens_per_s_p10_p90"])
    # two pools: the union of their intervals
    both = U.figure_intervals(vals, [("h100-sxm", 8.0), ("b200", 235.0)], 64.0)
    assert both["gpu_power_w_p10_p90"][0] <= out["gpu_power_w_p10_p90"][0]
    assert both["gpu_power_w_p10_p90"][1] >= out["gpu_power_w_p10_p90"][1]
    flat = U.flat(out)
    assert flat["gpu_power_w_p10"] == out["gpu_power_w_p10_p90"][0]


def test_residuals_file_has_its_header():
    with open(VI.residuals_path(), newline="") as fh:
        assert tuple(next(csv.reader(fh))) == VI.FIELDS


def test_run_summary_carries_intervals_as_new_columns(tmp_path):
    from sim.config import validate
    from sim.run import run_point
    from tests.scenarios import llm_scenario

    raw = llm_scenario(duration_s=8.0)
    s = run_point(validate(raw), str(tmp_path / "out"), "p")
    for key in ("output_tokens_per_s", "tpot_p50_s", "avg_device_power_w", "energy_per_output_token_j"):
        lo, hi = s[f"{key}_p10"], s[f"{key}_p90"]
        assert 0 < lo < hi, key
        assert lo < s[key] * 1.5 and hi > s[key] / 1.5, key
    assert "throughput:hopper" in s["interval_group"]
    # the new columns come after every existing one
    keys = list(s)
    assert keys.index("output_tokens_per_s_p10") > keys.index("energy_per_finished_output_token_j")


def test_residual_rows_keep_held_out_rows_and_group_by_the_prediction():
    point = {"id": "x", "role": "holdout", "accelerator": "h100-sxm", "model": "qwen3-8b", "tp": 1}
    ml = [{"point": point, "error": None, "mean_batch_seqs": 40.0,
           **{m: (1.0, 1.1, 0.1) for m in U.METRICS}},
          {"point": {**point, "id": "y", "role": "fit"}, "error": None, "mean_batch_seqs": 40.0,
           **{m: (1.0, 1.1, 0.1) for m in U.METRICS}}]
    trt = [{"row": {"id": "t", "role": "holdout", "accelerator": "b200", "model": "llama-3.1-405b", "tp": 4,
                    "output_tokens_per_s": 100.0},
            "sim": {"output_tokens_per_s": 90.0, "mean_batch_seqs": 300.0}, "error": None, "rel": -0.1},
           {"row": {"id": "u", "role": "holdout", "accelerator": "b200", "model": "llama-3.1-405b", "tp": 4,
                    "output_tokens_per_s": 100.0}, "sim": {}, "error": "failed", "rel": math.nan}]
    rows = VI.residual_rows(ml, trt)
    assert [(r["id"], r["metric"]) for r in rows] == [("x", m) for m in U.METRICS] + [("t", "throughput")]
    assert (rows[0]["family"], rows[0]["size_band"], rows[0]["batch_band"]) == ("hopper", "<20B", "33-256")
    assert (rows[-1]["family"], rows[-1]["size_band"], rows[-1]["batch_band"], rows[-1]["tp"]) == \
        ("blackwell", ">=150B", ">256", 4)


def test_sensitivity_variants_change_one_assumed_input_each():
    from sim.tools import validation_sensitivity as VS

    points = VS.sample(load_points(measurements_path()))
    assert len(points) == VS.ROWS + VS.LARGE and len({p["id"] for p in points}) == len(points)
    assert all(p["role"] == "holdout" for p in points) and max(p["concurrency"] for p in points) > 256
    runs = VS.variants(points[:1])
    assert len(runs) == len(VS.VARIANTS)
    p = points[0]
    changed = [{k for k in ("prompt_tokens", "requests", "output_dist") if q.get(k) != p.get(k)} for q in runs]
    assert changed[0] == set() and all(len(c) == 1 for c in changed[1:])
    assert VS.has_window(p["concurrency"] + 2, p["concurrency"]) and not VS.has_window(p["concurrency"] + 1,
                                                                                        p["concurrency"])
