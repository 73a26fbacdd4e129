"""Conservation: every call appears exactly once with a terminal status; energy is the
integral of power over a timeline that the step rows tile without gaps."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from scenarios import llm_scenario
from sim.config import validate
from sim.run import run_point
from sim.cluster.world import build


def _tables(out, pid):
    read = lambda t: pq.read_table(out / t / f"point_id={pid}" / "part-0.parquet")
    return read("calls"), read("steps")


def test_every_call_once_with_terminal_status(tmp_path):
    # overload with a short drain so some calls time out, plus prompts too long for the KV pool
    raw = llm_scenario(duration_s=15.0, drain_s=3.0)
    raw["workload"]["classes"][0]["arrival"]["rate_per_s"] = 40.0
    raw["workload"]["classes"].append({
        "name": "huge", "pool": "main", "arrival": {"kind": "deterministic", "rate_per_s": 0.5},
        "prompt_tokens": {"kind": "fixed", "value": 120000}, "output_tokens": {"kind": "fixed", "value": 20000}})
    raw["datacenter"]["pools"][0]["engine"] = {"num_gpu_blocks": 3000}
    sc = validate(raw)
    summary = run_point(sc, str(tmp_path), "p1")
    calls, _ = _tables(tmp_path, "p1")
    ids = calls["call_id"].to_numpy()
    assert len(ids) == len(set(ids)) == summary["calls_created"]
    assert sorted(ids) == list(range(len(ids)))  # no call missing
    status = calls["status"].to_numpy(zero_copy_only=False)
    assert set(status) <= {"finished", "dropped", "timed-out", "failed"}
    assert (status == "timed-out").sum() > 0 and (status == "dropped").sum() > 0 and (status == "finished").sum() > 0
    assert summary["calls_finished"] + summary["calls_dropped"] + summary["calls_timed_out"] == summary["calls_created"]
    fin = status == "finished"
    a, adm, ft, f = (calls[c].to_numpy()[fin] for c in ("arrival_s", "admitted_s", "first_token_s", "finish_s"))
    assert np.all(a <= adm) and np.all(adm < ft) and np.all(ft <= f)
    gen = calls["generated_tokens"].to_numpy()
    assert np.array_equal(gen[fin], calls["output_tokens"].to_numpy()[fin])


def test_energy_is_integral_of_power(tmp_path):
    raw = llm_scenario(duration_s=10.0, warmup_s=0.0)
    sc = validate(raw)
    summary = run_point(sc, str(tmp_path), "p2")
    calls, steps = _tables(tmp_path, "p2")
    end = summary["sim_end_s"]
    for r in (0, 1):
        rows = steps.filter(steps["replica"].to_numpy() == r)
        s, e = rows["start_s"].to_numpy(), rows["end_s"].to_numpy()
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        assert s[0] == 0.0 and e[-1] == pytest.approx(end)
        assert np.array_equal(s[1:], e[:-1])  # the rows tile the timeline: no gap, no overlap
    dur = steps["end_s"].to_numpy() - steps["start_s"].to_numpy()
    power = steps["avg_power_w"].to_numpy()
    energy = steps["energy_j"].to_numpy()
    pos = dur > 0
    assert np.allclose(power[pos] * dur[pos], energy[pos], rtol=1e-12)
    # idle rows draw exactly idle power; busy rows sit between idle and TDP
    world = build(sc, recorder=None)
    spec = world.specs[0]
    kind = steps["kind"].to_numpy(zero_copy_only=False)
    assert np.allclose(power[kind == "idle"], spec.power.idle_w)
    busy = (kind != "idle") & pos
    assert np.all(power[busy] >= spec.power.idle_w) and np.all(power[busy] <= spec.acc.tdp_w * (1 + 1e-9))
    # the summary's device energy is the integral of power over the window (here: the whole run up to duration)
    s, e = steps["start_s"].to_numpy(), steps["end_s"].to_numpy()
    inside = np.clip(np.minimum(e, 10.0) - np.maximum(s, 0.0), 0, None)
    assert summary["device_energy_j"] == pytest.approx(float((power[pos] * inside[pos]).sum()), rel=1e-9)
