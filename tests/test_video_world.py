"""Diffusion pools in a scenario: video requests are routed, batched and recorded, their
energy is in the fleet's totals, and bad configurations name the key."""

import math

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sim.config import validate
from sim.errors import ScenarioError
from sim.run import run_point
from sim.cluster.world import build


def scenario(rate: float = 0.2, frames: int = 1, max_batch: int = 4, **pool) -> dict:
    return {
        "name": "vid", "seed": 3, "duration_s": 120.0, "drain_s": 600.0,
        "datacenter": {"pools": [
            {"name": "chat", "accelerator": "h100-sxm", "model": "llama-3.1-8b"},
            {"name": "gen", "kind": "diffusion", "accelerator": "h100-sxm", "model": "flux.1-dev", "replicas": 2,
             "max_batch": max_batch, "router": {"kind": "jsq"}, **pool},
        ]},
        "workload": {"classes": [
            {"name": "chat", "pool": "chat", "arrival": {"kind": "poisson", "rate_per_s": 1.0},
             "prompt_tokens": {"kind": "fixed", "value": 300}, "output_tokens": {"kind": "fixed", "value": 50}},
            {"name": "img", "pool": "gen", "arrival": {"kind": "poisson", "rate_per_s": rate}, "video": {"frames": frames}},
        ]},
    }


def run(raw, tmp_path):
    s = run_point(validate(raw), str(tmp_path), "p")
    read = lambda t: pq.read_table(tmp_path / t / "point_id=p" / "part-0.parquet")
    return s, read("videos"), read("steps")


def test_video_requests_are_served_batched_and_accounted(tmp_path):
    raw = scenario(rate=1.5)
    s, videos, steps = run(raw, tmp_path)
    assert videos.num_rows == s["videos_created"] > 100 and set(videos["status"].to_pylist()) == {"finished"}
    assert max(videos["batch"].to_pylist()) > 1 and max(videos["batch"].to_pylist()) <= 4
    # a request alone in its batch takes the cost model's time from its batch's start
    spec = build(validate(raw), None).spec_by_name["gen"]
    alone = videos.filter(pc.equal(videos["batch"], 1)).to_pylist()[0]
    assert math.isclose(alone["finish_s"] - alone["admitted_s"], spec.perf.job_time_s(1, 28), rel_tol=1e-9)
    # diffusion steps are in the steps table, so the fleet's energy includes them
    gen = steps.filter(pc.equal(steps["pool"], "gen"))
    busy = gen.filter(pc.equal(gen["kind"], "diffusion"))
    assert math.isclose(sum(busy["energy_j"].to_pylist()), sum(videos["energy_j"].to_pylist()), rel_tol=1e-9)
    assert s["video_img_latency_p50_s"] > spec.perf.job_time_s(1, 28) * 0.99 and s["video_img_energy_j_mean"] > 0


def test_bad_video_configs_name_the_key():
    raw = scenario()
    raw["workload"]["classes"][1]["pool"] = "chat"
    with pytest.raises(ScenarioError, match="workload.classes.img.pool"):
        validate(raw, "v.yaml")
    raw = scenario(router={"kind": "least_kv"})
    with pytest.raises(ScenarioError, match="datacenter.pools.gen.router.kind"):
        build(validate(raw, "v.yaml"), None, "v.yaml")
    raw = scenario()
    raw["datacenter"]["pools"][1]["model"] = "sora"
    with pytest.raises(ScenarioError, match="datacenter.pools.gen.model"):
        build(validate(raw, "v.yaml"), None, "v.yaml")


def shared(rate: float = 0.3) -> dict:
    raw = scenario(rate=rate, share_with="chat", replicas=1)
    raw["workload"]["classes"][0]["arrival"]["rate_per_s"] = 3.0
    return raw


def test_a_shared_pool_takes_turns_with_llm_traffic(tmp_path):
    from scenarios import same_calls

    alone = scenario()
    alone["workload"]["classes"] = alone["workload"]["classes"][:1]
    alone["workload"]["classes"][0]["arrival"]["rate_per_s"] = 3.0
    s_alone = run_point(validate(alone), str(tmp_path / "alone"), "p")
    s, videos, steps = run(shared(), tmp_path / "shared")
    assert set(videos["status"].to_pylist()) == {"finished"} and videos.num_rows > 20
    # the chat pool's replica waits while images run on its devices: its calls take longer
    assert s["e2e_p90_s"] > s_alone["e2e_p90_s"] and s["ttft_p99_s"] > s_alone["ttft_p99_s"]
    # the devices run one thing at a time: no LLM step overlaps a diffusion batch
    llm = steps.filter(pc.and_(pc.equal(steps["pool"], "chat"), pc.not_equal(steps["kind"], "idle"))).to_pylist()
    gen = steps.filter(pc.equal(steps["kind"], "diffusion")).to_pylist()
    for b in gen:
        assert not any(r["start_s"] < b["end_s"] - 1e-9 and r["end_s"] > b["start_s"] + 1e-9 for r in llm)
    # ... and are counted once: the fleet is the chat pool's device, its time fully accounted
    assert s["devices"] == 1
    covered = sum(r["end_s"] - r["start_s"] for r in steps.filter(pc.equal(steps["pool"], "chat")).to_pylist()) + \
        sum(b["end_s"] - b["start_s"] for b in gen)
    assert math.isclose(covered, s["sim_end_s"], rel_tol=1e-9)
    # the LLM model's KV pool shrinks by the diffusion weights it shares the device with
    assert build(validate(shared()), None).spec_by_name["chat"].kv_gib < build(validate(alone), None).spec_by_name["chat"].kv_gib
    # both engine modes agree
    m = run_point(validate({**shared(), "engine_mode": "macro"}), str(tmp_path / "m"), "p")
    i = run_point(validate({**shared(), "engine_mode": "per_iteration"}), str(tmp_path / "i"), "p")
    cm = pq.read_table(tmp_path / "m" / "calls" / "point_id=p" / "part-0.parquet")
    ci = pq.read_table(tmp_path / "i" / "calls" / "point_id=p" / "part-0.parquet")
    assert same_calls(cm, ci) and m["videos_finished"] == i["videos_finished"]


def test_sharing_needs_matching_devices():
    raw = shared()
    raw["datacenter"]["pools"][1]["tp"] = 2
    with pytest.raises(ScenarioError, match="datacenter.pools.gen.share_with"):
        validate(raw, "v.yaml")
