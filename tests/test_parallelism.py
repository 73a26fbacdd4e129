"""Pipeline parallelism, expert parallelism and weight / KV precision in the roofline model."""

import numpy as np
import pytest

from sim.hardware import catalog
from sim.config import validate
from sim.errors import ScenarioError
from sim.tools.estimate import estimate
from sim.models.parallel import expected_max_load
from sim.models.perf import Batch, RooflineModel
from sim.models.power import PowerModel
from sim.cluster.pools import resolve_pool

H100, A100 = catalog.accelerator("h100-sxm"), catalog.accelerator("a100-80gb")
LLAMA8, LLAMA70 = catalog.model("llama-3.1-8b"), catalog.model("llama-3.1-70b")
CAL = catalog.calibration("h100-sxm")


def roofline(model=LLAMA8, acc=H100, **kw) -> RooflineModel:
    return RooflineModel(model, acc, **{**(CAL.perf if acc is H100 else {}), **kw})


def decode(seqs: int, ctx: int) -> Batch:
    kv = np.array([float(seqs * ctx)])
    return Batch(seqs, seqs, seqs, kv, kv)


def prefill(tokens: int) -> Batch:
    return Batch(tokens, 1, 1, np.array([tokens * (tokens + 1) / 2.0]), np.array([float(tokens)]))


def spec(**pool):
    """The resolved pool of a one-pool scenario (llama-3.1-8b on h100-sxm unless ``pool`` says)."""
    p = {"name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", **pool}
    raw = {"duration_s": 1.0, "datacenter": {"pools": [p]},
           "workload": {"classes": [{"name": "c", "pool": "main", "arrival": {"kind": "poisson", "rate_per_s": 1.0},
                                     "prompt_tokens": {"kind": "fixed", "value": 10},
                                     "output_tokens": {"kind": "fixed", "value": 10}}]}}
    return resolve_pool(validate(raw, "<test>", "."), 0, "<test>")


def scenario_error(**pool) -> ScenarioError:
    with pytest.raises(ScenarioError) as e:
        spec(**pool)
    return e.value


# --------------------------------------------------------------------------- pipeline: memory
def test_pipeline_divides_weights_and_kv_per_device():
    one, two, three = roofline(), roofline(pp=2), roofline(pp=3)
    assert two.weight_bytes_device() == one.weight_bytes_device() / 2
    assert two.kv_bytes_per_token_device() == one.kv_bytes_per_token_device() / 2  # 16 of 32 layers
    # uneven split: the device with the most layers (ceil(32 / 3) = 11) sizes the KV pool
    assert three.kv_bytes_per_token_device() == 11 * one.kv_bytes_per_token_device() / 32
    s1, s2 = spec(), spec(pp=2)
    assert s2.devices_per_replica == 2 and s2.weight_gib == pytest.approx(s1.weight_gib / 2)
    # half the KV per token and more free memory per device: more than twice the blocks
    assert 2.0 * s1.kv_blocks < s2.kv_blocks < 2.6 * s1.kv_blocks


def test_model_too_large_for_one_device_fits_on_two_stages():
    e = scenario_error(model="llama-3.1-70b")
    assert e.key_path == "datacenter.pools.main.model" and "does not fit" in e.message
    s = spec(model="llama-3.1-70b", pp=2)
    assert s.kv_blocks > 1000 and s.weight_gib == pytest.approx(LLAMA70.total_params() * 2 / 2 / 2**30)


def test_more_stages_than_layers_is_an_error_at_pp():
    assert spec(pp=32).pp == 32  # one layer per stage is allowed
    e = scenario_error(pp=33)
    assert e.key_path == "datacenter.pools.main.pp" and "32 layers" in e.message


# --------------------------------------------------------------------------- pipeline: time
def test_single_sequence_pays_the_bubble():
    """One sequence cannot fill two stages: the step is a full pass (as on one device), each
    device does half the work, so utilization and power per device fall."""
    one, two = roofline(), roofline(pp=2)
    b = decode(1, 500)
    c1, c2 = one.cost(b), two.cost(b)
    assert c1.time_s[0] < c2.time_s[0] < 1.02 * c1.time_s[0]  # plus two activation hand-offs
    assert c2.flops[0] == pytest.approx(c1.flops[0] / 2)
    assert c2.bytes[0] == pytest.approx(c1.bytes[0] / 2)
    pm = PowerModel(H100, H100.peak_flops("bf16"), **CAL.power)
    w1, w2 = (pm.busy_w(c.time_s, c.flops, c.bytes)[0] for c in (c1, c2))
    base = pm.active_base_w  # the draw above the busy base halves with the work per device
    assert pm.idle_w < base < w2 < w1 and (w2 - base) == pytest.approx((w1 - base) / 2, rel=0.05)
    # two sequences fill both stages: the same per-device work per sequence, no idle stage
    c2full = two.cost(decode(2, 500))
    assert c2full.flops[0] == pytest.approx(2 * c2.flops[0], rel=1e-3)
    assert c2full.time_s[0] == pytest.approx(c2.time_s[0], rel=0.01)


