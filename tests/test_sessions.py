"""Agent sessions and KV lifecycle policies: pinned KV is bounded and holds back admissions,
offload reloads take bytes / bandwidth, drop recomputes exactly the history, a replayed
trace's prefix-cache hits match its block hashes, and every session ends."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from scenarios import garbage_calls, run_tables
from sim.config import validate
from sim.errors import ScenarioError
from sim.workloads.sessions import SESSION_CHUNK_BLOCKS
from sim.cluster.world import build

MOONCAKE = Path(__file__).parent.parent / "scenarios" / "data" / "mooncake_conversation_trace.jsonl"
BS = 16


def agents(kv: dict, concurrency: int = 2, turns: int = 3, prompt: int = 20000, tool_s: float = 30.0,
           output: int = 50, growth: int = 400, blocks: int | None = None, caching: bool = True, duration_s: float = 60.0,
           **top) -> dict:
    pool = {"name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 1,
            "engine": {"prefix_caching": caching}}
    if blocks:
        pool["engine"]["num_gpu_blocks"] = blocks
    raw = {
        "name": "agents-test", "seed": 4, "duration_s": duration_s, "warmup_s": 0.0, "drain_s": 3600.0,
        "datacenter": {"pools": [pool]},
        "workload": {"classes": [{
            "name": "agent", "pool": "main", "arrival": {"kind": "closed", "concurrency": concurrency},
            "stop_s": 1.0,  # one session per client
            "prompt_tokens": {"kind": "fixed", "value": prompt},
            "session": {
                "turns": {"kind": "fixed", "value": turns},
                "output_tokens": {"kind": "fixed", "value": output},
                "context_growth_tokens": {"kind": "fixed", "value": growth},
                "tool_calls_per_turn": {"kind": "fixed", "value": 1},
                "tools": [{"name": "run", "latency_s": {"kind": "fixed", "value": tool_s}}],
                "kv": kv,
            },
        }]},
    }
    raw.update(top)
    return raw


def run(raw, tmp_path, name="r"):
    return run_tables(raw, tmp_path, name, "sessions", "calls", "steps")


def turns_of(calls, sid):
    return calls.filter(pc.equal(calls["session_id"], sid)).sort_by("call_id").to_pylist()


def with_chat(raw, at_s: float, prompt: int):
    """A chat call arriving while the sessions wait on their tools."""
    raw = copy.deepcopy(raw)
    raw["workload"]["classes"].append({
        "name": "chat", "pool": "main", "arrival": {"kind": "deterministic", "rate_per_s": 1.0 / at_s},
        "stop_s": at_s + 1.0, "prompt_tokens": {"kind": "fixed", "value": prompt},
        "output_tokens": {"kind": "fixed", "value": 10}})
    return raw


def test_pinned_kv_stays_within_the_pool_and_holds_back_admissions(tmp_path):
    # two sessions of ~20k tokens pin ~2,560 of 3,000 blocks while their tools run; a 10k-token
    # chat call (626 blocks) arriving then cannot be admitted until a session's next turn
    blocks = 3000
    pinned = with_chat(agents({"kind": "pin"}, blocks=blocks), at_s=10.0, prompt=10000)
    cached = with_chat(agents({"kind": "lru"}, blocks=blocks), at_s=10.0, prompt=10000)
    _, s_pin, c_pin, st_pin = run(pinned, tmp_path, "pin")
    _, s_lru, c_lru, _ = run(cached, tmp_path, "lru")
    assert max(st_pin["kv_blocks_used"].to_pylist()) <= blocks
    chat = lambda c: c.filter(pc.equal(c["class"], "chat")).to_pylist()[0]
    pin_chat, lru_chat = chat(c_pin), chat(c_lru)
    assert pin_chat["status"] == lru_chat["status"] == "finished"
    # with LRU the cached history is reclaimed for the chat call at once; pinned, it waits
    assert lru_chat["admitted_s"] - lru_chat["arrival_s"] < 0.01
    turn2 = min(t["admitted_s"] for sid in (0, 1) for t in turns_of(c_pin, sid)[1:2])
    assert pin_chat["admitted_s"] >= turn2 > pin_chat["arrival_s"] + 15
    # pinned sessions reuse their whole history; under LRU the chat call evicted some of it
    assert sum(s_pin["recomputed_tokens"].to_pylist()) < sum(s_lru["recomputed_tokens"].to_pylist())
    assert sum(s_pin["kv_pinned_gib_s"].to_pylist()) > 0 == sum(s_lru["kv_pinned_gib_s"].to_pylist())


def test_pin_ttl_releases_the_kv(tmp_path):
    _, s, calls, _ = run(agents({"kind": "pin", "ttl_s": 5.0}, blocks=3000, caching=False), tmp_path)
    # caching off: after the TTL the pinned blocks are freed, so every later turn recomputes its history
    for sid in (0, 1):
        assert [t["cached_tokens"] for t in turns_of(calls, sid)] == [0, 0, 0]
    pinned_s = s["kv_pinned_gib_s"].to_numpy()
    assert np.all(pinned_s > 0)


def test_offload_reload_takes_bytes_over_bandwidth(tmp_path):
    bw = 20.0
    raw = agents({"kind": "offload", "host_gib": 64, "bandwidth_gb_s": bw}, concurrency=1, turns=4, caching=False)
    sc = validate(raw)
    spec = build(sc, recorder=None).spec_by_name["main"]
    block_bytes = spec.kv_gib * 2**30 / spec.kv_blocks * spec.devices_per_replica
    _, sessions, calls, _ = run(raw, tmp_path)
    turns = turns_of(calls, 0)
    chunk = SESSION_CHUNK_BLOCKS
    expected_total = 0.0
    for prev, nxt in zip(turns, turns[1:]):
        history_blocks = (prev["prompt_tokens"] + prev["generated_tokens"]) // BS
        reloaded = (history_blocks // chunk) * chunk  # whole chunks were offloaded and come back
        reload_s = reloaded * block_bytes / (bw * 1e9)
        expected_total += reload_s
        # the next turn is sent after the tool call and the reload
        assert math.isclose(nxt["arrival_s"] - prev["finish_s"], 30.0 + reload_s, rel_tol=1e-9)
        assert nxt["cached_tokens"] == reloaded * BS
    row = sessions.to_pylist()[0]
    assert math.isclose(row["reload_s"], expected_total, rel_tol=1e-9) and row["kv_host_gib_s"] > 0


def test_drop_recomputes_exactly_the_history(tmp_path):
    _, sessions, calls, steps = run(agents({"kind": "drop"}, concurrency=1, turns=4), tmp_path, "drop")
    turns = turns_of(calls, 0)
    assert [t["cached_tokens"] for t in turns] == [0, 0, 0, 0]
    # every turn prefills its whole prompt: the history again plus what is new
    assert sum(steps["prefill_tokens"].to_pylist()) == sum(t["prompt_tokens"] for t in turns)
    history = sum(((p["prompt_tokens"] + p["generated_tokens"]) // BS) * BS for p in turns[:-1])
    assert sessions["recomputed_tokens"][0].as_py() == history
    # the LRU cache (no pressure) serves the history's whole chunks instead
    _, s_lru, c_lru, _ = run(agents({"kind": "lru"}, concurrency=1, turns=4), tmp_path, "lru")
    chunk_tokens = SESSION_CHUNK_BLOCKS * BS
    for prev, nxt in zip(turns_of(c_lru, 0), turns_of(c_lru, 0)[1:]):
        assert nxt["cached_tokens"] == ((prev["prompt_tokens"] + prev["generated_tokens"]) // chunk_tokens) * chunk_tokens
    assert s_lru["e2e_s"][0].as_py() < sessions["e2e_s"][0].as_py()


def direct_hit_share(n: int) -> float:
    """Share of prompt tokens an unbounded cache serves to the trace's first ``n`` requests,
    counted from the hashes: a request finds the leading hashed 512-token chunks that earlier
    requests computed (whole chunks of their prompts), never its own last token."""
    rows = [json.loads(line) for line in MOONCAKE.open()][:n]
    seen, hits = set(), 0
    for r in sorted(rows, key=lambda r: r["timestamp"]):
        keyed = min(len(r["hash_ids"]), r["input_length"] // 512)
        limit = min(keyed, ((r["input_length"] - 1) // BS) // (512 // BS))
        k = 0
        while k < limit and r["hash_ids"][k] in seen:
            k += 1
        hits += k * 512
        seen.update(r["hash_ids"][:keyed])
    return hits / sum(r["input_length"] for r in rows)


def test_prefix_cache_hits_on_a_replayed_trace_match_its_block_hashes(tmp_path):
    n = 250
    expected = direct_hit_share(n)
    assert 0.03 < expected < 0.9  # conversation turns find their earlier turns
    raw = {
        "name": "mooncake", "seed": 1, "duration_s": 1e6, "drain_s": 1e6,
        "datacenter": {"pools": [{"name": "main", "accelerator": "h200", "model": "llama-3.1-8b", "replicas": 1,
                                  "engine": {"num_gpu_blocks": 2_000_000}}]},
        "workload": {"classes": [{"name": "kimi", "pool": "main", "arrival": {
            "kind": "trace", "path": str(MOONCAKE), "time_column": "timestamp", "prompt_column": "input_length",
            "output_column": "output_length", "hash_column": "hash_ids", "hash_tokens": 512,
            "time_scale": 0.05, "limit": n}}]},  # 50x slower than real time: every prefill ends before the next arrival
    }
    summary, _, calls, _ = run(raw, tmp_path)
    assert calls.num_rows == n and summary["calls_finished"] == n
    got = sum(calls["cached_tokens"].to_pylist()) / sum(calls["prompt_tokens"].to_pylist())
    assert got == pytest.approx(expected, abs=1e-12)


def test_every_session_ends_with_a_terminal_status(tmp_path):
    raw = agents({"kind": "lru"}, concurrency=6, turns=20, tool_s=2.0, duration_s=40.0, drain_s=20.0)
    raw["workload"]["classes"][0].pop("stop_s")
    del raw["workload"]["classes"][0]["session"]["turns"]  # default turn counts: many outlive the drain
    summary, sessions, calls, _ = run(raw, tmp_path)
    status = sessions["status"].to_pylist()
    assert set(status) <= {"finished", "failed", "timed-out"} and "timed-out" in status and "finished" in status
    assert sessions.num_rows == summary["sessions_created"] and len(set(sessions["session_id"].to_pylist())) == len(status)
    assert set(calls["status"].to_pylist()) <= {"finished", "timed-out"}
    done = sessions.filter(pc.equal(sessions["status"], "finished"))
    assert np.all(done["turns_done"].to_numpy() == done["turns"].to_numpy())


def test_sessions_move_off_a_full_home_replica(tmp_path):
    # three pinned sessions on two replicas: the two sharing one fill 85% of its pool
    raw = agents({"kind": "pin"}, concurrency=3, turns=4, blocks=3000, tool_s=5.0)
    raw["datacenter"]["pools"][0].update(replicas=2, router={"kind": "least_kv"})
    raw["workload"]["classes"][0]["session"]["affinity_max_load"] = 0.5
    _, sessions, calls, _ = run(raw, tmp_path)
    assert sum(sessions["migrations"].to_pylist()) > 0
    assert set(sessions["status"].to_pylist()) == {"finished"}


def test_bad_session_config_names_the_key():
    raw = agents({"kind": "offload", "bandwidth_gb_s": 0})
    with pytest.raises(ScenarioError, match="workload.classes.agent.session.kv.bandwidth_gb_s"):
        validate(raw, "a.yaml")
    raw = agents({"kind": "lru"})
    raw["workload"]["classes"][0]["output_tokens"] = {"kind": "fixed", "value": 3}
    with pytest.raises(ScenarioError, match="session.output_tokens"):
        validate(raw, "a.yaml")


@pytest.mark.parametrize("kv", [{"kind": "offload", "host_gib": 4, "bandwidth_gb_s": 10}, {"kind": "pin", "ttl_s": 3}])
def test_kv_policies_under_pressure_keep_the_accounting(kv, tmp_path):
    """Many sessions on a small pool: reloads, pins, evictions and a competing stream interleave
    with planned runs; the pool is never over-committed and everything ends."""
    raw = agents(kv, concurrency=8, turns=6, prompt=6000, tool_s=1.5, output=200, growth=800, blocks=2500,
                 duration_s=90.0)
    raw["workload"]["classes"][0].pop("stop_s")
    raw["workload"]["classes"].append({"name": "chat", "pool": "main", "arrival": {"kind": "poisson", "rate_per_s": 2.0},
                                       "prompt_tokens": {"kind": "uniform", "low": 500, "high": 4000},
                                       "output_tokens": {"kind": "fixed", "value": 100}})
    summary, sessions, calls, steps = run(raw, tmp_path)
    assert max(steps["kv_blocks_used"].to_pylist()) <= 2500
    assert summary["sessions_finished"] == sessions.num_rows > 12 and summary["calls_finished"] == calls.num_rows
    if kv["kind"] == "offload":
        assert sum(sessions["reload_s"].to_pylist()) > 0 and sum(sessions["kv_host_gib_s"].to_pylist()) > 0


@pytest.mark.parametrize("kv", [{"kind": "offload", "host_gib": 4, "bandwidth_gb_s": 10}, {"kind": "pin", "ttl_s": 3}])
def test_sessions_are_identical_in_both_engine_modes(kv, tmp_path):
    from scenarios import same_calls

    raw = agents(kv, concurrency=6, turns=5, prompt=6000, tool_s=1.5, output=150, growth=800, blocks=2500,
                 duration_s=40.0)
    raw["workload"]["classes"][0].pop("stop_s")
    _, sm, cm, _ = run({**raw, "engine_mode": "macro"}, tmp_path, "m")
    _, si, ci, _ = run({**raw, "engine_mode": "per_iteration"}, tmp_path, "i")
    assert cm.num_rows > 50 and same_calls(cm, ci)
    exact = [c for c in sm.column_names if c not in ("energy_j", "cost_usd")]
    assert sm.select(exact).equals(si.select(exact))
    assert np.allclose(sm["energy_j"].to_numpy(), si["energy_j"].to_numpy(), rtol=1e-9)


def test_cache_aware_routing_finds_more_prefix_hits(tmp_path):
    """Spread over four replicas, a trace's prefixes are found again only where they were
    computed: the cache-aware router sends calls there; least-KV-load routing scatters them."""
    def replay(router):
        raw = {
            "name": "mooncake", "seed": 1, "duration_s": 1e6, "drain_s": 1e6,
            "datacenter": {"pools": [{"name": "main", "accelerator": "h200", "model": "llama-3.1-8b", "replicas": 4,
                                      "router": router, "engine": {"num_gpu_blocks": 1_000_000}}]},
            "workload": {"classes": [{"name": "kimi", "pool": "main", "arrival": {
                "kind": "trace", "path": str(MOONCAKE), "time_column": "timestamp", "prompt_column": "input_length",
                "output_column": "output_length", "hash_column": "hash_ids", "time_scale": 0.05, "limit": 300}}]},
        }
        _, _, calls, _ = run(raw, tmp_path, router["kind"])
        return sum(calls["cached_tokens"].to_pylist()) / sum(calls["prompt_tokens"].to_pylist())

    single = {"kind": "prefix_affinity", "max_load": 1.0, "balance_abs": 1000}
    aware, scattered = replay(single), replay({"kind": "least_kv"})
    # one cache would serve direct_hit_share; routed by cache, four nearly do
    assert direct_hit_share(300) >= aware > 0.9 * direct_hit_share(300) and aware > 1.5 * scattered > 0


def test_one_tool_count_is_the_one_element_draw():
    """``LengthSampler.one`` (a turn's tool calls, drawn without an array) gives the draws of
    ``sample(1, rng)`` and leaves the stream where it leaves it, clipped values included."""
    from sim import config as C
    from sim.workloads.arrivals import LengthSampler
    from sim.workloads.sessions import DEFAULT_TOOLS_PER_TURN

    for d in (DEFAULT_TOOLS_PER_TURN, C.EmpiricalLength(kind="empirical", values=[3, 9, 1, 40], weights=[1, 5, 2, 2], max=20),
              C.LognormalLength(kind="lognormal", median=3, sigma=0.5)):
        sampler = LengthSampler(d, np.random.default_rng(0), Path("."), "k")
        a, b = np.random.default_rng(5), np.random.default_rng(5)
        xs = [int(sampler.sample(1, a)[0]) for _ in range(20_000)]
        assert [sampler.one(b) for _ in range(20_000)] == xs and a.random() == b.random()
        assert len(set(xs)) >= 3 and (d.max is None or max(xs) <= d.max)


def test_finished_turns_are_freed_without_the_cyclic_collector():
    """A session waits on each turn's call through an event; the call ending must not leave a
    call <-> event reference cycle."""
    assert garbage_calls(agents({"kind": "lru"}, concurrency=3, turns=4, prompt=4000, tool_s=2.0)) == 0
