"""Workload: arrival processes and token-length distributions, and the SimPy
process that turns a workload class into calls. The data files a class names (traces, CSV
tables) are read by sim.workloads.tracefile, whose readers are re-exported here.

Samplers draw in vectorized chunks from the class's own random streams
(``workload/<class>/arrival``, ``.../prompt``, ``.../output``), so a change to one
class or one distribution leaves every other stream untouched.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from pathlib import Path

import numpy as np

from sim import config as C
from sim.config.base import MAX_TOKENS
from sim.config.limits import env_limit, limit_message
from sim.engine.instant import URGENT, wake_at
from sim.errors import ScenarioError
from sim.workloads.tracefile import finite, read_csv, chain_block_ids, load_trace, load_trace_with_hashes  # noqa: F401

CHUNK = 1024


# --------------------------------------------------------------------------- lengths
class LengthSampler:
    """Draws positive integer token counts from one length distribution."""

    def __init__(self, dist, rng: np.random.Generator, base_dir: Path, key: str):
        self.dist, self.rng = dist, rng
        self._values = self._weights = self._cdf = None
        if isinstance(dist, C.EmpiricalLength):
            self._values, self._weights = _empirical(dist, base_dir, key)
            if self._weights is not None:  # Generator.choice's own cumulative weights (see sample)
                self._cdf = self._weights.cumsum()
                self._cdf /= self._cdf[-1]
                self._cdf_list, self._values_list = self._cdf.tolist(), self._values.tolist()

    @property
    def mean(self) -> float:
        """Mean of the distribution before clipping (for checks and docs)."""
        d = self.dist
        if isinstance(d, C.FixedLength):
            return float(d.value)
        if isinstance(d, C.UniformLength):
            return (d.low + d.high) / 2
        if isinstance(d, C.LognormalLength):
            return d.median * math.exp(d.sigma**2 / 2)
        if isinstance(d, C.ExponentialLength):
            p = 1 - math.exp(-1 / d.mean)
            return 1 / p
        w = self._weights if self._weights is not None else np.ones(len(self._values)) / len(self._values)
        return float(np.dot(self._values, w))

    def one(self, rng: np.random.Generator) -> int:
        """``int(self.sample(1, rng)[0])``, the same draw; weighted values without an array
        (a scalar uniform is the one-element draw, ``bisect_right`` is ``searchsorted(side="right")``)."""
        if self._cdf is None:
            return int(self.sample(1, rng)[0])
        x = self._values_list[bisect_right(self._cdf_list, rng.random())]
        d = self.dist
        return min(x, d.max) if d.max else x

    def sample(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``n`` draws, from ``rng`` if given (else the sampler's own stream)."""
        d, rng = self.dist, rng if rng is not None else self.rng
        if isinstance(d, C.FixedLength):
            return np.full(n, d.value, dtype=np.int64)
        if isinstance(d, C.UniformLength):
            return rng.integers(d.low, d.high + 1, size=n)
        if isinstance(d, C.LognormalLength):
            # clipped before the cast: a far tail draw must not wrap around int64 (np.clip's
            # own definition, minimum of maximum, without its Python wrapper: a job draws a few
            # lengths at a time, where that wrapper cost more than the draw)
            x = np.minimum(np.maximum(np.rint(rng.lognormal(math.log(d.median), d.sigma, size=n)), d.min),
                           d.max or MAX_TOKENS)
            return x.astype(np.int64)
        if isinstance(d, C.ExponentialLength):
            x = np.minimum(np.ceil(rng.exponential(d.mean, size=n)), MAX_TOKENS).astype(np.int64)
            x = np.maximum(x, 1)
            return np.minimum(x, d.max) if d.max else x
        if self._cdf is not None:
            # what rng.choice(values, size=n, p=weights) does, without re-checking the weights
            # at every draw: n uniforms, each the index of the first cumulative weight above it
            x = self._values[self._cdf.searchsorted(rng.random(n), side="right")]
        else:
            x = rng.choice(self._values, size=n, p=self._weights)
        return np.minimum(x, d.max) if d.max else x


