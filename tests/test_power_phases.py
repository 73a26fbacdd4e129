"""Power of an iteration's phases (sim/models/power.py): collectives between a replica's devices,
slow grouped-expert kernels, the step's per-sequence time, and the joint fit of their draws
(sim/tools/calibrate.py)."""

import numpy as np
import pytest

from sim.hardware import catalog
from sim.models.parallel import ring_allreduce_s
from sim.models.perf import Batch, IterationCost, RooflineModel
from sim.models.power import PowerModel

H100 = catalog.accelerator("h100-sxm")
PEAK = H100.peak_flops("bf16")


def model(devices=4, **kw) -> PowerModel:
    pw = dict(active_w=200.0, compute_weight=3.0, memory_weight=0.8, link_active_w=40.0, stall_w=300.0, seq_w=350.0)
    return PowerModel(H100, PEAK, devices=devices, **{**pw, **kw})


def test_collective_time_draws_less_than_the_work_it_delays():
    """The same work (FLOPs, HBM bytes) done in 10 ms, then followed by collectives: the device
    draws its busy base plus the link draw during them, less than during the work, so the
    iteration's mean power falls as the collectives' share grows; its energy grows by exactly
    (base + link) x the collective time."""
    pm = model()
    work_s = 0.010
    flops, nbytes = 0.1 * work_s * PEAK, 0.6 * work_s * H100.memory_bandwidth
    comm = np.array([0.0, 0.001, 0.003, 0.006])
    t = work_s + comm
    w = pm.busy_w(t, flops, nbytes, comm_s=comm)
    assert (np.diff(w) < 0).all()
    energy = w * t
    np.testing.assert_allclose(energy - energy[0], (pm.active_base_w + pm.link_active_w) * comm, rtol=1e-12)


def test_two_device_replica_draws_less_per_device_than_one_doing_the_same_work():
    """A device of a 2-device replica does the same FLOPs and HBM bytes as one device alone, then
    waits on all-reduces: during those it draws its busy base plus the link draw, less than the
    work draws, so its mean power is lower than the single device's and its energy higher by
    (base + link) x the collective time. The single device has no collectives to draw for."""
    one, two = model(devices=1), model(devices=2)
    work = np.full(4, 0.02)
    f, b = 0.05 * work * PEAK, 0.6 * work * H100.memory_bandwidth  # activity 0.15 + 0.48 while working
    comm = np.array([0.0, 0.001, 0.002, 0.004])
    single = one.busy_w(work, f, b)
    assert np.array_equal(one.busy_w(work + comm, f, b, comm_s=comm), one.busy_w(work + comm, f, b))
    pair = two.busy_w(work + comm, f, b, comm_s=comm)
    assert pair[0] == single[0] and (pair[1:] < single[1:]).all() and (np.diff(pair) < 0).all()
    np.testing.assert_allclose(pair * (work + comm) - single * work, (two.active_base_w + two.link_active_w) * comm,
                               rtol=1e-12)


def test_activity_saturates_over_the_non_collective_time_only():
    """Work that would drive the device past TDP saturates during the non-collective share only:
    with a share c in collectives the draw is at most base + link c + (TDP - base)(1 - c) < TDP."""
    pm = model()
    t = np.full(5, 0.01)
    c = np.array([0.0, 0.1, 0.2, 0.3, 0.5])
    w = pm.busy_w(t, 0.5 * t * PEAK, 0.9 * t * H100.memory_bandwidth, comm_s=c * t)  # activity ~2.2: saturated
    base = pm.active_base_w
    np.testing.assert_allclose(w, base + pm.link_active_w * c + (H100.tdp_w - base) * (1 - c), rtol=1e-12)
    assert w[0] == H100.tdp_w and (np.diff(w) < 0).all()