def test_power_cap_stretches_the_whole_pass_of_a_lone_sequence():
    """Under a cap every stage's clock falls, so the pass of a single sequence through both
    stages stretches by all of its tensor-core time, not only one device's share of it."""
    one, two = roofline(), roofline(pp=2)
    c1, c2 = one.cost(prefill(8192)), two.cost(prefill(8192))
    assert c2.compute_s[0] == c1.compute_s[0] > 0.8 * c1.time_s[0]
    capped = PowerModel(H100, H100.peak_flops("bf16"), cap_w=350.0, **CAL.power)
    t1, t2 = (capped.under_cap(c)[0].time_s[0] for c in (c1, c2))
    # each device idles half the pass, so it may keep a higher clock (the cap bounds the iteration's
    # mean draw, and half the pass each device draws only the busy base: with the fitted 270 W base
    # the pass is ~0.77 of the one-device pass), but the whole pass stretches, not one device's share
    assert 0.7 * t1 < t2 < t1 and t2 > 1.3 * c2.time_s[0]


def test_micro_batches_reread_stage_weights():
    """With m = pp micro-batches each stage reads its weights once per micro-batch: at small
    batches pp=2 moves the bytes of a whole replica per step and decodes no faster than one
    device, while tp=2 nearly halves the step."""
    one, two, tp2 = roofline(LLAMA70, pp=1), roofline(LLAMA70, pp=2), roofline(LLAMA70, tp=2)
    b = decode(4, 200)
    assert two.cost(b).bytes[0] == pytest.approx(one.cost(b).bytes[0], rel=0.01)
    assert two.cost(b).time_s[0] > 0.95 * one.cost(b).time_s[0]
    assert tp2.cost(b).time_s[0] < 0.7 * two.cost(b).time_s[0]  # less its all-reduces


def test_large_batch_pipeline_throughput_matches_tensor_parallel():
    """KV-bound decode at 128 x 7000 tokens: the stage weights re-read per micro-batch are small
    beside the KV each micro-batch reads once, so pp=2 runs close to tp=2, far ahead of one device."""
    b = decode(128, 7000)
    t1, t_pp, t_tp = (roofline(**kw).cost(b).time_s[0] for kw in ({}, {"pp": 2}, {"tp": 2}))
    assert t_pp == pytest.approx(t_tp, rel=0.15)
    assert t_pp < 0.65 * t1


def test_pipeline_end_to_end_throughput_and_energy_count_every_device():
    args = ("h100-sxm", "llama-3.1-8b", 64, 6000, 300)
    r1, rpp, rtp = estimate(*args), estimate(*args, pp=2), estimate(*args, tp=2)
    assert (r1["devices"], rpp["devices"], rtp["devices"]) == (1, 2, 2)
    assert rpp["output_tokens_per_s"] == pytest.approx(rtp["output_tokens_per_s"], rel=0.1)
    assert rpp["output_tokens_per_s"] > 1.4 * r1["output_tokens_per_s"]
    # both devices draw: the replica's power is about twice one device's, energy per token alike
    assert 1.6 < rpp["gpu_power_w"] / r1["gpu_power_w"] < 2.1
    assert rpp["gpu_power_w"] / rpp["devices"] <= H100.tdp_w
    assert rpp["energy_per_output_token_j"] == pytest.approx(rtp["energy_per_output_token_j"], rel=0.15)
    r4 = estimate("h100-sxm", "llama-3.1-8b", 1, 100, 40, tp=2, pp=2)
    assert r4["devices"] == 4 and r4["gpu_power_w"] > 4 * 100.0  # idle floor of all four devices


