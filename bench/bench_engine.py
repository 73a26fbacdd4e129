"""Engine benchmark (not a test): simulated calls per wall second and peak memory.

Runs each configuration in a fresh subprocess (so peak RSS is its own) for a
1-replica and a 64-replica H100 / Llama-3.1-8B scenario with reasoning-length
outputs, in the macro-step and per-iteration modes, and for one replica under a
closed loop of 256 clients (calls finish and arrive at the same instants, as in
``dcsim estimate``), and prints a table.

    python bench/bench_engine.py            # full set
    python bench/bench_engine.py --quick    # shorter horizons

The scenarios and the measuring child process are shared with ``bench/run_all.py``
(the whole suite: 1,024 accelerators, memory against run length, Parquet writing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLIENTS = 256  # closed-loop load: clients sending calls back to back


def scenario(replicas: int, duration_s: float, mode: str, load: str = "open") -> dict:
    """H100 / Llama-3.1-8B replicas behind JSQ: ``open`` Poisson chat plus 20% reasoning-length
    calls (1.2 calls/s per replica), ``closed`` 256 clients back to back, or ``reasoning``
    reasoning-length outputs only (0.3 calls/s per replica)."""
    rate_per_replica = 1.2
    if load == "closed":
        raw = scenario(replicas, duration_s, mode)
        raw["name"] = f"bench-closed-{replicas}"
        raw["workload"]["classes"] = [
            {"name": "bench", "pool": "h100", "arrival": {"kind": "closed", "concurrency": CLIENTS},
             "prompt_tokens": {"kind": "fixed", "value": 200},
             "output_tokens": {"kind": "lognormal", "median": 560, "sigma": 0.55, "max": 8000}}]
        return raw
    if load == "reasoning":
        raw = scenario(replicas, duration_s, mode)
        raw["name"] = f"bench-reasoning-{replicas}"
        raw["workload"]["classes"] = [raw["workload"]["classes"][1]]
        raw["workload"]["classes"][0]["arrival"]["rate_per_s"] = 0.3 * replicas
        return raw
    return {
        "name": f"bench-{replicas}",
        "seed": 1,
        "duration_s": duration_s,
        "warmup_s": 0.0,
        "drain_s": 0.0,
        "engine_mode": mode,
        "datacenter": {"pools": [{"name": "h100", "accelerator": "h100-sxm", "model": "llama-3.1-8b",
                                  "replicas": replicas, "router": {"kind": "jsq"}}]},
        "workload": {"classes": [
            {"name": "chat", "pool": "h100", "arrival": {"kind": "poisson", "rate_per_s": 0.8 * rate_per_replica * replicas},
             "prompt_tokens": {"kind": "lognormal", "median": 800, "sigma": 0.8, "max": 8000},
             "output_tokens": {"kind": "lognormal", "median": 250, "sigma": 0.7, "max": 2000}},
            {"name": "reasoning", "pool": "h100", "arrival": {"kind": "poisson", "rate_per_s": 0.2 * rate_per_replica * replicas},
             "prompt_tokens": {"kind": "lognormal", "median": 500, "sigma": 0.6, "max": 8000},
             "output_tokens": {"kind": "lognormal", "median": 4000, "sigma": 0.5, "max": 16000}},
        ]},
        "trace": {"events": False},
    }


# 1,024 accelerators: 128 nodes of 8 H100 SXM.
CLUSTER_POOLS = (
    # name, model, weight dtype, tp, replicas (nodes = replicas * tp / 8)
    ("chat-8b", "llama-3.1-8b", None, 1, 32),  # 4 nodes
    ("chat-70b", "llama-3.1-70b", "fp8", 8, 32),  # 32 nodes
    ("reasoner", "deepseek-r1-distill-qwen-32b", "fp8", 2, 192),  # 48 nodes
    ("agents", "llama-3.1-70b", "fp8", 8, 44),  # 44 nodes
)


def cluster_scenario(duration_s: float, mode: str = "macro") -> dict:
    """128 nodes of 8 H100s (1,024 accelerators) in four pools: chat on Llama-3.1-8B (tp 1) and
    Llama-3.1-70B (fp8, tp 8), reasoning jobs (self-consistency over four samples with early
    stop, or one sample, under thinking budgets) on DeepSeek-R1-Distill-Qwen-32B (fp8, tp 2),
    and coding-agent sessions (the defaults of sim/workloads/sessions.py: ~46 turns, tool calls, prompts
    growing from 13k tokens, KV left in the prefix cache) on Llama-3.1-70B (fp8, tp 8)."""
    pools = [{"name": name, "accelerator": "h100-sxm", "model": model, "tp": tp, "replicas": n, "router": {"kind": "p2c"},
              **({"weight_dtype": wd} if wd else {})} for name, model, wd, tp, n in CLUSTER_POOLS]
    chat_prompt = {"kind": "lognormal", "median": 800, "sigma": 0.8, "max": 8000}
    chat_output = {"kind": "lognormal", "median": 250, "sigma": 0.7, "max": 2000}
    question = {"kind": "lognormal", "median": 220, "sigma": 0.6, "max": 4000}
    return {
        "name": "bench-1024", "seed": 1, "duration_s": duration_s, "warmup_s": min(300.0, duration_s / 4), "drain_s": 0.0,
        "engine_mode": mode,
        "datacenter": {"pools": pools},
        "workload": {"classes": [
            {"name": "chat-small", "pool": "chat-8b", "arrival": {"kind": "poisson", "rate_per_s": 32 * 1.25},
             "prompt_tokens": chat_prompt, "output_tokens": chat_output},
            {"name": "chat-large", "pool": "chat-70b", "arrival": {"kind": "poisson", "rate_per_s": 32 * 1.25},
             "prompt_tokens": chat_prompt, "output_tokens": chat_output},
            {"name": "math-vote", "pool": "reasoner", "arrival": {"kind": "poisson", "rate_per_s": 192 * 0.06},
             "prompt_tokens": question,
             "job": {"strategy": {"kind": "self_consistency", "n": 4, "early_stop": True, "thinking_budget": 8192}}},
            {"name": "math-single", "pool": "reasoner", "arrival": {"kind": "poisson", "rate_per_s": 192 * 0.05},
             "prompt_tokens": question, "job": {"strategy": {"kind": "single", "thinking_budget": 4096}}},
            {"name": "agents", "pool": "agents", "arrival": {"kind": "poisson", "rate_per_s": 44 * 0.0125},
             "prompt_tokens": {"kind": "lognormal", "median": 13385, "sigma": 0.05},
             "session": {"kv": {"kind": "lru"}}},
        ]},
        "trace": {"events": False},
    }


def agents_scenario(duration_s: float, mode: str = "macro") -> dict:
    """The agents pool of the 1,024-accelerator configuration alone (44 replicas of Llama-3.1-70B,
    fp8, tp 8; coding-agent sessions arriving at 0.55/s, their KV left in the prefix cache): what
    an agent turn costs, without the other pools' calls."""
    raw = cluster_scenario(duration_s, mode)
    raw["name"] = "bench-agents"
    raw["datacenter"]["pools"] = [p for p in raw["datacenter"]["pools"] if p["name"] == "agents"]
    raw["workload"]["classes"] = [c for c in raw["workload"]["classes"] if c["pool"] == "agents"]
    return raw


