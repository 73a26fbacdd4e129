"""Speculative decoding: integer gains whose mean is E, exact step pricing, macro == per-iteration,
token conservation, the low-batch speed-up / high-batch slow-down, memory and config errors."""

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from scenarios import llm_scenario, same_calls
from sim.hardware import catalog
from sim.config import validate
from sim.errors import ScenarioError
from sim.models.fixed import FixedModel
from sim.run import run_point
from sim.models.speculative import (SpeculativeCost, cumulative_gains, expected_tokens_per_step, gain, milli_tokens)
from sim.cluster.world import build
from sim.cluster.pools import GIB

DRAFT = {"method": "draft", "num_speculative_tokens": 4, "acceptance_rate": 0.8, "draft_model": "llama-3.1-8b"}
MTP = {"method": "mtp", "num_speculative_tokens": 4, "acceptance_rate": 0.6}


def _with_spec(raw: dict, spec: dict | None) -> dict:
    if spec is not None:
        for pool in raw["datacenter"]["pools"]:
            pool["speculative"] = dict(spec)
    return raw


def _batch(model: str, tp: int, calls: int, spec: dict | None, prompt: int = 512, output: int = 512,
           performance: dict | None = None) -> dict:
    """``calls`` calls arriving 1 ms apart at one replica, each with fixed lengths."""
    pool = {"name": "p", "accelerator": "h100-sxm", "model": model, "tp": tp,
            "batcher": {"kind": "continuous", "max_num_batched_tokens": 8192, "max_num_seqs": 512}}
    if performance:
        pool["performance"] = performance
    raw = {"name": "spec", "seed": 1, "duration_s": (calls + 0.5) * 0.001, "warmup_s": 0.0, "drain_s": 10000.0,
           "datacenter": {"pools": [pool]},
           "workload": {"classes": [{
               "name": "c", "pool": "p", "arrival": {"kind": "deterministic", "rate_per_s": 1000.0},
               "prompt_tokens": {"kind": "fixed", "value": prompt}, "output_tokens": {"kind": "fixed", "value": output}}]},
           "trace": {"events": False}}
    return _with_spec(raw, spec)


def _run(raw: dict, out, pid: str = "p"):
    summary = run_point(validate(raw), str(out), pid)
    read = lambda t: pq.read_table(out / t / f"point_id={pid}" / "part-0.parquet")
    return summary, read("calls").sort_by("call_id"), read("steps")


# ---------------------------------------------------------------- gains


@pytest.mark.parametrize("k,a", [(1, 0.5), (3, 0.7), (4, 0.8), (5, 0.35), (8, 0.93)])
def test_gains_are_integers_with_mean_e(k, a):
    e = expected_tokens_per_step(k, a)
    assert e == pytest.approx(sum(a**j for j in range(k + 1)))  # 1 + a + ... + a^k
    em = milli_tokens(k, a)
    steps = 200_000
    g = np.array([gain(s, em) for s in range(1000)])
    assert set(g.tolist()) <= set(range(1, k + 2))  # whole tokens, 1..k+1 a step
    big = cumulative_gains(0, steps, em)
    assert big[-1] / steps == pytest.approx(e, rel=1e-3)
    # cumulative gains from any start are the per-step gains summed
    start = 12345
    assert np.array_equal(cumulative_gains(start, 1000, em), np.concatenate(([0], np.cumsum([gain(s, em) for s in range(start, start + 1000)]))))


def test_engine_mean_tokens_per_decode_step_is_e(tmp_path):
    # one call with a long output: every decode row of the steps table gains E tokens on average
    raw = _batch("llama-3.1-8b", 1, 1, {**MTP, "acceptance_rate": 0.73}, prompt=64, output=30001,
                 performance={"kind": "fixed", "iteration_s": 0.01})
    _, calls, steps = _run(raw, tmp_path)
    dec = steps.filter(pc.equal(steps["kind"], "decode"))
    tokens = sum(dec["output_tokens"].to_pylist())
    iterations = sum(dec["iterations"].to_pylist())
    assert tokens == 30000  # the first token came from the prefill
    assert tokens / iterations == pytest.approx(expected_tokens_per_step(4, 0.73), rel=1e-3)
    assert calls["generated_tokens"].to_pylist() == [30001]


# ---------------------------------------------------------------- step cost


def test_step_cost_is_target_verify_plus_k_proposer_passes():
    it, per_tok = 0.010, 1e-5
    k = 3
    spec = SpeculativeCost(FixedModel(it, per_tok), FixedModel(0.001, 1e-6), k, 0.5)
    ctx = np.array([1000.0, 2000.0])
    c = spec.step_cost(100, 2, 1, 5000.0, 200.0, 8, ctx)
    target = it + per_tok * (100 + 8 * (k + 1))  # prefill tokens plus k + 1 per decoding sequence
    first = 0.001 + 1e-6 * (100 + 8)  # the proposer's first pass also covers the prefill tokens
    rest = (k - 1) * (0.001 + 1e-6 * 8)
    assert np.allclose(c.time_s, target + first + rest, rtol=1e-12)
    assert spec.query_tokens == k + 1