def _empirical(d: C.EmpiricalLength, base_dir: Path, key: str):
    if d.values is not None:
        vals = np.asarray(d.values, dtype=np.int64)
        w = None
        if d.weights is not None:
            w = np.asarray(d.weights, dtype=float)
            w = w / w.sum()
        return vals, w
    rows = read_csv(base_dir, d.path, key)
    src = str(base_dir / d.path)
    for col in (d.column, d.weight_column):
        if col and rows and col not in rows[0]:
            raise ScenarioError(src, key, f"no column {col!r} in the CSV header")
    vals, weights = [], []
    for i, row in enumerate(rows):
        try:
            v = round(finite(row[d.column]))
            w = finite(row[d.weight_column]) if d.weight_column else 1.0
        except ValueError:
            raise ScenarioError(src, key, f"row {i + 2}: not a finite number") from None
        if v > MAX_TOKENS or w < 0:
            raise ScenarioError(src, key, f"row {i + 2}: lengths must be at most {MAX_TOKENS:.0e} tokens and "
                                          "weights non-negative")
        if v >= 1 and w > 0:
            vals.append(v)
            weights.append(w)
    if not vals:
        raise ScenarioError(str(base_dir / d.path), key, "no positive values in the column")
    w = np.asarray(weights)
    with np.errstate(over="ignore"):
        total = w.sum()
    if not np.isfinite(total):
        raise ScenarioError(src, key, "the weights' sum is not finite")
    return np.asarray(vals, dtype=np.int64), w / w.sum()


# --------------------------------------------------------------------------- arrivals
def _gaps(arrival, rng: np.random.Generator, n: int) -> np.ndarray:
    if isinstance(arrival, C.PoissonArrivals):
        return rng.exponential(1.0 / arrival.rate_per_s, size=n)
    if isinstance(arrival, C.DeterministicArrivals):
        return np.full(n, 1.0 / arrival.rate_per_s)
    if isinstance(arrival, C.GammaArrivals):
        shape = 1.0 / arrival.cv**2
        return rng.gamma(shape, 1.0 / (arrival.rate_per_s * shape), size=n)
    raise TypeError(arrival)


