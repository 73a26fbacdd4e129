"""Answer quality of test-time-compute jobs: P(final answer right) and outcome samplers.

Pure helpers (no SimPy) for the job simulation. A *test-time-compute job* spends
extra inference on one question: several samples, a verifier, revision rounds or
a beam search. The simulator prices the tokens; this module says what they buy:
the probability that the job's final answer is right, given the question's
difficulty (its per-sample accuracy ``p``), the strategy and its budget. Each
closed form has a sampler beside it that draws one concrete outcome with the same
law, so a simulated job and the expectation agree.

Strategies (``p`` is the accuracy of one sample):

* **Thinking budget** (:func:`budget_accuracy`): a sample whose thinking is cut by
  a budget and forced to answer has the lower ``truncated_accuracy``.
* **Self-consistency** (:func:`majority_vote_accuracy`, :func:`majority_decided`):
  majority vote of ``n`` samples in a *two-answer* model (the right answer vs one
  wrong answer). Real wrong answers scatter over many values, so plurality voting
  does better than this; the model is conservative.
* **Best-of-N** (:func:`best_of_n_accuracy`, :func:`best_of_n_pick`): an imperfect
  verifier scores each candidate (equal-variance Gaussian signal detection with
  discriminability ``d'``, :func:`auc_to_d_prime`) and the top score is taken.
* **Sequential revision** (:func:`revision_accuracy`, :func:`revision_step`): a
  two-state Markov chain (a wrong answer gets fixed w.p. ``p_fix``, a right one
  broken w.p. ``p_break`` per round).
* **Beam search with a process reward model** (:func:`beam_select`,
  :func:`beam_search_accuracy`): step-wise search where a wrong step never recovers.

Samples are independent given the question's difficulty; across questions the
difficulty is a small mixture (:data:`DEFAULT_LEVELS`). A mixture is needed: for a
single ``p`` majority voting of 64 samples gives nearly 0 or 1, never the
published 86.7 %.

**Defaults** are fitted to published accuracy-vs-compute figures kept here as data
(``ANCHORS``). :func:`fit_defaults` reruns every fit (scipy.optimize) and returns
the parameters and residuals; the ``DEFAULT_*`` constants are its rounded output
(``tests/test_quality.py`` checks both). See docs/quality.md.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass

import numpy as np

from sim.config.jobs import DEFAULT_LEVEL_NAMES


class _Scipy:
    """A scipy subpackage imported at its first use: a run whose jobs never evaluate these
    curves (chat, agents) does not pay the ~0.3 s import of scipy.stats and scipy.optimize."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        value = getattr(importlib.import_module(f"scipy.{self._name}"), attr)
        setattr(self, attr, value)  # later lookups find it without this method
        return value


integrate, optimize, special, stats = _Scipy("integrate"), _Scipy("optimize"), _Scipy("special"), _Scipy("stats")

# --------------------------------------------------------------------------- verifier


def auc_to_d_prime(auc: float) -> float:
    """Verifier discriminability d' from its ROC AUC (equal-variance Gaussian signal detection:
    ``AUC = Phi(d' / sqrt 2)``). ``auc`` in [0.5, 1): 0.5 -> 0."""
    if not 0.5 <= auc < 1.0:
        raise ValueError(f"auc must be in [0.5, 1), got {auc}")
    return math.sqrt(2.0) * float(special.ndtri(auc))


def d_prime_to_auc(d_prime: float) -> float:
    """Inverse of :func:`auc_to_d_prime`: ``AUC = Phi(d' / sqrt 2)``."""
    return float(special.ndtr(d_prime / math.sqrt(2.0)))


def _verifier_scores(right: np.ndarray, d_prime: float, rng: np.random.Generator) -> np.ndarray:
    """Scores ``N(d', 1)`` for right candidates and ``N(0, 1)`` for wrong ones (``d' = inf`` allowed)."""
    return rng.standard_normal(np.shape(right)) + np.where(right, d_prime, 0.0)


# --------------------------------------------------------------------------- thinking budget


def budget_accuracy(p_full: float, p_truncated: float, frac_within_budget: float) -> float:
    """Per-sample accuracy when a thinking budget cuts some samples: ``frac*p_full + (1-frac)*p_truncated``."""
    if not 0.0 <= frac_within_budget <= 1.0:
        raise ValueError(f"frac_within_budget must be in [0, 1], got {frac_within_budget}")
    return frac_within_budget * p_full + (1.0 - frac_within_budget) * p_truncated


