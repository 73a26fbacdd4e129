"""The profile-table performance model against the vidur CSVs it reads, the roofline, and a full run."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from scenarios import llm_scenario
from sim.hardware import catalog
from sim.config import validate
from sim.errors import ScenarioError
from sim.models.perf import ACT_BYTES, Batch, RooflineModel
from sim.models.profile import ProfileModel
from sim.run import run_point
from sim.cluster.pools import resolve_pool

PROFILES = Path(__file__).parent.parent / "hardware" / "profiles" / "vidur"
H100 = catalog.accelerator("h100-sxm")
# every per-layer operator vidur measures except the embedding (counted once per iteration)
LAYER_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
L7 = catalog.model("llama-2-7b")


def _rows(name: str, **match) -> list[dict]:
    """Rows of a shipped table whose columns equal ``match`` (read with the csv module, not the model's reader)."""
    with open(PROFILES / name, newline="") as f:
        return [r for r in csv.DictReader(f) if all(float(r[k]) == v for k, v in match.items())]


def _layer_ms(row: dict) -> float:
    return sum(float(row[f"time_stats.{op}.median"]) for op in LAYER_OPS)


def _lm_head_s(model, perf, sampled: int) -> float:
    h, v, tp = model.hidden_size, model.vocab_size, perf.tp
    return max(2.0 * sampled * h * v / tp / perf.peak, (h * v * perf.wbytes + sampled * (h + v) * ACT_BYTES) / tp / perf.bw)


def _profile(tp=1, **kw):
    return ProfileModel(L7, H100, tp, path="h100_llama-2-7b.csv", **kw)


def test_measured_point_is_the_sum_of_medians():
    perf = _profile(tp=1)
    (row,) = _rows("h100_llama-2-7b.csv", num_tokens=512, num_tensor_parallel_workers=1)
    expected = (_layer_ms(row) * L7.num_layers + float(row["time_stats.emb.median"])) * 1e-3 + _lm_head_s(L7, perf, 3)
    t, flops, nbytes = perf._gemms(512, 3)
    assert t == pytest.approx(expected, rel=1e-12)
    # FLOPs and bytes (the power model's inputs) are the roofline's
    roof = RooflineModel(L7, H100, 1)
    assert (flops, nbytes) == roof._gemms(512, 3)[1:]
    # attention and overheads come from the parent: cost() minus the GEMM part agrees with the roofline's
    b = Batch(512, 3, 3, np.array([512 * 513 / 2.0]), np.array([512.0]))
    assert float(perf.cost(b).time_s[0]) - t == pytest.approx(float(roof.cost(b).time_s[0]) - roof._gemms(512, 3)[0])


def test_repeated_rows_average_and_network_table_is_used():
    # (2048 tokens, tp=2) is measured twice in the vidur table; 2048 x 4096 x 2 B is measured twice in the network table
    perf = _profile(tp=2, network_path="h100_all_reduce.csv")
    rows = _rows("h100_llama-2-7b.csv", num_tokens=2048, num_tensor_parallel_workers=2)
    assert len(rows) == 2
    assert perf.layers_s(2048) == pytest.approx(np.mean([_layer_ms(r) for r in rows]) * L7.num_layers * 1e-3)
    net = _rows("h100_all_reduce.csv", num_workers=2, size=2048 * L7.hidden_size * 2)
    assert len(net) == 2
    one = np.mean([float(r["time_stats.all_reduce.median"]) for r in net]) * 1e-3
    assert perf.all_reduce_s(2048) == pytest.approx(2 * L7.num_layers * one)
    # without a network table: the roofline ring formula
    ring = _profile(tp=2)
    msg = 2048 * L7.hidden_size * ACT_BYTES
    assert ring.all_reduce_s(2048) == pytest.approx(
        2 * L7.num_layers * (2 * ring.eff["link_latency_s"] + msg / ring.link_bw))
    assert _profile(tp=1, network_path="h100_all_reduce.csv").all_reduce_s(2048) == 0.0


def test_interpolation_between_neighbours_and_extrapolation():
    perf = _profile(tp=1)
    lo, hi = _rows("h100_llama-2-7b.csv", num_tokens=64, num_tensor_parallel_workers=1)[0], \
        _rows("h100_llama-2-7b.csv", num_tokens=72, num_tensor_parallel_workers=1)[0]
    a, b = (_layer_ms(r) * L7.num_layers * 1e-3 for r in (lo, hi))
    for n in range(65, 72):
        assert perf.layers_s(n) == pytest.approx(a + (b - a) * (n - 64) / 8)
        assert min(a, b) <= perf.layers_s(n) <= max(a, b)
    # above the largest measured count (4096): the line through it and the point at 2048
    # (the secant of the last two points, 32 tokens apart, slopes downwards on this table)
    last, half = (np.mean([_layer_ms(r) for r in _rows("h100_llama-2-7b.csv", num_tokens=n, num_tensor_parallel_workers=1)])
                  for n in (4096, 2048))
    assert perf.layers_s(8192) == pytest.approx((3 * last - 2 * half) * L7.num_layers * 1e-3)
    assert perf.layers_s(6144) == pytest.approx((2 * last - half) * L7.num_layers * 1e-3)
    assert perf.layers_s(0) == perf.embedding_s(0) == 0.0
    # monotone over doublings: neighbouring measurements carry ~1% noise
    # and tile/wave-quantization steps of up to ~20% (e.g. 70B at 512 -> 520 tokens), so only across doublings
    grid = [1, 64, 128, 256, 512, 1024, 2048, 4096, 6000, 8192]
    for tp in (1, 2, 4, 8):
        t = [_profile(tp=tp).layers_s(n) for n in grid]
        assert all(x < y for x, y in zip(t, t[1:])), tp


def test_tensor_parallel_is_faster_at_large_token_counts():
    one, two = _profile(tp=1), _profile(tp=2)
    for n in (1024, 2048, 4096, 8192):
        assert two._gemms(n, 1)[0] < 0.7 * one._gemms(n, 1)[0]


def test_profile_tracks_the_roofline_at_large_batches():
    # two independent estimates of the same device: within 30% once GEMMs are compute bound
    for n in (512, 4096):
        p, r = _profile(tp=1)._gemms(n, 1)[0], RooflineModel(L7, H100, 1)._gemms(n, 1)[0]
        assert 0.7 < p / r < 1.3


def _pool(perf: dict, model="llama-2-7b") -> dict:
    return {"name": "main", "accelerator": "h100-sxm", "model": model, "replicas": 1, "performance": perf,
            "batcher": {"kind": "continuous", "max_num_batched_tokens": 2048, "max_num_seqs": 64}}


def _raw(perf: dict, model="llama-2-7b") -> dict:
    return llm_scenario(
        duration_s=8.0, warmup_s=1.0, datacenter={"pools": [_pool(perf, model)]},
        workload={"classes": [{
            "name": "chat", "pool": "main", "arrival": {"kind": "poisson", "rate_per_s": 8.0},
            "prompt_tokens": {"kind": "lognormal", "median": 300, "sigma": 0.6, "max": 1500},
            "output_tokens": {"kind": "lognormal", "median": 120, "sigma": 0.5, "max": 1000}}]})


def _decode_step_s(out: Path) -> float:
    steps = pq.read_table(out / "steps" / "point_id=p" / "part-0.parquet")
    dec = steps.filter(pc.equal(steps["kind"], "decode"))
    dur = (dec["end_s"].to_numpy() - dec["start_s"].to_numpy()) / dec["iterations"].to_numpy()
    return float(np.median(dur))


def test_profile_scenario_runs_and_agrees_with_roofline(tmp_path):
    prof = run_point(validate(_raw({"kind": "profile", "path": "h100_llama-2-7b.csv"})), str(tmp_path / "prof"), "p")
    roof = run_point(validate(_raw({"kind": "roofline"})), str(tmp_path / "roof"), "p")
    assert prof["calls_finished"] > 30
    assert prof["calls_created"] == roof["calls_created"]
    p_step, r_step = _decode_step_s(tmp_path / "prof"), _decode_step_s(tmp_path / "roof")
    assert 0.7 < p_step / r_step < 1.3
    assert 0.7 < prof["tpot_p50_s"] / roof["tpot_p50_s"] < 1.3
    assert prof["device_energy_j"] > 0


def test_table_relative_to_scenario_dir(tmp_path):
    shutil.copy(PROFILES / "h100_llama-2-7b.csv", tmp_path / "mine.csv")
    sc = validate(_raw({"kind": "profile", "path": "mine.csv", "iteration_overhead_s": 0.0}), base_dir=tmp_path)
    perf = resolve_pool(sc, 0, "s.yaml").perf
    assert isinstance(perf, ProfileModel) and perf.table.path == str((tmp_path / "mine.csv").resolve())
    assert perf.eff["iteration_overhead_s"] == 0.0


@pytest.mark.parametrize("path, words", [
    # the 70B table for the 7B model names the mismatching dimension
    ("h100_llama-2-70b.csv", ["n_embd=8192", "hidden_size=4096", "n_expanded_embd=28672"]),
    # an unknown table lists the shipped ones
    ("h100_llama-9b.csv", ["not found", "vidur/h100_llama-2-7b.csv"]),
])
def test_bad_table_is_a_scenario_error_at_the_key(path, words):
    sc = validate(_raw({"kind": "profile", "path": path}))
    with pytest.raises(ScenarioError) as e:
        resolve_pool(sc, 0, "s.yaml")
    assert e.value.key_path == "datacenter.pools.main.performance.path"
    for w in words:
        assert w in str(e.value)


def test_tp_missing_or_bad_network_table_is_an_error():
    with pytest.raises(ScenarioError) as e:
        ProfileModel(catalog.model("llama-2-70b"), H100, 16, path="h100_llama-2-70b.csv", key="k")
    assert e.value.key_path == "k.tp" and "tp=16" in str(e.value)
    with pytest.raises(ScenarioError) as e:
        ProfileModel(L7, H100, 8, path="h100_llama-2-7b.csv", network_path="h100_llama-2-7b.csv", key="k")
    assert e.value.key_path == "k.performance.network_path" and "lacks column" in str(e.value)
