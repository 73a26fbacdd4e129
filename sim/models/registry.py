"""Performance models by name: what ``performance: {kind: ...}`` of a pool builds.

A performance model prices one engine iteration (or a run of them) for a batch: ``cost(batch) ->
IterationCost``, elementwise over the arrays of a run (see :mod:`sim.models.perf`). Adding one is a
class in its own module, a config class in :mod:`sim.config.datacenter` (``Performance``) and one
entry here (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sim.models.fixed import FixedModel
from sim.models.profile import ProfileModel


@dataclass(frozen=True)
class PerfContext:
    """What a pool's performance model may be built from."""

    model: object  # catalog.ModelCard
    acc: object  # catalog.Accelerator
    tp: int
    weight_dtype: str
    kv_dtype: str
    layout: dict  # pp, expert_parallel, attention_dp
    efficiency: dict  # the accelerator's calibration, then the pool's overrides
    roofline: object  # the pool's roofline model (it also sizes weights and KV)
    base_dir: object  # the scenario's folder (relative table paths)
    source: str
    key: str


@dataclass(frozen=True)
class PerfKind:
    """``build(config, context)`` makes the model; ``roofline_overrides``: the config's fields
    are efficiency overrides of the roofline (False where they mean something else)."""

    build: Callable[[object, PerfContext], object]
    roofline_overrides: bool = True


def _profile(p, c: PerfContext):
    return ProfileModel(c.model, c.acc, c.tp, c.weight_dtype, c.kv_dtype, path=p.path, network_path=p.network_path,
                        base_dir=c.base_dir, source=c.source, key=c.key, **c.layout, **c.efficiency)


PERF_MODELS = {
    "roofline": PerfKind(lambda p, c: c.roofline),
    "fixed": PerfKind(lambda p, c: FixedModel(p.iteration_s, p.per_token_s), roofline_overrides=False),
    "profile": PerfKind(_profile),
}
