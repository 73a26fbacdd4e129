"""The engine configured as a single server reproduces closed-form queueing results.

Batch size 1 (max_num_seqs=1), one prompt token and a fixed time per iteration
make a call's service time S = (output tokens) x iteration_s exactly, so the
replica is an M/G/1 queue and the Pollaczek-Khinchine formula gives the mean
wait Wq = lambda E[S^2] / (2 (1 - rho)). Exponential output lengths are the
ceiling of an exponential (geometric), within 0.05% of exponential in the
second moment at a 1000-token mean: M/M/1. Fixed output lengths give M/D/1.
The tolerance is a 99% confidence interval over independent replications.
"""

import math

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy_free_t import t_quantile

from scenarios import single_server
from sim.config import validate
from sim.run import run_point

ITER_S = 0.001


def _mean_waits(tokens: dict, rate: float, reps: int, tmp_path) -> np.ndarray:
    means = []
    for rep in range(reps):
        raw = single_server(tokens, rate, ITER_S, duration_s=3000.0, seed=1000 + rep, warmup_s=300.0)
        sc = validate(raw)
        out = tmp_path / f"r{rep}"
        run_point(sc, str(out), "p")
        calls = pq.read_table(out / "calls" / "point_id=p" / "part-0.parquet")
        a = calls["arrival_s"].to_numpy()
        keep = (a >= raw["warmup_s"]) & (a < raw["duration_s"])
        wait = calls["admitted_s"].to_numpy()[keep] - a[keep]
        assert pc.all(pc.equal(calls["status"], "finished")).as_py()
        means.append(wait.mean())
    return np.array(means)


def _check(means: np.ndarray, expected: float) -> None:
    n = len(means)
    half = t_quantile(0.995, n - 1) * means.std(ddof=1) / math.sqrt(n)
    assert abs(means.mean() - expected) <= half, (means.mean(), expected, half)
    # and the interval is tight enough to mean something
    assert half < 0.15 * expected


def test_mm1_mean_wait(tmp_path):
    mean_tokens = 1000.0
    p = 1 - math.exp(-1 / mean_tokens)  # ceil(Exp(m)) is geometric(p) on 1, 2, ...
    es = ITER_S / p
    es2 = ITER_S**2 * (2 - p) / p**2
    rate = 0.6 / es
    rho = rate * es
    expected = rate * es2 / (2 * (1 - rho))
    mm1 = rho / (1 / es - rate)  # the M/M/1 closed form, for reference
    assert abs(expected - mm1) / mm1 < 1e-3
    means = _mean_waits({"kind": "exponential", "mean": mean_tokens}, rate, 12, tmp_path)
    _check(means, expected)


def test_md1_mean_wait(tmp_path):
    es = 1000 * ITER_S
    rate = 0.6 / es
    rho = rate * es
    expected = rho * es / (2 * (1 - rho))
    means = _mean_waits({"kind": "fixed", "value": 1000}, rate, 12, tmp_path)
    _check(means, expected)
