"""Device power (sim/models/power.py), the power cap, calibration loading and the calibration fits."""

import copy

import numpy as np
import pytest

from scenarios import llm_scenario, same_calls
from sim.hardware import catalog
from sim.tools.calibrate_kernels import GemmObservations, fit_allreduce, fit_gemm, gemm_time
from sim.config import validate
from sim.errors import ScenarioError
from sim.output.memory import MemoryRecorder
from sim.tools.estimate import estimate
from sim.models.efficiency import DEFAULT_EFFICIENCY
from sim.models.perf import IterationCost
from sim.models.power import COMPUTE_WEIGHT, MIN_CLOCK, PowerModel
from sim.cluster.world import build
from sim.cluster.pools import resolve_pool

H100 = catalog.accelerator("h100-sxm")
H100_CAL = catalog.calibration("h100-sxm")


def run_world(raw: dict):
    """Run a scenario in memory; returns (world, calls table, steps table)."""
    recorder = MemoryRecorder()
    world = build(validate(raw, "<test>", "."), recorder, "<test>")
    world.run()
    return world, recorder.table("calls"), recorder.table("steps")


def scenario(duration_s: float = 6.0, **pool) -> dict:
    """llm_scenario's traffic on one replica, shortened, with ``pool`` keys set on the pool."""
    raw = llm_scenario(duration_s=duration_s, warmup_s=1.0)
    p = raw["datacenter"]["pools"][0]
    p.update(replicas=1, **copy.deepcopy(pool))
    return raw


def power_model(cap_w=None) -> PowerModel:
    """The calibrated h100-sxm power model of a bf16 pool."""
    return PowerModel(H100, H100.peak_flops("bf16"), cap_w=cap_w, **H100_CAL.power)


def _row_power(steps):
    """Average draw per device of every step row (W), and the row kinds."""
    dur = steps["end_s"].to_numpy() - steps["start_s"].to_numpy()
    keep = dur > 0
    return steps["energy_j"].to_numpy()[keep] / dur[keep], np.array(steps["kind"].to_pylist())[keep]


# --------------------------------------------------------------------------- power of one device
def test_idle_is_card_idle_plus_resident_adder_in_the_steps_table():
    """A replica with nothing to do draws (70 W card idle + 30 W resident) per device; tp x pp devices."""
    assert power_model().idle_w == 70.0 + 30.0
    raw = scenario(tp=2, pp=2)
    for cls in raw["workload"]["classes"]:  # sparse traffic: long idle gaps between calls
        cls["arrival"] = {"kind": "poisson", "rate_per_s": 0.3}
        cls["output_tokens"] = {"kind": "fixed", "value": 20}
    world, _, steps = run_world(raw)
    assert world.specs[0].devices == 4
    watts, kinds = _row_power(steps)
    idle = watts[kinds == "idle"]
    assert idle.size > 0
    np.testing.assert_allclose(idle, 4 * 100.0, rtol=1e-12)
    assert (watts[kinds != "idle"] > 4 * 100.0).all()


def test_busy_power_is_bounded_and_monotone_in_activity():
    pm = power_model()
    t = np.ones(40) * 1e-2
    flops = np.linspace(0.0, 1.2, 40) * H100.peak_flops("bf16") * 1e-2  # u_c from 0 to 1.2
    nbytes = np.linspace(0.0, 1.2, 40) * H100.memory_bandwidth * 1e-2
    for f, b in ((flops, 0 * nbytes), (0 * flops, nbytes), (flops, nbytes)):
        w = pm.busy_w(t, f, b)
        assert w[0] == pytest.approx(pm.active_base_w)  # idle + the adder while an iteration runs
        assert (np.diff(w) >= 0).all() and (np.diff(w)[:5] > 0).all()
        assert (w >= pm.idle_w).all() and (w <= H100.tdp_w).all()
    assert pm.busy_w(t, flops, nbytes)[-1] == H100.tdp_w  # saturated


