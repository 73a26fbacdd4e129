"""Failures and stragglers: every call ends accounted for, availability follows MTBF and
MTTR, lost work is redone, and both engine modes agree."""

import math

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from scenarios import llm_scenario, same_calls
from sim.config import validate
from sim.errors import ScenarioError
from sim.run import run_point


def faulty(on_failure="retry", mtbf=20.0, mttr=5.0, duration=120.0, replicas=4, **extra):
    raw = llm_scenario(duration_s=duration, drain_s=3000.0)
    pool = raw["datacenter"]["pools"][0]
    pool.update(replicas=replicas, router={"kind": "jsq"},
                faults={"mtbf_s": mtbf, "mttr_s": mttr, "on_failure": on_failure}, **extra)
    return raw


def run(raw, tmp_path, name="r"):
    out = tmp_path / name
    s = run_point(validate(raw), str(out), "p")
    read = lambda t: pq.read_table(out / t / "point_id=p" / "part-0.parquet")
    return s, read("calls"), read("events"), read("steps")


@pytest.mark.parametrize("policy", ["retry", "fail"])
def test_every_call_is_accounted_for_under_failures(policy, tmp_path):
    s, calls, events, _ = run(faulty(policy), tmp_path)
    status = calls["status"].to_numpy(zero_copy_only=False)
    failures = int(pc.sum(pc.equal(events["kind"], "failure")).as_py())
    assert failures > 5
    assert calls.num_rows == s["calls_created"]
    n = {k: int((status == k).sum()) for k in ("finished", "failed", "dropped")}
    assert calls.num_rows == n["finished"] + n["failed"] + n["dropped"]  # calls in = out, nothing lost
    if policy == "retry":
        # retried, never failed, unless the whole pool was down at that instant (no replica to take it)
        assert int(pc.sum(pc.equal(events["kind"], "retried")).as_py()) > 0
        ev = [e for e in events.to_pylist() if e["kind"] in ("failure", "repair")]
        for c in calls.filter(pc.equal(calls["status"], "failed")).to_pylist():
            down = {}
            for e in (e for e in ev if e["time_s"] <= c["finish_s"]):
                down[e["replica"]] = e["kind"] == "failure"
            assert len(down) == 4 and all(down.values()), c["call_id"]
    else:
        assert n["failed"] > 0


def test_availability_matches_mtbf_over_mtbf_plus_mttr(tmp_path):
    mtbf, mttr, reps, horizon = 30.0, 10.0, 8, 1500.0
    raw = faulty(mtbf=mtbf, mttr=mttr, duration=horizon, replicas=reps)
    raw["workload"]["classes"] = raw["workload"]["classes"][:1]
    raw["workload"]["classes"][0]["arrival"]["rate_per_s"] = 1.0
    raw["drain_s"] = 0.0
    s, _, events, _ = run(raw, tmp_path)
    ev = events.filter(pc.is_in(events["kind"], value_set=__import__("pyarrow").array(["failure", "repair"]))).to_pylist()
    down, cycles = 0.0, 0
    for r in range(reps):
        since = None
        for e in (e for e in ev if e["replica"] == r):
            if e["kind"] == "failure":
                since = e["time_s"]
            elif since is not None:
                down += e["time_s"] - since
                since, cycles = None, cycles + 1
        if since is not None:
            down += s["sim_end_s"] - since
    availability = 1 - down / (reps * s["sim_end_s"])
    expected = mtbf / (mtbf + mttr)
    # about cycles alternating renewal cycles: the share down has a standard error of roughly
    # sqrt(2 / cycles) x (1 - A) (exponential up and down times)
    se = math.sqrt(2.0 / cycles) * (1 - expected)
    assert cycles > 200 and abs(availability - expected) < 3 * se
    assert abs(s["availability"] - availability) < 0.01  # the summary's figure, from the steps table


def test_retried_calls_start_again_and_take_longer(tmp_path):
    base = llm_scenario(duration_s=120.0, drain_s=3000.0)
    base["datacenter"]["pools"][0].update(replicas=4, router={"kind": "jsq"})
    s0, c0, _, _ = run(base, tmp_path, "ok")
    s1, c1, ev, steps = run(faulty("retry"), tmp_path, "faulty")
    assert s1["e2e_p99_s"] > s0["e2e_p99_s"]
    # the downtime draws no power and is in the steps table
    down = steps.filter(pc.equal(steps["kind"], "down"))
    assert down.num_rows > 0 and sum(down["energy_j"].to_pylist()) == 0