@pytest.mark.parametrize("phase, key", [("stall_s", "stall_w"), ("seq_s", "seq_w")])
def test_slow_expert_kernels_and_per_sequence_time_draw_their_own_weight_up_to_tdp(phase, key):
    pm = model()
    t = np.full(4, 0.01)
    s = np.array([0.0, 0.002, 0.003, 0.005])
    f, b = 0.01 * t * PEAK, 0.4 * t * H100.memory_bandwidth
    w = pm.busy_w(t, f, b, **{phase: s})
    np.testing.assert_allclose(w - w[0], getattr(pm, key) * s / t, rtol=1e-12)
    hot = pm.busy_w(t, 0.3 * t * PEAK, 0.5 * t * H100.memory_bandwidth, **{phase: s})
    assert (hot <= H100.tdp_w).all() and hot[-1] == H100.tdp_w


@pytest.mark.parametrize("cap", [500.0, 400.0])
def test_cap_holds_with_collectives_slow_experts_and_per_sequence_time(cap):
    rng = np.random.default_rng(7)
    n = 48
    t = rng.uniform(2e-3, 4e-2, n)
    cost = IterationCost(t, rng.uniform(0, 0.5, n) * t * PEAK, rng.uniform(0, 0.9, n) * t * H100.memory_bandwidth,
                         t * rng.uniform(0, 0.6, n), t * rng.uniform(0, 0.4, n), t * rng.uniform(0, 0.3, n),
                         t * rng.uniform(0, 0.3, n))
    free, p0 = model().under_cap(cost)
    capped, p = model(cap_w=cap).under_cap(cost)
    assert p0.max() > cap and (p <= cap * (1 + 1e-9)).all() and (capped.time_s >= t).all()
    assert capped.comm_s is cost.comm_s and capped.stall_s is cost.stall_s and capped.seq_s is cost.seq_s


def _roofline(name, tp, **eff):
    return RooflineModel(catalog.model(name), H100, tp=tp, **eff)


def test_roofline_reports_collective_stall_and_per_sequence_time():
    """Dense on one device: no collectives, no stall; dense on four: the two all-reduces per layer;
    MoE with grouped-expert efficiency 1: no stall, below 1: the time the experts' kernels lose;
    every step: its per-sequence cost."""
    batch = Batch(64, 64, 64, np.array([64 * 500.0]), np.array([64 * 500.0]))
    one = _roofline("llama-3.1-8b", 1, per_seq_overhead_s=4e-5).cost(batch)
    assert one.comm_s is None and one.stall_s is None and one.seq_s == pytest.approx(64 * 4e-5, rel=1e-12)
    four = _roofline("llama-3.1-70b", 4)
    c = four.cost(batch)
    m = four.model
    expect = 2 * m.num_layers * ring_allreduce_s(64 * m.hidden_size * 2, 4, four.link_bw, four.eff["link_latency_s"])
    assert c.comm_s == pytest.approx(expect, rel=1e-12) and 0 < c.comm_s < c.time_s[0] and c.stall_s is None
    fast = _roofline("qwen3-30b-a3b", 1, moe_efficiency=1.0).cost(batch)
    slow = _roofline("qwen3-30b-a3b", 1, moe_efficiency=0.5).cost(batch)
    assert fast.stall_s == pytest.approx(0.0, abs=1e-15)
    assert slow.stall_s > 0
    kernels = slow.time_s[0] - fast.time_s[0]  # (the rest of the step is the same)
    assert slow.stall_s == pytest.approx(kernels, rel=1e-9)


def test_shipped_h100_card_puts_a_dense_2_gpu_replica_below_one_gpu_per_device():
    """ML.ENERGY v3 measures Qwen3-32B at batch 8 at 538 W on one H100 and 425 W per GPU on two
    (hardware/calibration/heldout_serving.csv; the pair is a fit row, the single GPU excluded as the same model and task): each
    device of the pair streams half the weights and waits on all-reduces. Simulated as the
    benchmark ran, the calibrated model keeps that order, the pair within 10%, the single GPU within 15%
    (one H100 at small batch is where the fitted power now runs low, docs/validation.md)."""
    from sim.tools import validation as V

    rows = {p["id"]: p for p in V.load_points(roles=("fit", "excluded"))}
    one, two = (rows[f"mlenergy3/Qwen3-32B/lm-arena-chat/H100x{n}/ep1/b8"] for n in (1, 2))
    p1, p2 = V.predict(one)["gpu_power_w"], V.predict(two)["gpu_power_w"] / 2
    m1, m2 = one["gpu_power_w"], two["gpu_power_w"] / 2
    assert (m1, m2) == (538.4, 425.05) and p2 < 0.97 * p1  # (the model's gap is smaller: 6%, not 21%)
    assert p1 == pytest.approx(m1, rel=0.15) and p2 == pytest.approx(m2, rel=0.1)


