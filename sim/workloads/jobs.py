"""Test-time-compute jobs: a question of some difficulty answered by a strategy of calls.

A job class (a workload class with ``job:``) creates :class:`Job` s at its arrival times.
Each job is a SimPy process that draws its difficulty level, picks a strategy (fixed, or
by an imperfect difficulty predictor for ``adaptive``), issues the strategy's calls to the
engine and waits on their completion: N parallel samples sharing the prompt's KV and a
verifier call (best-of-N), N votes with optional early cancellation (self-consistency),
sequential rounds (revision), or depth-by-depth expansions scored by a process reward
model (beam search). The engine only ever sees calls.

Answer quality comes from :mod:`sim.models.quality`: each job row holds the *expected*
accuracy of its strategy on its level and budget, and a *sampled* right/wrong drawn
consistently with it (sample correctness, verifier scores, votes, revision steps, beam
selection). Every job draws from its own sub-streams, one per purpose, so the same job
index gets the same level, prompt and sample lengths under every strategy (common random
numbers: policy comparisons are paired).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
import numpy as np

from sim import config as C
from sim.models import quality as Q
from sim import rng as R
from sim.rng import MixedSeed, SeedMixer
from sim.engine.kvcache import Prefix
from sim.output.summary import job_metrics
from sim.output.trace import JOBS_SCHEMA
from sim.workloads.arrivals import LengthSampler, ShareSampler
from sim.workloads.kind import WorkloadKind, fires

GIB = 2**30
# purposes of a job's sub-streams
_LEVEL, _PREDICT, _THINK, _ANSWER, _EXIT, _RIGHT, _SELECT = range(7)
# draws used to estimate the share of samples that finish thinking within a budget
_WITHIN_DRAWS = 20000


def default_levels() -> list[C.Level]:
    """The default difficulty mix of :mod:`sim.models.quality` as scenario levels."""
    return [
        C.Level(name=d.name, weight=d.weight, accuracy=d.accuracy, truncated_accuracy=d.truncated_accuracy,
                thinking_tokens=C.LognormalLength(kind="lognormal", median=d.thinking_median, sigma=d.thinking_sigma),
                answer_tokens=C.LognormalLength(kind="lognormal", median=d.answer_median, sigma=d.answer_sigma),
                coverage=d.coverage)
        for d in Q.DEFAULT_LEVELS
    ]


class LevelModel:
    """Samplers and accuracy of one difficulty level."""

    def __init__(self, level: C.Level, base_dir, key: str, within_rng: np.random.Generator):
        self.level = level
        self.name = level.name
        if level.output_tokens is not None:  # whole outputs split by the reasoning share
            self.total = LengthSampler(level.output_tokens, within_rng, base_dir, f"{key}.output_tokens")
            self.share = ShareSampler(level.reasoning_share, base_dir, f"{key}.reasoning_share")
        else:
            self.thinking = LengthSampler(level.thinking_tokens, within_rng, base_dir, f"{key}.thinking_tokens")
            self.answer = LengthSampler(level.answer_tokens, within_rng, base_dir, f"{key}.answer_tokens")
        ee = level.early_exit
        self.exit_at = ShareSampler(ee.at, base_dir, f"{key}.early_exit.at") if ee is not None else None
        self._within_rng = within_rng
        self._within: dict[int, float] = {}

    def lengths(self, n: int, think_rng, answer_rng, exit_rng) -> tuple[np.ndarray, np.ndarray]:
        """(thinking, answer) tokens of ``n`` samples before any budget; early exits stop
        thinking part-way."""
        if self.level.output_tokens is not None:
            total = self.total.sample(n, think_rng)
            t = np.rint(total * self.share.sample(n, answer_rng)).astype(np.int64)
            t = np.minimum(t, total - 1)  # at least one answer token
            a = total - t
        else:
            t, a = self.thinking.sample(n, think_rng), self.answer.sample(n, answer_rng)
        ee = self.level.early_exit
        if ee is not None:
            stop = exit_rng.random(n) < ee.probability
            frac = self.exit_at.sample(n, exit_rng)
            t = np.where(stop, np.maximum(0, np.rint(t * frac)).astype(np.int64), t)
        return t, a

    def within(self, budget: int | None) -> float:
        """Share of samples whose thinking fits ``budget`` (Monte Carlo, fixed stream, cached)."""
        if budget is None:
            return 1.0
        if budget not in self._within:
            if not hasattr(self, "_pool"):
                self._pool = self.lengths(_WITHIN_DRAWS, self._within_rng, self._within_rng, self._within_rng)[0]
            self._within[budget] = float((self._pool <= budget).mean())
        return self._within[budget]

    def sample_accuracy(self, budget: int | None) -> float:
        """Accuracy of one sample under ``budget`` (truncated samples answer worse)."""
        lv = self.level
        return Q.budget_accuracy(lv.accuracy, lv.truncated_accuracy, self.within(budget))

    def solvable(self, p: float) -> float:
        """Per-sample accuracy ``p`` on the questions the model can solve (``p / coverage``)."""
        c = self.level.coverage
        return p / c if c > 0 else 0.0

    def expect(self, accuracy_of, budget: int | None = None) -> float:
        """Expected accuracy of a strategy whose accuracy on a solvable question, as a function of
        the per-sample accuracy there, is ``accuracy_of``: unsolvable questions stay wrong."""
        c = self.level.coverage
        return c * accuracy_of(self.solvable(self.sample_accuracy(budget))) if c > 0 else 0.0


@dataclass
class Samples:
    """``n`` drawn samples: thinking and answer tokens, whether the budget cut them, right or not."""

    thinking: np.ndarray
    answer: np.ndarray
    truncated: np.ndarray
    right: np.ndarray

    @property
    def output(self) -> np.ndarray:
        return self.thinking + self.answer


class _Streams:
    """A job's sub-streams by purpose, each made on first use (most strategies use a few of the
    purposes): the generators ``rng.stream(seed, run, name, index, purpose)`` makes, from the
    job class's mixed seed words (``mixer``: ``seed``, ``run`` and the name's key) and the
    job's ``index``."""

    __slots__ = ("mixer", "index", "made")

    def __init__(self, mixer: SeedMixer, index: int):
        self.mixer = mixer  # the class's seed words, then (from the first stream on) the job's
        self.index = index  # the job's index, until mixed in
        self.made: list = [None] * 7

    def __getitem__(self, purpose: int) -> np.random.Generator:
        g = self.made[purpose]
        if g is None:
            if self.index is not None:
                self.mixer, self.index = self.mixer.extend(self.index), None
            seed = MixedSeed(self.mixer.extend(purpose).seed())
            g = self.made[purpose] = np.random.Generator(np.random.PCG64(seed))
        return g