# --------------------------------------------------------------------------- self-consistency


def majority_vote_accuracy(p: float, n: int) -> float:
    """Two-answer model (the right answer vs one wrong answer): ``n`` independent samples each right
    w.p. ``p``; right iff more than ``n/2`` are right; an exact tie (even ``n``) is broken by a fair
    coin -> half credit. Exactly ``sum_k Binom(k; n, p) * [k > n/2] + 0.5*Binom(n/2; n, p)``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    more_than_half, at_half = _binom_sf_pmf(n // 2, n, p)   # P(k >= n//2 + 1) = P(k > n/2), P(k = n/2)
    tie = 0.5 * at_half if n % 2 == 0 else 0.0
    return more_than_half + tie


def _binom_sf_pmf(k: int, n: int, p: float) -> tuple[float, float]:
    """``(stats.binom.sf(k, n, p), stats.binom.pmf(k, n, p))`` for ``0 <= k < n``, the same floats,
    from the two ufuncs scipy.stats calls for them (``scipy.special``'s Boost binomial), so that a
    run of self-consistency jobs does not import scipy.stats (1.2-1.6 s of CPU against ~0.3 s for
    scipy.special). Where scipy has no such ufuncs (before 1.12), or ``p`` is outside [0, 1]
    (stats' argument check: nan), scipy.stats answers itself."""
    ufuncs = _BINOM.get("ufuncs")
    if ufuncs is None:
        mod = importlib.import_module("scipy.special._ufuncs")
        ufuncs = _BINOM["ufuncs"] = (getattr(mod, "_binom_sf", None), getattr(mod, "_binom_pmf", None))
    sf, pmf = ufuncs
    if sf is None or pmf is None or not 0.0 <= p <= 1.0 or not 0 <= k < n:
        return float(stats.binom.sf(k, n, p)), float(stats.binom.pmf(k, n, p))
    # stats.binom: sf(k) is _binom_sf(floor(k), n, p) inside the support; pmf is _binom_pmf clipped to [0, 1]
    return float(sf(float(k), float(n), p)), min(1.0, max(0.0, float(pmf(float(k), float(n), p))))


_BINOM: dict = {}  # "ufuncs": (sf, pmf) of scipy.special, once looked up


def majority_decided(right: int, wrong: int, n: int) -> bool | None:
    """For self-consistency early stop: True once ``right > n/2``, False once ``wrong > n/2``, else
    None (still open; after all ``n`` an even split stays None and is a coin flip)."""
    if 2 * right > n:
        return True
    if 2 * wrong > n:
        return False
    return None


# --------------------------------------------------------------------------- best-of-N


def best_of_n_accuracy(p: float, n: int, d_prime: float) -> float:
    """Best-of-N with an imperfect verifier: each of ``n`` candidates right w.p. ``p``; verifier score
    of a right candidate ~ N(d', 1), of a wrong one ~ N(0, 1); the highest score is picked.

    Exact value ``sum_k Binom(k; n, p) * P(max of k N(d',1) > max of n-k N(0,1))``. The candidates are
    i.i.d. with score CDF ``G(x) = p Phi(x - d') + (1 - p) Phi(x)``, so the sum collapses to one
    integral: ``n * int p phi(x - d') G(x)^(n-1) dx`` (candidate ``i`` is right and beats the other
    ``n - 1``), evaluated by Simpson's rule on a 0.002-wide grid (error far below 1e-6; checked
    against the binomial sum in the tests). Limits: ``n = 1`` -> p; ``d' = 0`` -> p;
    ``d' = inf`` -> ``1 - (1 - p)^n`` (pass@n)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if d_prime < 0:
        raise ValueError(f"d_prime must be >= 0, got {d_prime}")
    if p <= 0.0 or p >= 1.0:
        return float(p >= 1.0)
    if n == 1 or d_prime == 0.0:
        return float(p)
    if math.isinf(d_prime):
        return 1.0 - (1.0 - p) ** n
    # the integrand is below n p phi(x - d'): nothing outside d' +- 9 matters
    x = np.linspace(min(0.0, d_prime) - 9.0, max(0.0, d_prime) + 9.0,
                    2 * int(math.ceil((18.0 + d_prime) / 0.004)) + 1)
    log_g = np.logaddexp(math.log(p) + special.log_ndtr(x - d_prime), math.log1p(-p) + special.log_ndtr(x))
    log_f = math.log(n * p) - 0.5 * (x - d_prime) ** 2 - 0.5 * math.log(2.0 * math.pi) + (n - 1) * log_g
    return float(min(1.0, integrate.simpson(np.exp(log_f), x=x)))


def best_of_n_pick(right: np.ndarray, d_prime: float, rng: np.random.Generator) -> int:
    """Sample verifier scores for candidates (bool array ``right``) and return the index picked (argmax).
    Consistent with :func:`best_of_n_accuracy` in expectation."""
    right = np.asarray(right, dtype=bool)
    if right.size == 0:
        raise ValueError("best_of_n_pick needs at least one candidate")
    return int(np.argmax(_verifier_scores(right, d_prime, rng)))


# --------------------------------------------------------------------------- sequential revision


def revision_accuracy(p0: float, rounds: int, p_fix: float, p_break: float) -> float:
    """Sequential revision as a two-state Markov chain: after each of ``rounds`` revision rounds a wrong
    answer becomes right w.p. ``p_fix`` and a right one becomes wrong w.p. ``p_break`` (Huang et al.
    2023 show ``p_break`` can outweigh ``p_fix`` without external feedback). ``rounds = 0`` -> p0.

    Closed form: ``p_t = pi + (p0 - pi) (1 - p_fix - p_break)^t`` with the fixed point
    ``pi = p_fix / (p_fix + p_break)``; revision helps iff ``p0 < pi``."""
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    churn = p_fix + p_break
    if churn == 0.0:
        return float(p0)
    fixed_point = p_fix / churn
    return float(fixed_point + (p0 - fixed_point) * (1.0 - churn) ** rounds)


def revision_step(right: bool, p_fix: float, p_break: float, rng: np.random.Generator) -> bool:
    """One revision round of one answer: a right answer stays right w.p. ``1 - p_break``, a wrong one
    becomes right w.p. ``p_fix``."""
    u = rng.random()
    return bool(u >= p_break) if right else bool(u < p_fix)


# --------------------------------------------------------------------------- PRM beam search


def beam_select(alive: np.ndarray, width: int, d_prime: float, rng: np.random.Generator) -> np.ndarray:
    """Process-reward-model beam selection: score each candidate ~ N(d'*alive, 1), return the indices of
    the ``width`` highest scores (highest first; fewer if fewer candidates)."""
    scores = _verifier_scores(np.asarray(alive, dtype=bool), d_prime, rng)
    return np.argsort(-scores, kind="stable")[:width]


@functools.lru_cache(maxsize=4096)
def beam_search_accuracy(p: float, depth: int, width: int, expansions: int, d_prime: float,
                         trials: int = 20000, seed: int = 0) -> float:
    """Expected accuracy of PRM beam search by Monte Carlo with a fixed seed (deterministic, cached).

    A solution is ``depth`` steps; one unguided path is right w.p. ``p``, so each step of a still-right
    path stays right w.p. ``q = p**(1/depth)`` and a wrong step never recovers. The first depth expands
    the root into ``width*expansions`` candidates; each later depth expands each kept beam into
    ``expansions`` candidates; :func:`beam_select`'s law (scores ~ N(d'*alive, 1), keep the ``width``
    highest) keeps ``width``; after the last depth the highest-scored beam is the answer. All
    ``trials`` searches run at once as arrays. Limits: ``width = expansions = 1`` -> p and ``d' = 0``
    -> p (in expectation)."""
    if depth < 1 or width < 1 or expansions < 1 or trials < 1:
        raise ValueError("depth, width, expansions and trials must be >= 1")
    if p <= 0.0 or p >= 1.0:
        return float(p >= 1.0)
    rng = np.random.default_rng(seed)
    q = p ** (1.0 / depth)
    alive = np.ones((trials, 1), dtype=bool)                       # the root
    for level in range(depth):
        fan_out = width * expansions if level == 0 else expansions
        parents = np.repeat(alive, fan_out, axis=1)
        children = parents & (rng.random(parents.shape) < q)
        scores = _verifier_scores(children, d_prime, rng)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :width]   # highest first
        alive = np.take_along_axis(children, keep, axis=1)
    return float(alive[:, 0].mean())


# --------------------------------------------------------------------------- defaults


@dataclass(frozen=True)
class LevelDefaults:
    """One difficulty level of the question mixture."""

    name: str
    weight: float                 # share of questions
    accuracy: float               # accuracy of one full sample
    truncated_accuracy: float     # accuracy of a sample whose thinking a budget cut short
    thinking_median: float        # lognormal thinking tokens of one full sample
    thinking_sigma: float
    answer_median: float          # lognormal answer (post-thinking) tokens
    answer_sigma: float
    coverage: float = 1.0         # share of the level's questions the model can solve at all


# Published figures the defaults are fitted to. Each entry says where it comes from.
ANCHORS: dict = {
    # DeepSeek-AI, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via Reinforcement
    # Learning", arXiv:2501.12948, Table 2: DeepSeek-R1-Zero on AIME 2024, pass@1 71.0 %,
    # cons@64 (majority vote of 64 samples) 86.7 %. (DeepSeek-R1 itself: AIME 2024 pass@1 79.8 %,
    # MATH-500 pass@1 97.3 %, Table 4.)
    "r1_zero_aime": {"pass1": 0.710, "cons64": 0.867, "n": 64, "problems": 30},
    # Weak priors that pick one mixture among the many that match the two numbers above:
    # hard share 4/30 (cons@64 = 26/30 and, in the two-answer model, majority of 64 solves almost
    # exactly the questions with p > 1/2); easy accuracy centred on R1's MATH-500 pass@1 (97.3 %).
    "mixture_prior": {"weights": (13.0 / 30, 13.0 / 30, 4.0 / 30), "accuracies": (0.973, 0.70, 0.10),
                      "logit_sigma": 1.0, "anchor_tolerance": 0.001},
    # Lightman et al., "Let's Verify Step by Step", arXiv:2305.20050, Fig. 3 (large scale,
    # GPT-4 generator, MATH test subset): best-of-1860 with the PRM 78.2 %, with the ORM 72.4 %,
    # majority voting 69.6 %.
    # Separate two-level MATH mixture (assumptions, see docs/quality.md): at n = 1860 the two-answer
    # majority vote solves exactly the questions with p > 1/2, so their share is 0.696. The ORM adds
    # only 2.8 points over voting, and best-of-N with a useless verifier (d' = 0) gives p, so the
    # per-sample accuracy of the rest must be below 0.092: assumed 0.05. The solvable level's
    # accuracy is assumed 0.80 (it barely matters: best-of-1860 solves it for any sensible d').
    "lightman_math": {"n": 1860, "prm": 0.782, "orm": 0.724, "majority": 0.696,
                      "solvable_accuracy": 0.80, "hard_accuracy": 0.05},
    # Huang et al., "Large Language Models Cannot Self-Correct Reasoning Yet", arXiv:2310.01798:
    # GPT-3.5-Turbo on GSM8K, intrinsic self-correction (no external feedback): accuracy 75.9 %
    # -> 75.1 % (round 1) -> 74.7 % (round 2) (Table 3); answer changes after the two rounds, as
    # shares of all questions: correct -> incorrect 8.8 %, incorrect -> correct 7.6 % (Fig. 1).
    "huang_gsm8k": {"acc": (0.759, 0.751, 0.747), "right_to_wrong_2": 0.088, "wrong_to_right_2": 0.076},
    # Xiang et al., "ServeGen: Workload Characterization of LLM Serving in Production",
    # arXiv:2505.09999: DeepSeek-R1 production traffic, output tokens mean 1527, p50 792,
    # p90 3432, p99 12607; reasoning share of output mean 0.70, p50 0.76.
    "servegen_r1": {"mean": 1527.0, "p50": 792.0, "p90": 3432.0, "p99": 12607.0,
                    "share_mean": 0.70, "share_p50": 0.76},
    # Muennighoff et al., "s1: Simple test-time scaling", arXiv:2501.19393, Fig. 1 (budget forcing,
    # s1-32B): forced to answer at the shortest thinking budgets, MATH500 accuracy sits at the
    # bottom of its 65-95 % axis (~65 % vs ~93 % with full thinking: ~0.7 kept) and AIME24 near the
    # bottom of its 0-60 % axis (almost nothing kept). Assumed share of full accuracy kept by a
    # truncated sample, easy / medium / hard (a rough reading, not a fit).
    "s1_truncation_kept": (0.70, 0.30, 0.05),
    # OpenAI, "Learning to Reason with LLMs" (2024-09-12): o1 on AIME 2024, pass@1 74.4 %, cons@64
    # 83.3 %, and 93 % when re-ranking 1000 samples with a learned scoring function. Whatever a
    # search finds must be within the model's reach, so at least 93 % of such questions are
    # solvable by some sample (coverage). With easy and medium questions fully covered, the hard
    # level's coverage is the least that reaches 93 % overall. Without it, samples of a hard
    # question would be independent draws and enough of them (beam search above all) would solve
    # nearly every question, which published search curves do not show (Snell et al., "Scaling LLM
    # Test-Time Compute Optimally", arXiv:2408.03314: search gains vanish on the hardest bin).
    "o1_aime_rerank": {"pass1": 0.744, "cons64": 0.833, "rerank1000": 0.93},
}

# Rounded output of fit_defaults() (tests/test_quality.py checks they agree). Mixture: R1-Zero AIME 2024
# pass@1 71.0 % and cons@64 86.7 % (71.04 % and 86.74 % with these rounded values); lengths:
# ServeGen DeepSeek-R1 output tokens (fit: mean 1565, p50 784, p90 3417, p99 12476 vs 1527 / 792 /
# 3432 / 12607; reasoning share mean 0.700, p50 0.760); truncation: s1 (assumed share kept).
DEFAULT_LEVELS: tuple[LevelDefaults, ...] = (
    LevelDefaults("easy", weight=0.387, accuracy=0.973, truncated_accuracy=0.681,
                  thinking_median=189.0, thinking_sigma=0.835, answer_median=174.0, answer_sigma=0.634),
    LevelDefaults("medium", weight=0.482, accuracy=0.666, truncated_accuracy=0.200,
                  thinking_median=831.0, thinking_sigma=0.835, answer_median=174.0, answer_sigma=0.634),
    LevelDefaults("hard", weight=0.131, accuracy=0.098, truncated_accuracy=0.005,
                  thinking_median=3660.0, thinking_sigma=0.835, answer_median=174.0, answer_sigma=0.634,
                  coverage=0.467),  # o1 re-ranking 1000 samples: 93 % overall
)
# Lightman et al. best-of-1860 on MATH: ORM 72.4 %, PRM 78.2 % (reproduced exactly on the 2-level MATH
# mixture; d' = 0.469 and 0.696).
DEFAULT_VERIFIER_AUC: float = 0.630   # outcome reward model scoring whole answers
DEFAULT_PRM_AUC: float = 0.689        # process reward model scoring steps
# Huang et al. GSM8K intrinsic self-correction (fit: 75.2 % / 74.7 % after rounds 1 / 2 vs 75.1 / 74.7;
# two-round changes 8.8 % / 7.6 % vs 8.8 / 7.6). Fixed point 0.73: revision helps below it, hurts above.
DEFAULT_P_FIX: float = 0.179
DEFAULT_P_BREAK: float = 0.066

_LEVEL_NAMES = DEFAULT_LEVEL_NAMES  # the schema checks adaptive policies against these names


def _logit(x):
    """log(x / (1 - x)), elementwise."""
    return np.log(x) - np.log1p(-np.asarray(x))


def _mixture_from(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unconstrained parameters -> (weights easy/medium/hard, accuracies with easy > medium > hard)."""
    weights = special.softmax([theta[0], theta[1], 0.0])
    hard = special.expit(theta[2])
    medium = hard + (1.0 - hard) * special.expit(theta[3])
    easy = medium + (1.0 - medium) * special.expit(theta[4])
    return np.asarray(weights), np.array([easy, medium, hard])


def _fit_mixture() -> dict:
    """3-level mixture matching R1-Zero's AIME pass@1 and cons@64 (MAP with weak priors)."""
    anchor, prior = ANCHORS["r1_zero_aime"], ANCHORS["mixture_prior"]
    prior_w, prior_a = np.array(prior["weights"]), np.array(prior["accuracies"])
    tol, sigma = prior["anchor_tolerance"], prior["logit_sigma"]

    def predict(theta):
        w, a = _mixture_from(theta)
        return w, a, float(w @ a), float(sum(wi * majority_vote_accuracy(ai, anchor["n"]) for wi, ai in zip(w, a)))

    def residuals(theta):
        w, a, pass1, cons = predict(theta)
        return np.concatenate([[(pass1 - anchor["pass1"]) / tol, (cons - anchor["cons64"]) / tol],
                               (np.log(w) - np.log(prior_w)) / sigma, (_logit(a) - _logit(prior_a)) / sigma])

    start = np.array([math.log(prior_w[0] / prior_w[2]), math.log(prior_w[1] / prior_w[2]),
                      _logit(0.10), _logit(0.6 / 0.9), _logit(0.27 / 0.3)])
    sol = optimize.least_squares(residuals, start, x_scale=1.0, xtol=1e-12, ftol=1e-12)
    w, a, pass1, cons = predict(sol.x)
    return {"weights": w, "accuracies": a, "pass1": pass1, "cons64": cons,
            "pass1_error": pass1 - anchor["pass1"], "cons64_error": cons - anchor["cons64"]}


@functools.lru_cache(maxsize=1)
def _quadrature() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Gauss-Hermite nodes, weights, output-length grid) of :func:`_length_stats`: made at first use,
    not at import (the eigenvalue problem behind the nodes is ~15 ms that only fits need)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(96)  # E[f(Z)] ~ sum w f(x) / sqrt(2 pi)
    grid = np.geomspace(5.0, 5.0e5, 800)                      # output lengths where the CDF is evaluated
    return nodes, weights / math.sqrt(2.0 * math.pi), grid


