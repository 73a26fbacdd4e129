"""Engine benchmark (not a test): simulated calls per wall second and peak memory.

Runs each configuration in a fresh subprocess (so peak RSS is its own) for a
1-replica and a 64-replica H100 / Llama-3.1-8B scenario with reasoning-length
outputs, in the macro-step and per-iteration modes, and for one replica under a
closed loop of 256 clients (calls finish and arrive at the same instants, as in
``dcsim estimate``), and prints a table.

    python bench/bench_engine.py            # full set
    python bench/bench_engine.py --quick    # shorter horizons
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


CLIENTS = 256  # closed-loop load: clients sending calls back to back


def scenario(replicas: int, duration_s: float, mode: str, load: str = "open") -> dict:
    rate_per_replica = 1.2
    if load == "closed":
        raw = scenario(replicas, duration_s, mode)
        raw["name"] = f"bench-closed-{replicas}"
        raw["workload"]["classes"] = [
            {"name": "bench", "pool": "h100", "arrival": {"kind": "closed", "concurrency": CLIENTS},
             "prompt_tokens": {"kind": "fixed", "value": 200},
             "output_tokens": {"kind": "lognormal", "median": 560, "sigma": 0.55, "max": 8000}}]
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


def child(spec: str) -> None:
    from sim.config import validate
    from sim.run import run_point

    cfg = json.loads(spec)
    sc = validate(scenario(cfg["replicas"], cfg["duration_s"], cfg["mode"], cfg["load"]))
    out = tempfile.mkdtemp(prefix="dcsim-bench-")
    t0 = time.perf_counter()
    s = run_point(sc, out, "p")
    wall = time.perf_counter() - t0
    manifest = json.load(open(os.path.join(out, "p", "manifest.json")))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"calls": s["calls_created"], "wall_s": wall, "sim_s": s["sim_end_s"], "rss_mib": rss,
                      "iterations": manifest["engine"]["iterations"], "runs": manifest["engine"]["runs"]}))


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
        spec = json.dumps({"replicas": replicas, "duration_s": dur, "mode": mode, "load": load})
        res = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rate = r["calls"] / r["wall_s"]
        rates[(replicas, load, mode)] = rate
        print(f"{replicas:>8} {load:>6} {mode:>14} {r['sim_s']:>7.0f} {r['calls']:>7} {r['wall_s']:>7.2f} {rate:>9.0f} "
              f"{r['sim_s'] / r['wall_s']:>8.1f} {r['iterations'] / r['runs']:>9.1f} {r['rss_mib']:>8.0f}")
    for replicas, load in ((1, "open"), (64, "open"), (1, "closed")):
        print(f"speed-up macro / per-iteration, {replicas} replica(s), {load} loop: "
              f"{rates[(replicas, load, 'macro')] / rates[(replicas, load, 'per_iteration')]:.1f}x (simulated calls per wall second)")


if __name__ == "__main__":
    main()