class Job:
    """One job in flight: what it drew and the calls it issued."""

    __slots__ = ("job_id", "index", "arrival_s", "prompt_tokens", "level", "predicted", "strategy", "calls",
                 "status", "finish_s", "right", "expected", "thinking", "truncated", "on_done", "streams", "solvable")

    def __init__(self, job_id: int, index: int, arrival_s: float, prompt_tokens: int, on_done, streams):
        self.job_id, self.index, self.arrival_s, self.prompt_tokens = job_id, index, arrival_s, prompt_tokens
        self.on_done = on_done
        self.streams = streams  # purpose -> Generator
        self.level = self.predicted = None
        self.strategy = None
        self.calls = []
        self.status = ""
        self.finish_s = math.nan
        self.right = False
        self.expected = math.nan
        self.thinking = 0
        self.truncated = 0
        self.solvable = True  # within the model's reach (its level's coverage)


class JobClass:
    """Runs the jobs of one workload class (SimPy glue around the strategies)."""

    def __init__(self, world, cls: C.WorkloadClass, kind: "JobKind"):
        sc = world.scenario
        self.world, self.env, self.cls, self.kind = world, world.env, cls, kind
        self.spec = cls.job
        self.key = f"workload.classes.{cls.name}.job"
        self._mixer = SeedMixer.of(sc.seed, sc.run, (R.name_key(f"jobs/{cls.name}"),))  # the jobs' streams
        levels = self.spec.levels or default_levels()
        self.levels = [LevelModel(lv, sc.base_dir, f"{self.key}.levels.{lv.name}",
                                  R.stream(sc.seed, sc.run, f"quality/{cls.name}/{lv.name}")) for lv in levels]
        self.by_name = {m.name: m for m in self.levels}
        w = np.array([lv.weight for lv in levels], dtype=float)
        self.cum_weights = np.cumsum(w / w.sum())
        self._cum_list = self.cum_weights.tolist()  # (bisect_right on it: searchsorted(side="right"), no array call)
        self.jobs_started = 0
        self._expected: dict = {}  # (id of strategy, level name) -> expected accuracy

    def expected(self, strategy, level: LevelModel, accuracy_of, budget: int | None = None) -> float:
        """``level.expect(accuracy_of, budget)``, computed once per strategy and level (the
        quality model's integrals cost far more than a job's simulation otherwise)."""
        key = (id(strategy), level.name)
        value = self._expected.get(key)
        if value is None:
            value = self._expected[key] = level.expect(accuracy_of, budget)
        return value

    # ------------------------------------------------------------------ lifecycle
    def start(self, t: float, prompt: int, on_done=None) -> Job:
        """Create job at ``t`` (== now) and start its process."""
        index = self.jobs_started
        self.jobs_started += 1
        job = Job(self.kind.new_id(), index, t, prompt, on_done, _Streams(self._mixer, index))
        self.kind.open[job.job_id] = (self, job)
        self.env.process(self._run(job))
        return job

    def _run(self, job: Job):
        u = job.streams[_LEVEL].random()
        level = self.levels[min(bisect_right(self._cum_list, u), len(self.levels) - 1)]
        job.level = job.predicted = level
        job.solvable = bool(job.streams[_LEVEL].random() < level.level.coverage)
        strategy = self.spec.strategy
        if isinstance(strategy, C.Adaptive):
            job.predicted = self._predict(level, strategy.predictor_accuracy, job.streams[_PREDICT])
            strategy = strategy.policies[job.predicted.name]
        job.strategy = strategy
        runner = RUNNERS[strategy.kind]
        answered = yield from runner(self, job, strategy, level)
        job.status = "finished" if answered else "failed"
        if not answered:
            job.right = False
        if job.finish_s != job.finish_s:  # NaN: not answered earlier (self-consistency early stop)
            job.finish_s = self.env.now
        self.end(job)

    def _predict(self, level: LevelModel, accuracy: float, rng) -> LevelModel:
        """The predictor names the true level with ``accuracy``, else another level uniformly."""
        others = [m for m in self.levels if m is not level]
        if not others or rng.random() < accuracy:
            return level
        return others[int(rng.integers(len(others)))]

    def end(self, job: Job) -> None:
        """Record the job (all its calls have ended) and tell the world and its client."""
        self.kind.record(self, job)
        if job.on_done is not None:
            job.on_done(job)

    # ------------------------------------------------------------------ helpers for strategies
    def draw(self, job: Job, level: LevelModel, n: int, budget: int | None, first: int = 0) -> Samples:
        """Samples ``first .. first + n - 1`` of the job (paired across strategies: sample i of a
        job is the same whatever the strategy, as each quantity has its own stream)."""
        s = job.streams
        exit_rng = s[_EXIT] if level.level.early_exit is not None else None  # streams are made on first use
        think, answer = level.lengths(first + n, s[_THINK], s[_ANSWER], exit_rng)
        think, answer = think[first:], answer[first:]
        truncated = np.zeros(n, dtype=bool) if budget is None else think > budget
        if budget is not None:
            think = np.minimum(think, budget)
        u = s[_RIGHT].random(first + n)[first:]
        lv = level.level
        right = job.solvable & (u < np.where(truncated, level.solvable(lv.truncated_accuracy), level.solvable(lv.accuracy)))
        job.thinking += int(np.add.reduce(think))  # (the sums, without ndarray.sum's Python wrapper)
        job.truncated += int(np.count_nonzero(truncated))
        return Samples(think, answer, truncated, right)

    def submit(self, job: Job, prompt: int, output: int, pool: str | None = None, shared: tuple | None = None,
               shared_tokens: int = 0):
        """Issue one call now; returns (call, event that fires when it ends)."""
        ev = self.env.event()
        call = self.world.submit(pool or self.cls.pool, self.cls.name, self.env.now, prompt, output, self.cls.priority,
                                 job.job_id, fires(ev), Prefix(shared, shared_tokens) if shared else None,
                                 group=shared is not None)
        job.calls.append(call)
        return call, ev

    def wait_all(self, events):
        if events:
            yield self.env.all_of(events)


