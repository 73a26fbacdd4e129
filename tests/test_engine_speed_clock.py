"""The decode clock (running calls' decode progress kept once per batch) changes no table: the
same runs with it switched off, call by call, give byte-identical calls and steps, energy shares
included; and its block arithmetic equals the planner's per-call arithmetic."""

import numpy as np
import pytest

from scenarios import llm_scenario, run_tables, same_calls
from sim import native
from sim.engine import core
from sim.engine.call import Call
from sim.engine.dclock import DecodeClock, phase_need, rotate
from sim.engine.plan import run_need

# reasoning jobs: samples of one question share its prompt's cached blocks, and early stopping
# cancels the samples still running
JOBS = {"pools": [{"name": "gen", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 1,
                   "batcher": {"kind": "continuous", "max_num_batched_tokens": 2048, "max_num_seqs": 64}}]}
JOB_CLASS = {"name": "q", "pool": "gen", "arrival": {"kind": "poisson", "rate_per_s": 2.0},
             "prompt_tokens": {"kind": "uniform", "low": 200, "high": 600},
             "job": {"strategy": {"kind": "self_consistency", "n": 4, "early_stop": True, "thinking_budget": 600},
                     "levels": [{"name": "l", "accuracy": 0.7, "truncated_accuracy": 0.2,
                                 "thinking_tokens": {"kind": "lognormal", "median": 300, "sigma": 0.6},
                                 "answer_tokens": {"kind": "fixed", "value": 30}}]}}
def _session_class(name: str, kv: dict) -> dict:
    return {"name": name, "pool": "main", "arrival": {"kind": "poisson", "rate_per_s": 0.6},
            "prompt_tokens": {"kind": "uniform", "low": 2000, "high": 5000},
            "session": {"turns": {"kind": "fixed", "value": 6},
                        "output_tokens": {"kind": "lognormal", "median": 150, "sigma": 0.8, "max": 1200},
                        "context_growth_tokens": {"kind": "uniform", "low": 50, "high": 900},
                        "tool_calls_per_turn": {"kind": "fixed", "value": 1},
                        "tools": [{"name": "run", "latency_s": {"kind": "uniform", "low": 0.2, "high": 2.0}}],
                        "kv": kv}}


# agent sessions (their turns' prefixes register chunks as they decode) beside chat, on a pool
# small enough for preemptions, reclaimed history, pins and reloads from host memory
SESSIONS = {"datacenter": {"pools": [{
    "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
    "engine": {"num_gpu_blocks": 1800},
    "batcher": {"kind": "continuous", "max_num_batched_tokens": 1024, "max_num_seqs": 32},
    "router": {"kind": "least_work"}}]},
    "duration_s": 30.0,
    "workload": {"classes": [
        llm_scenario()["workload"]["classes"][0],
        _session_class("lru", {"kind": "lru"}),
        _session_class("pin", {"kind": "pin", "ttl_s": 1.0}),
        _session_class("offload", {"kind": "offload", "host_gib": 1, "bandwidth_gb_s": 20}),
    ]}}
CASES = {
    # long outputs, few admissions: long decode runs, finishes out of admission order
    "continuous": {},
    # a small KV pool: preemptions and admissions by free blocks, between aggregate stretches
    "preemption": {"datacenter": {"pools": [{
        "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
        "engine": {"num_gpu_blocks": 700},
        "batcher": {"kind": "continuous", "max_num_batched_tokens": 1024, "max_num_seqs": 32},
        "router": {"kind": "least_work"}}]}},
    "reasoning": {"datacenter": JOBS, "workload": {"classes": [JOB_CLASS]}, "duration_s": 10.0},
    "sessions": SESSIONS,
}


def _tables(raw, tmp_path, name):
    sessions = any("session" in c for c in raw["workload"]["classes"])
    summary, calls, steps, *rest = run_tables(raw, tmp_path, name, "calls", "steps", *(["sessions"] if sessions else []))
    summary["sessions table"] = rest[0] if rest else None  # (tables compare with equals)
    return summary, calls, steps.drop(["wall_s"]) if "wall_s" in steps.column_names else steps


@pytest.mark.skipif(native.build().startswith("compiled"), reason=(
    "the compiled engine's classes cannot be monkeypatched: this test checks its pure Python sources "
    "(DCSIM_PURE_PYTHON=1), which tests/test_native.py holds equal to it"))
