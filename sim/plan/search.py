"""The search on Ray Tune: a searcher over candidate indices, one Tune trial per simulated candidate.

Tune sees one parameter per axis of ``plan.space``, the index of its value: an integer range for
an axis of ascending numbers (the searcher may exploit their order), a categorical choice
otherwise. The searcher is Optuna's TPE (or its random sampler) through Tune's ``OptunaSearch``,
seeded by ``plan.search.seed``, wrapped in :class:`ScreeningSearcher`, which

* answers a candidate it has already seen from what it learned (the searcher is told the same
  score again) and asks for another, so every Tune trial is a new configuration;
* rejects a candidate that does not fit in memory or is pruned by the capacity stage
  (:meth:`sim.plan.space.Space.screen`) before any trial runs: the searcher is told the
  suggestion failed (Optuna's samplers leave failed trials out of their model, so an axis value
  is not condemned because it fails with another axis's value: tp 1 of a large model may fit a
  192 GB device only) and the rejection is recorded;
* hands each trial the best feasible objective known when it was suggested, for the
  ``hopeless`` early-stopping rule (:mod:`sim.plan.trial`).

Tune's ``ConcurrencyLimiter`` in batch mode runs ``concurrency`` trials at a time and tells the
searcher a batch's results only when the whole batch is done, so what is suggested next, and so
the whole plan, does not depend on which trial of a batch finished first.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from sim.plan.metrics import INFEASIBLE_SCORE
from sim.plan.space import Space

__all__ = ["ScreeningSearcher", "tune_space", "make_searcher"]

MAX_REPEATS = 200  # suggestions in a row that are all already known: the space is exhausted
REPEATS_BEFORE_RANDOM = 10  # known suggestions in a row before a random unknown candidate is tried


def tune_space(space: Space) -> dict:
    """Tune's parameter space: ``a<i>`` is the index into axis ``i``."""
    from ray import tune

    out = {}
    for i, values in enumerate(space.values):
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        ordered = numeric and all(a < b for a, b in zip(values, values[1:]))
        out[f"a{i}"] = tune.randint(0, len(values)) if ordered and len(values) > 1 else tune.choice(list(range(len(values))))
    return out


def _searcher_base():
    from ray.tune.search import Searcher

    return Searcher