# --------------------------------------------------------------------------- strategies
# Each runner is a generator: it issues calls, waits on them, sets job.right and job.expected,
# and returns whether the job produced an answer. Every call it issued has ended on return.

def _finished(call) -> bool:
    return call.status == "finished"


def run_single(jc: JobClass, job: Job, s: C.SingleStrategy, level: LevelModel):
    job.expected = level.sample_accuracy(s.thinking_budget)
    sm = jc.draw(job, level, 1, s.thinking_budget)
    call, ev = jc.submit(job, job.prompt_tokens, int(sm.output[0]))
    yield ev
    job.right = bool(sm.right[0])
    return _finished(call)


def _parallel(jc: JobClass, job: Job, sm: Samples):
    """Submit one call per sample, all sharing the question's KV blocks."""
    key = ("job", job.job_id)
    return [jc.submit(job, job.prompt_tokens, int(o), shared=key, shared_tokens=job.prompt_tokens) for o in sm.output]


def run_best_of_n(jc: JobClass, job: Job, s: C.BestOfN, level: LevelModel):
    d_prime = Q.auc_to_d_prime(s.verifier.auc if s.verifier.auc is not None else Q.DEFAULT_VERIFIER_AUC)
    job.expected = jc.expected(s, level, lambda p: Q.best_of_n_accuracy(p, s.n, d_prime), s.thinking_budget)
    sm = jc.draw(job, level, s.n, s.thinking_budget)
    issued = _parallel(jc, job, sm)
    yield from jc.wait_all([ev for _, ev in issued])
    ok = np.array([_finished(c) for c, _ in issued])
    if not ok.any():
        return False
    read = sm.answer if s.verifier.reads == "answers" else sm.output
    call, ev = jc.submit(job, job.prompt_tokens + int(read[ok].sum()), s.verifier.output_tokens, pool=s.verifier.pool)
    yield ev
    if not _finished(call):
        return False
    pick = Q.best_of_n_pick(sm.right[ok], d_prime, job.streams[_SELECT])
    job.right = bool(sm.right[ok][pick])
    return True