def _length_stats(weights: np.ndarray, params: np.ndarray) -> dict:
    """Output-length figures of the mixture for length parameters ``(log thinking median of easy,
    log ratio per level, thinking sigma, log answer median, answer sigma)``.

    Output = thinking T_i (lognormal, level i) + answer A (lognormal), independent. The CDF of T + A is
    ``E_A[F_T(s - A)]`` by Gauss-Hermite quadrature over log A (the integrand is smooth: a lognormal
    CDF goes to 0 with all its derivatives); the reasoning share T / (T + A) is the logistic of the
    normal ``log T - log A``, so its median is a normal-mixture quantile and its mean a 1-D integral."""
    log_m, log_r, s_t, log_a, s_a = params
    gh_nodes, gh_weights, grid = _quadrature()
    mu_t = log_m + log_r * np.arange(3)
    answer = np.exp(log_a + s_a * gh_nodes)                                     # quadrature nodes of A
    gap = np.maximum(grid[:, None] - answer[None, :], 1e-300)                  # s - a
    cdf = np.zeros_like(grid)
    for w, mu in zip(weights, mu_t):
        cdf += w * (special.ndtr((np.log(gap) - mu) / s_t) @ gh_weights)
    p50, p90, p99 = np.exp(np.interp([0.5, 0.9, 0.99], cdf, np.log(grid)))
    mean = float(weights @ np.exp(mu_t + 0.5 * s_t ** 2) + math.exp(log_a + 0.5 * s_a ** 2))
    s_d = math.hypot(s_t, s_a)                                                  # sd of log T - log A
    share_mean = float(sum(w * (special.expit(mu - log_a + s_d * gh_nodes) @ gh_weights)
                           for w, mu in zip(weights, mu_t)))
    share_p50 = float(special.expit(optimize.brentq(
        lambda y: weights @ special.ndtr((y - (mu_t - log_a)) / s_d) - 0.5, -50.0, 50.0, xtol=1e-12)))
    return {"mean": mean, "p50": float(p50), "p90": float(p90), "p99": float(p99),
            "share_mean": share_mean, "share_p50": share_p50}


