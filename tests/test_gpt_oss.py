"""gpt-oss: MXFP4 experts beside BF16 weights, sliding-window layers, and model-card validation.

The expected bytes are computed here from the public config numbers (huggingface.co/openai/
gpt-oss-120b config.json) and the MXFP4 format (OCP MX spec v1.0: 4-bit E2M1 elements, one 8-bit
E8M0 scale per 32 elements), not through the card loader's own helpers.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sim.cluster.pools import GIB, resolve_pool
from sim.config import validate
from sim.errors import ScenarioError
from sim.hardware import catalog
from sim.models.perf import Batch, RooflineModel

ROOT = Path(__file__).resolve().parents[1]
MXFP4_BYTES = (4 + 8 / 32) / 8  # 4.25 bits per element


def _gpt_oss_120b_bytes() -> tuple[float, float]:
    """(weight bytes, KV bytes per token) of gpt-oss-120b from its config.json numbers."""
    layers, hidden, heads, kv_heads, head_dim = 36, 2880, 64, 8, 64
    experts, expert_width, vocab = 128, 2880, 201088
    attn = hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + heads * head_dim * hidden  # q, k, v, o
    router = hidden * experts
    expert = hidden * 2 * expert_width + expert_width * hidden  # gate+up, down (SwiGLU)
    bf16 = 2 * vocab * hidden + layers * (attn + router)  # untied embeddings and lm_head
    weights = bf16 * 2.0 + layers * experts * expert * MXFP4_BYTES
    full_layers = 18  # layer_types: sliding / full alternate, 36 layers
    kv = full_layers * 2 * kv_heads * head_dim * 2.0  # K and V, bf16
    return weights, kv


def test_gpt_oss_120b_weight_and_kv_bytes_from_the_config():
    card, h100 = catalog.model("gpt-oss-120b"), catalog.accelerator("h100-sxm")
    weights, kv = _gpt_oss_120b_bytes()
    perf = RooflineModel(card, h100)
    assert perf.weight_bytes_device() == pytest.approx(weights, rel=1e-12)
    assert RooflineModel(card, h100, tp=2).weight_bytes_device() == pytest.approx(weights / 2, rel=1e-12)
    assert perf.kv_bytes_per_token_device() == pytest.approx(kv, rel=1e-12) == 36864
    # a window layer keeps at most ceil(127 / 16) + 1 = 9 blocks of 16 tokens per sequence
    assert perf.kv_window_bytes_per_seq_device(16) == 9 * 16 * kv
    # the published sizes (vLLM blog "vLLM Now Supports gpt-oss", 2025-08-05: 63 GB and 14 GB; the
    # card leaves out biases, norms and attention sinks, under 0.1% of the parameters)
    assert weights / 1e9 == pytest.approx(63, rel=0.05)
    assert RooflineModel(catalog.model("gpt-oss-20b"), h100).weight_bytes_device() / 1e9 == pytest.approx(14, rel=0.05)
    # one width for everything (a pool running the whole model in bf16) would need ~3.6x the bytes
    whole_bf16 = dataclasses.replace(card, expert_weight_dtype="")
    assert RooflineModel(whole_bf16, h100).weight_bytes_device() / weights == pytest.approx(3.58, rel=0.01)


def test_expert_math_bf16_on_hopper_fp8_rate_on_blackwell():
    h100, b200 = catalog.accelerator("h100-sxm"), catalog.accelerator("b200")
    assert h100.peak_flops("mxfp4") == h100.bf16_dense_tflops * 1e12
    assert b200.peak_flops("mxfp4") == b200.fp8_dense_tflops * 1e12
    perf = RooflineModel(catalog.model("gpt-oss-120b"), b200)
    assert perf.expert_peak / perf.peak == pytest.approx(b200.fp8_dense_tflops / b200.bf16_dense_tflops)


def test_sliding_window_layers_read_at_most_the_window():
    """A decode step of 8 sequences at context 1,000: the 18 window layers read 128 keys each,
    the 18 full layers all 1,000; compared with the same card without a window."""
    card, h100 = catalog.model("gpt-oss-120b"), catalog.accelerator("h100-sxm")
    no_window = dataclasses.replace(card, sliding_window=0, sliding_window_layers=0)
    b = Batch(8, 8, 8, 8000.0, 8000.0)
    win, full = RooflineModel(card, h100).cost(b), RooflineModel(no_window, h100).cost(b)
    per_layer = 2 * 8 * 64 * 2.0
    assert full.bytes - win.bytes == pytest.approx((8000 - 8 * 128) * 18 * per_layer)
    assert full.flops - win.flops == pytest.approx((8000 - 8 * 128) * 18 * 4 * 64 * 64)
    assert win.time_s < full.time_s
    # all within the window: nothing changes
    short = Batch(8, 8, 8, 800.0, 800.0)
    assert RooflineModel(card, h100).cost(short).bytes == pytest.approx(RooflineModel(no_window, h100).cost(short).bytes)


def test_pool_sizes_the_kv_pool_by_the_full_layers():
    raw = {"name": "t", "duration_s": 1.0,
           "datacenter": {"pools": [{"name": "p", "accelerator": "h100-sxm", "model": "gpt-oss-120b"}]},
           "workload": {"classes": [{"name": "c", "pool": "p", "arrival": {"kind": "poisson", "rate_per_s": 1},
                                     "prompt_tokens": {"kind": "fixed", "value": 100},
                                     "output_tokens": {"kind": "fixed", "value": 10}}]}}
    spec = resolve_pool(validate(raw, "t.yaml", "."), 0, "t.yaml")
    weights, kv = _gpt_oss_120b_bytes()
    assert spec.weight_gib == pytest.approx(weights / GIB)
    assert spec.kv_gib == pytest.approx(spec.kv_blocks * 16 * kv / GIB)
    # 80 GiB x 0.9 less the weights, the activations and 256 sequences' windows
    window = 256 * 9 * 16 * kv
    assert 0 < spec.kv_gib * GIB < 80 * GIB * 0.9 - weights - window


def test_estimate_runs_for_gpt_oss():
    from sim.tools.estimate import estimate

    r = estimate("h100-sxm", "gpt-oss-20b", 8, 500, 200)
    assert r["output_tokens_per_s"] > 0 and r["weight_gib"] == pytest.approx(
        RooflineModel(catalog.model("gpt-oss-20b"), catalog.accelerator("h100-sxm")).weight_bytes_device() / GIB)


# ----------------------------------------------------------------------------- bad model cards

def _card():
    return yaml.safe_load((ROOT / "hardware" / "models" / "gpt-oss-120b.yaml").read_text())


BAD_CARDS = {
    "weight_dtype": (lambda c: c.update(weight_dtype="mxfp5"), "unknown dtype 'mxfp5'"),
    "expert_weight_dtype": (lambda c: c.update(expert_weight_dtype=7), "unknown dtype"),
    "num_layers": (lambda c: c.update(num_layers={"value": "36", "source": "config"}), "whole number"),
    "hidden_size": (lambda c: c.update(hidden_size={"value": 2 ** 40, "source": "config"}), "whole number"),
    "head_dim": (lambda c: c.update(head_dim={"value": 0, "source": "config"}), "whole number"),
    "params_billion": (lambda c: c.update(params_billion={"value": -1, "source": "mcard"}), "number of billions"),
    "experts_per_token": (lambda c: c.update(experts_per_token={"value": 200, "source": "config"}), "exceeds"),
    "sliding_window_layers": (lambda c: c.update(sliding_window_layers={"value": 37, "source": "config"}), "exceeds"),
    "sliding_window": (lambda c: c.pop("sliding_window_layers"), "go together"),
    "attention": (lambda c: c.update(attention="linear"), "not one of"),
    "vocab_size": (lambda c: c.pop("vocab_size"), "missing"),
}


@pytest.fixture
def own_hardware(tmp_path, monkeypatch):
    """A user's own card folder: the shipped accelerator, and model cards written by the test."""
    (tmp_path / "models").mkdir()
    (tmp_path / "accelerators").mkdir()
    shutil.copy(ROOT / "hardware" / "accelerators" / "h100-sxm.yaml", tmp_path / "accelerators")
    monkeypatch.setenv("DCSIM_HARDWARE", str(tmp_path))
    for f in (catalog.models, catalog._model):
        f.cache_clear()
    yield tmp_path
    monkeypatch.delenv("DCSIM_HARDWARE")
    for f in (catalog.models, catalog._model):
        f.cache_clear()


