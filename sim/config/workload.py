"""The workload: classes of calls, jobs, agent sessions or videos, each with its arrivals,
lengths and latency targets."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_serializer, model_validator

from sim.config.base import MAX_PRIORITY, Frozen, KeyedError, NonNegFloat, PosFloat, PosInt, check_unique
from sim.config.distributions import Arrivals, BurstArrivals, FixedTime, LengthDist, TimeDist, TraceArrivals
from sim.config.jobs import JobSpec
from sim.config.training import TrainingSpec


class Slo(Frozen):
    """Latency targets of a class (used for goodput and SLO attainment)."""

    ttft_s: Optional[PosFloat] = None
    tpot_s: Optional[PosFloat] = None
    e2e_s: Optional[PosFloat] = None


# --------------------------------------------------------------------------- test-time compute jobs


class Tool(Frozen):
    """One kind of tool an agent calls between turns, how often, and how long it runs."""

    name: str = Field(min_length=1)
    weight: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    latency_s: TimeDist


class DropKv(Frozen):
    """Free the session's KV when a turn ends; the next turn prefills the whole history."""

    kind: Literal["drop"]


class LruKv(Frozen):
    """Leave the session's KV in the replica's prefix cache (reclaimed least recently used
    first when other calls need room); the next turn reuses what is still there."""

    kind: Literal["lru"]


class PinKv(Frozen):
    """Keep the session's KV on the device between turns (it counts against the pool and
    holds back other admissions); after ``ttl_s`` without a next turn it is released to the
    prefix cache. None: held until the next turn or the session's end."""

    kind: Literal["pin"]
    ttl_s: Optional[PosFloat] = None


class OffloadKv(Frozen):
    """Copy the session's KV to host memory when a turn ends (the device copy stays in the
    prefix cache while it lasts); the next turn reloads the blocks the device lost at
    ``bandwidth_gb_s`` before it runs. ``host_gib`` per replica, least-recently-used sessions
    evicted first. PCIe Gen5 x16 moves about 64 GB/s each way at best (PCI-SIG spec);
    ~25 GB/s is what KV-offload stacks report in practice (LMCache / vLLM CPU offload)."""

    kind: Literal["offload"]
    host_gib: PosFloat = 256.0
    bandwidth_gb_s: PosFloat = 25.0


KvPolicy = Annotated[Union[DropKv, LruKv, PinKv, OffloadKv], Field(discriminator="kind")]


class SessionSpec(Frozen):
    """An agent session: ``turns`` model calls; after each, tool calls (one tool drawn from
    ``tools`` per call, run one after another) and ``think_s``; the next turn's prompt is the
    whole history plus ``context_growth_tokens`` (tool results, new instructions). The first
    prompt is the class's ``prompt_tokens``. Unset fields take the defaults fitted to real
    coding-agent sessions (sim/workloads/sessions.py). ``affinity`` keeps a session on the replica holding
    its KV unless that replica's KV load exceeds ``affinity_max_load`` (then the pool's router
    picks another and the KV there is lost)."""

    turns: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    context_growth_tokens: Optional[LengthDist] = None
    tools: Optional[list[Tool]] = None
    tool_calls_per_turn: Optional[LengthDist] = None
    think_s: TimeDist = FixedTime(kind="fixed", value=0.0)
    kv: KvPolicy = LruKv(kind="lru")
    affinity: bool = True
    affinity_max_load: Annotated[float, Field(gt=0, le=1)] = 0.95

    @model_validator(mode="after")
    def _unique_tools(self):
        if self.tools is not None:
            if not self.tools:
                raise ValueError("'tools' must not be empty")
            check_unique([t.name for t in self.tools], "tools")
        return self


class VideoSpec(Frozen):
    """Image / video generation requests for a diffusion pool: ``frames`` output frames (None:
    the card's default; 1 for an image), ``steps`` denoising steps (None: the card's default),
    ``resolution_scale`` pixel area relative to the card's default resolution."""

    frames: Optional[PosInt] = None
    steps: Optional[PosInt] = None
    resolution_scale: Annotated[float, Field(gt=0, le=1e3)] = 1.0


class WorkloadClass(Frozen):
    """A stream of independent calls (chat turns, completions) sent to one pool, or, with
    ``job``, of test-time-compute jobs whose calls go to that pool, or, with ``session``, of
    agent sessions, or, with ``video``, of image / video generations for a diffusion pool, or,
    with ``training``, ``arrival.count`` training jobs started at ``start_s`` on devices the
    pool's inference leaves (sim/config/training.py)."""

    name: str = Field(min_length=1)
    pool: str
    arrival: Arrivals
    prompt_tokens: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    priority: Annotated[int, Field(ge=-MAX_PRIORITY, le=MAX_PRIORITY)] = 0
    slo: Slo = Slo()
    start_s: NonNegFloat = 0.0
    stop_s: Optional[PosFloat] = None
    job: Optional[JobSpec] = None
    session: Optional[SessionSpec] = None
    video: Optional[VideoSpec] = None
    training: Optional[TrainingSpec] = None

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """Dumps leave ``training`` out where it is unset, so the resolved scenarios (and the
        point ids hashed from them) of classes that train nothing are what they were before."""
        out = handler(self)
        if self.training is None and isinstance(out, dict):
            out.pop("training", None)
        return out

    @model_validator(mode="after")
    def _lengths_known(self):
        from_trace = isinstance(self.arrival, TraceArrivals)
        if self.stop_s is not None and self.stop_s <= self.start_s:
            raise KeyedError(f"workload.classes.{self.name}.stop_s",
                              f"stop_s ({self.stop_s:g}) must be > start_s ({self.start_s:g})")
        if self.training is not None:
            extra = [k for k in ("job", "session", "video", "prompt_tokens", "output_tokens") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"a 'training' class runs training jobs: drop {extra}")
            if not isinstance(self.arrival, BurstArrivals):
                raise KeyedError(f"workload.classes.{self.name}.arrival.kind",
                                  "a 'training' class starts its jobs at start_s: use arrival {kind: burst, count: N}")
            return self
        if self.video is not None:
            if self.job is not None or self.session is not None or self.output_tokens is not None:
                raise ValueError("a 'video' class sends generation requests: drop 'job', 'session' and 'output_tokens'")
            return self
        if self.prompt_tokens is None and not (from_trace and self.arrival.prompt_column):
            raise ValueError("'prompt_tokens' is required (or a trace arrival with 'prompt_column')")
        if self.job is not None and self.session is not None:
            raise ValueError("a class is either a 'job' or a 'session' class, not both")
        if self.session is not None:
            if self.output_tokens is not None:
                raise ValueError("a session class takes its output lengths from 'session.output_tokens'; drop 'output_tokens'")
        elif self.job is not None:
            if self.output_tokens is not None:
                raise ValueError("a job class takes its output lengths from 'job.levels'; drop 'output_tokens'")
        elif self.output_tokens is None and not (from_trace and self.arrival.output_column):
            raise ValueError("'output_tokens' is required (or a trace arrival with 'output_column')")
        return self


class Workload(Frozen):
    classes: list[WorkloadClass] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        check_unique([c.name for c in self.classes], "classes")
        return self
