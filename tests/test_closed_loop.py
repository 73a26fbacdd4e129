"""Closed-loop arrivals: a fixed number of clients, each sending its next call ``think_s``
after its previous one ends, from the class's start until its stop."""

import numpy as np
import pytest

from scenarios import llm_scenario, same_calls, single_server
from sim.config import validate
from sim.errors import ScenarioError
from sim.output.memory import MemoryRecorder
from sim.cluster.world import build


def _run(raw: dict):
    """(calls table sorted by id, end time) of a scenario run in memory."""
    recorder = MemoryRecorder()
    world = build(validate(raw), recorder)
    t_end = world.run()
    assert world.calls_created == world.calls_ended
    return recorder.table("calls").sort_by("call_id"), t_end


def _closed_llm(concurrency: int, think_s: float = 0.0, **top) -> dict:
    """One H100 replica of Llama-3.1-8B serving a closed loop of chat calls of random lengths."""
    raw = llm_scenario(**top)
    raw["datacenter"]["pools"][0]["replicas"] = 1
    chat = raw["workload"]["classes"][0]
    chat["arrival"] = {"kind": "closed", "concurrency": concurrency, "think_s": think_s}
    chat["start_s"] = 1.5
    raw["workload"]["classes"] = [chat]
    return raw


def _in_flight(calls, t: np.ndarray) -> np.ndarray:
    a = calls["arrival_s"].to_numpy()
    f = calls["finish_s"].to_numpy()
    return ((a[None, :] <= t[:, None]) & (t[:, None] < f[None, :])).sum(axis=1)


def test_in_flight_equals_concurrency_until_stop():
    n = 12
    raw = _closed_llm(n)
    calls, _ = _run(raw)
    a = calls["arrival_s"].to_numpy()
    assert set(calls["status"].to_pylist()) == {"finished"}
    assert calls.num_rows > 5 * n
    # all clients start at once at start_s; nothing before, nothing at or after the stop
    assert (np.sort(a)[:n] == 1.5).all() and (a >= 1.5).all() and (a < raw["duration_s"]).all()
    rng = np.random.default_rng(0)
    busy = _in_flight(calls, rng.uniform(1.5, raw["duration_s"], 400))
    assert (busy == n).all()  # no think time: a client is always waiting on a call
    after = _in_flight(calls, np.linspace(raw["duration_s"], calls["finish_s"].to_numpy().max(), 50, endpoint=False))
    assert (after <= n).all() and after[-1] < n  # after the stop the calls drain without replacement


def test_think_time_separates_calls_of_a_client():
    n, think = 6, 0.4
    raw = _closed_llm(n, think)
    calls, _ = _run(raw)
    a = calls["arrival_s"].to_numpy()
    f = calls["finish_s"].to_numpy()
    busy = _in_flight(calls, np.random.default_rng(1).uniform(1.5, raw["duration_s"], 400))
    assert busy.max() <= n and busy.min() < n
    # every call after the first n starts exactly think_s after some earlier call ended
    follow = np.sort(f + think)
    assert np.array_equal(np.sort(a[n:]), follow[follow < raw["duration_s"]])


def test_run_lives_until_stop_when_no_call_is_in_flight():
    """Long think times leave gaps with nothing in flight; the run must go on to the stop."""
    raw = single_server({"kind": "fixed", "value": 100}, 1.0, 0.001, duration_s=20.0, seed=3)
    raw["workload"]["classes"][0]["arrival"] = {"kind": "closed", "concurrency": 2, "think_s": 3.0}
    raw["datacenter"]["pools"][0]["batcher"]["max_num_seqs"] = 2
    calls, t_end = _run(raw)
    # a call takes 100 iterations of 1 ms, so a client's cycle is 3.1 s: arrivals at 0, 3.1, ..., 18.6
    assert calls.num_rows == 2 * 7
    assert np.allclose(np.unique(calls["arrival_s"].to_numpy()), 3.1 * np.arange(7))
    assert t_end == raw["duration_s"]


@pytest.mark.parametrize("n,think", [(1, 0.0), (8, 0.0), (8, 0.05)])
def test_littles_law_on_a_fixed_time_engine(n, think):
    """Batch of n, fixed iteration time: a call takes S = 100 iterations whatever the batch,
    so the clients complete n / (S + think) calls per second."""
    it = 0.002
    raw = single_server({"kind": "fixed", "value": 100}, 1.0, it, duration_s=60.0, seed=1, warmup_s=10.0)
    raw["workload"]["classes"][0]["arrival"] = {"kind": "closed", "concurrency": n, "think_s": think}
    raw["datacenter"]["pools"][0]["batcher"]["max_num_seqs"] = n
    calls, _ = _run(raw)
    f = calls["finish_s"].to_numpy()
    done = ((f >= 10.0) & (f < 60.0)).sum() / 50.0
    assert done == pytest.approx(n / (100 * it + think), rel=0.01)
    e2e = f - calls["arrival_s"].to_numpy()
    assert np.allclose(e2e, 100 * it)  # nobody waits: the batch holds every client


def test_clients_beyond_the_batch_queue():
    raw = single_server({"kind": "fixed", "value": 100}, 1.0, 0.002, duration_s=30.0, seed=1, warmup_s=5.0)
    raw["workload"]["classes"][0]["arrival"] = {"kind": "closed", "concurrency": 12}
    raw["datacenter"]["pools"][0]["batcher"]["max_num_seqs"] = 4
    calls, _ = _run(raw)
    a = calls["arrival_s"].to_numpy()
    keep = (a >= 5.0) & (a < 30.0)
    e2e = (calls["finish_s"].to_numpy() - a)[keep]
    # 4 served at a time, 0.2 s each: a client waits for two rounds ahead of it
    assert np.allclose(e2e, 3 * 0.2)


def test_deterministic_and_seeded():
    raw = _closed_llm(10, 0.1, seed=11)
    a, _ = _run(raw)
    b, _ = _run(raw)
    assert a.equals(b)
    c, _ = _run(_closed_llm(10, 0.1, seed=12))
    assert not np.array_equal(a["prompt_tokens"].to_numpy()[:50], c["prompt_tokens"].to_numpy()[:50])


def test_macro_equals_per_iteration():
    raw = _closed_llm(16, 0.0)
    macro, _ = _run({**raw, "engine_mode": "macro"})
    ref, _ = _run({**raw, "engine_mode": "per_iteration"})
    assert macro.num_rows > 100
    assert same_calls(macro, ref)


def test_calls_that_never_fit_stop_the_run():
    raw = _closed_llm(2)
    raw["workload"]["classes"][0]["prompt_tokens"] = {"kind": "fixed", "value": 200_000}  # > 128k context
    with pytest.raises(ScenarioError, match="every call is dropped"):
        _run(raw)
