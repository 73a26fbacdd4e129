"""Image and video requests (workload classes with ``video:``) served by a diffusion pool."""

from __future__ import annotations

from sim.engine.diffusion import DiffusionJob
from sim.output.summary import video_metrics
from sim.output.trace import VIDEOS_SCHEMA
from sim.workloads.kind import WorkloadKind


class VideoKind(WorkloadKind):
    """One :class:`~sim.engine.diffusion.DiffusionJob` per arrival, routed to a replica of its
    class's diffusion pool; the diffusion replicas write the videos table."""

    key, table, schema = "video", "videos", VIDEOS_SCHEMA
    order = 20  # (before sessions: the order summary columns had)

    def __init__(self, world, classes: list):
        super().__init__(world, classes)
        self.pending = 0  # requests not yet ended

    def start(self, cls, t: float, prompt: int, on_done=None) -> DiffusionJob:
        world = self.world
        card = world.spec_by_name[cls.pool].perf.card
        v = cls.video
        self.created += 1
        self.pending += 1

        def ended(job):
            self.pending -= 1
            if on_done is not None:
                on_done(job)
            world.check_done()

        job = DiffusionJob(self.created - 1, cls.name, t, v.frames or card.default_frames,
                           v.steps or card.default_steps, v.resolution_scale, ended)
        world.routers[cls.pool].pick(job).submit(job)
        return job

    @property
    def busy(self) -> bool:
        return self.pending > 0

    def wrote_rows(self) -> bool:
        return self.created > 0

    def summarize(self, tables, calls, t0: float, t1: float, summary: dict) -> dict:
        out = video_metrics(tables.table(self.table), t0, t1)
        if out["videos_created"] != self.created:
            raise RuntimeError(f"videos table has {out['videos_created']} rows but {self.created} videos were created")
        return out
