"""Every shipped scenario validates, fits its hardware, and the quickstart runs end to end."""

from pathlib import Path

import pytest

from sim.config import load_scenario
from sim.run import run_point
from sim.cluster.pools import resolve_pool

SCENARIOS = sorted((Path(__file__).parent.parent / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_shipped_scenario_validates(path):
    sc = load_scenario(path)
    for i, pool in enumerate(sc.datacenter.pools):
        spec = resolve_pool(sc, i, str(path))
        assert spec.kv_blocks > 0 if pool.kind == "llm" else spec.weight_gib > 0


def test_trace_replay_scenario_runs(tmp_path):
    sc = load_scenario(Path(__file__).parent.parent / "scenarios" / "azure_conv_replay.yaml")
    sc = sc.model_copy(update={"duration_s": 60.0, "warmup_s": 10.0})
    sc._base_dir = str(Path(__file__).parent.parent / "scenarios")
    s = run_point(sc, str(tmp_path), "p")
    # the trace's first minute: ~5.5 requests/s (19,366 over an hour)
    assert 150 < s["calls_created"] < 600
    assert s["calls_finished"] == s["calls_created"]


def test_test_time_compute_sweep_points_validate_and_adaptive_runs(tmp_path):
    from sim.config import load_raw, validate
    from sim.config.sweep import expand

    path = Path(__file__).parent.parent / "scenarios" / "test_time_compute.yaml"
    points = expand(load_raw(path), str(path))
    assert len(points) == 20
    scenarios = [validate(p.raw, str(path), path.parent) for p in points]
    adaptive = next(s for s in scenarios if s.workload.classes[0].job.strategy.kind == "adaptive")
    short = adaptive.model_copy(update={"duration_s": 150.0, "warmup_s": 30.0})
    s = run_point(short, str(tmp_path), "p")
    assert s["jobs_finished"] == s["jobs_created"] > 50 and s["calls_cancelled"] > 0
    assert 0.6 < s["expected_accuracy"] < 0.95 and s["usd_per_1k_jobs"] > 0