def _synthetic(rng, n, all_moe_stall=False):
    feats = {"phi": rng.uniform(0.8, 1.0, n), "uc": rng.uniform(0, 0.2, n), "um": rng.uniform(0.2, 0.7, n),
             "tp": rng.choice([1, 2, 4, 8], n), "q": rng.uniform(0.05, 0.4, n)}
    moe = rng.uniform(size=n) < 0.5
    feats["c"] = np.where(feats["tp"] > 1, rng.uniform(0.02, 0.3, n), 0.0)
    # bf16 experts at their roofline (no stall), fp8 ones below it; or every MoE row below it
    slow = moe if all_moe_stall else moe & (rng.uniform(size=n) < 0.5)
    feats["s"] = np.where(slow, rng.uniform(0.02, 0.3, n), 0.0)
    return feats, moe


def _fit(monkeypatch, feats, moe, truth):
    from sim.tools import calibrate as cal
    from sim.tools import validation

    idle, tdp = H100.idle_power_w + 30.0, H100.tdp_w

    def watts(i, pw):
        r = pw["active_w"]
        return (idle + feats["phi"][i] * r + pw["link_active_w"] * feats["c"][i] + pw["stall_w"] * feats["s"][i]
                + pw["seq_w"] * feats["q"][i]
                + (tdp - idle - r) * (pw["compute_weight"] * feats["uc"][i] + pw["memory_weight"] * feats["um"][i]))

    def fake_predict_all(points, perf, power, workers=1):
        return [{"gpu_power_w": watts(i, power) * p["tp"], "devices": p["tp"], "utilization": feats["phi"][i]}
                for i, p in enumerate(points)]

    monkeypatch.setattr(validation, "predict_all", fake_predict_all)
    points = [{"accelerator": "h100-sxm", "model": "qwen3-30b-a3b" if moe[i] else "llama-3.1-8b",
               "tp": int(feats["tp"][i]), "gpu_power_w": watts(i, truth) * feats["tp"][i]} for i in range(len(moe))]
    return cal.fit_power_joint(points, {})


TRUTH = dict(active_w=180.0, compute_weight=3.5, memory_weight=0.7, link_active_w=60.0, stall_w=250.0, seq_w=300.0)


def test_joint_power_fit_recovers_known_draws(monkeypatch):
    """The calibration's power fit (features from simulations at unit and small weights, then
    least squares) recovers the active adder, activity weights and the collective, stall and
    per-sequence draws of synthetic rows built with the same power form."""
    feats, moe = _synthetic(np.random.default_rng(2), 40)
    fit = _fit(monkeypatch, feats, moe, TRUTH)
    for k, v in TRUTH.items():
        assert fit[k] == pytest.approx(v, rel=1e-4), k
    assert fit["median_abs_error"] < 1e-6


def test_stall_draw_is_not_fitted_where_every_moe_row_stalls(monkeypatch):
    """Where every MoE fit row runs its experts below the roofline, their stall share goes with
    being MoE at all: the fit leaves the stall draw out (0 in the power form) and fits the rest."""
    feats, moe = _synthetic(np.random.default_rng(5), 40, all_moe_stall=True)
    fit = _fit(monkeypatch, feats, moe, {**TRUTH, "stall_w": 0.0})
    assert "stall_w" not in fit
    for k in ("active_w", "compute_weight", "memory_weight", "link_active_w", "seq_w"):
        assert fit[k] == pytest.approx(TRUTH[k], rel=1e-4), k
