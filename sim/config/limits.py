"""How big a run may be: the expected size of a validated scenario, checked against bounds.

The schema refuses values that are wrong in themselves (negative, infinite, NaN); this module
refuses scenarios that are valid but would not finish, or not fit in memory: a rate of 1e9 calls
per second, a simulated day of a million replicas, an autoscaler that ticks every nanosecond, a
sweep of ten million points. The estimate is pure arithmetic on the scenario (no SimPy, no
hardware, no files), so it runs up front, before anything is written:

* ``calls``: per workload class, the rate times the class's window (``start_s`` to ``stop_s`` or
  ``duration_s``), a burst's ``count``, or a closed loop's clients times the window over
  ``think_s + 0.1 s`` (a client sends at most about one call per think time plus a short call);
  times the calls of one job (samples, revisions, beam candidates) or one session (mean turns);
* ``at_once``: calls created at one instant (a burst, a closed loop's clients, one job's samples);
* ``events``: control-loop ticks (``autoscale.interval_s``) and replica failures (``mtbf_s``) over
  the run;
* ``replicas`` over all pools; ``duration_s`` and ``drain_s``; sweep points (counted before they are
  expanded); and the size of every file a scenario names (sim.config.files).

Each bound is an environment variable (a number; ``1e9`` is fine), for a user who means it: e.g.
``DCSIM_MAX_CALLS=1e9`` in the environment of the process that runs a big scenario.

A trace replayed with ``loop: true`` is counted where the replay reads it, against the same
``DCSIM_MAX_CALLS``.
"""

from __future__ import annotations

import math
import os
from typing import Any

from sim.errors import ScenarioError

__all__ = ["LIMITS", "env_limit", "check_scenario", "check_points", "expected_calls", "limit_message"]

# name -> (default, what it bounds)
LIMITS: dict[str, tuple[float, str]] = {
    "max_calls": (1e8, "expected calls of one run (all classes, jobs' and sessions' calls included)"),
    "max_at_once": (1e6, "calls created at one instant (burst count, closed-loop clients, samples of one job)"),
    "max_events": (1e8, "control-loop ticks and replica failures of one run"),
    "max_replicas": (1e5, "replicas over all pools"),
    "max_duration_s": (3.2e7, "simulated seconds of duration_s and of drain_s (about a year)"),
    "max_points": (1e5, "points of one sweep"),
    "max_file_mb": (1024, "size of a file a scenario names (trace, CSV table, profile), MiB"),
}

# a closed-loop client's shortest cycle assumed by the estimate: think time plus a short call
CLOSED_CALL_S = 0.1


def env_var(name: str) -> str:
    return "DCSIM_" + name.upper()


def env_limit(name: str) -> float:
    """The bound ``name`` of :data:`LIMITS`, from ``DCSIM_<NAME>`` if set."""
    default, _ = LIMITS[name]
    text = os.environ.get(env_var(name))
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ScenarioError("", env_var(name), "must be a positive number")
    return value


def limit_message(size: float, what: str, name: str) -> str:
    """``"<what> is about 1.2e+10, above the limit of 1e+08 (set DCSIM_X to raise it)"``."""
    return f"{what} is about {size:.3g}, above the limit of {env_limit(name):.3g} (set {env_var(name)} to raise it)"


def _over(size: float, name: str) -> bool:
    return not size <= env_limit(name)  # NaN counts as over


def mean_length(dist: Any) -> float:
    """Mean of a length distribution of sim.config.distributions (1 where it comes from a file,
    which is bounded by its size instead)."""
    kind = getattr(dist, "kind", None)
    if kind == "fixed":
        return float(dist.value)
    if kind == "uniform":
        return (dist.low + dist.high) / 2
    if kind == "lognormal":
        m = dist.median * math.exp(min(dist.sigma, 10.0) ** 2 / 2)
        return min(m, dist.max) if dist.max else m
    if kind == "exponential":
        return min(dist.mean, dist.max) if dist.max else dist.mean
    if kind == "empirical" and dist.values:
        if dist.weights:
            return sum(v * w for v, w in zip(dist.values, dist.weights)) / sum(dist.weights)
        return sum(dist.values) / len(dist.values)
    return 1.0


def _strategy_calls(s: Any) -> tuple[float, float]:
    """(calls of one job, calls it starts at once) for a strategy of sim.config.jobs."""
    kind = s.kind
    if kind == "adaptive":
        sizes = [_strategy_calls(p) for p in s.policies.values()]
        return max(c for c, _ in sizes), max(a for _, a in sizes)
    if kind == "best_of_n":
        return s.n + 1.0, float(s.n)
    if kind == "self_consistency":
        return float(s.n), float(s.n)
    if kind == "revision":
        return s.rounds + 1.0, 1.0
    if kind == "beam_search":
        per_depth = float(s.width) * s.expansions
        return s.depth * per_depth * 2.0, per_depth
    return 1.0, 1.0


