"""Decode-run prices kept for reuse (sim.engine.replica.DecodePrices) equal pricing each run afresh."""

import numpy as np
import pytest

from scenarios import llm_scenario, same_calls
from sim import native
from sim.config import validate
from sim.engine.prices import DecodePrices
from sim.output.memory import MemoryRecorder
from sim.cluster.faults import Slowed
from sim.models.perf import Batch
from sim.cluster.world import build
from sim.cluster.pools import resolve_pool


def _pool(**keys):
    raw = llm_scenario()
    raw["datacenter"]["pools"][0].update(keys)
    return resolve_pool(validate(raw, "<test>", "."), 0, "<test>")


def _afresh(spec, n: int, start: int, k: int):
    """A decode run priced on its own, as the engine priced every run before the cache."""
    ctx = float(start - n) + n * np.arange(1.0, k + 1.0)
    cost, power = spec.power.under_cap(spec.perf.cost(Batch(n, n, n, ctx, ctx)))
    return cost.time_s, power * cost.time_s * spec.devices_per_replica


@pytest.mark.parametrize("keys", [{}, {"power_cap_w": 450.0}, {"tp": 2}], ids=["plain", "capped", "tp2"])
def test_slices_equal_runs_priced_afresh(keys):
    spec = _pool(**keys)
    prices = DecodePrices(spec.perf, spec.power, spec.devices_per_replica)
    rng = np.random.default_rng(3)
    # runs that hit the cache, widen a progression upwards, downwards and on both sides at once
    runs = [(4, 4000, 50), (4, 4040, 10), (4, 4400, 300), (4, 1000, 20), (4, 200, 9000), (4, 4001, 30)]
    runs += [(int(n), int(s), int(k)) for n, s, k in zip(rng.integers(1, 9, 300), rng.integers(1, 60000, 300),
                                                          rng.integers(1, 3000, 300))]
    # short runs of larger batches: every n-th price of the line of every context for n calls
    runs += [(33, 21000, 8), (33, 21001, 8), (33, 20990, 40), (34, 21000, 8), (33, 25000, 3)]
    runs += [(int(n), int(s), int(k)) for n, s, k in zip(rng.integers(9, 128, 300), rng.integers(1, 60000, 300),
                                                          rng.integers(1, 40, 300))]
    for n, start, k in runs:
        start = max(start, n)
        time_s, energy = prices.run(n, start, k)
        want_t, want_e = _afresh(spec, n, start, k)
        assert np.array_equal(time_s, want_t) and np.array_equal(energy, want_e), (n, start, k)
        assert not time_s.flags.writeable and not energy.flags.writeable


@pytest.mark.skipif(native.build().startswith("compiled"), reason=(
    "the compiled engine's classes cannot be monkeypatched: this test checks its pure Python sources "
    "(DCSIM_PURE_PYTHON=1), which tests/test_native.py holds equal to it"))
def test_memory_bound_starts_afresh(monkeypatch):
    spec = _pool()
    monkeypatch.setattr(DecodePrices, "MAX_ITERATIONS", 5000)
    prices = DecodePrices(spec.perf, spec.power, spec.devices_per_replica)
    for start in range(1000, 200000, 7919):
        time_s, energy = prices.run(3, start, 1500)
        assert np.array_equal(time_s, _afresh(spec, 3, start, 1500)[0])
        assert prices._kept <= 5000


def test_stragglers_share_prices_of_their_own_model():
    raw = llm_scenario(duration_s=10.0)
    raw["datacenter"]["pools"][0].update(replicas=4, stragglers={"fraction": 0.5, "slowdown": 1.7})
    recorder = MemoryRecorder()
    world = build(validate(raw, "<test>", "."), recorder, "<test>")
    world.run()
    slowed = [r for r in world.replicas if isinstance(r.perf, Slowed)]
    normal = [r for r in world.replicas if not isinstance(r.perf, Slowed)]
    assert len(slowed) == len(normal) == 2
    for group in (slowed, normal):
        assert all(r.prices is group[0].prices and r.prices.perf is r.perf for r in group)
    assert slowed[0].prices is not normal[0].prices


def test_shared_prices_do_not_change_the_tables(tmp_path):
    """Replicas that share a pool's prices and replicas that each keep their own write the
    same tables."""
    from sim.cluster import world as W

    raw = llm_scenario(duration_s=15.0)
    raw["datacenter"]["pools"][0]["replicas"] = 3

    def run(share: bool):
        recorder = MemoryRecorder()
        original = W.DecodePrices
        if not share:
            W.DecodePrices = lambda *a: None  # each replica makes its own
        try:
            world = build(validate(raw, "<test>", "."), recorder, "<test>")
            world.run()
        finally:
            W.DecodePrices = original
        return recorder.table("calls").sort_by("call_id"), recorder.table("steps")

    (c1, s1), (c2, s2) = run(True), run(False)
    assert same_calls(c1, c2, attributed=()) and s1.equals(s2)
