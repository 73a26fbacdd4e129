"""The engine loop's exact helpers: a run's energy summed in Python as numpy sums it."""

import numpy as np

from sim.engine.plan import SHORT_RUN, Planner, energy_sum, pairwise_sum


def test_pairwise_sum_is_numpys_reduction():
    """Every length a run's energies come in (1 to a few hundred), contiguous and strided (the
    pool's price lines are sliced every n-th), from any offset: the same float, to the bit."""
    rng = np.random.default_rng(7)
    for trial in range(3000):
        n = int(rng.integers(1, 300)) if trial % 10 else int(rng.integers(300, 2000))
        stride = 1 if trial % 3 == 0 else int(rng.integers(2, 40))
        lo = int(rng.integers(0, 5))
        line = rng.lognormal(3.0, 1.5, size=(lo + n) * stride)[::stride]
        values = line.tolist()
        assert pairwise_sum(values, lo, n) == float(np.add.reduce(line[lo: lo + n])), (n, stride, lo)


def test_short_and_long_runs_give_the_same_floats():
    """A run's boundaries and energy sums are the same floats whether the plan keeps them as
    lists (short runs) or arrays (long ones), and the same as numpy's running and plain sums."""
    rng = np.random.default_rng(3)
    for k in (1, 2, SHORT_RUN, SHORT_RUN + 1, 500):
        time_s = rng.lognormal(-4.0, 0.5, size=k)
        clock = float(rng.uniform(0, 1000))
        bounds = Planner._bounds(clock, time_s)
        assert isinstance(bounds, list) == (k <= SHORT_RUN)
        want = np.add.accumulate(np.concatenate(([clock], time_s)))
        assert [float(b) for b in bounds] == want.tolist()
        energy = rng.lognormal(3.0, 1.0, size=k)
        for m in range(1, k + 1, max(1, k // 7)):
            expect = float(np.add.reduce(energy[:m]))
            assert energy_sum(energy.tolist(), 0, m) == expect == energy_sum(energy, 0, m)


def test_open_loop_arrivals_run_event_for_event_as_the_process():
    """Open-loop classes (Poisson, gamma, deterministic) arrive through a chain of wake-ups; with
    the arrival process instead the simulation processes the same number of SimPy events and
    writes the same calls and steps, to the bit (deterministic arrivals meet the replicas'
    boundaries at the same instants, where the events' order decides)."""
    import copy

    import pytest
    import simpy

    import sim.cluster.world
    from scenarios import llm_scenario, same_calls
    from sim.config import validate
    from sim.output.memory import MemoryRecorder

    raw = llm_scenario(duration_s=12.0)
    raw["workload"]["classes"].append({
        "name": "tick", "pool": "main", "arrival": {"kind": "deterministic", "rate_per_s": 4.0},
        "prompt_tokens": {"kind": "fixed", "value": 64}, "output_tokens": {"kind": "fixed", "value": 16}})

    def run(chain: bool):
        recorder, count = MemoryRecorder(), [0]
        step = simpy.Environment.step

        def counted(env):
            count[0] += 1
            step(env)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(simpy.Environment, "step", counted)
            if not chain:
                mp.setattr(sim.cluster.world, "open_loop", lambda cls: False)
            sim.cluster.world.build(validate(copy.deepcopy(raw)), recorder).run()
        return recorder.table("calls").sort_by("call_id"), recorder.table("steps"), count[0]

    calls, steps, events = run(True)
    ref_calls, ref_steps, ref_events = run(False)
    assert calls.num_rows > 100 and events == ref_events
    assert same_calls(calls, ref_calls, attributed=()) and same_calls(steps, ref_steps, attributed=())