REFERENCE = ROOT / "scenarios" / "vidur_reference.yaml"


def reference_scenario(duration_s: float, mode: str = "macro") -> dict:
    """The Vidur reference workload (scenarios/vidur_reference.yaml: one A100-80GB replica of
    Llama-2-7B, 512 / 256 tokens fixed, Poisson 6 calls/s) over ``duration_s`` simulated seconds."""
    import yaml

    raw = yaml.safe_load(REFERENCE.read_text())
    raw.pop("sweep", None)
    raw.update(duration_s=duration_s, engine_mode=mode)
    return raw


CONFIGS = {
    "Vidur reference": reference_scenario,
    "1 replica, high load": lambda d, mode: scenario(1, d, mode, "closed"),
    "1 replica, reasoning": lambda d, mode: scenario(1, d, mode, "reasoning"),
    "1 replica, open": lambda d, mode: scenario(1, d, mode, "open"),
    "64 replicas": lambda d, mode: scenario(64, d, mode, "open"),
    "1,024 accelerators": cluster_scenario,
}
# measured on their own (bench/run_all.py), outside the set bench/tables_digest.py covers
EXTRA_CONFIGS = {
    "agents pool": agents_scenario,
}

# the summary keys a run prints (those it has)
HEADLINE = ("calls_created", "calls_finished", "completed_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "e2e_p50_s",
            "output_tokens_per_s", "utilization", "mean_batch_seqs", "avg_device_power_w", "device_energy_j", "cost_usd",
            "usd_per_million_output_tokens", "jobs_created", "accuracy", "job_latency_p50_s", "usd_per_1k_jobs",
            "sessions_created", "sessions_finished", "turn_ttft_p50_s", "session_e2e_p50_s")


