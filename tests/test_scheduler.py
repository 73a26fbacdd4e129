"""The batcher's decision and the planner's run pricing, without SimPy: pure functions of the
running calls, the queue and the KV pool, checked against what vLLM's scheduler does."""

from collections import deque

import numpy as np
import pytest

from sim.engine.call import Call
from sim.engine.kvcache import KvPool
from sim.engine.plan import Planner, run_need
from sim.engine.scheduler import BATCHERS, BatcherParams, ContinuousScheduler, PrefillFirstScheduler
from sim.hardware import catalog
from sim.models.perf import Batch, RooflineModel
from sim.models.power import PowerModel

BS = 16


def running_call(i: int, prompt: int, generated: int, output: int, kv: KvPool) -> Call:
    """A call decoding: its prompt and ``generated - 1`` output tokens are in the cache."""
    c = Call(i, "chat", "p", 0.0, prompt, output)
    c.generated = generated
    c.computed = prompt + generated - 1
    c.blocks = -(-c.computed // BS)
    kv.take(c.blocks)
    return c


def waiting_call(i: int, prompt: int, output: int = 100) -> Call:
    return Call(i, "chat", "p", 0.0, prompt, output)


def snapshot(running, waiting, kv):
    return ([(c.computed, c.generated, c.blocks) for c in running], [c.call_id for c in waiting], kv.used(),
            kv.allocatable())


def test_registry_names_the_scenario_kinds():
    assert BATCHERS == {"continuous": ContinuousScheduler, "prefill_first": PrefillFirstScheduler}


def test_chunked_prefill_fills_the_token_budget_and_mixes_with_decodes():
    kv = KvPool(1000, BS)
    running = [running_call(0, 500, 10, 100, kv), running_call(1, 300, 3, 100, kv)]
    waiting = deque([waiting_call(2, 3000), waiting_call(3, 100)])
    s = ContinuousScheduler(BatcherParams(2048, 8), BS)
    before = snapshot(running, waiting, kv)
    d = s.decide(running, waiting, kv, 0)
    # each decode takes one token of the budget; the first prompt takes the rest as a chunk
    assert [(c.call_id, n) for c, n in d.work] == [(0, 1), (1, 1)]
    assert [(c.call_id, n) for c, n in d.admit] == [(2, 2046)]
    assert d.preempt == [] and d.keep == 2 and d.decoding  # (the running calls only decode)
    assert snapshot(running, waiting, kv) == before  # nothing changed: a decision is pure


def test_prefill_first_never_mixes_and_runs_an_oversized_prompt_alone():
    kv = KvPool(1000, BS)
    running = [running_call(0, 500, 10, 100, kv)]
    waiting = deque([waiting_call(2, 3000), waiting_call(3, 100)])
    d = PrefillFirstScheduler(BatcherParams(2048, 8), BS).decide(running, waiting, kv, 0)
    assert d.work == []  # the queue's head fits: this iteration only prefills
    assert [(c.call_id, n) for c, n in d.admit] == [(2, 3000)]  # whole prompts; one over the budget alone
    # with the queue's head too big for the pool, the running calls decode instead
    kv2 = KvPool(40, BS)
    running2 = [running_call(0, 500, 10, 100, kv2)]
    d2 = PrefillFirstScheduler(BatcherParams(2048, 8), BS).decide(running2, deque([waiting_call(2, 3000)]), kv2, 0)
    assert [(c.call_id, n) for c, n in d2.work] == [(0, 1)] and d2.admit == [] and d2.decoding


def test_newest_running_call_is_preempted_when_the_pool_runs_out():
    kv = KvPool(3, BS)
    # each sits at a block boundary: its next token needs a new block, and none is free
    running = [running_call(0, 16, 1, 50, kv), running_call(1, 16, 1, 50, kv), running_call(2, 16, 1, 50, kv)]
    running[0].computed = running[1].computed = running[2].computed = 16
    assert kv.allocatable() == 0
    d = ContinuousScheduler(BatcherParams(2048, 8), BS).decide(running, deque(), kv, 0)
    # preempting the newest frees its block for the oldest; the middle one then needs one too
    assert [c.call_id for c in d.preempt] == [2, 1] and d.keep == 1
    assert [(c.call_id, n) for c, n in d.work] == [(0, 1)]
    assert d.admit == []  # nothing is admitted in an iteration that preempts


def test_priority_scheduling_preempts_a_lower_priority_call_for_the_head():
    kv = KvPool(1000, BS)
    low = running_call(0, 500, 10, 100, kv)
    low.priority = 0
    head = waiting_call(1, 200)
    head.priority = 5
    d = ContinuousScheduler(BatcherParams(2048, 1, priority=True), BS).decide([low], deque([head]), kv, 0)
    assert d.preempt == [low] and d.keep == 0 and d.work == []


def _planner(max_run: int) -> Planner:
    acc, model = catalog.accelerator("h100-sxm"), catalog.model("llama-3.1-8b")
    return Planner(RooflineModel(model, acc), PowerModel(acc, acc.peak_flops("bf16")), 1, BS, max_run)


def test_decode_run_lasts_until_the_shortest_call_finishes_and_prices_each_iteration():
    kv = KvPool(10_000, BS)
    running = [running_call(0, 500, 10, 40, kv), running_call(1, 300, 3, 100, kv)]
    d = ContinuousScheduler(BatcherParams(2048, 8), BS).decide(running, deque(), kv, 0)
    planner = _planner(1 << 15)
    plan = planner.plan(12.5, d, running, True, kv, 0)
    assert plan.steady and plan.k == 30  # call 0 has 30 output tokens left
    assert plan.bounds[0] == 12.5 and np.all(np.diff(plan.bounds) > 0)
    # each iteration priced alone: two decodes reading the growing contexts (S + 2 i KV tokens)
    s = sum(c.computed for c in running) + 2
    for i in (0, 7, 29):
        ctx = np.array([float(s + 2 * i)])
        cost, _ = planner.power.under_cap(planner.perf.cost(Batch(2, 2, 2, ctx, ctx)))
        assert plan.bounds[i + 1] - plan.bounds[i] == pytest.approx(float(cost.time_s[0]), rel=1e-12)
    # the reference mode plans one iteration of the same decision
    assert _planner(1).plan(12.5, d, running, True, kv, 0).k == 1


def test_decode_run_stops_where_the_kv_pool_runs_out():
    kv = KvPool(1000, BS)
    running = [running_call(0, 16 * 10, 1, 500, kv), running_call(1, 16 * 20, 1, 500, kv)]
    running[0].computed, running[1].computed = 160, 320  # both at a block boundary
    kv.take(kv.allocatable() - 5)  # 5 blocks left for growth
    d = ContinuousScheduler(BatcherParams(2048, 8), BS).decide(running, deque(), kv, 0)
    plan = _planner(1 << 15).plan(0.0, d, running, True, kv, 0)
    computed = np.array([160, 320])
    assert run_need(BS, computed, plan.k) <= 5 < run_need(BS, computed, plan.k + 1)
    assert plan.kv_need == run_need(BS, computed, plan.k)