def _fit_lengths(weights: np.ndarray) -> dict:
    """Lognormal thinking / answer lengths per level matching ServeGen's DeepSeek-R1 output figures
    (least squares on log length figures and on reasoning shares in units of 0.02)."""
    target = ANCHORS["servegen_r1"]

    def residuals(params):
        got = _length_stats(weights, params)
        return np.array([math.log(got[k] / target[k]) for k in ("mean", "p50", "p90", "p99")]
                        + [(got[k] - target[k]) / 0.02 for k in ("share_mean", "share_p50")])

    start = np.array([math.log(400.0), math.log(2.0), 1.0, math.log(150.0), 1.0])
    sol = optimize.least_squares(residuals, start, bounds=([0.0, 0.0, 0.05, 0.0, 0.05], [12.0, 3.0, 3.0, 10.0, 3.0]),
                                 xtol=1e-12, ftol=1e-12)
    log_m, log_r, s_t, log_a, s_a = sol.x
    got = _length_stats(weights, sol.x)
    return {"thinking_medians": np.exp(log_m + log_r * np.arange(3)), "thinking_sigma": float(s_t),
            "answer_median": float(math.exp(log_a)), "answer_sigma": float(s_a), "model": got,
            "relative_errors": {k: got[k] / target[k] - 1.0 for k in ("mean", "p50", "p90", "p99")},
            "share_errors": {k: got[k] - target[k] for k in ("share_mean", "share_p50")}}