@pytest.mark.parametrize("mode", ["macro", "per_iteration"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_tables_identical_with_the_clock_off(case, mode, tmp_path, monkeypatch):
    raw = llm_scenario(**CASES[case], engine_mode=mode)
    used = []
    lazy = core.ReplicaCore._commit_decode_lazy, core.ReplicaCore._commit_single_lazy
    monkeypatch.setattr(core.ReplicaCore, "_commit_decode_lazy", lambda s, *a: used.append(1) or lazy[0](s, *a))
    monkeypatch.setattr(core.ReplicaCore, "_commit_single_lazy", lambda s, *a: used.append(2) or lazy[1](s, *a))
    s_on, c_on, st_on = _tables(raw, tmp_path, "on")
    assert len(used) > 50  # commits went through the clock
    monkeypatch.setattr(DecodeClock, "ready", lambda self, running: False)
    used.clear()
    s_off, c_off, st_off = _tables(raw, tmp_path, "off")
    assert not used
    assert c_on.num_rows > 50
    assert same_calls(c_on, c_off, attributed=())  # every column to the last bit, energy included
    assert st_on.equals(st_off)
    assert {k: v for k, v in s_on.items() if "wall" not in k} == {k: v for k, v in s_off.items() if "wall" not in k}
    if case == "preemption":
        assert max(c_on["preemptions"].to_pylist()) > 0
    if case == "reasoning":
        statuses = set(c_on["status"].to_pylist())
        assert "cancelled" in statuses and "finished" in statuses
        assert sum(c_on["cached_tokens"].to_pylist()) > 0
    if case == "sessions":
        sessions = s_on["sessions table"].to_pylist()
        assert len(sessions) > 10 and sum(c_on["cached_tokens"].to_pylist()) > 0
        assert max(c_on["preemptions"].to_pylist()) > 0
        assert sum(r["recomputed_tokens"] for r in sessions) > 0 and sum(r["reload_s"] for r in sessions) > 0


def test_block_counts_from_offsets_equal_the_per_call_count():
    rng = np.random.default_rng(3)
    for bs in (1, 4, 16, 32):
        for _ in range(50):
            computed = rng.integers(1, 5000, size=int(rng.integers(1, 70)))
            phase = [int((computed % bs == t).sum()) for t in range(bs)]
            for m in (1, 2, bs - 1, bs, bs + 1, 3 * bs + 5, 257):
                if m < 1:
                    continue
                assert phase_need(phase, bs, m) == run_need(bs, computed, m)
                assert rotate(phase, m, bs) == [int(((computed + m) % bs == t).sum()) for t in range(bs)]


def test_a_call_brought_up_to_date_has_the_per_call_tokens_blocks_and_energy():
    dc = DecodeClock(16, True)
    calls = []
    for i, (prompt, out) in enumerate([(100, 40), (33, 9), (16, 25)]):
        c = Call(i, "chat", "p", 0.0, prompt, out)
        c.generated, c.computed = 1, prompt
        c.blocks = -(-prompt // 16)
        c.energy_j, c.device_s = 0.1 * (i + 1), 0.0
        dc.join(c)
        calls.append(c)
    assert dc.ready(calls) and dc.S == 149 and dc.left() == 8
    ref = {c.call_id: (c.generated, c.computed, c.energy_j, c.device_s) for c in calls}
    live, done = list(calls), []
    for m, share in ((3, 0.37), (5, 1.0 / 3), (1, 2.2e-7)):
        assert dc.need(m) == run_need(16, np.array([ref[c.call_id][1] for c in live]), m)
        ended = dc.advance(m, len(live), share, share / 7, live)
        for c in live:
            g, k, e, s = ref[c.call_id]
            ref[c.call_id] = (g + m, k + m, e + share, s + share / 7)
        live = [c for c in live if c not in ended]
        done += ended
    assert done == [calls[1]]  # 9 output tokens: done after 8 more, brought up to date then
    assert dc.S == sum(ref[c.call_id][1] for c in live)
    for c in calls:
        if c in live:  # (a call that left was brought up to date as it left)
            dc.sync(c)
        g, k, e, s = ref[c.call_id]
        assert (c.generated, c.computed, c.blocks, c.energy_j, c.device_s) == (g, k, -(-k // 16), e, s)
