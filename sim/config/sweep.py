"""The ``sweep:`` section of a scenario and its expansion into points.

A sweep varies scenario keys addressed by dotted path (see :func:`set_path`)::

    sweep:
      grid:                       # full cross product, last axis varies fastest
        workload.classes.chat.arrival.rate_per_s: [1, 2, 4]
        datacenter.pools.main.replicas: [1, 2]
      zip:                        # equal-length lists varied together (one axis)
        a.b: [1, 2]
        c.d: [3, 4]
      random:                     # `samples` draws, one axis
        samples: 8
        seed: 7
        params:
          x.y: {uniform: [0.1, 0.9]}
          z: {loguniform: [1, 100]}
          n: {randint: [1, 8]}    # inclusive bounds
          w: {choice: [a, b]}
      replications: 3             # run = base run + 0..2 on every point

The axes are crossed in the order grid x zip x random x replications. Each point gets
``point_id = "p" + sha256(canonical JSON of its resolved scenario)[:12]``: stable across
machines and runs, independent of key order, and never parsed as a number by hive
partitioning readers.

Repeated random draws (likely with randint or choice) are dropped, the first kept.

Random draws use one ``numpy.random.Generator`` per parameter, seeded from
``SeedSequence([seed, crc32(path)])``, so adding a parameter does not change the values
drawn for the others.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from sim.config.limits import check_points
from sim.errors import ScenarioError

__all__ = ["Distribution", "RandomSpec", "SweepSpec", "Point", "set_path", "get_path", "expand", "point_id_of"]

# randint draws int64 values (numpy's Generator.integers)
RANDINT_BOUND = 2**62
_PATH_TOKEN = re.compile(r"^([^.\[\]]+)((?:\[\d+\])*)$")


def _check_path(path: str) -> str:
    if not isinstance(path, str) or not path:
        raise ValueError("a swept key must be a non-empty dotted path")
    if path == "sweep" or path.startswith(("sweep.", "sweep[")):
        raise ValueError(f"{path!r}: the sweep section cannot sweep itself")
    _split_path(path)  # raises ValueError on bad syntax
    return path


class Distribution(BaseModel):
    """One random parameter: exactly one of the four kinds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: tuple[Any, ...] | None = None

    @field_validator("uniform", "loguniform", "randint", mode="before")
    @classmethod
    def _no_bools(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and any(isinstance(x, bool) for x in v):
            raise ValueError("bounds must be numbers, not true/false")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        set_kinds = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None]
        if len(set_kinds) != 1:
            raise ValueError("give exactly one of uniform: [lo, hi], loguniform: [lo, hi], randint: [lo, hi], choice: [...]")
        kind = set_kinds[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice needs at least one value")
            return self
        lo, hi = getattr(self, kind)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ValueError(f"{kind}: need finite bounds with lo <= hi, got [{lo}, {hi}]")
        if kind == "loguniform" and lo <= 0:
            raise ValueError(f"loguniform: bounds must be > 0, got [{lo}, {hi}]")
        if kind == "randint" and max(abs(lo), abs(hi)) > RANDINT_BOUND:
            raise ValueError(f"randint: bounds must lie within +-2**62, got [{lo:.3g}, {hi:.3g}]")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None)

    def draw(self, rng: np.random.Generator, n: int) -> list[Any]:
        """``n`` values as plain Python scalars (so they serialise to YAML/JSON unchanged)."""
        kind = self.kind
        if kind == "uniform":
            lo, hi = self.uniform
            return [float(v) for v in rng.uniform(lo, hi, n)]
        if kind == "loguniform":
            lo, hi = self.loguniform
            return [float(math.exp(v)) for v in rng.uniform(math.log(lo), math.log(hi), n)]
        if kind == "randint":
            lo, hi = self.randint
            return [int(v) for v in rng.integers(lo, hi, n, endpoint=True)]
        idx = rng.integers(0, len(self.choice), n)
        return [copy.deepcopy(self.choice[i]) for i in idx]


class RandomSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    samples: Annotated[int, Strict()] = Field(ge=1)
    seed: Annotated[int, Strict()] = Field(default=0, ge=0, le=2**63 - 1)
    params: dict[str, Distribution] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _paths(cls, v: dict[str, Distribution]) -> dict[str, Distribution]:
        for path in v:
            _check_path(path)
        return v