def test_single_client_on_two_stages_halves_power_per_device():
    # without the fitted link draw during the stage hand-offs, so that only the bubble differs: the
    # draw above the busy base (idle, resident and active adders) halves per device
    args = ("h100-sxm", "llama-3.1-8b", 1, 200, 100)
    r1, r2 = estimate(*args), estimate(*args, pp=2, power={"link_active_w": 0.0})
    assert r2["output_tokens_per_s"] == pytest.approx(r1["output_tokens_per_s"], rel=0.02)
    base = H100.idle_power_w + CAL.power["resident_w"] + CAL.power["active_w"]
    assert r2["gpu_power_w"] / 2 - base < 0.6 * (r1["gpu_power_w"] - base)
    assert r2["energy_per_output_token_j"] > 1.15 * r1["energy_per_output_token_j"]


# --------------------------------------------------------------------------- expert parallelism
@pytest.mark.parametrize("parts", [2, 4, 8])
@pytest.mark.parametrize("mean", [4, 32, 256])
def test_expected_max_load_against_monte_carlo(parts, mean):
    counts = np.random.default_rng(parts * 1000 + mean).multinomial(mean * parts, [1.0 / parts] * parts, size=20000)
    assert expected_max_load(mean, parts) == pytest.approx(counts.max(axis=1).mean(), rel=0.05)


def test_expected_max_load_edges():
    assert expected_max_load(7.0, 1) == 7.0 and expected_max_load(0.0, 8) == 0.0
    loads = [expected_max_load(32.0, n) for n in (2, 4, 8, 16)]
    assert loads == sorted(loads) and loads[0] > 32.0


def test_expert_parallel_is_ignored_for_dense_models():
    tp, ep = roofline(tp=4), roofline(tp=4, expert_parallel=True)
    assert not ep.expert_parallel
    for b in (decode(1, 100), decode(64, 2000), prefill(4096)):
        c1, c2 = tp.cost(b), ep.cost(b)
        assert np.array_equal(c1.time_s, c2.time_s) and np.array_equal(c1.flops, c2.flops)
    assert spec(tp=4, expert_parallel=True).kv_blocks == spec(tp=4).kv_blocks


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "mixtral-8x7b"])
def test_expert_parallel_keeps_the_all_reduces(name):
    """EP = tp inside the tensor-parallel group (vLLM --enable-expert-parallel without data
    parallelism): every device holds every token after the attention all-reduce and one all-reduce
    sums the experts' partial outputs, so the collectives are those of TP, and so is the mean work
    per device. At batch 1 (one routed token per device at most: no imbalance) the step is the TP
    step; a large prefill waits for the device with the most routed tokens."""
    m = catalog.model(name)
    # full grouped-GEMM efficiency: no kernel-inefficiency time counted as memory traffic
    tp, ep = roofline(m, tp=4, moe_efficiency=1.0), roofline(m, tp=4, expert_parallel=True, moe_efficiency=1.0)
    assert ep.expert_parallel
    for tokens in (1, 64, 8192):
        assert ep._collectives_s(tokens) == tp._collectives_s(tokens)
    for b in (decode(1, 500), prefill(8192)):
        c_tp, c_ep = tp.cost(b), ep.cost(b)
        assert c_ep.flops[0] == pytest.approx(c_tp.flops[0]) and c_ep.bytes[0] == pytest.approx(c_tp.bytes[0])
    assert ep.cost(decode(1, 500)).time_s[0] == pytest.approx(tp.cost(decode(1, 500)).time_s[0], rel=1e-3)
    ratio = ep.cost(prefill(8192)).time_s[0] / tp.cost(prefill(8192)).time_s[0]
    assert 1.0 <= ratio < 1.1


def test_expert_parallel_compute_bound_experts_wait_for_the_busiest_device():
    """With free links the only EP cost left is imbalance: compute-bound expert GEMMs run at the
    pace of the device with the most routed tokens."""
    m = catalog.model("mixtral-8x7b")
    free = {"link_latency_s": 0.0, "link_efficiency": 1.0, "kernel_latency_s": 0.0, "gemm_blend": 50.0}
    tp, ep = roofline(m, tp=4, **free), roofline(m, tp=4, expert_parallel=True, **free)
    tokens = 4096
    routed = tokens * m.experts_per_token / 4
    imbalance = expected_max_load(routed, 4) / routed - 1.0
    expert_peak = tp.peak * tp.eff.get("moe_efficiency", 1.0)  # grouped-GEMM efficiency, where modelled
    experts_compute = m.moe_layers * 2.0 * tokens * m.experts_per_token * m.expert_params() / 4 / expert_peak
    extra = ep.cost(prefill(tokens)).time_s[0] - tp.cost(prefill(tokens)).time_s[0]
    assert extra == pytest.approx(experts_compute * imbalance, rel=0.05)


