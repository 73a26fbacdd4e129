"""The roofline model against first-principles numbers and published behaviour."""

import numpy as np
import pytest

from sim.hardware import catalog
from sim.models.perf import Batch, RooflineModel
from sim.cluster.pools import activation_reserve_bytes


def _decode(model, batch, ctx):
    return model.cost(Batch(batch, batch, batch, np.array([float(batch * ctx)]), np.array([float(batch * ctx)])))


def test_small_batch_decode_is_weight_bandwidth_bound():
    m = catalog.model("llama-3.1-8b")
    acc = catalog.accelerator("h100-sxm")
    perf = RooflineModel(m, acc, iteration_overhead_s=0.0, per_seq_overhead_s=0.0, memory_efficiency=1.0)
    t = float(_decode(perf, 1, 100).time_s[0])
    weights = (m.total_params() - m.vocab_size * m.hidden_size) * 2  # all but the embedding table is read
    assert weights / acc.memory_bandwidth <= t <= 1.1 * weights / acc.memory_bandwidth


def test_large_prefill_is_compute_bound():
    m = catalog.model("llama-3.1-70b")
    acc = catalog.accelerator("h100-sxm")
    perf = RooflineModel(m, acc, tp=4, gemm_efficiency=1.0, attention_efficiency=1.0, iteration_overhead_s=0.0)
    n = 8192
    c = perf.cost(Batch(n, 1, 1, np.array([n * (n + 1) / 2]), np.array([float(n)])))
    linear_flops = 2 * n * (m.total_params() - 2 * m.vocab_size * m.hidden_size) / 4
    assert float(c.time_s[0]) >= linear_flops / (acc.peak_flops("bf16"))
    assert float(c.time_s[0]) < 1.6 * float(c.flops[0]) / acc.peak_flops("bf16")  # compute dominates, comm is small


def test_decode_time_grows_with_context_and_batch():
    perf = RooflineModel(catalog.model("llama-3.1-8b"), catalog.accelerator("h100-sxm"))
    t = lambda b, ctx: float(_decode(perf, b, ctx).time_s[0])
    assert t(64, 8000) > t(64, 1000) > t(64, 100)
    assert t(256, 1000) > t(64, 1000) > t(1, 1000)
    # the KV read term: 64 x 8000 tokens x 128 KiB at 80% of 3.35 TB/s ~ 25 ms more than at ctx 100
    kv = 64 * 7900 * 131072 / (0.8 * 3.35e12)
    assert t(64, 8000) - t(64, 100) == pytest.approx(kv, rel=0.05)


def test_fp8_weights_halve_weight_traffic():
    m, acc = catalog.model("llama-3.1-70b"), catalog.accelerator("h100-sxm")
    bf16 = RooflineModel(m, acc, tp=2, weight_dtype="bf16")
    fp8 = RooflineModel(m, acc, tp=2, weight_dtype="fp8")
    assert fp8.weight_bytes_device() == pytest.approx(bf16.weight_bytes_device() / 2)
    assert float(_decode(fp8, 8, 500).time_s[0]) < 0.65 * float(_decode(bf16, 8, 500).time_s[0])


def test_tensor_parallel_speeds_up_but_adds_comm():
    m, acc = catalog.model("llama-3.1-70b"), catalog.accelerator("h100-sxm")
    t = {tp: float(_decode(RooflineModel(m, acc, tp=tp), 32, 1000).time_s[0]) for tp in (2, 4, 8)}
    assert t[2] > t[4] > t[8]
    assert t[8] > t[2] / 4  # sub-linear: all-reduce latency and fixed overhead


def test_moe_reads_only_touched_experts_at_small_batch():
    m, acc = catalog.model("mixtral-8x7b"), catalog.accelerator("h100-sxm")
    perf = RooflineModel(m, acc, tp=2)
    one = float(_decode(perf, 1, 500).bytes[0])
    many = float(_decode(perf, 256, 500).bytes[0])
    # one token touches 2 of 8 experts; 256 tokens touch all of them
    assert one < 0.45 * perf.weight_bytes_device()
    assert many > 0.9 * perf.weight_bytes_device()


def test_mla_kv_cache_is_compact():
    r1 = RooflineModel(catalog.model("deepseek-r1"), catalog.accelerator("h200"), tp=8)
    # 61 layers x (512 + 64) latent values x 1 byte? no: bf16 KV -> 2 bytes
    assert r1.kv_bytes_per_token_device() == 61 * 576 * 2
    llama = RooflineModel(catalog.model("llama-3.1-70b"), catalog.accelerator("h200"), tp=8)
    assert llama.kv_bytes_per_token_device() == 80 * 2 * 1 * 128 * 2  # 8 KV heads over 8 ranks


