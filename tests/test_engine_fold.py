"""The decode clock's two ways of adding a finishing call's logged shares give the same floats.

``DecodeClock.sync`` adds the energy and device-time shares a call was in with ``sum()`` of a
slice when interpreted and with a typed loop when compiled (``sim.engine.dclock.COMPILED``).
Both must be the same one-by-one additions in the same order: here the loop is run interpreted
(the flag switched on) on a closed loop whose calls finish after hundreds of logged commits, and
every column of the calls and steps tables is compared to the last bit with the ``sum()`` way.
"""

from __future__ import annotations

import pytest

import sim.cluster.world
import sim.engine.dclock
from scenarios import same_calls
from sim import native
from sim.config import validate
from sim.output.memory import MemoryRecorder

SYNC = sim.engine.dclock.DecodeClock.sync

pytestmark = pytest.mark.skipif(native.build().startswith("compiled"), reason=(
    "switches a module flag of the interpreted sources (DCSIM_PURE_PYTHON=1); tests/test_native.py "
    "holds the compiled build equal to them"))


def _closed_loop() -> dict:
    return {
        "name": "fold", "seed": 5, "duration_s": 8.0, "warmup_s": 1.0, "drain_s": 0.5,
        "datacenter": {"pools": [{
            "name": "p", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 1,
            "batcher": {"kind": "continuous", "max_num_batched_tokens": 8192, "max_num_seqs": 128}}]},
        "workload": {"classes": [{
            "name": "c", "pool": "p", "arrival": {"kind": "closed", "concurrency": 128},
            "prompt_tokens": {"kind": "fixed", "value": 200},
            "output_tokens": {"kind": "lognormal", "median": 150, "sigma": 0.6, "max": 1000}}]},
    }


def _run(compiled_way: bool, monkeypatch):
    monkeypatch.setattr(sim.engine.dclock, "COMPILED", compiled_way)
    folds = []

    def counted(self, c):  # the shares a call adds when it is brought up to date
        folds.append(self.base + len(self.log_j) - c.m0)
        SYNC(self, c)

    monkeypatch.setattr(sim.engine.dclock.DecodeClock, "sync", counted)
    recorder = MemoryRecorder()
    world = sim.cluster.world.build(validate(_closed_loop()), recorder)
    world.run()
    return recorder.table("calls").sort_by("call_id"), recorder.table("steps"), folds


def test_typed_loop_adds_the_shares_as_sum_does(monkeypatch):
    calls, steps, folds = _run(False, monkeypatch)
    loop_calls, loop_steps, loop_folds = _run(True, monkeypatch)
    assert calls.num_rows > 300 and max(folds) > 100  # calls finish after many logged commits
    assert folds == loop_folds
    assert same_calls(calls, loop_calls, attributed=()) and steps.equals(loop_steps)