# --------------------------------------------------------------------------- precision
def test_weight_dtype_bytes_and_tensor_core_rate():
    bf16 = roofline()
    for dtype, frac in (("fp8", 0.5), ("int8", 0.5), ("int4", 0.25), ("fp4", 0.25)):
        assert roofline(weight_dtype=dtype).weight_bytes_device() == bf16.weight_bytes_device() * frac
    # fp8 math where the card has it (H100), bf16 math where it has not (A100) and for int4
    assert roofline(weight_dtype="fp8").peak / roofline(weight_dtype="int4").peak == pytest.approx(H100.fp8_dense_tflops / H100.bf16_dense_tflops)
    assert roofline(acc=A100, weight_dtype="fp8").peak == roofline(acc=A100, weight_dtype="int4").peak
    big = prefill(8192)
    h = roofline(weight_dtype="fp8").cost(big).time_s[0] / bf16.cost(big).time_s[0]
    a = roofline(acc=A100, weight_dtype="fp8").cost(big).time_s[0] / roofline(acc=A100).cost(big).time_s[0]
    assert h < 0.7 and a > 0.95
    # the power model measures utilization against the same peak
    assert spec(weight_dtype="fp8").power.peak_flops == H100.peak_flops("fp8")
    assert spec(accelerator="a100-80gb", weight_dtype="fp8").power.peak_flops == A100.peak_flops("bf16")


@pytest.mark.parametrize("dtype", ["fp8", "int4"])
def test_batch_one_decode_time_falls_with_weight_bytes(dtype):
    """Memory-bound decode: the step shrinks by the weight bytes no longer read, at HBM speed
    (default efficiencies, A100: no fp8 math, so fp8 is a pure byte saving there)."""
    b = decode(1, 200)
    full, small = roofline(acc=A100).cost(b), roofline(acc=A100, weight_dtype=dtype).cost(b)
    saved = full.bytes[0] - small.bytes[0]
    assert saved == pytest.approx(full.bytes[0] * (0.5 if dtype == "fp8" else 0.75), rel=0.03)  # ~all weights
    assert full.time_s[0] - small.time_s[0] == pytest.approx(saved / roofline(acc=A100).bw, rel=0.03)


def test_fp8_kv_halves_kv_bytes_and_doubles_blocks():
    assert roofline(kv_dtype="fp8").kv_bytes_per_token_device() == roofline().kv_bytes_per_token_device() / 2
    bf16, fp8 = spec(), spec(kv_dtype="fp8")
    assert fp8.kv_blocks in (2 * bf16.kv_blocks, 2 * bf16.kv_blocks + 1)
    assert fp8.kv_gib == pytest.approx(bf16.kv_gib, rel=1e-3)
    # and a long-context decode reads half the KV bytes
    b = decode(64, 8000)
    kv_read = roofline().cost(b).bytes[0] - roofline(kv_dtype="fp8").cost(b).bytes[0]
    assert kv_read == pytest.approx(64 * 8000 * roofline().kv_bytes_per_token_device() / 2, rel=1e-9)


# --------------------------------------------------------------------------- data-parallel attention
QWEN235 = catalog.model("qwen3-235b-a22b")


def test_attention_dp_keeps_whole_kv_heads_and_replicates_attention_weights():
    """Qwen3-235B has 4 KV heads: tensor-parallel attention over 8 GPUs keeps 2 copies of each,
    data-parallel attention one (each request's cache on its own GPU)."""
    tp = roofline(QWEN235, tp=8, weight_dtype="fp8", expert_parallel=True)
    dp = roofline(QWEN235, tp=8, weight_dtype="fp8", expert_parallel=True, attention_dp=True)
    assert tp.kv_bytes_per_token_device() == pytest.approx(2 * dp.kv_bytes_per_token_device())
    routed = QWEN235.num_experts * QWEN235.expert_params() * QWEN235.moe_layers
    extra = (QWEN235.total_params() - routed) * (1 - 1 / 8)  # non-expert weights now whole on every GPU
    assert dp.weight_bytes_device() - tp.weight_bytes_device() == pytest.approx(extra * 1.0)
    a = spec(accelerator="h100-sxm", model="qwen3-235b-a22b", tp=8, weight_dtype="fp8", expert_parallel=True)
    b = spec(accelerator="h100-sxm", model="qwen3-235b-a22b", tp=8, weight_dtype="fp8", expert_parallel=True,
             attention_dp=True)
    # the extra weights cost some memory, the unreplicated heads more than pay it back
    assert 1.5 * a.kv_blocks < b.kv_blocks < 2 * a.kv_blocks