# --------------------------------------------------------------------------- the cap, directly
def _costs() -> IterationCost:
    """Iterations from idle-ish to saturated: compute-bound, memory-bound and mixed, some with
    HBM traffic alone over a 300 W cap (the clock floor cannot bring them under it)."""
    rng = np.random.default_rng(3)
    n = 64
    t = rng.uniform(1e-3, 5e-2, n)
    u_c = rng.uniform(0.0, 0.7, n) * (rng.uniform(size=n) < 0.7)
    u_m = rng.uniform(0.0, 0.9, n)
    flops = u_c * t * H100.peak_flops("bf16")
    nbytes = u_m * t * H100.memory_bandwidth
    compute_s = np.minimum(t, u_c / 0.74 * t)  # the tensor-core share of the time at full clock
    return IterationCost(t, flops, nbytes, compute_s)


@pytest.mark.parametrize("cap", [650.0, 500.0, 350.0, 300.0])  # all above the busy floor (270 W)
def test_under_cap_never_exceeds_the_cap_and_only_slows(cap):
    cost = _costs()
    free, p0 = power_model().under_cap(cost)
    capped, p = power_model(cap).under_cap(cost)
    assert free is cost and np.array_equal(p0, power_model().busy_w(cost.time_s, cost.flops, cost.bytes))
    assert (p <= cap * (1 + 1e-9)).all()
    assert (capped.time_s >= cost.time_s).all()
    fine = p0 <= cap  # iterations already under the cap are untouched, to the bit
    assert np.array_equal(capped.time_s[fine], cost.time_s[fine]) and np.array_equal(p[fine], p0[fine])
    assert (capped.time_s[~fine] > cost.time_s[~fine]).all()
    # work is conserved: the cap changes how long, not how much
    assert capped.flops is cost.flops and capped.bytes is cost.bytes


def test_under_cap_of_an_array_equals_one_iteration_at_a_time():
    cost = _costs()
    pm = power_model(300.0)
    whole, p_whole = pm.under_cap(cost)
    for i in range(len(cost.time_s)):
        one = IterationCost(*(a[i:i + 1] for a in (cost.time_s, cost.flops, cost.bytes, cost.compute_s)))
        c, p = pm.under_cap(one)
        assert c.time_s[0] == whole.time_s[i] and p[0] == p_whole[i], i  # bit-identical


def test_cap_lowers_compute_power_roughly_as_clock_cubed():
    """DVFS: a compute-bound iteration at clock f takes T/f and its compute power falls ~ f^3,
    so energy per iteration falls under a cap while time grows. The uncapped iteration already
    runs at the clock TDP allows, so a cap just below TDP costs almost nothing."""
    t = np.array([0.1])
    cost = IterationCost(t, 0.8 * t * H100.peak_flops("bf16"), 0.02 * t * H100.memory_bandwidth, t)
    p0 = power_model().busy_w(cost.time_s, cost.flops, cost.bytes)[0]
    assert H100_CAL.power["compute_weight"] * 0.8 > 1 and p0 == H100.tdp_w  # clipped at TDP
    mem = H100_CAL.power["memory_weight"] * 0.02
    slower = []
    for cap in (699.0, 600.0, 500.0, 400.0):  # (well above the 270 W busy base, which a long iteration pays)
        c, p = power_model(cap).under_cap(cost)
        f = t[0] / c.time_s[0]
        assert MIN_CLOCK < f < 1 and p[0] == pytest.approx(cap, rel=1e-6)
        assert p[0] * c.time_s[0] < p0 * t[0]  # energy of the iteration drops
        # what TDP left for compute at f = 1, times f^3; HBM traffic spread over T/f
        base = power_model().active_base_w
        assert p[0] == pytest.approx(base + (H100.tdp_w - base) * ((1 - mem) * f**3 + mem * f), rel=1e-5)
        slower.append(c.time_s[0] / t[0])
    assert slower[0] < 1.002 and slower == sorted(slower)  # continuous at TDP, slower as the cap falls