def _fit_verifiers() -> dict:
    """ORM and PRM AUCs that reproduce Lightman et al.'s best-of-1860 accuracies on a 2-level MATH mixture."""
    a = ANCHORS["lightman_math"]
    w_solvable = a["majority"]                        # two-answer majority of 1860 solves exactly p > 1/2
    levels = ((w_solvable, a["solvable_accuracy"]), (1.0 - w_solvable, a["hard_accuracy"]))

    def bon(d_prime):
        return sum(w * best_of_n_accuracy(p, a["n"], d_prime) for w, p in levels)

    out = {"majority_model": sum(w * majority_vote_accuracy(p, a["n"]) for w, p in levels)}
    for key in ("orm", "prm"):
        d_prime = optimize.brentq(lambda d: bon(d) - a[key], 1e-6, 6.0, xtol=1e-10)
        out[key] = {"d_prime": d_prime, "auc": d_prime_to_auc(d_prime), "model": bon(d_prime),
                    "error": bon(d_prime) - a[key]}
    return out


def _fit_revision() -> dict:
    """(p_fix, p_break) of the two-state chain from Huang et al.'s GSM8K self-correction figures."""
    h = ANCHORS["huang_gsm8k"]
    p0 = h["acc"][0]

    def predict(x):
        p_fix, p_break = x
        # two-round transition probabilities of the chain, as shares of all questions
        right_to_wrong = p0 * (1.0 - ((1.0 - p_break) ** 2 + p_break * p_fix))
        wrong_to_right = (1.0 - p0) * (1.0 - ((1.0 - p_fix) ** 2 + p_fix * p_break))
        return np.array([revision_accuracy(p0, 1, p_fix, p_break), revision_accuracy(p0, 2, p_fix, p_break),
                         right_to_wrong, wrong_to_right])

    target = np.array([h["acc"][1], h["acc"][2], h["right_to_wrong_2"], h["wrong_to_right_2"]])
    sol = optimize.least_squares(lambda x: predict(x) - target, [0.1, 0.05], bounds=([0.0, 0.0], [1.0, 1.0]),
                                 xtol=1e-12, ftol=1e-12)
    return {"p_fix": float(sol.x[0]), "p_break": float(sol.x[1]), "model": predict(sol.x),
            "errors": predict(sol.x) - target}


