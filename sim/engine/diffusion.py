"""The diffusion engine: a replica serving batches of same-shape image or video jobs (denoising
steps, then the VAE decode), priced by :class:`~sim.models.diffusion.DiffusionPerf`."""

from __future__ import annotations

import math
from collections import deque
from typing import Callable, Optional

from sim.models.diffusion import DiffusionPerf

class DiffusionJob:
    """One image or video request: the unit a :class:`DiffusionReplica` serves."""

    __slots__ = ("job_id", "cls", "arrival_s", "frames", "steps", "resolution_scale", "on_done",
                 "replica", "admitted_s", "finish_s", "status", "energy_j", "device_s", "batch",
                 "latent_tokens", "cost_usd")

    def __init__(self, job_id: int, cls: str, arrival_s: float, frames: int, steps: int,
                 resolution_scale: float = 1.0, on_done: Optional[Callable[["DiffusionJob"], None]] = None):
        self.job_id = job_id
        self.cls = cls
        self.arrival_s = arrival_s
        self.frames = int(frames)
        self.steps = int(steps)
        self.resolution_scale = float(resolution_scale)
        self.on_done = on_done
        self.replica = -1
        self.admitted_s = math.nan
        self.finish_s = math.nan
        self.status = ""
        self.energy_j = 0.0
        self.device_s = 0.0
        self.batch = 0
        self.latent_tokens = 0
        self.cost_usd = 0.0

    @property
    def shape(self) -> tuple[int, int, float]:
        """What must match for jobs to share a batch: frames, steps, resolution."""
        return self.frames, self.steps, self.resolution_scale

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s