# --------------------------------------------------------------------------- the cap, end to end
@pytest.mark.parametrize("cap", [300.0, 200.0])
def test_capped_draw_never_exceeds_the_cap_in_the_steps_table(cap):
    """Every step row (runs of iterations, idle gaps) of a mixed workload on a tp=2 replica
    averages at most the cap per device, also below the HBM-only floor (200 W). The fitted
    active adder is left out here so that the low caps are settable."""
    world, calls, steps = run_world(scenario(tp=2, power_cap_w=cap, power={"active_w": 0.0}))
    watts, kinds = _row_power(steps)
    assert len(calls) > 30 and (kinds != "idle").sum() > 20
    per_device = watts / world.specs[0].devices
    assert per_device.max() <= cap * (1 + 1e-9)
    assert per_device.max() > 0.97 * cap  # the cap binds


def test_cap_stretches_prefill_but_barely_memory_bound_decode():
    prefill = dict(hardware="h100-sxm", model="llama-3.1-8b", concurrency=32, prompt_tokens=4000, output_tokens=1)
    decode = dict(hardware="h100-sxm", model="llama-3.1-8b", concurrency=64, prompt_tokens=200, output_tokens=200)
    p0, p1 = estimate(**prefill), estimate(**prefill, power_cap_w=450.0)
    d0, d1 = estimate(**decode), estimate(**decode, power_cap_w=450.0)
    # the cap binds on both ...
    assert p0["gpu_power_w"] > 650 and p1["gpu_power_w"] <= 450 * (1 + 1e-9)
    assert d0["gpu_power_w"] > 480 and d1["gpu_power_w"] <= 450 * (1 + 1e-9)
    # ... compute-bound prefill slows a lot, memory-bound decode by under 5% (the cap leaves 180 W above
    # the fitted 270 W busy base; the clock-scaled SM draws give up most of what it takes)
    assert p1["prompt_tokens_per_s"] < 0.9 * p0["prompt_tokens_per_s"]
    assert p1["e2e_p50_s"] > 1.1 * p0["e2e_p50_s"]
    assert d0["itl_p50_s"] < d1["itl_p50_s"] < 1.05 * d0["itl_p50_s"]
    # DVFS: the compute-bound work costs no more energy per token, though it takes longer
    assert p1["energy_per_output_token_j"] < 0.9 * p0["energy_per_output_token_j"]
    assert d1["energy_per_output_token_j"] < d0["energy_per_output_token_j"]


def test_macro_equals_per_iteration_under_a_cap():
    raw = scenario(power_cap_w=300.0)
    _, c_macro, s_macro = run_world({**raw, "engine_mode": "macro"})
    _, c_iter, s_iter = run_world({**raw, "engine_mode": "per_iteration"})
    assert c_macro.num_rows > 30 and same_calls(c_macro.sort_by("call_id"), c_iter.sort_by("call_id"))
    assert s_macro.num_rows < s_iter.num_rows  # runs were really planned at once
    e_macro, e_iter = (float(np.sum(s["energy_j"].to_numpy())) for s in (s_macro, s_iter))
    assert e_macro == pytest.approx(e_iter, rel=1e-9)


def _busy_floor(**pool) -> float:
    """What a device of the pool draws while an iteration runs at zero activity."""
    return resolve_pool(validate(scenario(**pool)), 0, "<test>").power.active_base_w


@pytest.mark.parametrize("offset, ok", [(0.0, False), (0.5, True), (None, True), (-60.0, False)])
def test_cap_outside_busy_floor_to_tdp_is_a_scenario_error(offset, ok):
    cap = H100.tdp_w if offset is None else _busy_floor() + offset
    sc = validate(scenario(power_cap_w=cap))
    if ok:
        assert resolve_pool(sc, 0, "<test>").power.cap_w == cap
    else:
        with pytest.raises(ScenarioError) as e:
            resolve_pool(sc, 0, "<test>")
        assert e.value.key_path == "datacenter.pools.main.power_cap_w"
    with pytest.raises(ScenarioError):
        resolve_pool(validate(scenario(power_cap_w=H100.tdp_w + 1)), 0, "<test>")