def _class_calls(c: Any, duration_s: float) -> tuple[float, float, str]:
    """(expected calls, calls at one instant, key to blame) of one workload class."""
    key = f"workload.classes.{c.name}"
    stop = min(duration_s, c.stop_s) if c.stop_s is not None else duration_s
    window = max(0.0, stop - c.start_s)
    a = c.arrival
    at_once, blame = 1.0, f"{key}.arrival"
    if a.kind in ("poisson", "deterministic", "gamma"):
        n, blame = a.rate_per_s * window, f"{key}.arrival.rate_per_s"
    elif a.kind == "schedule" and a.rates_per_s is not None:
        n, blame = max(a.rates_per_s) * a.rate_scale * window, f"{key}.arrival.rates_per_s"
    elif a.kind == "burst":
        n = at_once = float(a.count)
        blame = f"{key}.arrival.count"
    elif a.kind == "closed":
        at_once = float(a.concurrency)
        n, blame = a.concurrency * window / (a.think_s + CLOSED_CALL_S), f"{key}.arrival.concurrency"
    else:  # a trace (counted where it is read) or a schedule from a file (rates bounded there)
        n = 0.0
    per_item = 1.0
    if c.job is not None:
        per_item, fan = _strategy_calls(c.job.strategy)
        at_once *= fan
        if fan > 1:
            blame = f"{key}.job.strategy"
    elif c.session is not None and c.session.turns is not None:
        per_item = mean_length(c.session.turns)
        if per_item > 1e3:
            blame = f"{key}.session.turns"
    return n * per_item, at_once, blame


def expected_calls(scenario: Any) -> list[tuple[str, float, float]]:
    """(key to blame, expected calls, calls at one instant) per workload class."""
    out = []
    for c in scenario.workload.classes:
        n, at_once, blame = _class_calls(c, scenario.duration_s)
        out.append((blame, n, at_once))
    return out


def check_scenario(scenario: Any, source: str) -> None:
    """Raise ScenarioError (naming ``source``, the key and the bound) if the validated
    ``scenario`` is beyond any bound of :data:`LIMITS`."""
    for key in ("duration_s", "drain_s"):
        value = getattr(scenario, key)
        if _over(value, "max_duration_s"):
            raise ScenarioError(source, key, limit_message(value, f"{key} ({value:g} s)", "max_duration_s"))
    pools = scenario.datacenter.pools
    replicas = sum(p.replicas for p in pools)
    if _over(replicas, "max_replicas"):
        blame = max(pools, key=lambda p: p.replicas)
        raise ScenarioError(source, f"datacenter.pools.{blame.name}.replicas",
                            limit_message(replicas, "the number of replicas", "max_replicas"))
    per_class = expected_calls(scenario)
    for blame, _, at_once in per_class:
        if _over(at_once, "max_at_once"):
            raise ScenarioError(source, blame, limit_message(at_once, "calls created at one instant", "max_at_once"))
    total = sum(n for _, n, _ in per_class)
    if _over(total, "max_calls"):
        blame = max(per_class, key=lambda x: x[1] if x[1] == x[1] else math.inf)[0]
        raise ScenarioError(source, blame, limit_message(total, f"the run's expected calls over duration_s "
                                                                f"{scenario.duration_s:g} s", "max_calls"))
    horizon = scenario.duration_s + scenario.drain_s
    events, blame = 0.0, ""
    for p in pools:
        key = f"datacenter.pools.{p.name}"
        parts = []
        if p.autoscale is not None:
            parts.append((horizon / p.autoscale.interval_s, f"{key}.autoscale.interval_s"))
        if p.faults is not None:
            parts.append((2.0 * p.replicas * horizon / p.faults.mtbf_s, f"{key}.faults.mtbf_s"))
        for n, k in parts:
            if not blame or n > events:
                blame = k
            events += n
    if _over(events, "max_events"):
        raise ScenarioError(source, blame, limit_message(events, "the run's control-loop ticks and failures", "max_events"))


def check_points(n: float, source: str, key: str = "sweep") -> None:
    """ScenarioError if a sweep of ``n`` points is beyond ``DCSIM_MAX_POINTS``."""
    if _over(n, "max_points"):
        raise ScenarioError(source, key, limit_message(n, "the number of sweep points", "max_points"))