def run_self_consistency(jc: JobClass, job: Job, s: C.SelfConsistency, level: LevelModel):
    job.expected = jc.expected(s, level, lambda p: Q.majority_vote_accuracy(p, s.n), s.thinking_budget)
    sm = jc.draw(job, level, s.n, s.thinking_budget)
    issued = _parallel(jc, job, sm)
    pending = {ev: i for i, (_, ev) in enumerate(issued)}
    right = wrong = 0
    decided = None
    while pending and decided is None:
        yield jc.env.any_of(list(pending))
        for ev in [e for e in pending if e.triggered]:
            i = pending.pop(ev)
            if _finished(issued[i][0]):
                right, wrong = right + bool(sm.right[i]), wrong + (not sm.right[i])
        if s.early_stop:
            decided = Q.majority_decided(right, wrong, s.n)
    end = jc.env.now
    for ev, i in pending.items():  # the majority is settled: the other samples are not needed
        jc.world.cancel(issued[i][0])
    yield from jc.wait_all(list(pending))
    if right + wrong == 0:
        return False
    if decided is None:
        decided = right > wrong if right != wrong else bool(job.streams[_SELECT].random() < 0.5)
    job.right = decided
    job.finish_s = end
    return True


def run_revision(jc: JobClass, job: Job, s: C.Revision, level: LevelModel):
    p_fix = s.p_fix if s.p_fix is not None else Q.DEFAULT_P_FIX
    p_break = s.p_break if s.p_break is not None else Q.DEFAULT_P_BREAK
    job.expected = jc.expected(s, level, lambda p: Q.revision_accuracy(p, s.rounds, p_fix, p_break), s.thinking_budget)
    fix = p_fix if job.solvable else 0.0  # no revision finds an answer out of the model's reach
    prompt = job.prompt_tokens
    right = None
    rng = job.streams[_SELECT]
    for r in range(s.rounds + 1):
        sm = jc.draw(job, level, 1, s.thinking_budget, first=r)  # round r's lengths; its right/wrong follows the chain
        call, ev = jc.submit(job, prompt, int(sm.output[0]))
        yield ev
        if not _finished(call):
            return False
        right = bool(sm.right[0]) if r == 0 else Q.revision_step(right, fix, p_break, rng)
        prompt = job.prompt_tokens + int(sm.answer[0] if s.carry == "answer" else sm.output[0])
    job.right = right
    return True