def test_kv_pool_matches_vllm_order_of_magnitude():
    """vLLM reports ~450k-token KV caches for Llama-3.1-8B on one H100 at 0.9 utilization."""
    m, acc = catalog.model("llama-3.1-8b"), catalog.accelerator("h100-sxm")
    perf = RooflineModel(m, acc)
    free = acc.memory_bytes * 0.9 - perf.weight_bytes_device() - activation_reserve_bytes(m, 1, 8192, 256)
    tokens = free / perf.kv_bytes_per_token_device()
    assert 380_000 < tokens < 480_000


@pytest.mark.parametrize("name", sorted(catalog.models()))
def test_model_cards_parameter_count(name):
    m = catalog.model(name)
    # gpt-oss publishes counts without some embeddings; others match within 3%
    assert m.total_params() / 1e9 == pytest.approx(m.params_billion, rel=0.03 if not name.startswith("gpt-oss") else 0.2)


def test_a_step_carrying_a_prefill_pays_the_per_layer_cost_as_kernel_time():
    """vLLM replays one whole CUDA graph only for uniform decode batches: a step with a prefill
    chunk pays ``mixed_layer_overhead_s`` per layer, as HBM-streaming kernel time (power sees it);
    a decode step and a speculative verify step (1 + k tokens per sequence, still uniform) do not."""
    m = catalog.model("llama-3.1-8b")
    acc = catalog.accelerator("h100-sxm")
    kw = dict(iteration_overhead_s=0.0, per_seq_overhead_s=0.0)
    on = RooflineModel(m, acc, mixed_layer_overhead_s=200e-6, **kw)
    off = RooflineModel(m, acc, mixed_layer_overhead_s=0.0, **kw)
    ctx = np.array([64 * 1000.0 + 200 * 100])
    mixed = Batch(64 + 200, 65, 64, ctx, ctx)
    d_t = float(on.cost(mixed).time_s[0] - off.cost(mixed).time_s[0])
    assert d_t == pytest.approx(200e-6 * m.num_layers)
    assert float(on.cost(mixed).bytes[0] - off.cost(mixed).bytes[0]) == pytest.approx(d_t * on.bw)
    assert float(on.cost(mixed).flops[0]) == float(off.cost(mixed).flops[0])
    decode = Batch(64, 64, 64, ctx, ctx)
    assert float(on.cost(decode).time_s[0]) == float(off.cost(decode).time_s[0])
    verify = Batch(64 * 4, 64, 64 * 4, ctx, ctx, uniform=True)
    assert float(on.cost(verify).time_s[0]) == float(off.cost(verify).time_s[0])
    # the shipped H100 card fits a value within the range of per-layer host and launch costs
    cal = catalog.calibration("h100-sxm").perf["mixed_layer_overhead_s"]
    assert 10e-6 < cal < 1e-3


def test_fused_moe_rereads_expert_weights_once_per_row_block():
    """A fused-MoE kernel streams an expert's weights once per block of its tokens
    (``moe_weight_reread`` = 1 / rows per block): beyond the touched experts' one read each, the
    step reads ``reread x routed tokens`` more experts' weights, linear in the batch; dense layers,
    the MXFP4 experts' own kernels and a zero reread (uncalibrated cards) are unchanged."""
    acc = catalog.accelerator("h100-sxm")
    m = catalog.model("qwen3-235b-a22b")
    kw = dict(tp=8, expert_parallel=True, iteration_overhead_s=0.0, per_seq_overhead_s=0.0)
    base = RooflineModel(m, acc, moe_weight_reread=0.0, **kw)
    tiled = RooflineModel(m, acc, moe_weight_reread=1.0 / 64, **kw)
    per_pair = m.expert_params() * tiled.ewbytes / 8 * m.moe_layers  # one expert's weights, this device's share
    extra = {b: float(_decode(tiled, b, 500).bytes[0] - _decode(base, b, 500).bytes[0]) for b in (64, 256, 1024)}
    for b, d in extra.items():  # (the excess time of a below-1 expert efficiency streams at the same rate)
        assert d >= b * m.experts_per_token / 64 * per_pair * 0.999
    assert extra[1024] / extra[256] == pytest.approx(4.0, rel=0.02)  # linear in the routed tokens
    assert float(_decode(tiled, 512, 500).time_s[0]) > float(_decode(base, 512, 500).time_s[0])
    # the cost per sequence of the extra reads is the same at every batch: no fixed part
    t = {b: float(_decode(tiled, b, 500).time_s[0] - _decode(base, b, 500).time_s[0]) for b in (256, 1024)}
    assert t[1024] == pytest.approx(4 * t[256], rel=0.05)
    dense = catalog.model("llama-3.1-70b")
    a, b = (RooflineModel(dense, acc, tp=4, moe_weight_reread=r) for r in (0.0, 0.25))
    assert float(_decode(a, 512, 500).time_s[0]) == float(_decode(b, 512, 500).time_s[0])
    mx = catalog.model("gpt-oss-120b")
    a, b = (RooflineModel(mx, acc, moe_weight_reread=r) for r in (0.0, 0.25))
    assert float(_decode(a, 512, 500).bytes[0]) == float(_decode(b, 512, 500).bytes[0])
    # the shipped H100 card fits it near the fused_moe tile heights (BLOCK_SIZE_M 16-128 rows)
    assert 1.0 / 256 < catalog.calibration("h100-sxm").perf["moe_weight_reread"] < 1.0 / 8