def test_cap_bound_follows_an_idle_override():
    floor = _busy_floor(power={"idle_w": 50.0})
    assert floor == pytest.approx(_busy_floor() - 20.0)  # card idle 70 W -> 50 W
    sc = validate(scenario(power_cap_w=floor + 10.0, power={"idle_w": 50.0}))
    power = resolve_pool(sc, 0, "<test>").power
    assert power.idle_w == 80.0 and power.cap_w == floor + 10.0


# --------------------------------------------------------------------------- calibration loading
def test_h100_pool_uses_the_fitted_calibration():
    spec = resolve_pool(validate(scenario()), 0, "<test>")
    for k, v in H100_CAL.perf.items():
        assert spec.perf.eff[k] == v, k
    assert spec.perf.eff["per_seq_overhead_s"] != DEFAULT_EFFICIENCY["per_seq_overhead_s"]
    assert spec.power.compute_weight == H100_CAL.power["compute_weight"] != COMPUTE_WEIGHT


def test_scenario_overrides_win_over_the_calibration():
    raw = scenario(performance={"kind": "roofline", "per_seq_overhead_s": 1e-4}, power={"compute_weight": 1.0})
    spec = resolve_pool(validate(raw), 0, "<test>")
    assert spec.perf.eff["per_seq_overhead_s"] == 1e-4
    assert spec.perf.eff["gemm_efficiency"] == H100_CAL.perf["gemm_efficiency"]  # the rest stays fitted
    assert spec.power.compute_weight == 1.0
    assert spec.power.memory_weight == H100_CAL.power["memory_weight"]


def test_uncalibrated_accelerator_uses_the_defaults():
    assert catalog.calibration("a100-80gb").perf == {}
    spec = resolve_pool(validate(scenario(accelerator="a100-80gb")), 0, "<test>")
    assert spec.perf.eff == DEFAULT_EFFICIENCY
    assert spec.power.compute_weight == COMPUTE_WEIGHT


# --------------------------------------------------------------------------- the fits
def test_fit_gemm_recovers_known_parameters():
    rng = np.random.default_rng(11)
    peak, bw = H100.peak_flops("bf16"), H100.memory_bandwidth
    tokens = np.repeat(2.0 ** np.arange(0, 14), 6)
    i = np.tile([4096, 4096, 8192, 14336, 5120, 28672], 14).astype(float)
    o = np.tile([6144, 4096, 2 * 28672, 4096, 2 * 13824, 8192], 14).astype(float)
    tp = np.tile([1, 2, 4, 8, 1, 2], 14).astype(float)
    flops, nbytes = 2 * tokens * i * o / tp, (i * o + tokens * (i + o)) * 2 / tp
    truth = dict(eff_c=0.66, eff_m=0.84, latency=7e-6, p=3.0)
    clean = gemm_time(GemmObservations(flops, nbytes, np.ones_like(flops), ()), peak, bw, **truth)
    obs = GemmObservations(flops, nbytes, clean * np.exp(rng.normal(0, 0.02, clean.size)), ("synthetic",))
    fit = fit_gemm(obs, H100)
    assert fit["gemm_efficiency"] == pytest.approx(truth["eff_c"], rel=0.03)
    assert fit["memory_efficiency"] == pytest.approx(truth["eff_m"], rel=0.03)
    assert fit["kernel_latency_s"] == pytest.approx(truth["latency"], rel=0.15)
    assert fit["gemm_blend"] == pytest.approx(truth["p"], rel=0.2)
    assert fit["n"] == clean.size and fit["median_abs_error"] < 0.03