class RateSchedule:
    """A piecewise-constant arrival rate ``rates[i]`` on ``[times[i], times[i+1])`` (the last
    rate holding on, or the whole schedule repeating every ``period``), with its cumulative
    intensity and that function's inverse, for drawing a non-homogeneous Poisson process
    exactly: unit-rate Poisson points mapped through the inverse cumulative intensity."""

    def __init__(self, times, rates, period: float | None = None):
        self.times = np.asarray(times, dtype=float)
        self.rates = np.asarray(rates, dtype=float)
        self.period = period
        ends = np.append(self.times[1:], period if period is not None else self.times[-1])
        self.cum = np.concatenate([[0.0], np.cumsum(self.rates[:-1] * np.diff(self.times))])
        self.cum_period = float(self.cum[-1] + self.rates[-1] * (ends[-1] - self.times[-1])) if period else None

    @classmethod
    def of(cls, arrival: C.ScheduleArrivals, base_dir: Path, key: str) -> "RateSchedule":
        if arrival.path is None:
            times, rates = arrival.times_s, arrival.rates_per_s
        else:
            rows = read_csv(base_dir, arrival.path, key)
            src = str(base_dir / arrival.path)
            if not rows:
                raise ScenarioError(src, key, "rate schedule has no rows")
            for col in (arrival.time_column, arrival.rate_column):
                if col not in rows[0]:
                    raise ScenarioError(src, key, f"no column {col!r} in the rate schedule's header")
            try:
                times = [finite(r[arrival.time_column]) for r in rows]
                rates = [finite(r[arrival.rate_column]) for r in rows]
            except ValueError:
                raise ScenarioError(src, key, "the rate schedule has a value that is not a finite number") from None
            if times[0] != 0 or any(b <= a for a, b in zip(times, times[1:])) or min(rates) < 0:
                raise ScenarioError(src, key, "times must start at 0 and increase, rates must not be negative")
        t = np.asarray(times) * arrival.time_scale
        if arrival.period_s is not None and t[-1] >= arrival.period_s:
            raise ScenarioError("", f"{key}.period_s", f"the schedule runs to {t[-1]:g} s (scaled), past period_s")
        return cls(t, np.asarray(rates) * arrival.rate_scale, arrival.period_s)

    def rate(self, t):
        """Rate (per s) at times ``t``."""
        t = np.asarray(t, dtype=float)
        if self.period is not None:
            t = np.mod(t, self.period)
        return self.rates[np.clip(np.searchsorted(self.times, t, side="right") - 1, 0, None)]

    def cumulative(self, t: float) -> float:
        """Expected arrivals in [0, t)."""
        n = 0.0
        if self.period is not None:
            k = math.floor(t / self.period)
            n, t = k * self.cum_period, t - k * self.period
        i = max(0, int(np.searchsorted(self.times, t, side="right")) - 1)
        return n + float(self.cum[i] + self.rates[i] * (t - self.times[i]))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Times at which the cumulative intensity reaches ``y`` (> 0); inf past the end of a
        schedule whose last rate is 0."""
        y = np.asarray(y, dtype=float)
        base = np.zeros_like(y)
        if self.period is not None:
            if self.cum_period <= 0:
                return np.full_like(y, np.inf)
            k = np.floor(y / self.cum_period)
            k = np.where(y - k * self.cum_period > 0, k, k - 1)  # y on a period edge ends the period before
            base, y = k * self.period, y - k * self.cum_period
        i = np.clip(np.searchsorted(self.cum, y, side="left") - 1, 0, None)
        r = self.rates[i]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(r > 0, self.times[i] + (y - self.cum[i]) / r, np.inf)
        return base + t


def generate_calls(env, cls: C.WorkloadClass, streams, base_dir: Path, stop_s: float, make_call, key: str):
    """SimPy process: create the calls of one class until ``stop_s`` and hand each to ``make_call``.

    ``streams(name)`` returns the named random generator. ``make_call(cls, t,
    prompt, output, on_done=...)`` creates and routes one call at exact time ``t``.
    The process lives until ``stop`` (closed loops create calls from completion
    callbacks meanwhile), so the world does not see the class as finished early.
    """
    stop = min(stop_s, cls.stop_s) if cls.stop_s is not None else stop_s
    prompt = LengthSampler(cls.prompt_tokens, streams("prompt"), base_dir, f"{key}.prompt_tokens") if cls.prompt_tokens else None
    output = LengthSampler(cls.output_tokens, streams("output"), base_dir, f"{key}.output_tokens") if cls.output_tokens else None
    if isinstance(cls.arrival, C.TraceArrivals):
        yield from _replay(env, cls, base_dir, stop, prompt, output, make_call, key)
        return
    if isinstance(cls.arrival, C.ClosedArrivals):
        yield from _closed(env, cls, stop, prompt, output, make_call, key)
        return
    if isinstance(cls.arrival, C.BurstArrivals):
        yield from _burst(env, cls, stop, prompt, output, make_call)
        return
    rng = streams("arrival")
    if isinstance(cls.arrival, C.ScheduleArrivals):
        yield from _scheduled(env, cls, RateSchedule.of(cls.arrival, base_dir, f"{key}.arrival"), rng, stop, prompt,
                              output, make_call)
        return
    for t, p, o in _open_times(cls, rng, stop, prompt, output):
        yield env.timeout(t - env.now)
        make_call(cls, t, p, o)


def _open_times(cls, rng, stop, prompt, output):
    """(time, prompt, output) of each call of an open loop of independent gaps (Poisson,
    deterministic, gamma) before ``stop``, drawn in chunks: gaps, prompts, outputs."""
    t = cls.start_s
    while True:
        gaps = _gaps(cls.arrival, rng, CHUNK)
        ps = _outputs(prompt, CHUNK)
        os_ = _outputs(output, CHUNK)
        for g, p, o in zip(gaps.tolist(), ps.tolist(), os_.tolist()):
            t += g
            if t >= stop:
                return
            yield t, p, o


def open_loop(cls: C.WorkloadClass) -> bool:
    """Whether the class's calls arrive in an open loop of independent gaps (see :class:`OpenLoop`)."""
    return isinstance(cls.arrival, (C.PoissonArrivals, C.DeterministicArrivals, C.GammaArrivals))


