"""A fast stand-in for a simulation point, for the plan's search tests: an M/M/c-like latency and a
cost from the card's real hourly price, so the search machinery (Tune, the searcher, screening,
early stopping, commit markers) is the real one while each point takes milliseconds.

Every call leaves a file under ``<out>/_calls_log`` so a test can count the points simulated."""

from __future__ import annotations

import math
import os
import uuid

from sim.hardware import catalog

SPEED = {"a100-80gb": 0.45, "h100-sxm": 1.0, "h200": 1.2, "b200": 2.1, "mi300x": 1.1}
OUTPUT_TOKENS = 250


def base_scenario(rate: float = 6.0, trials: int = 32, **search) -> dict:
    """Llama-3.1-70B on one pool; the plan searches accelerator x tp x replicas (4 x 4 x 6 = 96)."""
    return {
        "name": "plan-test", "seed": 3, "duration_s": 60.0, "warmup_s": 10.0,
        "datacenter": {"pools": [{"name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-70b", "tp": 4,
                                  "replicas": 1}]},
        "workload": {"classes": [{"name": "chat", "pool": "main", "arrival": {"kind": "poisson", "rate_per_s": rate},
                                  "prompt_tokens": {"kind": "fixed", "value": 1000},
                                  "output_tokens": {"kind": "fixed", "value": OUTPUT_TOKENS},
                                  "slo": {"ttft_s": 2.0, "tpot_s": 0.05}}]},
        "plan": {
            "space": {"datacenter.pools.main.accelerator": ["a100-80gb", "h100-sxm", "h200", "b200"],
                      "datacenter.pools.main.tp": [1, 2, 4, 8],
                      "datacenter.pools.main.replicas": [1, 2, 3, 4, 5, 6]},
            "constraints": [{"metric": "ttft_p99_s", "max": 2.0, "class": "chat"},
                            {"metric": "tpot_p90_s", "max": 0.05, "class": "chat"}],
            "objective": "usd_per_million_output_tokens",
            "search": {"trials": trials, "seed": 1, **search},
            "sensitivity": {"loads": [0.5, 1.5], "top": 2},
        },
    }


def figures(acc: str, tp: int, replicas: int, rate: float, horizon_s: float) -> dict:
    """The surrogate's summary row for one configuration."""
    speed = SPEED[acc] * tp ** 0.8
    mu = 1.5 * speed  # calls/s one replica serves
    rho = rate / (replicas * mu)
    base_ttft = 0.5 / (SPEED[acc] * tp ** 0.7)
    tpot = 0.03 / (SPEED[acc] * tp ** 0.6) * (1 + 0.5 * min(rho, 1.0))
    if rho >= 1:  # overloaded: the queue grows over the horizon
        ttft = base_ttft + (rho - 1) * horizon_s
    else:
        ttft = base_ttft * (1 + 2.5 * rho / (1 - rho))
    price = catalog.accelerator(acc, "test").price_usd_per_hour
    served = min(rate, replicas * mu)
    cost_per_s = replicas * tp * price / 3600
    watts = replicas * tp * 700 * (0.4 + 0.6 * min(rho, 1.0))
    return {"chat.ttft_p99_s": ttft, "chat.tpot_p90_s": tpot, "ttft_p99_s": ttft,
            "usd_per_million_output_tokens": cost_per_s / (served * OUTPUT_TOKENS) * 1e6,
            "energy_per_output_token_j": watts / (served * OUTPUT_TOKENS), "devices": replicas * tp}


def point(scenario, out: str, point_id: str) -> dict:
    """The point function: figures of the scenario's pool ``main`` and class ``chat``."""
    pool = scenario.pool("main")
    rate = scenario.workload.classes[0].arrival.rate_per_s
    log = os.path.join(out, "_calls_log")
    os.makedirs(log, exist_ok=True)
    open(os.path.join(log, f"{point_id}-{uuid.uuid4().hex[:8]}"), "w").close()
    return {"point_id": point_id, "seed": scenario.seed, "run": scenario.run, "duration_s": scenario.duration_s,
            **figures(pool.accelerator, pool.tp, pool.replicas, rate, scenario.duration_s - scenario.warmup_s)}


def capacity(args: dict, prompt: int, output: int, concurrency: int) -> dict:
    """The capacity stage's stand-in, consistent with :func:`figures` (saturated throughput)."""
    f = figures(args["hardware"], args["tp"], 1, 1e-9, 1.0)
    return {"requests_per_s": 1.5 * SPEED[args["hardware"]] * args["tp"] ** 0.8,
            "unloaded_ttft_s": f["chat.ttft_p99_s"], "unloaded_tpot_s": f["chat.tpot_p90_s"],
            "unloaded_e2e_s": math.nan}