def test_fit_allreduce_recovers_latency_and_efficiency(tmp_path):
    rng = np.random.default_rng(5)
    link, lat, eff = H100.link_bandwidth, 1.5e-6, 0.75  # hop latency: 2(n-1) hops per all-reduce
    rows = ["collective,num_workers,devices_per_node,size,time_stats.all_reduce.median"]
    for n in (2, 4, 8):
        for size in 2.0 ** np.arange(10, 31):
            t = (2 * (n - 1) * lat + 2 * (n - 1) / n * size / (link * eff)) * np.exp(rng.normal(0, 0.03))
            rows.append(f"all_reduce,{n},{n},{size:.0f},{t * 1e3:.9g}")
            # rows the fit must ignore: across nodes, and other collectives
            rows.append(f"all_reduce,{n},{2 * n},{size:.0f},{100 * t * 1e3:.9g}")
            rows.append(f"all_gather,{n},{n},{size:.0f},{100 * t * 1e3:.9g}")
    path = tmp_path / "ar.csv"
    path.write_text("\n".join(rows) + "\n")
    fit = fit_allreduce(path, H100)
    assert fit["n"] == 3 * 21
    assert fit["link_latency_s"] == pytest.approx(lat, rel=0.1)
    assert fit["link_efficiency"] == pytest.approx(eff, rel=0.03)


def test_host_from_takes_the_host_overheads_and_fits_only_the_device_side(monkeypatch):
    """``dcsim calibrate --host-from``: the engine's host-side costs come from the other card's fit,
    verbatim, and the serving fit is asked only for the device-side parameters."""
    from sim.tools import calibrate as cal

    asked = {}

    def fake_serving(points, perf, keys=None, workers=2, rounds=3):
        asked["keys"], asked["perf"] = keys, dict(perf)
        return {**{k: 0.5 for k in keys}, "keys": keys, "n": len(points), "median_abs_error": 0.0,
                "p90_abs_error": 0.0}

    fake_power = lambda points, perf, workers=2: {"active_w": 0.0, "compute_weight": 1.0, "memory_weight": 1.0,
                                                  "link_active_w": 0.0, "n": 1, "median_abs_error": 0.0,
                                                  "p90_abs_error": 0.0}
    monkeypatch.setattr(cal, "fit_serving", fake_serving)
    monkeypatch.setattr(cal, "fit_power_joint", fake_power)
    points = [{"model": "qwen3-235b-a22b", "tp": 4, "weight_dtype": "bf16"},
              {"model": "qwen3-8b", "tp": 1, "weight_dtype": "bf16"}]
    perf, _ = cal._fit_serving(points, {}, "rows.csv", 1, lambda *_: None, host_from="h100-sxm")
    # nothing host-side is fitted (the fused-MoE weight re-read is the device's)
    assert set(asked["keys"]) == {"link_latency_s", "moe_efficiency", "moe_weight_reread"}
    for k in cal.ENGINE_KEYS:
        assert perf[k][0] == asked["perf"][k] == H100_CAL.perf[k] and "h100-sxm" in perf[k][1]
    with pytest.raises(ScenarioError, match="--host-from"):
        cal.calibrate("b200", [], None, None, host_from="a100-80gb")  # nothing fitted there to take


def test_shipped_b200_card_shares_the_h100_host_overheads():
    b200 = catalog.calibration("b200").perf
    for k in ("iteration_overhead_s", "per_seq_overhead_s", "mixed_layer_overhead_s"):
        assert b200[k] == H100_CAL.perf[k], k