def fit_defaults() -> dict:
    """Rerun every fit from ``ANCHORS`` and return the fitted parameters and their errors.

    * ``levels``: :class:`LevelDefaults` (unrounded) from the R1-Zero AIME mixture fit, the ServeGen
      length fit and the s1 truncation assumption; ``mixture`` and ``lengths`` hold the fit errors.
    * ``verifier``: ORM / PRM AUCs from Lightman et al.'s best-of-1860 figures.
    * ``revision``: ``p_fix``, ``p_break`` from Huang et al.'s GSM8K self-correction figures.
    """
    mixture = _fit_mixture()
    lengths = _fit_lengths(mixture["weights"])
    kept = ANCHORS["s1_truncation_kept"]
    w, acc = mixture["weights"], mixture["accuracies"]
    reach = ANCHORS["o1_aime_rerank"]["rerank1000"]
    coverage = (1.0, 1.0, float(min(1.0, max(acc[2], (reach - (1.0 - w[2])) / w[2]))))
    levels = tuple(
        LevelDefaults(name=_LEVEL_NAMES[i], weight=float(w[i]), accuracy=float(acc[i]),
                      truncated_accuracy=float(kept[i] * acc[i]),
                      thinking_median=float(lengths["thinking_medians"][i]), thinking_sigma=lengths["thinking_sigma"],
                      answer_median=lengths["answer_median"], answer_sigma=lengths["answer_sigma"], coverage=coverage[i])
        for i in range(3))
    verifier = _fit_verifiers()
    revision = _fit_revision()
    return {"levels": levels, "mixture": mixture, "lengths": lengths, "verifier": verifier,
            "verifier_auc": verifier["orm"]["auc"], "prm_auc": verifier["prm"]["auc"],
            "revision": revision, "p_fix": revision["p_fix"], "p_break": revision["p_break"]}
