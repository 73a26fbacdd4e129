"""The shortest-expected-work router (docs/extending.md's example of a new router)."""

from collections import deque
from types import SimpleNamespace

from sim.cluster.router import ROUTERS, LeastWork
from sim.config import LeastWorkRouter
from sim.engine.call import Call
from sim.run import run_point
from sim.config import validate
from scenarios import llm_scenario


def replica(i: int, running=(), waiting=()):
    return SimpleNamespace(index_in_pool=i, running=list(running), waiting=deque(waiting),
                           outstanding=len(running) + len(waiting))


def call(prompt: int, computed: int = 0, generated: int = 0) -> Call:
    c = Call(0, "chat", "p", 0.0, prompt, 500)
    c.computed, c.generated = computed, generated
    return c


def test_counts_prompt_left_and_expected_output_left():
    router = LeastWork([], None, LeastWorkRouter(kind="least_work", expected_output_tokens=100))
    r = replica(0, running=[call(1000, computed=400), call(50, computed=80, generated=31)], waiting=[call(300)])
    # 600 prompt tokens left + 100 expected; 0 + (100 - 31); 300 + 100
    assert router.work(r) == 700 + 69 + 400
    # a call past its expected length still counts one token
    assert router.work(replica(1, running=[call(10, computed=500, generated=490)])) == 1


def test_sends_a_call_away_from_a_replica_prefilling_a_long_prompt():
    busy = replica(0, running=[call(30_000, computed=2_000)])
    two_short = replica(1, running=[call(200, computed=200, generated=5), call(100, computed=100, generated=9)])
    router = LeastWork([busy, two_short], None, LeastWorkRouter(kind="least_work"))
    assert router.pick(call(500)) is two_short  # more calls, far less work
    assert ROUTERS["jsq"]([busy, two_short], None, None).pick(call(500)) is busy  # what JSQ does


def test_runs_a_pool_end_to_end(tmp_path):
    raw = llm_scenario(duration_s=10.0)
    raw["datacenter"]["pools"][0]["router"] = {"kind": "least_work", "expected_output_tokens": 300}
    s = run_point(validate(raw), str(tmp_path), "p")
    assert s["calls_created"] > 30 and s["calls_finished"] == s["calls_created"]
