"""Training jobs in the SimPy world: gang-scheduled on the replicas a pool's inference leaves
switched off, checkpointing, failing, preempted by inference, restarting.

A :class:`Lender` per pool keeps which switched-off replicas each job holds. The pool's
autoscaler tells it when it switches a replica off (:meth:`Lender.changed`: waiting jobs may
start) and asks for one back when inference needs it (:meth:`Lender.take_back`: a replica no
job holds, else one a job gives up, after writing a checkpoint if its policy says so). The
pool's failure process tells it of a failure on a held replica (:meth:`Lender.fail`).

A :class:`TrainingJob` is a SimPy process over four states: ``wait`` (fewer than ``min_dp``
data-parallel replicas' devices are free: it holds none), ``restart`` (start-up and checkpoint
read), ``train`` (whole steps up to the checkpoint interval) and ``checkpoint``. Work becomes
``kept`` when the checkpoint after it is written; a failure or a preemption without checkpoint
makes it ``lost``; a change of its devices (shrinking or growing) restarts it from its last
checkpoint. Each interval is a row of the training table (sim/output/trace.py).
"""

from __future__ import annotations

import math

import simpy

from sim.models.training import STORAGE_GB_S_PER_DEVICE, TrainingModel


class Lender:
    """The switched-off replicas of one pool, lent to its training jobs (oldest job first)."""

    def __init__(self, env, replicas: list, devices_per_replica: int):
        self.env = env
        self.replicas = replicas  # installed, in pool order
        self.d = devices_per_replica
        self.jobs: list = []
        self.broken: set = set()  # failed while lent, under repair
        self.reclaiming: set = set()  # promised back to inference, a job still checkpointing on them

    def owner(self, r):
        return next((j for j in self.jobs if r in j.held), None)

    def holds(self, r) -> bool:
        return self.owner(r) is not None

    def free(self) -> list:
        """Replicas switched off that nobody holds, in pool order."""
        held = {r for j in self.jobs for r in j.held}
        return [r for r in self.replicas if r.down_since is not None and r.down_kind == "off"
                and r not in held and r not in self.broken and r not in self.reclaiming]

    def changed(self) -> None:
        """Replicas may have become free: waiting jobs try to start (oldest first)."""
        for j in self.jobs:
            if j.state == "wait" and j.wake is not None and not j.wake.triggered:
                if j.grant(self.free()):
                    j.wake.succeed()

    def take_back(self, off: list):
        """Inference wants one of the switched-off replicas ``off``: ``(replica, delay)`` with
        the seconds until it is free, or None if every one is broken or promised already."""
        free = self.free()
        pick = next((r for r in off if r in free), None)
        if pick is not None:
            return pick, 0.0
        held = [(j, r) for j in reversed(self.jobs) for r in reversed(j.held)
                if r in off and r not in self.reclaiming]
        if not held:
            return None
        stopping = [(j, r) for j, r in held if j.releasing]
        j, r = (stopping or held)[0]  # a job already stopping first, else the youngest job
        self.reclaiming.add(r)
        return r, j.preempt(r)

    def booted(self, r) -> None:
        """Inference switched ``r`` on (the promise is kept)."""
        self.reclaiming.discard(r)

    def fail(self, r) -> None:
        self.broken.add(r)
        self.owner(r).fail(r)

    def repair(self, r) -> None:
        self.broken.discard(r)
        self.changed()


