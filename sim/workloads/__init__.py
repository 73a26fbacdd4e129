"""Workloads: arrivals and lengths of calls, and the kinds of work above calls, each a plugin
(:class:`~sim.workloads.kind.WorkloadKind`) named by the section a workload class carries.

Every module of this package is imported here, so a kind defined in a new module registers
itself; :data:`WORKLOAD_KINDS` lists them by their ``order`` (jobs close before sessions, and
summary columns keep their places)."""

import importlib
import pkgutil

from sim.workloads.kind import WorkloadKind

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_m}")

WORKLOAD_KINDS = {k: v for k, v in sorted(WorkloadKind._registry.items(), key=lambda kv: (kv[1].order, kv[0]))}

__all__ = ["WORKLOAD_KINDS", "WorkloadKind"]
