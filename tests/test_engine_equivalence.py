"""The macro-step engine must reproduce the per-iteration reference exactly."""

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from scenarios import llm_scenario, same_calls
from sim.config import validate
from sim.run import run_point


def _run(raw, tmp_path, mode):
    sc = validate({**raw, "engine_mode": mode})
    out = tmp_path / mode
    summary = run_point(sc, str(out), "p0")
    calls = pq.read_table(out / "calls" / "point_id=p0" / "part-0.parquet").sort_by("call_id")
    steps = pq.read_table(out / "steps" / "point_id=p0" / "part-0.parquet")
    return summary, calls, steps


CASES = {
    "continuous": {},
    # a tiny KV pool forces preemption (recompute) and admission by free blocks
    "preemption": {"datacenter": {"pools": [{
        "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
        "engine": {"num_gpu_blocks": 700},
        "batcher": {"kind": "continuous", "max_num_batched_tokens": 1024, "max_num_seqs": 32},
        "router": {"kind": "jsq"}}]}},
    "prefill_first": {"datacenter": {"pools": [{
        "name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 2,
        "engine": {"num_gpu_blocks": 900},
        "batcher": {"kind": "prefill_first", "max_num_batched_tokens": 4096, "max_num_seqs": 48},
        "router": {"kind": "least_kv"}}]}},
    "moe_tp2": {"datacenter": {"pools": [{
        "name": "main", "accelerator": "h200", "model": "mixtral-8x7b", "replicas": 1, "tp": 2,
        "router": {"kind": "random"}}]}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_macro_equals_per_iteration(case, tmp_path):
    raw = llm_scenario(**CASES[case])
    s_macro, c_macro, st_macro = _run(raw, tmp_path, "macro")
    s_iter, c_iter, st_iter = _run(raw, tmp_path, "per_iteration")
    assert c_macro.num_rows == c_iter.num_rows > 50
    # identical call tables: same statuses, same times to the last bit
    assert same_calls(c_macro, c_iter)
    # the macro mode really planned runs: far fewer step rows than iterations
    busy = st_macro.filter(pc.not_equal(st_macro["kind"], "idle"))
    assert busy.num_rows < st_iter.filter(pc.not_equal(st_iter["kind"], "idle")).num_rows
    assert sum(busy["iterations"].to_pylist()) == sum(st_iter["iterations"].to_pylist())
    # energy and tokens agree (energy sums differ only by float summation order)
    for col in ("output_tokens", "prefill_tokens", "decode_tokens"):
        assert sum(st_macro[col].to_pylist()) == sum(st_iter[col].to_pylist())
    assert np.isclose(sum(st_macro["energy_j"].to_pylist()), sum(st_iter["energy_j"].to_pylist()), rtol=1e-9)
    for key in ("ttft_p99_s", "tpot_p50_s", "e2e_p90_s", "calls_finished", "output_tokens_per_s"):
        assert np.isclose(s_macro[key], s_iter[key], rtol=1e-9), key
    if case == "preemption":
        assert max(c_macro["preemptions"].to_pylist()) > 0