def test_vendor_gemm_ceilings_price_mi300x_gemms_at_amds_measured_rates():
    """A card without per-operator tables takes its GEMM efficiencies from the vendor's max-achievable
    GEMM rates (max_achievable_flops.csv): the shipped MI300X calibration prices large bf16 and fp8
    GEMMs at AMD's measured 708 and 1,273 TFLOP/s, not at ~0.7 of the datasheet's boost-clock peak;
    a card with tables (H100) is untouched; the calibrate step writes exactly these values."""
    from sim.models.perf import RooflineModel
    from sim.tools import calibrate as cal
    from sim.tools.calibrate_kernels import ceiling_efficiencies

    mi300x = catalog.accelerator("mi300x")
    llama = catalog.model("llama-3.1-70b")
    shipped = catalog.calibration("mi300x").perf
    for dtype, rate in (("bf16", 708e12), ("fp8", 1273e12)):
        m = RooflineModel(llama, mi300x, weight_dtype=dtype, **shipped)
        assert m.dense_peak == pytest.approx(rate, rel=1e-3), dtype
        # a large GEMM runs at that rate (its memory time ~1% of the compute time)
        t, f, _ = m._linear(16384.0, 8192, 28672, 1)
        assert f / t == pytest.approx(rate, rel=0.03), dtype
    # uncalibrated (the defaults) the same GEMM was priced ~1.5x faster in fp8
    assert RooflineModel(llama, mi300x, weight_dtype="fp8").dense_peak / 1273e12 > 1.4
    assert ceiling_efficiencies(H100) == {}
    derived = ceiling_efficiencies(mi300x)
    assert {k: v for k, (v, _) in derived.items()} == pytest.approx(
        {"gemm_efficiency": shipped["gemm_efficiency"], "quantized_dense_efficiency": shipped["quantized_dense_efficiency"]},
        abs=1e-4)
    perf, power, _ = cal.calibrate("mi300x", [], None, catalog.hardware_dir() / "calibration" / "measurements.csv")
    assert set(perf) == {"gemm_efficiency", "quantized_dense_efficiency"} and not power
    assert "max_achievable_flops.csv" in perf["gemm_efficiency"][1] and "AMD" in perf["gemm_efficiency"][1]
    # --host-from with no serving rows to fit: the engine's host-side costs are the other card's, verbatim
    # (the shipped MI300X card was written so)
    perf, _, _ = cal.calibrate("mi300x", [], None, catalog.hardware_dir() / "calibration" / "measurements.csv",
                               host_from="h100-sxm")
    for k in cal.ENGINE_KEYS:
        assert perf[k][0] == H100_CAL.perf[k] == shipped[k] and "h100-sxm" in perf[k][1], k


def test_mi300x_links_are_fitted_to_amds_rccl_all_reduce_times():
    """MI300X has no Vidur table; its shipped all-reduce measurements (AMD's rccl-tests run, profiles/rccl/)
    are what `dcsim calibrate` finds for it, and the card's link terms are that fit: a large all-reduce
    at the measured ~300 GB/s bus bandwidth, not the default 0.8 of its 448 GB/s of links."""
    from sim.models.parallel import ring_allreduce_s
    from sim.tools import calibrate as cal

    tables, net = cal.default_tables("mi300x")
    assert tables == [] and net is not None and net.parent.name == "rccl"
    fit = fit_allreduce(net, catalog.accelerator("mi300x"))
    shipped = catalog.calibration("mi300x").perf
    assert shipped["link_efficiency"] == pytest.approx(fit["link_efficiency"], abs=1e-4)
    assert shipped["link_latency_s"] == pytest.approx(fit["link_latency_s"], rel=1e-3)
    bw = catalog.accelerator("mi300x").link_bandwidth * shipped["link_efficiency"]
    size = 1 << 30  # the blog: 5.96 ms for 1 GiB on 8 GPUs (bus bandwidth 315 GB/s)
    assert ring_allreduce_s(size, 8, bw, shipped["link_latency_s"]) == pytest.approx(5.96e-3, rel=0.15)
    assert catalog.calibration("mi325x").perf["link_efficiency"] == shipped["link_efficiency"]  # the same mesh


def test_a_vendor_ceiling_table_that_is_missing_or_wrong(tmp_path, monkeypatch):
    """A hardware folder of one's own without the ceilings table: no ceilings (the card keeps its
    defaults); a rate that is not a number, or above the card's peak: one error naming the file and
    the card's row, not a traceback."""
    from sim.tools import calibrate_kernels as ck

    mi300x = catalog.accelerator("mi300x")
    monkeypatch.setattr(ck, "ceilings_path", lambda: tmp_path / "absent.csv")
    assert ck.ceiling_efficiencies(mi300x) == {}
    table = tmp_path / "max_achievable_flops.csv"
    monkeypatch.setattr(ck, "ceilings_path", lambda: table)
    for bad in ("fast", "", "5000", "-1"):
        table.write_text(f"accelerator,dtype,tflops,median_clock_mhz,source\nmi300x,bf16,{bad},1200,x\n")
        with pytest.raises(ScenarioError, match=r"max_achievable_flops.csv: mi300x.bf16.tflops: must be a rate"):
            ck.ceiling_efficiencies(mi300x)
    table.write_text("accelerator,dtype,tflops,median_clock_mhz,source\nmi300x,bf16,708,1207,x\n")
    assert set(ck.ceiling_efficiencies(mi300x)) == {"gemm_efficiency"}  # no fp8 row: bf16 only