class ScreeningSearcher(_searcher_base()):
    """A Tune searcher around another (``inner``) that screens and de-duplicates its suggestions.

    ``screen(index) -> (stage, reason) | None`` rejects a candidate before it runs; ``on_screened``
    records each rejection; ``total`` is the number of candidates (the search ends when every one
    is known)."""

    def __init__(self, inner, screen: Callable[[tuple], Any], on_screened: Callable[[tuple, str, str], None],
                 sizes: list[int], ordered: list[bool], startup: int, seed: int = 0, metric: str = "score", mode: str = "min"):
        super().__init__(metric=metric, mode=mode)
        self.sizes = sizes
        self.ordered = ordered
        self.startup = startup  # trials before the incumbent's neighbours are tried
        self.incumbent: tuple | None = None  # (objective, index) of the best feasible full run
        self.closest: tuple | None = None  # (score, index) of the lowest-scored trial
        self.rng = np.random.default_rng(seed)
        self.completed = 0
        self.inner = inner
        self.screen = screen
        self.on_screened = on_screened
        self.n_axes = len(sizes)
        self.total = math.prod(sizes)
        self.known: dict[tuple, float | None] = {}  # index -> score told to the searcher (None: screened out)
        self.pending: dict[str, tuple] = {}  # Tune trial id -> (index, inner id)
        self.waiting: dict[tuple, list[str]] = {}  # index of a running trial -> inner ids of repeats
        self.best: float = math.inf  # best feasible full-horizon objective (as minimized)
        self._n = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def save(self, checkpoint_path: str) -> None:
        pass  # a plan resumes from its commit markers (the search replays), not from Tune's state

    def restore(self, checkpoint_path: str) -> None:
        pass

    def _inner_id(self) -> str:
        self._n += 1
        return f"s{self._n}"

    def _tell(self, inner_id: str, score: float) -> None:
        self.inner.on_trial_complete(inner_id, result={self.metric: score})

    def suggest(self, trial_id: str):
        for attempt in range(MAX_REPEATS):
            if len(self.known) + len(self.waiting) >= self.total:
                return self.FINISHED if not self.waiting else None
            iid = self._inner_id()
            # the incumbent's neighbours first; a fresh random candidate when the model keeps
            # suggesting known ones (it has converged); either is asked of the inner searcher as a
            # fixed trial, so its model learns the result too
            fixed = self._next_neighbour() or (self._fresh() if attempt >= REPEATS_BEFORE_RANDOM else None)
            if fixed is not None:
                self.inner._ot_study.enqueue_trial({f"a{i}": v for i, v in enumerate(fixed)})
            cfg = self.inner.suggest(iid)
            if cfg is None or cfg == self.FINISHED:
                return cfg
            index = tuple(int(cfg[f"a{i}"]) for i in range(self.n_axes))
            if index in self.known:
                if self.known[index] is None:
                    self.inner.on_trial_complete(iid, error=True)
                else:
                    self._tell(iid, self.known[index])
                continue
            if index in self.waiting:
                self.waiting[index].append(iid)
                continue
            rejected = self.screen(index)
            if rejected is not None:
                self.known[index] = None
                self.inner.on_trial_complete(iid, error=True)  # a failed trial: the model ignores it
                self.on_screened(index, *rejected)
                continue
            self.pending[trial_id] = (index, iid)
            self.waiting[index] = []
            return {"index": list(index), "best": self.best if math.isfinite(self.best) else None}
        return self.FINISHED

    def neighbours(self, index: tuple) -> list[tuple]:
        """One step down, then up, on each ordered axis; every other value of a categorical one;
        then one step down on an ordered axis with one step up on another (trading one resource
        for another: fewer devices per replica, more replicas), and another categorical value with
        one step down on an ordered axis (a larger device needs fewer of them)."""
        out = []
        for axis, (i, n) in enumerate(zip(index, self.sizes)):
            steps = [i - 1, i + 1] if self.ordered[axis] else [j for j in range(n) if j != i]
            out += [index[:axis] + (j,) + index[axis + 1:] for j in steps if 0 <= j < n]
        ordered = [a for a in range(len(index)) if self.ordered[a]]
        for a in ordered:
            for b in ordered:
                if a != b and index[a] > 0 and index[b] + 1 < self.sizes[b]:
                    nb = list(index)
                    nb[a] -= 1
                    nb[b] += 1
                    out.append(tuple(nb))
        for a in range(len(index)):  # another value of a categorical axis with one step down elsewhere
            if self.ordered[a]:
                continue
            for j in range(self.sizes[a]):
                for b in ordered:
                    if j != index[a] and index[b] > 0:
                        nb = list(index)
                        nb[a], nb[b] = j, nb[b] - 1
                        out.append(tuple(nb))
        return out

    def _fresh(self) -> tuple | None:
        """A random candidate not yet known or running (seeded: the same every replay)."""
        for _ in range(MAX_REPEATS):
            index = tuple(int(self.rng.integers(0, n)) for n in self.sizes)
            if index not in self.known and index not in self.waiting:
                return index
        return None

    def _next_neighbour(self) -> tuple | None:
        """Once the start-up is over, the first neighbour not yet known or running of the incumbent
        (the best feasible trial), or while none is feasible, of the trial closest to feasible
        (lowest score)."""
        centre = self.incumbent or self.closest
        if centre is None or self.completed < self.startup:
            return None
        return next((nb for nb in self.neighbours(centre[1]) if nb not in self.known and nb not in self.waiting), None)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # the searcher learns a trial's final score only

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.pending:
            return
        index, iid = self.pending.pop(trial_id)
        score = float(result[self.metric]) if result and self.metric in result else INFEASIBLE_SCORE / 100
        self.known[index] = score
        self.completed += 1
        if self.closest is None or (score, index) < self.closest:
            self.closest = (score, index)
        if result and result.get("feasible") and result.get("stage") == 2:
            self.best = min(self.best, float(result["objective"]))
            key = (float(result["objective"]), index)  # ties: the lower index (not the finish order)
            if self.incumbent is None or key < self.incumbent:
                self.incumbent = key
        for repeat in [iid, *self.waiting.pop(index, [])]:
            self._tell(repeat, score)


def make_searcher(space: Space, screen, on_screened, concurrency: int):
    """OptunaSearch (TPE or random, seeded) behind screening, in batches of ``concurrency``."""
    import optuna
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    search = space.spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = search.startup_trials or max(4, min(10, search.trials // 3))
    if search.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=search.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup, multivariate=True)
    params = tune_space(space)
    inner = OptunaSearch(space=OptunaSearch.convert_search_space(params), metric="score", mode="min", sampler=sampler)
    sizes = [len(v) for v in space.values]
    ordered = [not hasattr(params[f"a{i}"], "categories") for i in range(len(sizes))]
    wrapped = ScreeningSearcher(inner, screen, on_screened, sizes, ordered, startup, search.seed)
    return ConcurrencyLimiter(wrapped, max_concurrent=concurrency, batch=True), wrapped
