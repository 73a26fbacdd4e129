"""The plan's search space: candidates as index tuples into ``plan.space``, the scenario each one
makes, and the two screens that reject a candidate before it is simulated.

* **Memory fit** (:meth:`Space.screen`): every pool of the candidate is resolved as a run would
  resolve it (:func:`sim.cluster.world.resolve_pool`): a model that does not fit its devices
  (weights, activations and at least one KV block), a tp that does not divide the attention
  heads, an invalid combination of keys, ... rejects the candidate with the message a run
  would print.
* **Capacity** (``plan.capacity``): one replica of the pool is measured with
  :func:`sim.tools.estimate.estimate`, once per distinct pool configuration (cached): its
  saturated throughput under a closed loop of ``concurrency`` clients bounds from below the
  replicas the class's arrival rate needs, and its unloaded latency (one client) bounds from
  below every latency the class can see. A candidate with fewer replicas, or whose unloaded
  latency already misses a latency constraint, is pruned.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

from sim.config.scenario import validate
from sim.config.sweep import canonical_json, point_id_of, set_path
from sim.errors import ScenarioError
from sim.plan.spec import PlanSpec

__all__ = ["Candidate", "Space", "mean_length", "scale_load"]


@dataclass(frozen=True)
class Candidate:
    """One configuration: ``index`` into each axis of ``plan.space``, its ``params`` (path ->
    value) and the resolved scenario ``raw`` (no ``sweep`` or ``plan`` key)."""

    index: tuple[int, ...]
    params: dict[str, Any]
    raw: dict

    @property
    def point_id(self) -> str:
        return point_id_of(self.raw)


def mean_length(dist: dict | None) -> float | None:
    """Mean of a scenario length distribution (None where it has no simple closed form)."""
    if not isinstance(dist, dict):
        return None
    kind = dist.get("kind")
    cap = dist.get("max") or math.inf
    if kind == "fixed":
        return float(dist["value"])
    if kind == "uniform":
        return (dist["low"] + dist["high"]) / 2
    if kind == "lognormal":
        return min(cap, dist["median"] * math.exp(dist.get("sigma", 0.0) ** 2 / 2))
    if kind == "exponential":
        return min(cap, dist["mean"])
    if kind == "empirical" and dist.get("values"):
        w = dist.get("weights") or [1.0] * len(dist["values"])
        return sum(v * x for v, x in zip(dist["values"], w)) / sum(w)
    return None


def scale_load(raw: dict, factor: float) -> dict:
    """The scenario with every class's offered load scaled by ``factor``: open arrival rates
    (poisson, gamma, deterministic), schedule ``rate_scale``, closed-loop concurrency (rounded,
    at least 1), trace replay speed (``time_scale`` / factor) and burst sizes."""
    out = copy.deepcopy(raw)
    for cls in out.get("workload", {}).get("classes", []):
        arr = cls.get("arrival", {})
        kind = arr.get("kind")
        if kind in ("poisson", "gamma", "deterministic"):
            arr["rate_per_s"] = arr["rate_per_s"] * factor
        elif kind == "schedule":
            arr["rate_scale"] = arr.get("rate_scale", 1.0) * factor
        elif kind == "closed":
            arr["concurrency"] = max(1, round(arr["concurrency"] * factor))
        elif kind == "trace":
            arr["time_scale"] = arr.get("time_scale", 1.0) / factor
        elif kind == "burst":
            arr["count"] = max(1, round(arr["count"] * factor))
    return out


class Space:
    """Candidates of a plan over a base scenario ``raw`` (read from ``source``)."""

    def __init__(self, raw: dict, spec: PlanSpec, source: str, base_dir: str = ".",
                 capacity_fn: Callable[..., dict] | None = None):
        self.base = {k: v for k, v in raw.items() if k not in ("sweep", "plan")}
        self.spec = spec
        self.source = source
        self.base_dir = base_dir
        self.paths = list(spec.space)
        self.values = [spec.space[p] for p in self.paths]
        self._capacity_fn = capacity_fn
        self._fit: dict[str, str | None] = {}
        self._estimates: dict[str, dict] = {}
        self._check_paths()

    # ------------------------------------------------------------------ candidates
    def _check_paths(self) -> None:
        """Every axis path exists in the scenario (up to its last key): a typo fails the plan at
        once, keyed by ``plan.space.<path>``, instead of making every candidate infeasible."""
        for path, values in zip(self.paths, self.values):
            try:
                set_path(self.base, path, values[0], source=self.source)
            except ScenarioError as e:
                raise ScenarioError(self.source, f"plan.space.{path}", e.message) from None

    def candidate(self, index: tuple[int, ...]) -> Candidate:
        params = {p: vals[i] for p, vals, i in zip(self.paths, self.values, index)}
        raw = self.base
        for path, value in params.items():
            raw = set_path(raw, path, value, source=self.source)
        return Candidate(tuple(index), params, raw)

    def all_indices(self):
        """Every index tuple, last axis fastest (the exhaustive order)."""
        import itertools

        return itertools.product(*(range(len(v)) for v in self.values))

    def scenario(self, raw: dict):
        return validate(raw, self.source, self.base_dir)

    # ------------------------------------------------------------------ screens
    def screen(self, cand: Candidate) -> tuple[str, str] | None:
        """None if the candidate may run; else ``(stage, reason)`` with stage ``infeasible``
        (invalid or does not fit in memory) or ``capacity`` (pruned by the first stage)."""
        key = canonical_json(cand.raw)
        if key not in self._fit:
            self._fit[key] = self._memory_fit(cand.raw)
        if self._fit[key] is not None:
            return "infeasible", self._fit[key]
        if self.spec.capacity is not None:
            reason = self._capacity_check(cand.raw)
            if reason is not None:
                return "capacity", reason
        return None

    def _memory_fit(self, raw: dict) -> str | None:
        from sim.cluster.world import resolve_pool

        try:
            sc = self.scenario(raw)
            for i in range(len(sc.datacenter.pools)):
                resolve_pool(sc, i, self.source)
        except ScenarioError as e:
            if e.message == "unknown key":  # a key the schema does not know: the plan is wrong
                raise
            return f"{e.key_path}: {e.message}" if e.key_path else e.message
        return None

    def _capacity_check(self, raw: dict) -> str | None:
        cap = self.spec.capacity
        pools = {p["name"]: p for p in raw["datacenter"]["pools"]}
        classes = {c["name"]: c for c in raw["workload"]["classes"]}
        pool, cls = pools[cap.pool], classes[cap.class_]
        rate = cls["arrival"].get("rate_per_s")
        est = self.estimate(pool, cls)
        if rate is not None and est["requests_per_s"] > 0:
            need = rate / est["requests_per_s"]
            if pool.get("replicas", 1) < need:
                return (f"{pool.get('replicas', 1)} replicas < {need:.2f} needed: one replica serves at most "
                        f"{est['requests_per_s']:.2f} calls/s ({cap.class_} arrives at {rate:g}/s)")
        for c in self.spec.constraints:
            if c.max is None or (c.class_ not in (None, cap.class_)):
                continue
            for m in ("ttft", "tpot", "e2e"):
                if c.metric.startswith(m + "_p") and int(c.metric.split("_p")[1].split("_")[0]) >= 50:
                    floor = est[f"unloaded_{m}_s"]
                    if floor > c.max:
                        return f"unloaded {m.upper()} {floor:.3g} s already exceeds {c.label} <= {c.max:g}"
        return None

    def estimate(self, pool: dict, cls: dict) -> dict:
        """One replica's saturated throughput and unloaded latency (cached per pool config)."""
        cap = self.spec.capacity
        prompt = cap.prompt_tokens or mean_length(cls.get("prompt_tokens"))
        output = cap.output_tokens or mean_length(cls.get("output_tokens"))
        if prompt is None or output is None:
            raise ScenarioError(self.source, "plan.capacity", f"class {cap.class_!r} has no simple mean prompt / "
                                "output length; give plan.capacity.prompt_tokens and output_tokens")
        batcher = pool.get("batcher", {})
        conc = cap.concurrency or batcher.get("max_num_seqs", 256)  # a full batch: the most it serves
        args = dict(hardware=pool["accelerator"], model=pool["model"], tp=pool.get("tp", 1), pp=pool.get("pp", 1),
                    weight_dtype=pool.get("weight_dtype"), kv_dtype=pool.get("kv_dtype", "bf16"),
                    max_num_seqs=batcher.get("max_num_seqs", 256),
                    max_num_batched_tokens=batcher.get("max_num_batched_tokens", 8192),
                    power_cap_w=pool.get("power_cap_w"), expert_parallel=pool.get("expert_parallel", False),
                    attention_dp=pool.get("attention_dp", False), performance=pool.get("performance"),
                    speculative=pool.get("speculative"))
        key = canonical_json([args, round(prompt), round(output), conc])
        if key not in self._estimates:
            fn = self._capacity_fn or _estimate_replica
            self._estimates[key] = fn(args, round(prompt), round(output), conc)
        return self._estimates[key]


def _estimate_replica(args: dict, prompt: int, output: int, concurrency: int) -> dict:
    """Saturated throughput (``concurrency`` clients) and unloaded latency (one client)."""
    from sim.tools.estimate import estimate

    busy = estimate(concurrency=concurrency, prompt_tokens=prompt, output_tokens=output, **args)
    idle = estimate(concurrency=1, prompt_tokens=prompt, output_tokens=output, **args)
    return {"requests_per_s": busy["requests_per_s"], "unloaded_ttft_s": idle["ttft_p50_s"],
            "unloaded_tpot_s": idle["tpot_p50_s"], "unloaded_e2e_s": idle["e2e_p50_s"]}