def test_power_budget_caps_the_fleet(tmp_path):
    """A row budget below the fleet's TDP: every device is capped at its share, so the
    accelerators' power, summed over replicas at any instant, never exceeds the budget."""
    import pyarrow.parquet as pq

    from sim.run import run_point

    raw = llm_scenario(duration_s=40.0)
    raw["datacenter"]["pools"][0]["replicas"] = 3
    budget = 3 * 450.0  # three 700 W H100s held to 1,350 W
    raw["datacenter"]["power_budget_w"] = budget
    s = run_point(validate(raw), str(tmp_path / "b"), "p")
    steps = pq.read_table(tmp_path / "b" / "steps" / "point_id=p" / "part-0.parquet").to_pylist()
    assert max(r["avg_power_w"] for r in steps if r["end_s"] > r["start_s"]) <= 450.0 + 1e-6
    edges = sorted({r["start_s"] for r in steps} | {r["end_s"] for r in steps})
    for a, b in zip(edges, edges[1:]):
        mid = (a + b) / 2
        total = sum(r["avg_power_w"] for r in steps if r["start_s"] <= mid < r["end_s"])
        assert total <= budget + 1e-6
    free = run_point(validate(llm_scenario(duration_s=40.0, datacenter={**raw["datacenter"], "power_budget_w": None})),
                     str(tmp_path / "f"), "p")
    assert s["avg_device_power_w"] < free["avg_device_power_w"] and s["tpot_p50_s"] >= free["tpot_p50_s"]
    # a budget too small to run the models at all is a one-line error naming the key
    raw["datacenter"]["power_budget_w"] = 300.0
    with pytest.raises(ScenarioError, match="datacenter.power_budget_w"):
        resolve_pool(validate(raw), 0, "<test>")


def test_carbon_follows_a_time_varying_grid(tmp_path):
    """A grid clean for the first half of the window and dirty after: the run's carbon is
    the energy drawn in each half times that half's intensity."""
    import pyarrow.parquet as pq

    from sim.run import run_point

    raw = llm_scenario(duration_s=40.0, warmup_s=0.0)
    raw["datacenter"]["carbon_schedule"] = {"times_s": [0, 20], "g_per_kwh": [0.0, 500.0]}
    s = run_point(validate(raw), str(tmp_path), "p")
    steps = pq.read_table(tmp_path / "steps" / "point_id=p" / "part-0.parquet").to_pylist()
    pue = 1.2
    late = 0.0
    for r in steps:  # energy drawn in [20, 40], rows split pro rata
        a, b = max(r["start_s"], 20.0), min(r["end_s"], 40.0)
        if b > a and r["end_s"] > r["start_s"]:
            late += r["energy_j"] * (b - a) / (r["end_s"] - r["start_s"])
    host = s["host_energy_j"] / 2  # constant host power: half of it in the dirty half
    expected = (late + host) * pue / 3.6e6 * 500.0
    assert s["carbon_g"] == pytest.approx(expected, rel=0.02)
    flat = run_point(validate(llm_scenario(duration_s=40.0, warmup_s=0.0)), str(tmp_path / "flat"), "p")
    assert flat["carbon_g"] == pytest.approx(flat["facility_energy_j"] / 3.6e6 * 370.0, rel=1e-9)
    assert s["facility_overhead_energy_j"] == pytest.approx(s["facility_energy_j"] * (1 - 1 / pue), rel=1e-9)