def test_a_prefill_chunk_pays_no_weight_rereads_beyond_its_sampled_rows():
    """Thousands of prefill rows run fused_moe's large-M tiles, whose weight tiles are shared through
    L2 (GROUP_SIZE_M): the per-row-block re-reads are charged for the sampled rows only, so an
    8,192-token chunk costs what it did without them while a decode step of 256 pays them."""
    m, acc = catalog.model("qwen3-235b-a22b"), catalog.accelerator("h100-sxm")
    a, b = (RooflineModel(m, acc, tp=8, expert_parallel=True, moe_weight_reread=r) for r in (0.0, 1.0 / 64))
    chunk = Batch(8192, 1, 1, np.array([8192 * 8192 / 2.0]), np.array([8192.0]))
    assert float(b.cost(chunk).time_s[0]) == pytest.approx(float(a.cost(chunk).time_s[0]), rel=1e-3)
    assert float(_decode(b, 256, 1000).time_s[0]) > 1.03 * float(_decode(a, 256, 1000).time_s[0])


@pytest.mark.parametrize("name, acc, options", [
    ("llama-2-7b", "a100-80gb", {}),
    ("llama-3.1-70b", "h100-sxm", {"tp": 4, "pp": 2, "weight_dtype": "fp8"}),
    ("gpt-oss-120b", "h100-sxm", {"tp": 4, "expert_parallel": True, "attention_dp": True}),  # sliding window, DP attention
    ("deepseek-v3", "h200", {"tp": 8, "expert_parallel": True, "attention_dp": True}),  # MLA, MoE
])
def test_one_iteration_in_typed_floats_is_cost_to_the_bit(name, acc, options):
    """``cost_one`` (the engine's single iterations, compiled to C doubles) gives exactly the floats
    ``cost`` gives for the same batch, as floats and as one-element arrays: decodes, prefill chunks,
    mixed steps, a longest chunk under data-parallel attention, contexts past the window."""
    perf = RooflineModel(catalog.model(name), catalog.accelerator(acc), **options)
    rng = np.random.default_rng(7)
    for _ in range(300):
        seqs = int(rng.integers(1, 300))
        chunk = int(rng.choice([0, 0, 1, 17, 512, 4096]))
        tokens = seqs + chunk - (1 if chunk else 0)
        sampled = seqs - int(rng.integers(0, 2)) if chunk else seqs
        ctx = rng.integers(0, 20000, seqs)
        pairs, kv = float(ctx.sum() + chunk * (chunk + 1) // 2), float(ctx.sum() + tokens)
        longest, longest_pairs = (chunk, float(chunk * int(ctx[0]) + chunk * (chunk + 1) // 2)) if chunk else (1, float(ctx[0] + 1))
        one = perf.cost_one(tokens, seqs, sampled, pairs, kv, longest, longest_pairs)
        scalar = perf.cost(Batch(tokens, seqs, sampled, pairs, kv, longest, longest_pairs))
        array = perf.cost(Batch(tokens, seqs, sampled, np.array([pairs]), np.array([kv]), longest, longest_pairs))
        assert all(type(x) is float or (x is None and i in (4, 5)) for i, x in enumerate(one))
        as_floats = tuple(None if x is None else float(x) for x in scalar)
        assert one == as_floats == tuple(None if x is None else float(np.ravel(x)[0]) for x in array), (seqs, chunk)
