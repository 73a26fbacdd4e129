"""Scenario schema: typed, immutable, unknown keys rejected.

A scenario is read from YAML (:func:`load_raw`) and validated once
(:func:`validate`) into a frozen :class:`Scenario`. Building one does no I/O
beyond reading the file; names of hardware and models are checked against the
catalog when the simulated world is built, so that this module stays free of data files.
Every error becomes a :class:`~sim.errors.ScenarioError` naming the file and the
dotted key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from sim.errors import ScenarioError
from sim.config.base import Frozen, KeyedError, NonNegFloat, PosFloat, Seed
from sim.config.datacenter import Datacenter, Pool
from sim.config.jobs import verifier_pools
from sim.config.workload import Workload
from sim.config.sweep import SweepSpec
from sim.config.limits import check_scenario
from sim.config.files import read_user_text
from sim.config.yamlio import MAX_YAML_BYTES, YamlError, load_yaml


class TraceOptions(Frozen):
    """What tables to write and how."""

    calls: bool = True
    steps: bool = True
    events: bool = True
    jobs: bool = True
    sessions: bool = True
    videos: bool = True
    row_group_rows: Annotated[int, Field(ge=1024, le=2**24)] = 65536
    compression: Literal["zstd", "snappy", "none"] = "zstd"


class Scenario(Frozen):
    """One simulation: datacenter, workload, horizon, seed."""

    name: str = "scenario"
    description: str = ""
    seed: Seed = 0
    run: Seed = 0
    duration_s: PosFloat
    warmup_s: NonNegFloat = 0.0
    # After arrivals stop at duration_s, in-flight calls may finish for at most this long;
    # calls still unfinished then are recorded as timed-out.
    drain_s: NonNegFloat = 600.0
    # "macro" plans runs of iterations at once; "per_iteration" is the reference mode.
    engine_mode: Literal["macro", "per_iteration"] = "macro"
    datacenter: Datacenter
    workload: Workload
    trace: TraceOptions = TraceOptions()
    sweep: Optional[SweepSpec] = None
    # a capacity plan's search space and bounds (validated by the planner); runs and sweeps ignore it
    plan: Optional[dict[str, Any]] = Field(default=None, exclude=True)  # (not in dumps: point ids unchanged)

    _base_dir: str = PrivateAttr(default=".")

    @model_validator(mode="after")
    def _cross_refs(self):
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be < duration_s ({self.duration_s})")
        pools = {p.name for p in self.datacenter.pools}
        for p in self.datacenter.pools:
            if p.share_with is None:
                continue
            key = f"datacenter.pools.{p.name}.share_with"
            host = next((q for q in self.datacenter.pools if q.name == p.share_with), None)
            if p.kind != "diffusion" or host is None or host.kind != "llm":
                raise KeyedError(key, "a diffusion pool can share the devices of an LLM pool (name one)")
            if (host.accelerator, host.tp * host.pp, host.replicas) != (p.accelerator, p.tp * p.pp, p.replicas):
                raise KeyedError(key, f"pool '{host.name}' has other devices: accelerator, devices per replica and "
                                       "replicas must be the same")
        for p in self.datacenter.pools:
            if p.decode_pool is not None:
                self._check_decode_pool(p)
            if p.autoscale is not None and any(q.share_with == p.name for q in self.datacenter.pools):
                raise KeyedError(f"datacenter.pools.{p.name}.autoscale",
                                  "a pool whose devices a diffusion pool shares cannot be autoscaled")
        for c in self.workload.classes:
            if c.session is not None and self.pool(c.pool).decode_pool is not None:
                raise KeyedError(f"workload.classes.{c.name}.pool",
                                  f"pool '{c.pool}' is a disaggregated prefill pool; agent sessions keep their KV "
                                  "on one replica between turns, send them to a pool that serves whole calls")
        for c in self.workload.classes:
            if c.pool not in pools:
                raise KeyedError(
                    f"workload.classes.{c.name}.pool",
                    f"unknown pool '{c.pool}' (pools: {', '.join(sorted(pools))})",
                )
            kind = next(p.kind for p in self.datacenter.pools if p.name == c.pool)
            if (kind == "diffusion") != (c.video is not None):
                raise KeyedError(f"workload.classes.{c.name}.pool",
                                  f"pool '{c.pool}' is {'an LLM' if kind == 'llm' else 'a diffusion'} pool; "
                                  + ("'video' classes need a diffusion pool"
                                                                          if c.video is not None else
                                                                          "only 'video' classes can use it"))
            if c.job is not None:
                for key, pool in verifier_pools(c.job.strategy):
                    if pool is not None and pool not in pools:
                        raise KeyedError(f"workload.classes.{c.name}.job.strategy.{key}.pool",
                                          f"unknown pool '{pool}' (pools: {', '.join(sorted(pools))})")
                    if pool is not None and self.pool(pool).kind != "llm":
                        raise KeyedError(f"workload.classes.{c.name}.job.strategy.{key}.pool",
                                          f"pool '{pool}' is a diffusion pool, not a language model")
        return self

    def _check_decode_pool(self, p) -> None:
        key = f"datacenter.pools.{p.name}.decode_pool"
        d = next((q for q in self.datacenter.pools if q.name == p.decode_pool), None)
        if d is None or d.kind != "llm" or d.name == p.name:
            names = ", ".join(q.name for q in self.datacenter.pools if q.kind == "llm" and q.name != p.name)
            raise KeyedError(key, f"unknown decode pool '{p.decode_pool}' (another LLM pool: {names or 'none'})")
        if d.decode_pool is not None:
            raise KeyedError(key, f"pool '{d.name}' is itself a prefill pool; a decode pool serves whole calls")
        if (d.model, d.kv_dtype, d.engine.block_size) != (p.model, p.kv_dtype, p.engine.block_size):
            raise KeyedError(key, f"pool '{d.name}' must serve the same model with the same kv_dtype and block_size "
                                   "(the KV cache moves between them as it is)")

    @model_validator(mode="after")
    def _economics_refs(self):
        """Price lists of datacenter.economics name workload classes of this scenario."""
        eco = self.datacenter.economics
        bad = eco.pricing.unknown_class([c.name for c in self.workload.classes]) if eco is not None else None
        if bad is not None:
            raise KeyedError(*bad)
        return self

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the scenario (trace files) are relative to."""
        return Path(self._base_dir)

    def pool(self, name: str) -> Pool:
        return next(p for p in self.datacenter.pools if p.name == name)


