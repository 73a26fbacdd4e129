"""Workload samplers and routers on their own."""

import math

from types import SimpleNamespace

import numpy as np
import pytest

from sim import config as C
from sim.rng import stream
from sim.cluster.router import ROUTERS
from sim.workloads.arrivals import LengthSampler, _gaps, load_trace


def _length(d: dict) -> LengthSampler:
    dist = C.WorkloadClass.model_validate({"name": "x", "pool": "p", "arrival": {"kind": "poisson", "rate_per_s": 1},
                                           "prompt_tokens": d, "output_tokens": d}).prompt_tokens
    return LengthSampler(dist, stream(1, 0, "t"), None, "k")


@pytest.mark.parametrize("d", [
    {"kind": "fixed", "value": 77},
    {"kind": "uniform", "low": 10, "high": 30},
    {"kind": "lognormal", "median": 300, "sigma": 0.5},
    {"kind": "exponential", "mean": 50},
    {"kind": "empirical", "values": [10, 100, 1000], "weights": [0.5, 0.3, 0.2]},
])
def test_length_means(d):
    s = _length(d)
    x = s.sample(200_000)
    assert x.min() >= 1 and x.dtype.kind == "i"
    assert x.mean() == pytest.approx(s.mean, rel=0.01)


def test_lognormal_clipping():
    x = _length({"kind": "lognormal", "median": 1000, "sigma": 2.0, "min": 5, "max": 3000}).sample(10_000)
    assert x.min() >= 5 and x.max() <= 3000


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_interarrival_rate_and_cv(cv):
    g = _gaps(C.GammaArrivals(kind="gamma", rate_per_s=4.0, cv=cv), stream(3, 0, "a"), 400_000)
    assert g.mean() == pytest.approx(0.25, rel=0.01)
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.03)


def test_trace_replay_parses_datetimes_and_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6805900,374,44\n"
                 "2023-11-16 18:15:50.9951690,396,109\n"
                 "2023-11-16 18:15:47.0000000,879,0\n")
    arr = C.TraceArrivals(kind="trace", path="t.csv", time_column="TIMESTAMP", prompt_column="ContextTokens",
                          output_column="GeneratedTokens", time_scale=0.5)
    t, prompt, out = load_trace(arr, tmp_path, "k")
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    assert t[-1] == pytest.approx((50.995169 - 46.68059) * 0.5, abs=1e-6)
    assert list(prompt) == [374, 879, 396] and list(out) == [44, 1, 109]  # sorted by time; zero outputs -> 1


class _Rep:
    env = SimpleNamespace(now=0.0)

    def __init__(self, i, outstanding=0, kv=0.0):
        self.index_in_pool = i
        self.outstanding = outstanding
        self._kv = kv

    def kv_load(self, t):
        return self._kv


class _Call:
    arrival_s = 0.0


def test_round_robin_and_random_spread():
    reps = [_Rep(i) for i in range(4)]
    rr = ROUTERS["round_robin"](reps, stream(1, 0, "r"), None)
    assert [rr.pick(_Call()).index_in_pool for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    rnd = ROUTERS["random"](reps, stream(1, 0, "r"), None)
    counts = np.bincount([rnd.pick(_Call()).index_in_pool for _ in range(40_000)], minlength=4)
    assert np.all(np.abs(counts / 40_000 - 0.25) < 0.01)


def test_jsq_and_least_kv_pick_the_least_loaded():
    reps = [_Rep(0, 5, 0.9), _Rep(1, 2, 0.1), _Rep(2, 3, 0.05)]
    assert ROUTERS["jsq"](reps, None, None).pick(_Call()).index_in_pool == 1
    assert ROUTERS["least_kv"](reps, None, None).pick(_Call()).index_in_pool == 2


def test_power_of_two_choices_never_picks_the_busier_of_its_pair():
    reps = [_Rep(0, 5, 0.9), _Rep(1, 2, 0.1), _Rep(2, 3, 0.05)]
    p2c = ROUTERS["p2c"](reps, stream(3, 0, "r"), None)
    picks = np.bincount([p2c.pick(_Call()).index_in_pool for _ in range(3000)], minlength=3)
    # pairs {0,1}, {0,2}, {1,2} equally likely: replica 1 wins two of them, replica 2 one
    assert picks[0] == 0 and abs(picks[1] / 3000 - 2 / 3) < 0.03


def test_power_of_two_choices_cuts_queueing_like_the_supermarket_model(tmp_path):
    """Eight single servers at 90% load: random routing queues as eight M/M/1s (mean wait
    9 service times); two choices cut it to a fraction (Mitzenmacher's supermarket model),
    close to join-shortest-queue."""
    import copy

    import pyarrow.parquet as pq

    from scenarios import single_server
    from sim.config import validate
    from sim.run import run_point

    waits = {}
    for kind in ("random", "p2c", "jsq"):
        raw = single_server({"kind": "exponential", "mean": 10}, rate_per_s=8 * 0.9 / (10 * 0.01), iteration_s=0.01,
                            duration_s=400.0, seed=5, warmup_s=50.0)
        raw = copy.deepcopy(raw)
        raw["datacenter"]["pools"][0].update(replicas=8, router={"kind": kind})
        run_point(validate(raw), str(tmp_path / kind), "p")
        c = pq.read_table(tmp_path / kind / "calls" / "point_id=p" / "part-0.parquet")
        a = c["arrival_s"].to_numpy()
        w = (c["admitted_s"].to_numpy() - a)[a > 50.0]
        waits[kind] = float(np.nanmean(w)) / (10 * 0.01)  # in mean service times
    assert waits["random"] > 5  # M/M/1 at 0.9: 9
    assert waits["p2c"] < 0.4 * waits["random"] and waits["jsq"] <= waits["p2c"]