# ---------------------------------------------------------------- one call alone


def test_single_call_tpot_is_step_time_over_e(tmp_path):
    prompt, output = 300, 2001
    raw = _batch("llama-3.1-70b", 4, 1, DRAFT, prompt=prompt, output=output)
    summary, calls, _ = _run(raw, tmp_path)
    assert calls.num_rows == 1 and calls["status"][0].as_py() == "finished"
    assert calls["generated_tokens"][0].as_py() == output
    spec = build(validate(raw), recorder=None).specs[0].speculative
    em = spec.milli_tokens
    gains = cumulative_gains(0, output, em)
    steps = int(np.searchsorted(gains, output - 1))  # decode steps until the last token
    ctx = prompt + gains[:steps].astype(float)  # the call's KV tokens at each step's start
    step_s = spec.step_cost(0, 0, 0, 0.0, 0.0, 1, ctx).time_s
    tpot = summary["tpot_p50_s"]
    assert tpot * (output - 1) == pytest.approx(float(step_s.sum()), rel=1e-9)
    assert tpot == pytest.approx(float(step_s.mean()) / spec.expected_tokens_per_step, rel=0.01)


# ---------------------------------------------------------------- equivalence and conservation

CASES = {
    "draft": {"pools": [{
        "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
        "batcher": {"kind": "continuous", "max_num_batched_tokens": 2048, "max_num_seqs": 64},
        "speculative": {**DRAFT, "acceptance_rate": 0.7}}]},
    # a tiny KV pool: preemption (recompute) and admission by free blocks, with the MTP layer's KV
    "mtp_preemption": {"pools": [{
        "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
        "engine": {"num_gpu_blocks": 700}, "router": {"kind": "jsq"},
        "batcher": {"kind": "continuous", "max_num_batched_tokens": 1024, "max_num_seqs": 32},
        "speculative": {**MTP, "num_speculative_tokens": 3}}]},
    "prefill_first": {"pools": [{
        "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
        "engine": {"num_gpu_blocks": 900}, "router": {"kind": "least_kv"},
        "batcher": {"kind": "prefill_first", "max_num_batched_tokens": 4096, "max_num_seqs": 48},
        "speculative": {**MTP, "num_speculative_tokens": 2, "acceptance_rate": 0.9}}]},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_macro_equals_per_iteration_with_speculation(case, tmp_path):
    raw = llm_scenario(datacenter=CASES[case])
    s_macro, c_macro, st_macro = _run({**raw, "engine_mode": "macro"}, tmp_path / "macro")
    s_iter, c_iter, st_iter = _run({**raw, "engine_mode": "per_iteration"}, tmp_path / "iter")
    assert c_macro.num_rows == c_iter.num_rows > 50
    assert same_calls(c_macro, c_iter)
    busy = lambda st: st.filter(pc.not_equal(st["kind"], "idle"))
    assert busy(st_macro).num_rows < busy(st_iter).num_rows  # runs were planned
    for col in ("iterations", "output_tokens", "prefill_tokens", "decode_tokens"):
        assert sum(st_macro[col].to_pylist()) == sum(st_iter[col].to_pylist()), col
    assert np.isclose(sum(st_macro["energy_j"].to_pylist()), sum(st_iter["energy_j"].to_pylist()), rtol=1e-9)
    for key in ("ttft_p99_s", "tpot_p50_s", "e2e_p90_s", "calls_finished", "output_tokens_per_s"):
        assert np.isclose(s_macro[key], s_iter[key], rtol=1e-9), key
    if case == "mtp_preemption":
        assert max(c_macro["preemptions"].to_pylist()) > 0


def test_token_conservation_with_speculation(tmp_path):
    # overload, a short drain (timed-out calls keep their partial output) and a small KV pool
    raw = llm_scenario(duration_s=12.0, drain_s=2.0, datacenter=CASES["draft"])
    raw["workload"]["classes"][0]["arrival"]["rate_per_s"] = 30.0
    raw["datacenter"]["pools"][0]["engine"] = {"num_gpu_blocks": 1500}
    summary, calls, steps = _run(raw, tmp_path)
    status = calls["status"].to_numpy(zero_copy_only=False)
    assert (status == "timed-out").sum() > 0 and (status == "finished").sum() > 0
    assert max(calls["preemptions"].to_pylist()) > 0
    gen = calls["generated_tokens"].to_numpy()
    assert int(steps["output_tokens"].to_numpy().sum()) == int(gen.sum())
    fin = status == "finished"
    assert np.array_equal(gen[fin], calls["output_tokens"].to_numpy()[fin])  # never past the output length
    assert np.all(gen <= calls["output_tokens"].to_numpy())
    # a decode's k + 1 verified tokens count in the token budget (decode_tokens = tokens verified)
    it = steps["iterations"].to_numpy()
    work = steps["prefill_tokens"].to_numpy() + steps["decode_tokens"].to_numpy()
    assert np.all(work <= 2048 * it)
    mixed = steps.filter(pc.equal(steps["kind"], "mixed"))
    assert mixed.num_rows > 0
    assert np.all(mixed["decode_tokens"].to_numpy() % (DRAFT["num_speculative_tokens"] + 1) == 0)


# ---------------------------------------------------------------- when it pays


def _tpot(tmp_path, name, *args):
    summary, calls, _ = _run(_batch(*args), tmp_path / name)
    assert set(calls["status"].to_pylist()) == {"finished"}
    return summary["tpot_p50_s"]


def test_speedup_at_low_batch_not_at_high_batch(tmp_path):
    # memory-bound: Llama-3.1-70B on 4 H100s, 4 calls, an 8B draft proposing 4 tokens at a = 0.8
    e = expected_tokens_per_step(4, 0.8)
    low = _tpot(tmp_path, "a", "llama-3.1-70b", 4, 4, None) / _tpot(tmp_path, "b", "llama-3.1-70b", 4, 4, DRAFT)
    assert 1.5 < low < e
    # compute-bound: 256 concurrent Llama-3.1-8B calls verifying 5 tokens each; the k+1 query tokens
    # make the GEMMs compute-bound, so speculation no longer pays (published: helps at low batch only)
    high = _tpot(tmp_path, "c", "llama-3.1-8b", 1, 256, None) / _tpot(tmp_path, "d", "llama-3.1-8b", 1, 256, MTP)
    small = _tpot(tmp_path, "e", "llama-3.1-8b", 1, 4, None) / _tpot(tmp_path, "f", "llama-3.1-8b", 1, 4, MTP)
    assert high < 1.05 and high < 0.7 * small
    assert small > 1.3
    # nothing accepted: one token per step at a higher price
    none = _tpot(tmp_path, "g", "llama-3.1-70b", 4, 4, None) / _tpot(tmp_path, "h", "llama-3.1-70b", 4, 4,
                                                                       {**DRAFT, "acceptance_rate": 0.0})
    assert none < 1.0


# ---------------------------------------------------------------- memory and errors


def test_draft_weights_and_kv_come_out_of_the_pool():
    base = build(validate(_batch("llama-3.1-70b", 4, 1, None)), recorder=None).specs[0]
    spec = build(validate(_batch("llama-3.1-70b", 4, 1, DRAFT)), recorder=None).specs[0]
    draft = catalog.model("llama-3.1-8b")
    assert spec.weight_gib - base.weight_gib == pytest.approx(draft.total_params() * 2.0 / 4 / GIB)
    per_token = spec.speculative.kv_bytes_per_token_device + spec.perf.kv_bytes_per_token_device()
    assert spec.kv_blocks < base.kv_blocks
    assert spec.kv_gib == pytest.approx(spec.kv_blocks * per_token * 16 / GIB)
    mtp = build(validate(_batch("llama-3.1-70b", 4, 1, MTP)), recorder=None).specs[0]
    assert base.kv_blocks > mtp.kv_blocks > spec.kv_blocks  # one extra layer of KV, not a whole model


@pytest.mark.parametrize("spec,at_build,key,text", [
    ({"method": "draft", "num_speculative_tokens": 4, "acceptance_rate": 0.8}, False,
     "datacenter.pools.p.speculative", "draft_model"),
    ({**DRAFT, "draft_model": "llama-3.1-9b"}, True, "datacenter.pools.p.speculative.draft_model", "unknown model"),
    ({**MTP, "draft_model": "llama-3.1-8b"}, False, "datacenter.pools.p.speculative", "mtp"),
    ({**DRAFT, "acceptance_rate": 1.0}, False, "datacenter.pools.p.speculative.acceptance_rate", ""),
    ({**DRAFT, "draft_model": "llama-3.1-405b"}, True, "datacenter.pools.p.model", "does not fit"),
])
def test_bad_speculative_config_names_the_key(spec, at_build, key, text):
    raw = _batch("llama-3.1-70b", 4, 1, spec)
    with pytest.raises(ScenarioError) as err:
        build(validate(raw, "s.yaml"), recorder=None, source="s.yaml")
    assert err.value.key_path == key
    assert text in err.value.message
    assert str(err.value).startswith("s.yaml: " + key)
    if at_build:
        validate(raw)  # the schema accepts it; the catalog check at build time does not


def test_token_budget_must_hold_a_verify_step():
    raw = _batch("llama-3.1-8b", 1, 1, {**MTP, "num_speculative_tokens": 8})
    raw["datacenter"]["pools"][0]["batcher"] = {"kind": "continuous", "max_num_batched_tokens": 8, "max_num_seqs": 8}
    with pytest.raises(ScenarioError, match="max_num_batched_tokens") as err:
        build(validate(raw), recorder=None)
    assert err.value.key_path == "datacenter.pools.p.speculative.num_speculative_tokens"


def test_pipeline_parallel_speculation_is_refused():
    raw = _batch("llama-3.1-70b", 4, 1, DRAFT)
    raw["datacenter"]["pools"][0]["pp"] = 2
    with pytest.raises(ScenarioError, match="pipeline") as err:
        build(validate(raw), recorder=None)
    assert err.value.key_path == "datacenter.pools.p.speculative"