class SweepSpec(BaseModel):
    """The ``sweep:`` section. Every field is optional; an empty sweep is one point."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    zip: dict[str, list[Any]] = Field(default_factory=dict)
    random: RandomSpec | None = None
    replications: Annotated[int, Strict()] = Field(default=1, ge=1)

    @field_validator("grid", "zip")
    @classmethod
    def _axes(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            _check_path(path)
            if len(values) == 0:
                raise ValueError(f"{path!r}: needs at least one value")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        lengths = {len(vals) for vals in self.zip.values()}
        if len(lengths) > 1:
            detail = ", ".join(f"{p}: {len(v)}" for p, v in self.zip.items())
            raise ValueError(f"zip: all lists must have the same length ({detail})")
        seen: dict[str, str] = {}
        axes = [("grid", self.grid), ("zip", self.zip), ("random", self.random.params if self.random else {})]
        for axis, params in axes:
            for path in params:
                if path in seen:
                    raise ValueError(f"{path!r} is swept twice ({seen[path]} and {axis})")
                seen[path] = axis
        if "run" in seen and self.replications > 1:
            raise ValueError("'run' is swept explicitly and by replications; use one of them")
        return self

    def swept_paths(self) -> list[str]:
        """Dotted paths of every swept parameter, in point-table column order."""
        paths = list(self.grid) + list(self.zip) + (list(self.random.params) if self.random else [])
        return paths

    def size(self) -> int:
        n = math.prod(len(v) for v in self.grid.values())
        if self.zip:
            n *= len(next(iter(self.zip.values())))
        if self.random:
            n *= self.random.samples
        return n * self.replications


@dataclass(frozen=True)
class Point:
    """One resolved point of a sweep.

    ``params`` maps each swept dotted path (and ``run``) to its value; ``raw`` is the
    resolved scenario dict, without the ``sweep`` key, ready for ``sim.config.scenario.validate``.
    """

    point_id: str
    params: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)
    index: int = 0


# --- dotted paths -----------------------------------------------------------------------


def _split_path(path: str) -> list[str | int]:
    """``"a.pools[0].b"`` -> ``["a", "pools", 0, "b"]``; names stay strings."""
    tokens: list[str | int] = []
    for part in path.split("."):
        m = _PATH_TOKEN.match(part)
        if not m:
            raise ValueError(f"{path!r}: bad dotted path near {part!r}")
        tokens.append(m.group(1))
        tokens.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tokens


def _step(node: Any, token: str | int, path: str, done: str, source: str, *, last: bool) -> tuple[Any, Any]:
    """Resolve one token under ``node``: returns (container, key) with container[key] valid."""
    if isinstance(node, dict):
        if isinstance(token, int):
            raise ScenarioError(source, path, f"{done or '<root>'} is a mapping, not a list (index [{token}])")
        if token not in node and not last:
            known = ", ".join(sorted(map(str, node))) or "none"
            raise ScenarioError(source, path, f"unknown key {token!r} under {done or '<root>'} (known: {known})")
        return node, token
    if isinstance(node, list):
        if isinstance(token, int) or token.isdigit():
            i = int(token)
            if not 0 <= i < len(node):
                raise ScenarioError(source, path, f"index {i} out of range under {done} ({len(node)} elements)")
            return node, i
        for i, elem in enumerate(node):
            if isinstance(elem, dict) and elem.get("name") == token:
                return node, i
        names = [e.get("name") for e in node if isinstance(e, dict) and "name" in e]
        raise ScenarioError(source, path, f"no element named {token!r} in {done} (names: {', '.join(map(str, names)) or 'none'})")
    raise ScenarioError(source, path, f"{done} is a {type(node).__name__}, not a mapping or list")


def set_path(raw: dict, path: str, value: Any, *, source: str = "") -> dict:
    """Return a deep copy of ``raw`` with the key at dotted ``path`` set to ``value``.

    Path syntax: ``a.b.c``; list elements by index ``pools[0].replicas`` (or ``pools.0``)
    or by their ``name`` field ``pools.main.replicas``. Every intermediate key must exist
    (ScenarioError naming the path otherwise); the last key may be new (the schema then
    decides whether it is allowed).
    """
    try:
        tokens = _split_path(path)
    except ValueError as e:
        raise ScenarioError(source, path, str(e)) from None
    out = copy.deepcopy(raw)
    node: Any = out
    done = ""
    for k, token in enumerate(tokens):
        last = k == len(tokens) - 1
        container, key = _step(node, token, path, done, source, last=last)
        if last:
            container[key] = copy.deepcopy(value)
        else:
            node = container[key]
            done = f"{done}[{key}]" if isinstance(key, int) else (f"{done}.{key}" if done else str(key))
    return out


def get_path(raw: dict, path: str, *, source: str = "") -> Any:
    """The value at dotted ``path`` (same syntax as :func:`set_path`); ScenarioError if absent."""
    try:
        tokens = _split_path(path)
    except ValueError as e:
        raise ScenarioError(source, path, str(e)) from None
    node: Any = raw
    done = ""
    for token in tokens:
        container, key = _step(node, token, path, done, source, last=False)
        node = container[key]
        done = f"{done}[{key}]" if isinstance(key, int) else (f"{done}.{key}" if done else str(key))
    return node


# --- expansion ----------------------------------------------------------------------------


def canonical_json(raw: Any) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def point_id_of(resolved: dict) -> str:
    """``"p"`` + the first 12 hex digits of sha256 of the canonical JSON of ``resolved``."""
    return "p" + hashlib.sha256(canonical_json(resolved).encode("utf-8")).hexdigest()[:12]


def parse_spec(raw_sweep: Any, source: str = "") -> SweepSpec:
    """Validate a ``sweep:`` mapping (or pass a SweepSpec through); ScenarioError if bad."""
    if isinstance(raw_sweep, SweepSpec):
        return raw_sweep
    if raw_sweep is None:
        return SweepSpec()
    try:
        return SweepSpec.model_validate(raw_sweep)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in ("sweep", *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and err["type"] not in ("value_error", "missing"):
            shown = repr(err["input"])
            msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:60] + '...'})"
        raise ScenarioError(source, loc, msg) from None


def _random_rows(spec: RandomSpec) -> list[dict[str, Any]]:
    columns = {}
    for path, dist in spec.params.items():
        ss = np.random.SeedSequence([spec.seed, zlib.crc32(path.encode("utf-8"))])
        columns[path] = dist.draw(np.random.default_rng(ss), spec.samples)
    return [{p: columns[p][i] for p in spec.params} for i in range(spec.samples)]


def expand(raw: dict, source: str = "") -> list[Point]:
    """Expand a raw scenario dict (with an optional ``sweep`` key) into its points.

    Order: grid (itertools.product in the order written, last axis fastest), then zip
    rows, then random samples, then replications. Each point's ``params`` holds every
    swept path and ``run`` (base ``run`` of the scenario, default 0, plus the
    replication index); ``raw`` is the scenario with those values set and no ``sweep``.
    A scenario without ``sweep`` is one point. Two points that resolve to the same
    scenario are an error, except that repeated random draws are dropped (first kept).
    """
    if not isinstance(raw, dict):
        raise ScenarioError(source, "", "a scenario must be a mapping")
    spec = parse_spec(raw.get("sweep"), source)
    check_points(spec.size(), source)  # counted before anything is expanded
    base = {k: v for k, v in raw.items() if k != "sweep"}
    base_run = base.get("run", 0)
    if not isinstance(base_run, int) or isinstance(base_run, bool):
        raise ScenarioError(source, "run", f"must be an integer, got {base_run!r}")

    grid_rows = [dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())]
    if spec.zip:
        n = len(next(iter(spec.zip.values())))
        zip_rows = [{p: vals[i] for p, vals in spec.zip.items()} for i in range(n)]
    else:
        zip_rows = [{}]
    random_rows = _random_rows(spec.random) if spec.random else [{}]

    axis_of = {p: "grid" for p in spec.grid} | {p: "zip" for p in spec.zip}
    axis_of |= {p: "random.params" for p in (spec.random.params if spec.random else {})}
    points: list[Point] = []
    seen: dict[str, dict] = {}
    for g, z, r in itertools.product(grid_rows, zip_rows, random_rows):
        params = {**g, **z, **r}
        resolved = base
        for path, value in params.items():
            try:
                resolved = set_path(resolved, path, value, source=source)
            except ScenarioError as e:
                raise ScenarioError(source, f"sweep.{axis_of[path]}.{path}", e.message) from None
        for rep in range(spec.replications):
            run = params["run"] if "run" in params else base_run + rep
            final = set_path(resolved, "run", run, source=source)
            pid = point_id_of(final)
            full = {**params, "run": run}
            if pid in seen:
                if spec.random is not None:
                    continue  # a repeated random draw (randint/choice): keep the first
                raise ScenarioError(source, "sweep", f"points {seen[pid]} and {full} resolve to the same scenario")
            seen[pid] = full
            points.append(Point(point_id=pid, params=full, raw=final, index=len(points)))
    return points
