"""Workloads: arrivals and lengths of calls, and the kinds of work above calls, each a plugin
(:class:`~sim.workloads.kind.WorkloadKind`) named by the section a workload class carries."""

from sim.workloads.jobs import JobKind
from sim.workloads.sessions import SessionKind
from sim.workloads.video import VideoKind

# in this order: their summary columns follow it, and open jobs close before open sessions
WORKLOAD_KINDS = {"job": JobKind, "video": VideoKind, "session": SessionKind}

__all__ = ["WORKLOAD_KINDS"]
