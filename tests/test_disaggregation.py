"""Prefill/decode disaggregation: the KV transfer's time follows the link and the model's
KV size, a call's TTFT counts prefill, transfer and decode, calls keep their accounting,
and both engine modes agree."""

import numpy as np
import pytest

from scenarios import run_tables, same_calls
from sim.hardware import catalog
from sim.config import validate
from sim.errors import ScenarioError


def pd_scenario(rate=2.0, duration=60.0, prefill=1, decode=2, link=None, **cls):
    pool = lambda name, n, **k: {"name": name, "accelerator": "h100-sxm", "model": "llama-3.1-70b", "tp": 4,
                                 "replicas": n, "router": {"kind": "jsq"}, **k}
    klass = {"name": "chat", "pool": "prefill", "arrival": {"kind": "poisson", "rate_per_s": rate},
             "prompt_tokens": {"kind": "lognormal", "median": 2000, "sigma": 0.7, "max": 12000},
             "output_tokens": {"kind": "lognormal", "median": 200, "sigma": 0.6, "max": 1500}}
    klass.update(cls)
    return {"name": "pd", "seed": 5, "duration_s": duration, "warmup_s": 0.0,
            "datacenter": {"pools": [pool("prefill", prefill, decode_pool="decode", kv_transfer=link or {}),
                                     pool("decode", decode)]},
            "workload": {"classes": [klass]}}


def one_call(link=None):
    """A single 4,000-token prompt: nothing queues, so every interval is the call's own."""
    return pd_scenario(duration=1.5, link=link, arrival={"kind": "deterministic", "rate_per_s": 1.0},
                       prompt_tokens={"kind": "fixed", "value": 4000}, output_tokens={"kind": "fixed", "value": 50})


def _rows(calls):
    status = calls["status"].to_numpy(zero_copy_only=False)
    rows = calls.to_pylist()
    return [r for r, s in zip(rows, status) if s == "prefilled"], [r for r, s in zip(rows, status) if s != "prefilled"]


def test_kv_transfer_time_is_latency_plus_bytes_over_the_nics(tmp_path):
    s, calls = run_tables(one_call(), tmp_path, "a", "calls")
    (pre,), (call,) = _rows(calls)
    m = catalog.model("llama-3.1-70b")
    # every full 16-token block before the last prompt token moves (that one is recomputed to
    # sample from): bytes = tokens x layers x K,V x kv heads x head dim x bf16
    tokens = 3999 // 16 * 16
    nbytes = tokens * m.num_layers * 2 * m.num_kv_heads * m.head_dim * 2
    nic = catalog.accelerator("h100-sxm").network_gb_s * 1e9  # one 400 Gb/s NIC per GPU, 4 in parallel
    assert call["kv_transfer_s"] == pytest.approx(50e-6 + nbytes / (4 * nic), rel=1e-3)
    assert call["cached_tokens"] == tokens  # found on the decode replica, not recomputed
    assert pre["pool"] == "prefill" and call["pool"] == "decode" and pre["generated_tokens"] == 1
    # the decode replica takes the call as soon as its KV has arrived
    assert call["admitted_s"] == pytest.approx(pre["finish_s"] + call["kv_transfer_s"], abs=1e-9)
    assert s["calls_created"] == 1 and s["calls_prefilled"] == 1


def test_ttft_includes_the_kv_transfer(tmp_path):
    """A link 100x slower moves the same bytes: the call's TTFT grows by exactly the extra
    transfer time, and the prefill is untouched."""
    _, fast = run_tables(one_call(), tmp_path, "fast", "calls")
    _, slow = run_tables(one_call({"bandwidth_gb_s": 0.5}), tmp_path, "slow", "calls")
    (pf,), (cf,) = _rows(fast)
    (ps,), (cs,) = _rows(slow)
    assert ps["finish_s"] == pf["finish_s"]
    assert cs["kv_transfer_s"] > 0.5 and cs["kv_transfer_s"] == pytest.approx(cf["kv_transfer_s"] * 100, rel=0.01)
    ttft = lambda c: c["first_token_s"] - c["arrival_s"]
    assert ttft(cs) - ttft(cf) == pytest.approx(cs["kv_transfer_s"] - cf["kv_transfer_s"], abs=1e-9)
    assert ttft(cs) > pf["finish_s"] - pf["arrival_s"] + cs["kv_transfer_s"]  # prefill + transfer + first decode step


def test_calls_are_accounted_for_and_engine_modes_agree(tmp_path):
    raw = pd_scenario(rate=3.0, duration=40.0)
    s, calls = run_tables(raw, tmp_path, "m", "calls")
    pre, own = _rows(calls)
    assert len(pre) == len(own) == s["calls_created"] > 80 and s["calls_finished"] == len(own)
    assert all(p["call_id"] == c["call_id"] + 1 for p, c in zip(pre, own))  # each call, then its prefill
    assert s["kv_transfer_mean_s"] > 0
    _, ref = run_tables({**raw, "engine_mode": "per_iteration"}, tmp_path, "r", "calls")
    assert same_calls(calls, ref)


