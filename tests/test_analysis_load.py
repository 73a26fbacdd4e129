"""The analysis package reads what a run wrote and agrees with its summary."""

import numpy as np

import analysis
from scenarios import llm_scenario
from sim.cli.main import main


def test_load_run_and_recompute_summary(tmp_path):
    import yaml

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(llm_scenario(duration_s=10.0)))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 0
    s = analysis.summary(str(tmp_path / "o")).to_pylist()[0]
    calls = analysis.load(str(tmp_path / "o"), "calls")
    assert calls.num_rows == s["calls_created"]
    assert set(calls["point_id"].to_pylist()) == {s["point_id"]}
    a = calls["arrival_s"].to_numpy()
    ok = (a >= 2.0) & (a < 10.0) & (calls["status"].to_numpy(zero_copy_only=False) == "finished")
    ttft = calls["first_token_s"].to_numpy()[ok] - a[ok]
    assert np.percentile(ttft, 90) == s["ttft_p90_s"]