class OpenLoop:
    """:func:`generate_calls` for an :func:`open_loop` class as a chain of SimPy wake-ups, one per
    call, instead of a process resumed at every call (a generator's resumption and a Timeout
    each time). It takes the same event ids, ranks and times as the process would: its start
    as the process's (urgent, at :meth:`start`), each arrival as the Timeout the process would
    yield after making the previous call, and its end as the process ending (``on_end`` runs
    where the process would return, then an event takes the id the ended process would), so
    the simulation runs event for event as with the process."""

    def __init__(self, env, cls: C.WorkloadClass, streams, base_dir: Path, stop_s: float, make_call, key: str, on_end):
        self.env, self.cls, self.streams, self.base_dir = env, cls, streams, base_dir
        self.stop_s, self.make_call, self.key, self.on_end = stop_s, make_call, key, on_end
        self._times = None

    def start(self) -> None:
        wake_at(self.env, self.env.now, None, self._begin, None, URGENT)

    def _begin(self, _wake) -> None:
        cls, key, streams = self.cls, self.key, self.streams
        stop = min(self.stop_s, cls.stop_s) if cls.stop_s is not None else self.stop_s
        prompt = LengthSampler(cls.prompt_tokens, streams("prompt"), self.base_dir, f"{key}.prompt_tokens") if cls.prompt_tokens else None
        output = LengthSampler(cls.output_tokens, streams("output"), self.base_dir, f"{key}.output_tokens") if cls.output_tokens else None
        self._times = _open_times(cls, streams("arrival"), stop, prompt, output)
        self._next()

    def _arrive(self, wake) -> None:
        t, p, o = wake.tag
        self.make_call(self.cls, t, p, o)
        self._next()

    def _next(self) -> None:
        nxt = next(self._times, None)
        if nxt is None:
            self.on_end()
            wake_at(self.env, self.env.now, None, _ended, None)  # the id and place of the process's end
            return
        wake_at(self.env, nxt[0], None, self._arrive, nxt)


def _ended(_wake) -> None:
    """The end of an :class:`OpenLoop` (nothing waits for it)."""


def _scheduled(env, cls, schedule: RateSchedule, rng, stop, prompt, output, make_call):
    """Open-loop arrivals of a rate schedule from ``start_s``: unit exponential gaps summed
    onto the cumulative intensity at ``start_s``, mapped back to times."""
    y = schedule.cumulative(cls.start_s)
    while True:
        gaps = rng.exponential(1.0, size=CHUNK)
        times = schedule.inverse(y + np.cumsum(gaps))
        y += float(gaps.sum())
        ps = _outputs(prompt, CHUNK)
        os_ = _outputs(output, CHUNK)
        for t, p, o in zip(times.tolist(), ps.tolist(), os_.tolist()):
            if t >= stop:
                return
            yield env.timeout(t - env.now)
            make_call(cls, t, p, o)


def _burst(env, cls, stop, prompt, output, make_call):
    """``count`` calls at ``start_s`` (none if that is past ``stop``), lengths drawn at once."""
    if cls.start_s >= stop:
        return
    yield env.timeout(cls.start_s - env.now)
    n = cls.arrival.count
    for p, o in zip(_outputs(prompt, n).tolist(), _outputs(output, n).tolist()):
        make_call(cls, cls.start_s, p, o)


def _outputs(sampler: LengthSampler | None, n: int) -> np.ndarray:
    """``n`` lengths; zeros where the class draws its own (jobs, sessions: outputs; video
    requests: prompts and outputs)."""
    return sampler.sample(n) if sampler is not None else np.zeros(n, dtype=np.int64)


def _lengths(prompt: LengthSampler, output: LengthSampler | None):
    """Endless (prompt, output) pairs, drawn in chunks like the open-loop generator."""
    while True:
        yield from zip(_outputs(prompt, CHUNK).tolist(), _outputs(output, CHUNK).tolist())


# Closed-loop clients whose calls are dropped on arrival with no think time retry at the
# same instant; this many drops in a row means no call can ever be served.
MAX_DROP_STREAK = 10_000
# A closed-loop client whose call failed (every replica of its pool down) tries again after this.
FAILED_RETRY_S = 1.0


