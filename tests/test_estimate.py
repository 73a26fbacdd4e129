"""``dcsim estimate`` / :func:`sim.tools.estimate.estimate`: steady state of one replica under a
fixed concurrency, checked against queueing identities and the performance model."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sim.config import validate
from sim.errors import ScenarioError
from sim.tools.estimate import estimate
from sim.models.perf import Batch
from sim.cluster.pools import resolve_pool

REQUIRED = ("output_tokens_per_s", "ttft_p50_s", "itl_p50_s", "gpu_power_w", "energy_per_output_token_j",
            "tpot_p50_s", "e2e_p50_s", "mean_batch_seqs", "requests_per_s", "kv_blocks", "weight_gib",
            "hardware", "model", "tp", "concurrency", "prompt_tokens", "output_tokens")
H100, L8B, L70B = "h100-sxm", "llama-3.1-8b", "llama-3.1-70b"


def _dcsim(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sim.cli", "estimate", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def sweep():
    """The same workload at rising concurrency, the batch capped at 256 sequences."""
    return {n: estimate(H100, L8B, n, 1000, 400, max_num_seqs=256) for n in (1, 4, 16, 64, 256, 1024)}


def test_cli_json_has_every_figure_and_writes_nothing(tmp_path):
    res = _dcsim("--hardware", H100, "--model", L8B, "--tp", "1", "--concurrency", "64", "--prompt-tokens", "1000",
                 "--output-tokens", "400", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    missing = [k for k in REQUIRED if k not in out]
    assert not missing
    assert (out["hardware"], out["model"], out["concurrency"], out["prompt_tokens"]) == (H100, L8B, 64, 1000)
    for k in REQUIRED[:10]:
        assert isinstance(out[k], (int, float)) and math.isfinite(out[k]) and out[k] > 0, k
    for k in ("output_tokens_per_s", "itl_p50_s", "gpu_power_w", "energy_per_output_token_j"):
        lo, hi = out[f"{k}_p10_p90"]  # 80% prediction interval (docs/validation.md)
        assert 0 < lo < hi and lo < 1.5 * out[k] and hi > out[k] / 1.5, k
    assert list(tmp_path.iterdir()) == []  # in memory: no tables written


def test_cli_table_output():
    res = _dcsim("--hardware", H100, "--model", L8B, "--concurrency", "8", "--prompt-tokens", "500",
                 "--output-tokens", "100")
    assert res.returncode == 0, res.stderr
    assert "output tokens/s" in res.stdout and "inter-token latency" in res.stdout and "s wall" in res.stdout
    assert "80% prediction interval" in res.stdout


def test_littles_law_and_energy_identity():
    n, out = 64, 400
    r = estimate(H100, L8B, n, 1000, out)
    assert r["mean_batch_seqs"] == pytest.approx(n, rel=1e-3)
    assert r["output_tokens_per_s"] == pytest.approx(n * out / r["e2e_mean_s"], rel=0.02)
    assert r["requests_per_s"] * out == pytest.approx(r["output_tokens_per_s"], rel=0.03)
    assert r["energy_per_output_token_j"] * r["output_tokens_per_s"] == pytest.approx(r["gpu_power_w"], rel=1e-9)
    assert r["warmup_s"] < r["duration_s"] and r["calls_measured"] >= 5 * n


def test_itl_is_the_decode_iteration_of_the_whole_batch():
    n, prompt, out = 64, 1000, 400
    r = estimate(H100, L8B, n, prompt, out)
    raw = {"duration_s": 1.0, "datacenter": {"pools": [{"name": "p", "accelerator": H100, "model": L8B}]},
           "workload": {"classes": [{"name": "c", "pool": "p", "arrival": {"kind": "poisson", "rate_per_s": 1.0},
                                     "prompt_tokens": {"kind": "fixed", "value": 1},
                                     "output_tokens": {"kind": "fixed", "value": 1}}]}}
    perf = resolve_pool(validate(raw), 0, "test").perf
    ctx = np.array([n * (prompt + out / 2)])  # mean KV context of the batch over a call's decode
    decode = float(perf.cost(Batch(n, n, n, ctx, ctx)).time_s[0])
    assert r["itl_p50_s"] == pytest.approx(decode, rel=0.10)
    # prefill chunks stall the batch now and then: the time per output token is longer
    assert r["tpot_p50_s"] > r["itl_p50_s"]


def test_concurrency_sweep_saturates(sweep):
    ns = sorted(sweep)
    tput = [sweep[n]["output_tokens_per_s"] for n in ns]
    itl = [sweep[n]["itl_p50_s"] for n in ns]
    assert all(a < b for a, b in zip(tput[:5], tput[1:5])), tput  # rising up to the batch cap
    assert tput[-1] == pytest.approx(tput[-2], rel=0.15)  # then flat: the extra clients queue
    assert tput[3] > 10 * tput[0]
    assert all(b >= a * (1 - 1e-6) for a, b in zip(itl, itl[1:])), itl
    assert sweep[1024]["mean_batch_seqs"] <= 256
    assert sweep[1024]["ttft_p50_s"] > 3 * sweep[256]["ttft_p50_s"]


def test_fp8_weights_raise_memory_bound_throughput():
    bf16 = estimate(H100, L70B, 64, 1000, 400, tp=4)
    fp8 = estimate(H100, L70B, 64, 1000, 400, tp=4, weight_dtype="fp8")
    assert fp8["weight_gib"] == pytest.approx(bf16["weight_gib"] / 2, rel=1e-6)
    assert fp8["output_tokens_per_s"] > 1.1 * bf16["output_tokens_per_s"]
    assert fp8["itl_p50_s"] < bf16["itl_p50_s"]
    assert bf16["weight_dtype"] == "bf16" and fp8["devices"] == 4
    # power of the four devices together: each draws far more than idle while decoding
    for r in (bf16, fp8):
        assert r["gpu_power_w"] > 4 * 300
        assert r["energy_per_output_token_j"] * r["output_tokens_per_s"] == pytest.approx(r["gpu_power_w"], rel=1e-9)


def test_geometric_outputs_are_seeded():
    a = estimate(H100, L8B, 16, 500, 200, output_dist="exponential", seed=3)
    b = estimate(H100, L8B, 16, 500, 200, output_dist="exponential", seed=3)
    c = estimate(H100, L8B, 16, 500, 200, output_dist="exponential", seed=4)
    assert a == b
    assert a["e2e_p90_s"] > 1.5 * a["e2e_p50_s"]  # lengths vary
    assert c["output_tokens_per_s"] != a["output_tokens_per_s"]


def test_unknown_hardware_is_one_line_naming_the_option():
    res = _dcsim("--hardware", "h1000", "--model", L8B, "--concurrency", "8", "--prompt-tokens", "100",
                 "--output-tokens", "10")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--hardware" in lines[0] and "unknown accelerator 'h1000'" in lines[0], res.stderr


def test_model_that_does_not_fit_exits_2():
    res = _dcsim("--hardware", H100, "--model", "llama-3.1-405b", "--concurrency", "8", "--prompt-tokens", "100",
                 "--output-tokens", "10")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--model" in lines[0] and "does not fit on h100-sxm" in lines[0], res.stderr


def test_call_longer_than_the_context_is_refused():
    with pytest.raises(ScenarioError, match="does not fit"):
        estimate(H100, L8B, 4, 130_000, 2_000)


def test_pool_settings_and_length_distributions_pass_through():
    """A fixed-time engine: every iteration takes 10 ms and gives each of the 16 calls a token."""
    r = estimate(H100, L8B, 16, 100, 50, performance={"kind": "fixed", "iteration_s": 0.01},
                 output_dist={"kind": "lognormal", "median": 50, "sigma": 0.5})
    assert r["itl_p50_s"] == pytest.approx(0.01, rel=1e-9)
    assert r["output_tokens_per_s"] == pytest.approx(16 / 0.01, rel=1e-6)
    assert r["output_dist"]["kind"] == "lognormal" and r["e2e_p90_s"] > 1.5 * r["e2e_p50_s"]
    with pytest.raises(ScenarioError, match="performance.iteration_s"):
        estimate(H100, L8B, 4, 100, 10, performance={"kind": "fixed", "iteration_s": -1})


def test_cli_json_without_validated_rows_has_null_intervals():
    # a metric no held-out row of the card's vendor measures (AMD's publish throughput only) has no
    # interval, and the output stays strict JSON
    res = _dcsim("--hardware", "mi300x", "--model", L8B, "--concurrency", "4", "--prompt-tokens", "200",
                 "--output-tokens", "50", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    lo, hi = out["output_tokens_per_s_p10_p90"]
    assert lo < out["output_tokens_per_s"] < hi
    assert out["itl_p50_s_p10_p90"] == [None, None] and out["gpu_power_w_p10_p90"] == [None, None]