def test_the_prefill_to_decode_ratio_moves_ttft_and_batch(tmp_path):
    """The P:D ratio matters: at a prompt load near one prefill replica's capacity a second
    prefill replica cuts TTFT (prefill queueing), and a second decode replica halves the
    decode batch; time per token barely moves (70B decode is weight-bound at these batches)."""
    base, _ = run_tables(pd_scenario(rate=4.0, prefill=1, decode=1), tmp_path, "p1d1", "calls")
    more_p, _ = run_tables(pd_scenario(rate=4.0, prefill=2, decode=1), tmp_path, "p2d1", "calls")
    more_d, _ = run_tables(pd_scenario(rate=4.0, prefill=1, decode=2), tmp_path, "p1d2", "calls")
    assert more_p["ttft_p90_s"] < 0.7 * base["ttft_p90_s"]
    assert more_d["mean_batch_seqs"] < 0.8 * base["mean_batch_seqs"]
    assert more_d["tpot_p50_s"] == pytest.approx(base["tpot_p50_s"], rel=0.15)


def test_job_samples_share_their_prompt_on_the_decode_replica(tmp_path):
    """Self-consistency samples of one question prefill together and their prompt blocks,
    moved to the decode replica, are held there once: its KV use stays well under four
    copies of the prompt."""
    job = {"levels": [{"name": "any", "accuracy": 0.5, "truncated_accuracy": 0.3,
                       "output_tokens": {"kind": "fixed", "value": 100}, "reasoning_share": {"kind": "fixed", "value": 0.8}}],
           "strategy": {"kind": "self_consistency", "n": 4}}
    raw = pd_scenario(rate=0.5, duration=20.0, job=job, prompt_tokens={"kind": "fixed", "value": 3000})
    del raw["workload"]["classes"][0]["output_tokens"]
    raw["datacenter"]["pools"][1]["replicas"] = 1
    s, calls, steps = run_tables(raw, tmp_path, "j", "calls", "steps")
    _, own = _rows(calls)
    assert s["jobs_finished"] == s["jobs_created"] > 5 and len(own) == 4 * s["jobs_created"]
    assert all(c["cached_tokens"] == 2992 for c in own)  # every sample found its prompt on the decode side
    one_job = (steps["pool"].to_numpy(zero_copy_only=False) == "decode") & (steps["batch_seqs"].to_numpy() == 4)
    used = steps["kv_blocks_used"].to_numpy()[one_job]
    assert len(used) and np.median(used) < 1.2 * (3000 // 16)  # mostly one prompt's blocks, not four


def test_bad_disaggregation_configs_name_the_key():
    raw = pd_scenario()
    raw["datacenter"]["pools"][0]["decode_pool"] = "nope"
    with pytest.raises(ScenarioError, match="decode_pool.*unknown decode pool 'nope'"):
        validate(raw)
    raw = pd_scenario()
    raw["datacenter"]["pools"][1]["model"] = "llama-3.1-8b"
    with pytest.raises(ScenarioError, match="decode_pool.*same model"):
        validate(raw)
    raw = pd_scenario()
    cls = raw["workload"]["classes"][0]
    del cls["output_tokens"]
    cls["session"] = {"turns": {"kind": "fixed", "value": 2}, "output_tokens": {"kind": "fixed", "value": 10}}
    with pytest.raises(ScenarioError, match="classes.chat.pool.*disaggregated"):
        validate(raw)


def test_a_card_without_network_figure_needs_a_bandwidth(tmp_path):
    from sim.cluster.world import build

    raw = pd_scenario()
    for p in raw["datacenter"]["pools"]:
        p.update(accelerator="mi300x", tp=2)
    with pytest.raises(ScenarioError, match="kv_transfer.bandwidth_gb_s.*mi300x gives no network_gb_s"):
        build(validate(raw), None)


def test_failures_on_both_sides_lose_no_call(tmp_path):
    """Prefill replicas that fail hand their calls to the other prefill replica; decode
    replicas that fail lose the transferred KV and their calls start again elsewhere; every
    call ends with a terminal status and has exactly one prefill row per successful prefill."""
    raw = pd_scenario(rate=2.0, duration=120.0, prefill=2, decode=2)
    raw["drain_s"] = 3000.0
    for p in raw["datacenter"]["pools"]:
        p["faults"] = {"mtbf_s": 40.0, "mttr_s": 10.0}
    s, calls, events = run_tables(raw, tmp_path, "f", "calls", "events")
    pre, own = _rows(calls)
    status = [c["status"] for c in own]
    assert sum(e == "failure" for e in events["kind"].to_pylist()) > 5
    assert len(own) == s["calls_created"] and all(x in ("finished", "failed", "dropped") for x in status)
    assert len(pre) == s["calls_prefilled"] <= len(own)