@pytest.mark.parametrize("key", sorted(BAD_CARDS))
def test_bad_model_card_names_file_and_key(key, own_hardware):
    fn, words = BAD_CARDS[key]
    card = _card()
    card["name"] = "bad-oss"
    fn(card)
    path = own_hardware / "models" / "bad-oss.yaml"
    path.write_text(yaml.safe_dump(card))
    with pytest.raises(ScenarioError) as e:
        catalog.model("bad-oss")
    msg = str(e.value)
    assert str(path) in msg and f": {key}: " in msg and words in msg and "\n" not in msg, msg


def test_bad_model_card_from_the_cli_exits_2(own_hardware):
    """The former crash (an unknown weight_dtype reached the performance model's dtype table)."""
    card = _card()
    card.update(name="bad-oss", weight_dtype="mxfp5")
    path = own_hardware / "models" / "bad-oss.yaml"
    path.write_text(yaml.safe_dump(card))
    env = {**os.environ, "DCSIM_HARDWARE": str(own_hardware)}
    res = subprocess.run([sys.executable, "-m", "sim.cli", "estimate", "--model", "bad-oss", "--hardware", "h100-sxm",
                          "--concurrency", "8", "--prompt-tokens", "500", "--output-tokens", "200"],
                         capture_output=True, text=True, timeout=120, env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert str(path) in lines[0] and "weight_dtype" in lines[0] and "mxfp5" in lines[0]
    assert not res.stdout.strip()


def test_shipped_gpt_oss_estimate_from_the_cli():
    """The command of the bug report runs and reports both weight widths."""
    res = subprocess.run([sys.executable, "-m", "sim.cli", "estimate", "--model", "gpt-oss-120b", "--hardware",
                          "h100-sxm", "--concurrency", "8", "--prompt-tokens", "500", "--output-tokens", "200"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "bf16, mxfp4 experts" in res.stdout and "output tokens/s" in res.stdout