class TrainingJob:
    """One gang-scheduled training job (see the module's docstring)."""

    def __init__(self, kind, lender: Lender, job_id: int, cls, model: TrainingModel, power, t_stop: float):
        self.kind, self.lender, self.env = kind, lender, lender.env
        self.job_id, self.cls, self.model, self.power = job_id, cls, model, power
        spec = cls.training
        self.spec = spec
        self.min_dp = spec.min_dp or spec.dp
        self.g = model.group_devices
        ck = spec.checkpoint
        write = (ck.write_gb_s * 1e9) if ck.write_gb_s else None
        read = (ck.read_gb_s * 1e9) if ck.read_gb_s else write
        self._write, self._read = write, read
        self.t_stop = t_stop
        self.held: list = []
        self.dp = 0
        self.state = "wait"
        self.since = self.env.now
        self.phase_end = math.nan
        self.steps_in_phase = 0
        self.pending: list = []  # rows of work not yet checkpointed
        self.trained = 0  # tokens checkpointed
        self.releasing = False  # giving replicas back to inference after this checkpoint
        self.release_at = math.nan
        self.giving: set = set()  # replicas promised to inference, let go of when it releases
        self.wake = None
        self.counts = {"failures": 0, "preemptions": 0, "restarts": 0}
        self.done = False
        self.proc = self.env.process(self._run())
        self.env.timeout(max(0.0, t_stop - self.env.now)).callbacks.append(lambda _ev: self._interrupt(("end", None)))

    # ------------------------------------------------------------------ devices
    def devices(self) -> int:
        return len(self.held) * self.lender.d

    def _bw(self, given):
        """Aggregate storage bandwidth: as given, else Meta's per-device figure times the devices."""
        return given if given is not None else STORAGE_GB_S_PER_DEVICE * 1e9 * max(1, self.dp * self.g)

    def checkpoint_s(self) -> float:
        return self.model.checkpoint_bytes / self._bw(self._write)

    def restart_s(self) -> float:
        return self.spec.restart_s + self.model.checkpoint_bytes / self._bw(self._read)

    def grant(self, free: list) -> bool:
        """Take, from ``free``, the replicas that make the most data-parallel replicas (up to
        ``dp``); False (and nothing taken) if that is fewer than ``min_dp``."""
        d = self.lender.d
        k = min(self.spec.dp, (self.devices() + len(free) * d) // self.g)
        if k < self.min_dp or k <= self.dp:
            return False
        need = math.ceil(k * self.g / d) - len(self.held)
        self.held += free[:max(0, need)]
        self.dp = k
        return True

    def _fit(self) -> None:
        """After losing replicas: keep the most data-parallel replicas the rest allows and give
        back the replicas beyond them (all of them below ``min_dp``)."""
        k = min(self.spec.dp, self.devices() // self.g)
        if k < self.min_dp:
            k = 0
        keep = math.ceil(k * self.g / self.lender.d)
        self.held, self.dp = self.held[:keep], k

    # ------------------------------------------------------------------ the process
    def _run(self):
        while not self.done:
            try:
                yield from self._phase()
            except simpy.Interrupt as i:
                self._interrupted(*i.cause)

    def _enter(self, state: str, seconds: float = math.inf) -> None:
        self.state, self.since = state, self.env.now
        self.phase_end = self.env.now + seconds

    def _phase(self):
        env = self.env
        if self.state == "wait":
            self.wake = env.event()
            if self.grant(self.lender.free()):
                self.wake.succeed()
            yield self.wake
            self._row("wait", "")
            self._enter("restart", self.restart_s())
            self.counts["restarts"] += 1
        elif self.state == "restart":
            yield env.timeout(self.phase_end - env.now)
            self._row("restart", "")
            self._start_training()
        elif self.state == "train":
            yield env.timeout(self.phase_end - env.now)
            self._trained(self.steps_in_phase)
            self._enter("checkpoint", self.checkpoint_s())
        elif self.state == "checkpoint":
            yield env.timeout(self.phase_end - env.now)
            self._row("checkpoint", "pending")
            self._settle("kept")
            self._after_checkpoint()

    def _start_training(self) -> None:
        step = self.model.step_s(self.dp)
        n = max(1, round(self.spec.checkpoint.interval_s / step))
        if self.spec.tokens is not None:
            n = min(n, max(1, math.ceil((self.spec.tokens - self.trained) / self.model.batch_tokens)))
        self.steps_in_phase = n
        self._enter("train", n * step)

    def _after_checkpoint(self) -> None:
        if self.releasing:  # inference takes its replicas now
            self._give_back()
            return
        if self.spec.tokens is not None and self.trained >= self.spec.tokens:
            self._stop()
            return
        if self.grant(self.lender.free()):  # more devices free: restart wider
            self._restart()
            return
        self._start_training()

    def _restart(self) -> None:
        if self.dp == 0:
            self.held = []
            self._enter("wait")
        else:
            self.counts["restarts"] += 1
            self._enter("restart", self.restart_s())
        self.lender.changed()

    def _give_back(self) -> None:
        """Release the replicas promised to inference; go on with the rest (a restart) or wait."""
        self.releasing = False
        self._let_go()
        self._fit()
        self._restart()

    def _let_go(self) -> None:
        """Give up the replicas promised to inference (it may have switched them on already)."""
        self.held = [r for r in self.held if r not in self.giving]
        self.giving = set()

    def _stop(self) -> None:
        self.held, self.dp, self.done = [], 0, True
        self.state = "stopped"
        self.lender.changed()
        self.kind.job_ended()

    # ------------------------------------------------------------------ interruptions
    def _interrupt(self, cause) -> None:
        if not self.done:
            self.proc.interrupt(cause)

    def preempt(self, r) -> float:
        """Inference takes ``r`` back: seconds until the job lets go of it."""
        now = self.env.now
        self.giving.add(r)
        if self.releasing:
            return self.release_at - now
        self.counts["preemptions"] += 1
        done = self.state == "train" and (self.pending or self._steps_done() > 0)
        if self.spec.checkpoint.on_preempt and (done or self.state == "checkpoint"):
            self.releasing = True
            wait = self.checkpoint_s() if self.state == "train" else self.phase_end - now
            self.release_at = now + wait
            self._interrupt(("preempt", wait))
            return wait
        self._interrupt(("preempt", 0.0))
        return 0.0

    def fail(self, r) -> None:
        self.counts["failures"] += 1
        self._interrupt(("fail", r))

    def _interrupted(self, cause: str, arg) -> None:
        state = self.state
        if cause == "end":
            self._cut("open")
            self.held, self.dp, self.done = [], 0, True
            self.state = "stopped"
            self.kind.job_ended()
            return
        if cause == "preempt" and self.releasing:  # write a checkpoint first, then let go
            if state == "train":
                self._trained(self._steps_done())
                self._enter("checkpoint", arg)
            return  # (in a checkpoint already: it ends when promised)
        self._cut("lost")
        self.releasing = False
        if cause == "fail" and arg in self.held:
            self.held.remove(arg)
        self._let_go()
        self._fit()
        self._restart()

    def _cut(self, status: str) -> None:
        """The interval in progress ends now: its rows and those of the work not yet
        checkpointed take ``status``."""
        state = self.state
        if state == "train":
            self._trained(self._steps_done())
        elif state in ("checkpoint", "restart", "wait"):
            self._row(state, "pending" if state == "checkpoint" else "")
        self._settle(status)

    def _steps_done(self) -> int:
        """Whole steps of the training interval in progress done by now."""
        return int((self.env.now - self.since) / self.model.step_s(self.dp) + 1e-9) if self.state == "train" else 0

    # ------------------------------------------------------------------ rows
    def _trained(self, steps: int) -> None:
        self._row("train", "pending", steps)

    def _row(self, state: str, status: str, steps: int = 0) -> None:
        now = self.env.now
        if now <= self.since and steps == 0:
            return
        dur = now - self.since
        used = self.dp * self.g if state == "train" else 0
        held = self.devices() if state != "wait" else 0
        step = self.model.step_s(self.dp) if self.dp else math.nan
        busy_w = self.kind.train_w(self.model, self.dp, self.power) if used else 0.0
        energy = (used * busy_w + (held - used) * self.power.idle_w) * dur
        row = [self.job_id, self.cls.name, self.cls.pool, state, status, self.since, now,
               len(self.held) if state != "wait" else 0, held, self.dp if state != "wait" else 0, self.g,
               steps, steps * self.model.batch_tokens, step, energy]
        self.since = now
        if status == "pending":
            self.pending.append(row)
        else:
            self.kind.record(row)

    def _settle(self, status: str) -> None:
        """The pending rows are now ``status`` (kept: a checkpoint holds them)."""
        for row in self.pending:
            row[4] = status
            if status == "kept" and row[3] == "train":
                self.trained += row[12]
            self.kind.record(row)
        self.pending = []