def _closed(env, cls, stop, prompt, output, make_call, key):
    """``concurrency`` clients from ``start_s``; each sends its next call ``think_s`` after
    its previous one ends (finished, dropped or timed out), until ``stop``.

    Calls end inside the engine's commit, so a completion only schedules the next
    call as its own event (at the same instant when ``think_s`` is 0); the engine
    admits a call arriving at the instant a decision was made as if it had been
    there. Lengths are drawn in creation order, which SimPy's event order fixes.
    """
    think = cls.arrival.think_s
    lengths = _lengths(prompt, output)
    state = {"stopped": False, "drops": 0}

    def send(t: float) -> None:
        if state["stopped"] or t >= stop:
            return
        p, o = next(lengths)
        make_call(cls, t, p, o, on_done=done)

    def done(call) -> None:
        if call.status == "dropped" and think == 0:
            state["drops"] += 1
            if state["drops"] > MAX_DROP_STREAK:
                raise ScenarioError("", key, f"every call is dropped (prompt + output longer than the context or the KV "
                                             f"pool); {MAX_DROP_STREAK} closed-loop retries at t={env.now:g} s")
        else:
            state["drops"] = 0
        end = call.finish_s if call.finish_s == call.finish_s else env.now  # NaN: timed out at the end
        # a call that failed (its whole pool down) is retried after a back-off, not at once
        t = end + max(think, FAILED_RETRY_S if call.status == "failed" else 0.0)
        if state["stopped"] or t >= stop:
            return
        wake_at(env, t, None, send_woken, t)  # (as env.timeout(t - now) would be scheduled)

    def send_woken(wake) -> None:
        send(wake.tag)

    if cls.start_s >= stop:
        return
    yield env.timeout(cls.start_s - env.now)
    for _ in range(cls.arrival.concurrency):
        send(cls.start_s)
    yield env.timeout(max(0.0, stop - env.now))
    state["stopped"] = True


def _replay(env, cls, base_dir, stop, prompt, output, make_call, key):
    times, tp, to, hashes = load_trace_with_hashes(cls.arrival, base_dir, f"{key}.arrival")
    span = times[-1] - times[0] + (times[-1] - times[0]) / max(1, len(times) - 1)
    if cls.arrival.loop and span > 0:  # a looped trace's calls, counted before the first is made
        calls = len(times) * max(1.0, (stop - times[0]) / span)
        if not calls <= env_limit("max_calls"):
            raise ScenarioError("", f"{key}.arrival.loop", limit_message(calls, "the looped trace's calls over the "
                                                                                "run", "max_calls"))
    offset = 0.0
    while True:
        n = len(times)
        ps = tp if tp is not None else _outputs(prompt, n)
        os_ = to if to is not None else _outputs(output, n)
        for i, (t, p, o) in enumerate(zip((times + offset).tolist(), ps.tolist(), os_.tolist())):
            if t >= stop:
                return
            if t < cls.start_s:
                continue
            yield env.timeout(max(0.0, t - env.now))
            if hashes is None:
                make_call(cls, t, p, o)
            else:
                make_call(cls, t, p, o, hashes=hashes[i])
        if not cls.arrival.loop or span <= 0:
            return
        offset += span


class ShareSampler:
    """Draws fractions in [0, 1] from a share distribution."""

    def __init__(self, dist, base_dir, key: str):
        self.dist = dist
        self.values = self.weights = None
        if isinstance(dist, C.EmpiricalShare):
            self.values, self.weights = _empirical_share(dist, base_dir, key)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        d = self.dist
        if isinstance(d, C.FixedShare):
            return np.full(n, d.value)
        if isinstance(d, C.UniformShare):
            return rng.uniform(d.low, d.high, size=n)
        if isinstance(d, C.BetaShare):
            return rng.beta(d.a, d.b, size=n)
        return rng.choice(self.values, size=n, p=self.weights)


def _empirical_share(d: C.EmpiricalShare, base_dir, key: str):
    if d.values is not None:
        w = np.asarray(d.weights if d.weights is not None else [1.0] * len(d.values), dtype=float)
        return np.asarray(d.values, dtype=float), w / w.sum()
    rows = read_csv(base_dir, d.path, key)
    try:
        vals = np.array([float(r[d.column]) for r in rows])
        w = np.array([float(r[d.weight_column]) for r in rows]) if d.weight_column else np.ones(len(rows))
    except KeyError as e:
        raise ScenarioError(d.path, key, f"no column {e.args[0]!r} in the CSV header") from None
    except ValueError:
        raise ScenarioError(d.path, key, "a value is not a number") from None
    if (not len(vals) or not np.isfinite(vals).all() or not np.isfinite(w).all() or np.any((vals < 0) | (vals > 1))
            or np.any(w < 0) or not 0 < w.sum() < np.inf):
        raise ScenarioError(d.path, key, "shares must lie in [0, 1] with non-negative weights, not all zero")
    return vals, w / w.sum()