# --------------------------------------------------------------------------- loading
def load_raw(path: str | Path) -> dict:
    """Read a scenario file as a plain dict (no validation): a regular UTF-8 file of at most
    MAX_YAML_BYTES, read by the bounded loader of sim.config.yamlio (no duplicate keys, no alias
    bombs)."""
    text = read_user_text(path, "", "file", limit=MAX_YAML_BYTES)
    try:
        raw = load_yaml(text)
    except YamlError as e:
        raise ScenarioError(str(path), "", str(e)) from None
    if not isinstance(raw, dict):
        raise ScenarioError(str(path), "", "a scenario must be a YAML mapping of keys to values")
    return raw


def validate(raw: dict, source: str = "<scenario>", base_dir: str | Path | None = None) -> Scenario:
    """Validate a raw scenario dict; raise ScenarioError naming ``source`` and the key path."""
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as e:
        raise _to_scenario_error(e, raw, source) from None
    scenario._base_dir = str(base_dir if base_dir is not None else Path(source).parent)
    check_scenario(scenario, source)
    return scenario


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    return validate(load_raw(path), str(path), Path(path).parent)


def _to_scenario_error(err: ValidationError, raw: dict, source: str) -> ScenarioError:
    errors = err.errors(include_url=False)
    first = errors[0]
    ctx_err = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_err, KeyedError):
        return ScenarioError(source, ctx_err.key_path, ctx_err.message)
    path = _key_path(first["loc"], raw)
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "union_tag_invalid":
        msg = f"unknown kind {first['input'].get('kind')!r} (expected {first['ctx']['expected_tags']})"
    elif first["type"] == "union_tag_not_found":
        msg = "missing 'kind' (which variant this is)"
    elif "input" in first and not isinstance(first["input"], (dict, list)):
        shown = repr(first["input"])
        msg = f"{msg} (got {shown if len(shown) <= 60 else shown[:60] + '...'})"
    more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return ScenarioError(source, path, msg + more)


def _key_path(loc: tuple, raw: Any) -> str:
    """Dotted path for a pydantic error location; list items named by their ``name``."""
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) else None
            if name:
                parts.append(str(name))
            else:
                parts.append(f"[{item}]")
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            if isinstance(node, dict) and item in node:
                node = node[item]
                parts.append(str(item))
            elif isinstance(node, dict) and node.get("kind") == item:
                continue  # discriminated-union tag, not a key the user wrote
            else:
                parts.append(str(item))
                node = None
    out = ""
    for p in parts:
        out += p if p.startswith("[") else ("." + p if out else p)
    return out