def run_beam_search(jc: JobClass, job: Job, s: C.BeamSearch, level: LevelModel):
    d_prime = Q.auc_to_d_prime(s.prm.auc if s.prm.auc is not None else Q.DEFAULT_PRM_AUC)
    job.expected = jc.expected(s, level, lambda p: Q.beam_search_accuracy(p, s.depth, s.width, s.expansions, d_prime))
    p = level.solvable(level.level.accuracy) if job.solvable else 0.0
    q = p ** (1.0 / s.depth)  # a right partial solution stays right for one more step
    rng = job.streams[_SELECT]
    beams = [(0, True, 0)]  # (beam id, still right, path tokens)
    next_id = 1
    for depth in range(s.depth):
        per_beam = s.width * s.expansions if depth == 0 else s.expansions
        cands = []  # (id, parent, right, path tokens, call, event)
        for bid, alive, path in beams:
            prompt = job.prompt_tokens + path
            step_right = rng.random(per_beam) < q
            for j in range(per_beam):
                call, ev = jc.submit(job, prompt, s.step_tokens, shared=("beam", job.job_id, bid), shared_tokens=prompt)
                cands.append((next_id, bid, alive and bool(step_right[j]), path + s.step_tokens, call, ev))
                next_id += 1
        yield from jc.wait_all([c[5] for c in cands])
        cands = [c for c in cands if _finished(c[4])]
        scored = []
        for cid, parent, alive, path, _, _ in cands:  # the PRM reads each candidate path
            prompt = job.prompt_tokens + path
            call, ev = jc.submit(job, prompt, s.prm.output_tokens, pool=s.prm.pool, shared=("prm", job.job_id, parent),
                                 shared_tokens=prompt - s.step_tokens)
            scored.append(((cid, alive, path), call, ev))
        yield from jc.wait_all([ev for _, _, ev in scored])
        scored = [b for b, call, _ in scored if _finished(call)]
        if not scored:
            return False
        keep = Q.beam_select(np.array([alive for _, alive, _ in scored]), s.width, d_prime, rng)
        beams = [scored[i] for i in keep]
    job.right = bool(beams[0][1])
    return True


RUNNERS = {
    "single": run_single,
    "best_of_n": run_best_of_n,
    "self_consistency": run_self_consistency,
    "revision": run_revision,
    "beam_search": run_beam_search,
}


def strategy_width(s) -> int:
    """Samples, beams or rounds of a strategy (the jobs table's ``width``)."""
    if isinstance(s, (C.BestOfN, C.SelfConsistency)):
        return s.n
    if isinstance(s, C.Revision):
        return s.rounds + 1
    if isinstance(s, C.BeamSearch):
        return s.width
    return 1


class JobKind(WorkloadKind):
    """Reasoning jobs (workload classes with ``job:``): one :class:`JobClass` per class, a row
    per job in the jobs table."""

    key, table, schema = "job", "jobs", JOBS_SCHEMA
    order = 10

    def __init__(self, world, classes: list):
        super().__init__(world, classes)
        self.by_class = {c.name: JobClass(world, c, self) for c in classes}

    def record(self, jc: JobClass, job: Job) -> None:
        """Write a job's row once all its calls have ended (or at the end of the run)."""
        world = self.world
        del self.open[job.job_id]
        calls = job.calls
        kv_saved = 0.0
        for c in calls:
            if c.cached_tokens:
                spec = world.spec_by_name[c.pool]
                kv_saved += c.cached_tokens * spec.kv_gib * GIB / (spec.kv_blocks * spec.block_size) * spec.devices_per_replica
        s = job.strategy
        budget = getattr(s, "thinking_budget", None) if s is not None else None
        world.recorder.row(self.table, (
            job.job_id, jc.cls.name, jc.cls.pool, s.kind if s is not None else "", job.level.name if job.level else "",
            job.predicted.name if job.predicted else "", strategy_width(s) if s is not None else 0,
            budget if budget is not None else -1, job.status, job.arrival_s, job.finish_s, job.finish_s - job.arrival_s,
            len(calls), sum(c.status == "cancelled" for c in calls), job.prompt_tokens,
            sum(c.prompt_tokens for c in calls), sum(c.generated for c in calls), job.thinking, job.truncated,
            sum(c.cached_tokens for c in calls), kv_saved, sum(world.call_energy_j(c) for c in calls),
            sum(world.call_cost_usd(c) for c in calls), job.expected, bool(job.right) and job.status == "finished",
        ))
        world.check_done()

    def close(self) -> None:
        """Jobs still waiting on calls when the run ends are recorded as timed out."""
        for jc, job in list(self.open.values()):
            job.status = "timed-out"
            job.right = False
            job.finish_s = math.nan
            self.record(jc, job)

    def summarize(self, tables, calls, t0: float, t1: float, summary: dict) -> dict:
        with tables.file(self.table) as jobs:
            out = job_metrics(jobs, t0, t1, summary["cost_usd"], summary["facility_energy_j"])
        if out["jobs_created"] != self.created:
            raise RuntimeError(f"jobs table has {out['jobs_created']} rows but {self.created} jobs were created")
        return out