def child(spec: str) -> None:
    """Run one configuration in this (fresh) process; print one JSON line of measurements."""
    import simpy.core

    from sim.config import validate
    from sim.run import run_point

    cfg = json.loads(spec)
    if "replicas" in cfg:  # the original form: replicas, duration_s, mode, load
        raw = scenario(cfg["replicas"], cfg["duration_s"], cfg["mode"], cfg["load"])
    else:
        raw = {**CONFIGS, **EXTRA_CONFIGS}[cfg["config"]](cfg["duration_s"], cfg["mode"])
    sc = validate(raw)
    events = [0]
    step = simpy.core.Environment.step

    def counted(env):  # SimPy events processed
        events[0] += 1
        step(env)

    simpy.core.Environment.step = counted
    import sim.cluster.world

    cached = [0]
    world_run = sim.cluster.world.World.run

    def run(world):  # also count the prefix-cache entries the KV pools hold at the end
        t_end = world_run(world)
        cached[0] = sum(r.kv.cached_chunks() for r in world.replicas if hasattr(r, "kv"))
        return t_end

    sim.cluster.world.World.run = run
    out = tempfile.mkdtemp(prefix="dcsim-bench-")
    t0, c0 = time.perf_counter(), time.process_time()
    s = run_point(sc, out, "p")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    manifest = json.load(open(os.path.join(out, "p", "manifest.json")))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"calls": s["calls_created"], "wall_s": wall, "cpu_s": cpu, "sim_s": s["sim_end_s"], "rss_mib": rss,
                      "simulate_s": manifest["timings"]["simulate_s"], "events": events[0],
                      "rows": sum(manifest["rows"].values()), "iterations": manifest["engine"]["iterations"],
                      "runs": manifest["engine"]["runs"], "cached_chunks": cached[0], "summary": {k: s[k] for k in HEADLINE if k in s}}))


def run_child(**cfg) -> dict:
    """Measurements of one configuration, run in a fresh subprocess."""
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{cfg}: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    d = 300.0 if a.quick else 1800.0
    configs = [(1, d, "macro", "open"), (1, d / 3, "per_iteration", "open"), (64, d / 10, "macro", "open"),
               (64, d / 60, "per_iteration", "open"), (1, d / 5, "macro", "closed"), (1, d / 30, "per_iteration", "closed")]
    print(f"{'replicas':>8} {'load':>6} {'mode':>14} {'sim s':>7} {'calls':>7} {'wall s':>7} {'calls/s':>9} {'sim s/s':>8} "
          f"{'iters/run':>9} {'peak MiB':>8}")
    rates = {}
    for replicas, dur, mode, load in configs:
        r = run_child(replicas=replicas, duration_s=dur, mode=mode, load=load)
        rate = r["calls"] / r["wall_s"]
        rates[(replicas, load, mode)] = rate
        print(f"{replicas:>8} {load:>6} {mode:>14} {r['sim_s']:>7.0f} {r['calls']:>7} {r['wall_s']:>7.2f} {rate:>9.0f} "
              f"{r['sim_s'] / r['wall_s']:>8.1f} {r['iterations'] / r['runs']:>9.1f} {r['rss_mib']:>8.0f}")
    for replicas, load in ((1, "open"), (64, "open"), (1, "closed")):
        print(f"speed-up macro / per-iteration, {replicas} replica(s), {load} loop: "
              f"{rates[(replicas, load, 'macro')] / rates[(replicas, load, 'per_iteration')]:.1f}x (simulated calls per wall second)")


if __name__ == "__main__":
    main()