def test_stragglers_slow_their_replicas(tmp_path):
    raw = llm_scenario(duration_s=60.0)
    raw["datacenter"]["pools"][0].update(replicas=4, router={"kind": "round_robin"},
                                         stragglers={"fraction": 0.25, "slowdown": 3.0})
    _, calls, _, _ = run(raw, tmp_path)
    fin = calls.filter(pc.equal(calls["status"], "finished"))
    gen = fin["generated_tokens"].to_numpy()
    tpot = (fin["finish_s"].to_numpy() - fin["first_token_s"].to_numpy())[gen > 1] / (gen[gen > 1] - 1)
    rep = fin["replica"].to_numpy()[gen > 1]
    per = np.array([np.median(tpot[rep == r]) for r in range(4)])
    slow = per.argmax()
    assert per[slow] > 2.0 * np.median(np.delete(per, slow))


def test_failures_are_identical_in_both_engine_modes(tmp_path):
    raw = faulty("retry", duration=60.0)
    _, cm, em, _ = run({**raw, "engine_mode": "macro"}, tmp_path, "m")
    _, ci, ei, _ = run({**raw, "engine_mode": "per_iteration"}, tmp_path, "i")
    assert cm.num_rows > 100 and same_calls(cm.sort_by("call_id"), ci.sort_by("call_id"))


def test_faults_config_errors():
    raw = faulty()
    raw["datacenter"]["pools"][0]["faults"]["mtbf_s"] = 0
    with pytest.raises(ScenarioError, match="faults.mtbf_s"):
        validate(raw, "f.yaml")


@pytest.mark.parametrize("kv", [{"kind": "pin"}, {"kind": "offload", "host_gib": 8, "bandwidth_gb_s": 20}])
def test_sessions_lose_their_kv_and_move_when_their_replica_fails(kv, tmp_path):
    from test_sessions import agents

    raw = agents(kv, concurrency=6, turns=8, prompt=6000, tool_s=2.0, output=100, growth=500, duration_s=200.0)
    raw["workload"]["classes"][0].pop("stop_s")
    raw["datacenter"]["pools"][0].update(replicas=3, router={"kind": "jsq"},
                                         faults={"mtbf_s": 25.0, "mttr_s": 5.0})
    s, calls, events, _ = run(raw, tmp_path)
    sessions = pq.read_table(tmp_path / "r" / "sessions" / "point_id=p" / "part-0.parquet")
    assert int(pc.sum(pc.equal(events["kind"], "failure")).as_py()) > 3
    assert set(sessions["status"].to_pylist()) <= {"finished", "failed", "timed-out"}
    assert sum(sessions["migrations"].to_pylist()) > 0 and sum(sessions["recomputed_tokens"].to_pylist()) > 0
    assert set(calls["status"].to_pylist()) <= {"finished", "failed", "dropped"}


def test_a_straggler_slows_its_single_iterations_as_its_runs():
    """The engine prices one iteration with ``cost_one``: a slowed model slows it exactly as ``cost``."""
    from sim.cluster.faults import Slowed
    from sim.hardware import catalog
    from sim.models.perf import Batch, RooflineModel

    base = RooflineModel(catalog.model("llama-3.1-8b"), catalog.accelerator("h100-sxm"))
    slow = Slowed(base, 1.7)
    for batch in ((1, 1, 1, 300.0, 300.0, 1, 300.0), (530, 3, 3, 140_000.0, 2_000.0, 512, 131_328.0)):
        one = slow.cost_one(*batch)
        assert one[0] == base.cost_one(*batch)[0] * 1.7
        assert one == tuple(None if x is None else float(x) for x in slow.cost(Batch(*batch)))
    # every phase keeps its share of the slowed step (collectives, slow experts, per-sequence time)
    moe = RooflineModel(catalog.model("qwen3-30b-a3b"), catalog.accelerator("h100-sxm"), tp=2, weight_dtype="fp8",
                         quantized_efficiency=0.5)  # fp8 experts below their roofline: a stall time
    plain, slowed = moe.cost_one(64, 64, 64, 64_000.0, 64_064.0), Slowed(moe, 2.0).cost_one(64, 64, 64, 64_000.0,
                                                                                               64_064.0)
    assert all(x is not None and x > 0 for x in plain[3:])
    assert [y / slowed[0] for y in slowed[3:]] == pytest.approx([x / plain[0] for x in plain[3:]], rel=1e-12)