def test_attention_dp_halves_replicated_kv_reads_and_the_all_reduces():
    tp = roofline(QWEN235, tp=8, weight_dtype="fp8", expert_parallel=True)
    dp = roofline(QWEN235, tp=8, weight_dtype="fp8", expert_parallel=True, attention_dp=True)
    assert dp._collectives_s(512) == pytest.approx(tp._collectives_s(512) / 2)
    # long contexts at a large batch: attention reads dominate, and DP reads each cache once
    long = decode(1024, 8000)
    assert dp.cost(long).time_s[0] < 0.8 * tp.cost(long).time_s[0]
    # one sequence: the GPU serving it reads the whole attention weights, not an eighth of them
    assert dp.cost(decode(1, 100)).bytes[0] > tp.cost(decode(1, 100)).bytes[0]


def test_attention_dp_splits_the_per_sequence_host_work():
    kw = dict(tp=8, weight_dtype="fp8", expert_parallel=True, iteration_overhead_s=0.0, per_seq_overhead_s=1e-4)
    base = roofline(QWEN235, **{**kw, "per_seq_overhead_s": 0.0}, attention_dp=True).cost(decode(800, 1000)).time_s[0]
    dp = roofline(QWEN235, **kw, attention_dp=True).cost(decode(800, 1000)).time_s[0]
    assert dp - base == pytest.approx(800 * 1e-4 / 8)


def test_attention_dp_needs_expert_parallel_and_a_moe_model():
    with pytest.raises(ScenarioError, match="attention_dp"):
        spec(model="qwen3-235b-a22b", tp=8, weight_dtype="fp8", attention_dp=True)
    with pytest.raises(ScenarioError, match="attention_dp"):
        spec(tp=2, expert_parallel=True, attention_dp=True)


def test_quantized_dense_efficiency_slows_compute_bound_fp8_gemms_only():
    full = roofline(LLAMA70, tp=4, weight_dtype="fp8")
    half = roofline(LLAMA70, tp=4, weight_dtype="fp8", quantized_dense_efficiency=0.5)
    bf16 = roofline(LLAMA70, tp=4, weight_dtype="bf16", quantized_dense_efficiency=0.5)
    # a long prefill is compute-bound: its GEMMs take about twice as long (all-reduces and
    # elementwise kernels do not change)
    g_full, g_half = full._gemms(8192, 1)[0], half._gemms(8192, 1)[0]
    assert 1.4 < g_half / g_full < 2.0
    # one decoding sequence reads the weights: memory-bound, nearly unchanged
    assert half.cost(decode(1, 1000)).time_s[0] == pytest.approx(full.cost(decode(1, 1000)).time_s[0], rel=0.02)
    # bf16 weights are not quantized
    assert bf16.cost(prefill(4096)).time_s[0] == roofline(LLAMA70, tp=4, weight_dtype="bf16").cost(prefill(4096)).time_s[0]


def test_attention_dp_one_long_prefill_holds_up_every_device():
    """A 4,096-token prompt chunk is prefilled whole by the device serving its sequence while
    the other 7 decode their shares of 800 sequences: the step takes longer than if the chunk
    were spread evenly over the devices."""
    dp = roofline(QWEN235, tp=8, weight_dtype="fp8", expert_parallel=True, attention_dp=True)
    chunk, decodes, ctx = 4096, 800, 2000
    pairs = chunk * (chunk + 1) / 2 + decodes * ctx
    kv = np.array([float(chunk + decodes * ctx)])
    even = Batch(chunk + decodes, decodes + 1, decodes + 1, np.array([pairs]), kv)
    one = Batch(chunk + decodes, decodes + 1, decodes + 1, np.array([pairs]), kv, longest=chunk,
                longest_pairs=chunk * (chunk + 1) / 2)
    t_even, t_one = dp.cost(even).time_s[0], dp.cost(one).time_s[0]
    assert t_one > 1.2 * t_even
    # the device's flops for power stay the average device's
    assert dp.cost(one).flops[0] == dp.cost(even).flops[0]
    # decode runs (no longest) are unchanged
    run = decode(800, 2000)
    assert dp.cost(run).time_s[0] == dp.cost(Batch(800, 800, 800, run.attn_pairs, run.kv_tokens, longest=1)).time_s[0]
