"""Burst arrivals and the burst benchmark's steady-state window (sim/tools/burst.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sim.tools.burst import burst, steady_window
from sim.config import validate
from sim.errors import ScenarioError
from sim.output.memory import MemoryRecorder
from sim.tools.estimate import estimate
from sim.cluster.world import build

H100, L8B = "h100-sxm", "llama-3.1-8b"


def _scenario(arrival: dict) -> dict:
    return {"name": "b", "seed": 1, "duration_s": 5.0,
            "datacenter": {"pools": [{"name": "p", "accelerator": H100, "model": L8B,
                                      "batcher": {"kind": "continuous", "max_num_seqs": 8}}]},
            "workload": {"classes": [{"name": "c", "pool": "p", "arrival": arrival, "start_s": 2.0,
                                      "prompt_tokens": {"kind": "fixed", "value": 100},
                                      "output_tokens": {"kind": "fixed", "value": 20}}]}}


def test_burst_arrivals_all_come_at_start():
    recorder = MemoryRecorder()
    build(validate(_scenario({"kind": "burst", "count": 30}), "t", "."), recorder).run()
    calls = recorder.table("calls")
    assert calls.num_rows == 30
    assert set(calls["arrival_s"].to_pylist()) == {2.0}
    # the batch cap holds 8 at a time, so the rest queue: admissions come in waves
    admitted = np.sort(calls["admitted_s"].to_numpy())
    assert admitted[7] == 2.0 and admitted[8] > 2.0


def test_burst_arrivals_reject_a_bad_count():
    with pytest.raises(ScenarioError, match="count"):
        validate(_scenario({"kind": "burst", "count": 0}), "t", ".")


def test_steady_window_follows_the_benchmark_definition():
    first = np.array([1.0, 1.0, 2.0, 3.0, 9.0, 10.0, 11.0, 12.0])
    finish = np.array([5.0, 6.0, 7.0, 8.0, 20.0, 21.0, 22.0, 23.0])
    # batch 2: starts at the 2nd first token, ends when 8 - 2 - 1 = 5 calls have finished
    assert steady_window(first, finish, 8, 2) == (1.0, 20.0)
    # too few calls behind the batch: the window runs to the last finish
    assert steady_window(first, finish, 8, 7) == (11.0, 23.0)
    # single-token calls end at their first token: the whole run
    assert steady_window(np.array([0.5, 0.7]), np.array([0.5, 0.7]), 2, 4) == (0.0, 0.7)


def test_the_steady_window_keeps_the_batch_full():
    r = burst(H100, L8B, 600, 64, 300, 400, output_dist={"kind": "lognormal", "median": 350, "sigma": 0.5})
    assert r["window_end_s"] > r["window_start_s"]
    assert r["mean_batch_seqs"] == pytest.approx(64, rel=0.02)
    assert r["calls_finished"] == 600


def test_burst_window_is_younger_than_a_closed_loop():
    """Long outputs: calls in the burst's window started together or recently, so they hold
    less KV cache than the calls of an endless closed loop at the same batch, and each step
    reads less of it: time per token is shorter and throughput higher."""
    dist = {"kind": "lognormal", "median": 3000, "sigma": 0.8}
    b = burst(H100, L8B, 198, 64, 300, 4100, output_dist=dist)
    c = estimate(H100, L8B, 64, 300, 4100, max_num_seqs=64, output_dist=dist)
    assert b["mean_batch_seqs"] == pytest.approx(c["mean_batch_seqs"], rel=0.05)
    assert b["itl_p50_s"] < c["itl_p50_s"]
    assert b["output_tokens_per_s"] > c["output_tokens_per_s"]


def test_burst_is_deterministic_and_checks_its_options():
    a = burst(H100, L8B, 100, 16, 200, 50, output_dist="exponential", seed=3)
    b = burst(H100, L8B, 100, 16, 200, 50, output_dist="exponential", seed=3)
    assert a == b
    with pytest.raises(ScenarioError, match="--requests"):
        burst(H100, L8B, 0, 16, 200, 50)
    with pytest.raises(ScenarioError, match="--hardware"):
        burst("h1000", L8B, 10, 16, 200, 50)


def test_more_memory_holds_more_kv():
    lo = burst(H100, L8B, 40, 16, 200, 50, gpu_memory_utilization=0.8)
    hi = burst(H100, L8B, 40, 16, 200, 50, gpu_memory_utilization=0.95)
    assert hi["kv_blocks"] > lo["kv_blocks"]


def test_cli_burst_mode_prints_the_steady_state():
    import json
    import subprocess
    import sys

    base = [sys.executable, "-m", "sim.cli", "estimate", "--hardware", H100, "--model", L8B, "--concurrency", "16",
            "--requests", "100", "--prompt-tokens", "200", "--output-tokens", "80"]
    res = subprocess.run(base + ["--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["requests"] == 100 and out["max_num_seqs"] == 16
    assert out["mean_batch_seqs"] == pytest.approx(16, rel=0.05)
    assert out["output_tokens_per_s"] == pytest.approx(burst(H100, L8B, 100, 16, 200, 80)["output_tokens_per_s"])
    table = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "steady-state window" in table.stdout
