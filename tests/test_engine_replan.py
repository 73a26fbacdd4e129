"""Same-instant arrivals: the replica decides once per instant, with the tables of deciding at once.

A closed-loop client sends its next call as its previous one finishes, so calls
arrive at the instant a decision was made. The engine puts that decision off to
one zero-delay event instead of re-deciding at every arrival; :class:`Eager`
below is the engine that re-decides at every arrival (the reference).
"""

import copy

import pyarrow as pa
import pytest

import sim.cluster.world
from scenarios import llm_scenario, same_calls
from sim import native
from sim.config import validate
from sim.engine.replica import Replica
from sim.output.memory import MemoryRecorder


pytestmark = pytest.mark.skipif(native.build().startswith("compiled"), reason=(
    "the compiled engine's classes cannot be subclassed here: this test checks its pure Python sources "
    "(DCSIM_PURE_PYTHON=1), which tests/test_native.py holds equal to it"))


class Eager(Replica):
    """Decides at once: drops the decision at every call arriving at its instant and decides again."""

    def _defer(self) -> None:
        self._version += 1
        self._plan = None
        self._start()

    def _boundary_woken(self, wake) -> None:
        if wake.tag != self._version:
            return
        plan, self._plan = self._plan, None
        self._commit(plan, self._target)
        self._start()


def _run(raw: dict, replica=Replica, mode: str = "macro"):
    """(calls sorted by id, steps, replicas) of ``raw`` run in memory with replica class ``replica``."""
    recorder = MemoryRecorder()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim.cluster.world, "Replica", replica)
        world = sim.cluster.world.build(validate({**copy.deepcopy(raw), "engine_mode": mode}), recorder)
        world.run()
    assert all(type(r) is replica for r in world.replicas)
    return recorder.table("calls").sort_by("call_id"), recorder.table("steps"), world.replicas


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal to the last bit (NaN == NaN, unlike ``Table.equals``), every column."""
    return same_calls(a, b, attributed=())


def _closed(concurrency: int, replicas: int = 1, output: dict | None = None, duration_s: float = 6.0,
            think_s: float = 0.0, router: str = "round_robin", prompt: int = 200, seed: int = 3, **pool) -> dict:
    """H100 / Llama-3.1-8B replicas serving ``concurrency`` closed-loop clients."""
    return {
        "name": "replan", "seed": seed, "duration_s": duration_s, "warmup_s": 1.0, "drain_s": 0.5,
        "datacenter": {"pools": [{
            "name": "p", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": replicas,
            "router": {"kind": router},
            "batcher": {"kind": "continuous", "max_num_batched_tokens": 8192, "max_num_seqs": max(concurrency, 16)},
            **pool}]},
        "workload": {"classes": [{
            "name": "c", "pool": "p", "arrival": {"kind": "closed", "concurrency": concurrency, "think_s": think_s},
            "prompt_tokens": {"kind": "fixed", "value": prompt},
            "output_tokens": output or {"kind": "lognormal", "median": 120, "sigma": 0.55, "max": 1000}}]},
    }


def test_one_plan_per_run_in_a_closed_loop():
    raw = _closed(256, output={"kind": "lognormal", "median": 60, "sigma": 0.55, "max": 1000}, duration_s=4.0)
    calls, steps, (r,) = _run(raw)
    ref_calls, ref_steps, (ref,) = _run(raw, Eager)
    assert calls.num_rows > 400 and r.runs > 50
    # deciding at once drops a decision at nearly every arrival; deferred, none but the
    # one cut at the end of the run
    assert ref.plans > 3 * ref.runs
    assert r.plans <= r.runs + 1
    assert (r.runs, r.iterations) == (ref.runs, ref.iterations)
    assert _same(calls, ref_calls) and _same(steps, ref_steps)
    # and the per-iteration reference gives the same calls
    it_calls, _, (it,) = _run(raw, mode="per_iteration")
    assert it.plans <= it.runs + 1
    assert same_calls(calls, it_calls)


# Scenarios where several replicas reach a boundary at the same instant (identical loads
# by round robin), so the order of their boundary events among same-time events matters.
SYMMETRIC_KV = dict(
    replicas=2, engine={"num_gpu_blocks": 60},
    speculative={"method": "mtp", "num_speculative_tokens": 3, "acceptance_rate": 0.8},
)
CASES = {
    # blocked queues (KV pool, sequence cap) with simultaneous boundaries on two replicas
    "symmetric_kv": _closed(33, output={"kind": "fixed", "value": 64}, prompt=16, seed=4, **SYMMETRIC_KV),
    "symmetric_seats": _closed(40, replicas=3, output={"kind": "fixed", "value": 30}),
    "think_jsq": _closed(48, replicas=3, think_s=0.01, router="jsq"),
    "open_loop": llm_scenario(duration_s=10.0),
}
CASES["symmetric_kv"]["datacenter"]["pools"][0]["batcher"]["max_num_seqs"] = 16
CASES["symmetric_seats"]["datacenter"]["pools"][0]["batcher"]["max_num_seqs"] = 6


@pytest.mark.parametrize("mode", ["macro", "per_iteration"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_tables_as_deciding_at_once(case, mode):
    calls, steps, reps = _run(CASES[case], mode=mode)
    ref_calls, ref_steps, ref_reps = _run(CASES[case], Eager, mode=mode)
    assert calls.num_rows > 50
    assert _same(calls, ref_calls)
    assert _same(steps, ref_steps)
    assert [(r.runs, r.iterations, r.clock) for r in reps] == [(r.runs, r.iterations, r.clock) for r in ref_reps]
    assert sum(r.plans for r in reps) <= sum(r.plans for r in ref_reps)