class DiffusionReplica:
    """One diffusion model instance on ``devices`` devices, serving batches of same-shape jobs.

    ``recorder_row`` receives one :data:`VIDEOS_SCHEMA` tuple per job when it ends;
    ``step_row`` (optional) one tuple in the steps-table layout (sim.output.trace.STEPS_SCHEMA order,
    ``avg_power_w`` last) per batch (kind ``diffusion``), per idle gap (``idle``) and for a
    batch cut by the end of the simulation (``partial``). The replica is independent of the
    LLM :class:`sim.engine.replica.Replica`; a pool shared with LLM traffic is the caller's business.
    """

    def __init__(self, env, index: int, pool: str, perf: DiffusionPerf, power, devices: int, max_batch: int,
                 recorder_row: Callable[[tuple], None], step_row: Optional[Callable[[tuple], None]] = None,
                 price_usd_per_device_s: float = 0.0, usd_per_j: float = 0.0):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.env = env
        self.index = index
        self.pool = pool
        self.perf = perf
        self.power = power
        self.devices = int(devices)
        self.max_batch = int(max_batch)
        self.recorder_row = recorder_row
        self.step_row = step_row
        self.price_usd_per_device_s = price_usd_per_device_s
        self.usd_per_j = usd_per_j
        self.waiting: deque[DiffusionJob] = deque()
        self.running: list[DiffusionJob] = []
        self.clock = 0.0  # end of the last accounted interval
        self.busy_s = 0.0
        self.energy_j = 0.0
        self.batches = 0
        self.finished = 0
        self._idle_w = power.idle_w * self.devices
        self._batch: Optional[tuple] = None  # (start, end, energy, steps, tokens, waiting_before)
        self._version = 0
        self._start_pending = False
        self._closed = False  # finish() ran: nothing starts any more
        # An LLM replica on the same devices (a pool shared with LLM traffic): each batch waits
        # for it to hand the devices over at an iteration boundary, and it, not this replica,
        # accounts the devices' idle time.
        self.host = None

    # ------------------------------------------------------------------ public
    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def submit(self, job: DiffusionJob) -> None:
        """A job arrives (now). It starts with the next batch; a free replica starts that batch
        at the end of this instant, so jobs arriving together can share it."""
        job.replica = self.index
        job.latent_tokens = self.perf.latent_tokens(job.frames, job.resolution_scale)
        self.waiting.append(job)
        if not self.running and not self._start_pending:
            self._start_pending = True
            self.env.timeout(0).callbacks.append(lambda _ev: self._start())

    def batch_cost(self, batch: int, frames: int, steps: int, resolution_scale: float = 1.0) -> tuple[float, float]:
        """(seconds, joules over all devices) of one batch, power cap applied."""
        step, step_w = self.power.under_cap(self.perf.step_cost(batch, self.perf.tokens(frames, resolution_scale)))
        vae, vae_w = self.power.under_cap(self.perf.vae_decode_cost(batch, frames, resolution_scale))
        t_step, t_vae = float(step.time_s[0]), float(vae.time_s[0])
        seconds = steps * t_step + t_vae
        energy = (steps * t_step * float(step_w[0]) + t_vae * float(vae_w[0])) * self.devices
        return seconds, energy

    def finish(self, t_end: float) -> None:
        """End of simulation at ``t_end``: cut the batch in flight, time out every unfinished job."""
        self._version += 1  # the pending batch end, if any, no longer fires
        self._closed = True
        if self._batch is not None:
            start, end, energy, steps, tokens, waiting_before = self._batch
            self._batch = None
            if end <= t_end:  # ended at t_end exactly, before its event ran
                self._complete(start, end, energy, steps, tokens, waiting_before)
            else:
                cut = max(start, t_end)
                e = energy * (cut - start) / (end - start) if end > start else 0.0
                self._account(start, cut, e, busy=True)
                self._row("partial", start, cut, 0, len(self.running), 0, waiting_before, e)
                self._share(self.running, cut - start, e)
                self.clock = cut
        self._advance_idle(t_end)
        for j in self.running + list(self.waiting):
            self._end(j, "timed-out", math.nan)
        self.running = []
        self.waiting.clear()

    # ------------------------------------------------------------------ batches
    def _start(self) -> None:
        self._start_pending = False
        if self._closed or self.running or not self.waiting:
            return
        shape = self.waiting[0].shape
        batch, rest = [], deque()
        for j in self.waiting:
            (batch if j.shape == shape and len(batch) < self.max_batch else rest).append(j)
        waiting_before = len(self.waiting)
        self.waiting = rest
        self.running = batch
        seconds, _ = self.batch_cost(len(batch), *shape)
        if self.host is not None:  # the LLM replica lends the devices at its next boundary
            self.host.lend(seconds, lambda: self._begin(batch, waiting_before))
            return
        self._begin(batch, waiting_before)

    def _begin(self, batch: list, waiting_before: int) -> None:
        """Run ``batch`` from now: one timeout for all its steps and the VAE decode."""
        if self._closed:
            return
        now = self.env.now
        self._advance_idle(now)
        frames, steps, scale = batch[0].shape
        seconds, energy = self.batch_cost(len(batch), frames, steps, scale)
        for j in batch:
            j.admitted_s = now
            j.batch = len(batch)
        tokens = len(batch) * self.perf.tokens(frames, scale) * self.perf.card.cfg_forwards_per_step * steps
        self._batch = (now, now + seconds, energy, steps, tokens, waiting_before)
        self._version += 1
        version = self._version
        self.env.timeout(seconds).callbacks.append(lambda _ev: self._on_end(version))

    def _on_end(self, version: int) -> None:
        if version != self._version or self._batch is None:
            return
        batch, self._batch = self._batch, None
        self._complete(*batch)
        self._start()

    def _complete(self, start: float, end: float, energy: float, steps: int, tokens: int, waiting_before: int) -> None:
        self._account(start, end, energy, busy=True)
        self.batches += 1
        self._row("diffusion", start, end, steps, len(self.running), tokens, waiting_before, energy)
        done, self.running = self.running, []
        self._share(done, end - start, energy)
        self.clock = end
        for j in done:
            self.finished += 1
            self._end(j, "finished", end)

    def _share(self, jobs: list, seconds: float, energy: float) -> None:
        if not jobs:
            return
        e, s = energy / len(jobs), seconds * self.devices / len(jobs)
        for j in jobs:
            j.energy_j += e
            j.device_s += s

    # ------------------------------------------------------------------ accounting
    def _advance_idle(self, t: float) -> None:
        if self.host is not None:  # the sharing LLM replica accounts the idle devices
            self.clock = max(self.clock, t)
            return
        if t > self.clock:
            e = self._idle_w * (t - self.clock)
            self._account(self.clock, t, e, busy=False)
            self._row("idle", self.clock, t, 0, 0, 0, len(self.waiting), e)
            self.clock = t

    def _account(self, start: float, end: float, energy: float, busy: bool) -> None:
        self.energy_j += energy
        if busy:
            self.busy_s += end - start

    def _row(self, kind: str, start: float, end: float, iterations: int, seqs: int, tokens: int, waiting: int,
             energy: float) -> None:
        if self.step_row is None:
            return
        dur = end - start
        self.step_row((self.pool, self.index, kind, start, end, iterations, seqs, tokens, 0, 0, waiting, 0, energy,
                       energy / dur if dur > 0 else math.nan))

    def _end(self, job: DiffusionJob, status: str, t: float) -> None:
        job.status = status
        job.finish_s = t
        job.cost_usd = job.device_s * self.price_usd_per_device_s + job.energy_j * self.usd_per_j
        self.recorder_row((job.job_id, job.cls, self.pool, job.replica, status, job.arrival_s, job.admitted_s, t,
                           t - job.arrival_s, job.frames, job.steps, job.resolution_scale, job.latent_tokens,
                           job.batch, job.device_s, job.energy_j, job.cost_usd))
        if job.on_done is not None:
            job.on_done(job)
