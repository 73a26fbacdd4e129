"""Answer-quality model (sim/models/quality.py): closed forms against independent formulas and Monte Carlo,
limits, monotonicity, the samplers' consistency with the expectations, and the fitted defaults
reproducing their published anchors."""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, stats

from sim.models import quality as q


def _within_3_sigma(hits: float, trials: int, p: float) -> bool:
    """Mean of ``trials`` Bernoulli(p) draws within 3 standard errors of p (plus a hair for p near 0/1)."""
    return abs(hits / trials - p) <= 3.0 * math.sqrt(p * (1.0 - p) / trials) + 1e-9


# ------------------------------------------------------------------------ verifier d'


def test_auc_to_d_prime_matches_signal_detection():
    assert q.auc_to_d_prime(0.5) == 0.0
    for auc in (0.55, 0.63, 0.75, 0.9, 0.99):
        d = q.auc_to_d_prime(auc)
        assert stats.norm.cdf(d / math.sqrt(2.0)) == pytest.approx(auc, abs=1e-12)
        assert q.d_prime_to_auc(d) == pytest.approx(auc, abs=1e-12)
    # AUC is P(score of a right candidate > score of a wrong one)
    rng = np.random.default_rng(1)
    d = q.auc_to_d_prime(0.8)
    n = 200_000
    wins = int(np.sum(rng.normal(d, 1.0, n) > rng.normal(0.0, 1.0, n)))
    assert _within_3_sigma(wins, n, 0.8)
    for bad in (0.49, 1.0, 1.2):
        with pytest.raises(ValueError):
            q.auc_to_d_prime(bad)


def test_budget_accuracy_mixes_full_and_truncated():
    assert q.budget_accuracy(0.9, 0.3, 1.0) == pytest.approx(0.9)
    assert q.budget_accuracy(0.9, 0.3, 0.0) == pytest.approx(0.3)
    assert q.budget_accuracy(0.9, 0.3, 0.25) == pytest.approx(0.25 * 0.9 + 0.75 * 0.3)
    with pytest.raises(ValueError):
        q.budget_accuracy(0.9, 0.3, 1.5)


# ------------------------------------------------------------------------ majority vote


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 64, 65])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.45, 0.5, 0.62, 0.97, 1.0])
def test_majority_vote_equals_binomial_sum(p, n):
    pmf = stats.binom.pmf(np.arange(n + 1), n, p)
    expected = sum(pmf[k] for k in range(n + 1) if 2 * k > n)
    if n % 2 == 0:
        expected += 0.5 * pmf[n // 2]
    # and by hand with math.comb
    by_hand = sum(math.comb(n, k) * p ** k * (1 - p) ** (n - k) * (1.0 if 2 * k > n else 0.5 if 2 * k == n else 0.0)
                  for k in range(n + 1))
    got = q.majority_vote_accuracy(p, n)
    assert got == pytest.approx(expected, abs=1e-12)
    assert got == pytest.approx(by_hand, abs=1e-12)
    assert got + q.majority_vote_accuracy(1.0 - p, n) == pytest.approx(1.0, abs=1e-12)   # symmetry


def test_majority_vote_is_scipy_stats_to_the_bit():
    """The binomial tail comes from scipy.special's ufuncs (no scipy.stats import in a run): the
    same floats scipy.stats.binom gives, on a grid of p and n, and nan outside [0, 1] as stats."""
    ps = np.concatenate([np.random.default_rng(3).random(2000), np.linspace(0.0, 1.0, 1001), [1e-300, 1 - 1e-16]])
    for n in (1, 2, 3, 4, 5, 8, 9, 16, 31, 64, 65, 128):
        for p in ps.tolist():
            sf, pmf = float(stats.binom.sf(n // 2, n, p)), float(stats.binom.pmf(n // 2, n, p))
            assert q.majority_vote_accuracy(p, n) == sf + (0.5 * pmf if n % 2 == 0 else 0.0)
    for p in (-0.1, 1.5, math.nan):
        assert math.isnan(q.majority_vote_accuracy(p, 4))


def test_self_consistency_run_does_not_import_scipy_stats():
    code = ("import sys\n"
            "import sim.models.quality as q\n"
            "q.majority_vote_accuracy(0.7, 4)\n"
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_majority_vote_monte_carlo():
    rng = np.random.default_rng(7)
    trials = 100_000
    for p, n in ((0.4, 9), (0.55, 8), (0.3, 1)):
        right = (rng.random((trials, n)) < p).sum(axis=1)
        coin = rng.random(trials) < 0.5
        wins = int(np.sum((2 * right > n) | ((2 * right == n) & coin)))
        assert _within_3_sigma(wins, trials, q.majority_vote_accuracy(p, n))


def test_majority_vote_grows_with_n_above_half_and_falls_below():
    up = [q.majority_vote_accuracy(0.6, n) for n in (1, 3, 5, 9, 17, 65)]
    down = [q.majority_vote_accuracy(0.4, n) for n in (1, 3, 5, 9, 17, 65)]
    assert all(b > a for a, b in zip(up, up[1:]))
    assert all(b < a for a, b in zip(down, down[1:]))


def test_majority_decided_boundaries():
    assert q.majority_decided(3, 0, 5) is True
    assert q.majority_decided(2, 2, 5) is None
    assert q.majority_decided(0, 3, 5) is False
    assert q.majority_decided(2, 0, 4) is None          # 2 of 4 is not more than half
    assert q.majority_decided(3, 1, 4) is True
    assert q.majority_decided(2, 2, 4) is None          # final tie: the caller flips a coin
    assert q.majority_decided(1, 0, 1) is True
    assert q.majority_decided(0, 1, 1) is False
    assert q.majority_decided(0, 0, 1) is None


def test_early_stop_gives_the_full_vote_outcome():
    """Stopping as soon as majority_decided says so never changes the outcome of an odd vote."""
    rng = np.random.default_rng(3)
    n = 9
    for _ in range(2000):
        votes = rng.random(n) < 0.55
        full = bool(2 * votes.sum() > n)
        right = wrong = 0
        decided = None
        for v in votes:
            right, wrong = right + int(v), wrong + int(not v)
            decided = q.majority_decided(right, wrong, n)
            if decided is not None:
                break
        assert decided is full


# ------------------------------------------------------------------------ best-of-N


def _best_of_n_binomial_sum(p: float, n: int, d: float) -> float:
    """The defining sum over k right candidates, inner probability by adaptive quadrature."""
    total = 0.0
    for k in range(1, n + 1):
        m = n - k
        if m == 0:
            inner = 1.0
        else:
            def density(x, k=k, m=m):
                return k * stats.norm.pdf(x - d) * stats.norm.cdf(x - d) ** (k - 1) * stats.norm.cdf(x) ** m
            inner = integrate.quad(density, -12.0, d + 12.0, epsabs=1e-12, limit=200)[0]
        total += stats.binom.pmf(k, n, p) * inner
    return total


@pytest.mark.parametrize("p,n,d", [(0.3, 5, 1.3), (0.1, 10, 0.7), (0.05, 16, 3.0), (0.8, 2, 0.4)])
def test_best_of_n_matches_binomial_sum(p, n, d):
    assert q.best_of_n_accuracy(p, n, d) == pytest.approx(_best_of_n_binomial_sum(p, n, d), abs=1e-6)


def test_best_of_n_limits():
    for p in (0.0, 0.07, 0.5, 0.93, 1.0):
        assert q.best_of_n_accuracy(p, 1, 2.0) == pytest.approx(p, abs=1e-12)
        assert q.best_of_n_accuracy(p, 50, 0.0) == pytest.approx(p, abs=1e-12)
        assert q.best_of_n_accuracy(p, 50, math.inf) == pytest.approx(1.0 - (1.0 - p) ** 50, abs=1e-12)
    # the numerical integral itself tends to the limits: tiny d' -> p, huge d' -> pass@n
    assert q.best_of_n_accuracy(0.3, 20, 1e-7) == pytest.approx(0.3, abs=1e-6)
    assert q.best_of_n_accuracy(0.3, 20, 15.0) == pytest.approx(1.0 - 0.7 ** 20, abs=1e-6)


def test_best_of_n_monotone_in_n_and_d_prime():
    by_n = [q.best_of_n_accuracy(0.2, n, 1.0) for n in (1, 2, 4, 16, 64, 256, 1860)]
    assert all(b > a for a, b in zip(by_n, by_n[1:]))
    by_d = [q.best_of_n_accuracy(0.2, 16, d) for d in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in zip(by_d, by_d[1:]))
    assert by_d[-1] < 1.0 - 0.8 ** 16                    # never above pass@n


def test_best_of_n_pick_monte_carlo():
    rng = np.random.default_rng(11)
    trials = 40_000
    for p, n, d in ((0.25, 8, 1.0), (0.5, 3, 0.5), (0.1, 20, 2.0)):
        hits = 0
        for _ in range(trials // 4):
            right = rng.random(n) < p
            hits += bool(right[q.best_of_n_pick(right, d, rng)])
        assert _within_3_sigma(hits, trials // 4, q.best_of_n_accuracy(p, n, d))
    # a perfect verifier always picks a right candidate when there is one
    right = np.array([False, False, True, False])
    assert all(q.best_of_n_pick(right, math.inf, rng) == 2 for _ in range(50))
    with pytest.raises(ValueError):
        q.best_of_n_pick(np.array([], dtype=bool), 1.0, rng)


# ------------------------------------------------------------------------ revision


def test_revision_closed_form_matches_iteration_and_simulation():
    p0, p_fix, p_break = 0.35, 0.2, 0.08
    p = p0
    for rounds in range(8):
        assert q.revision_accuracy(p0, rounds, p_fix, p_break) == pytest.approx(p, abs=1e-12)
        p = p * (1.0 - p_break) + (1.0 - p) * p_fix
    assert q.revision_accuracy(p0, 0, p_fix, p_break) == p0
    fixed = p_fix / (p_fix + p_break)
    assert q.revision_accuracy(fixed, 5, p_fix, p_break) == pytest.approx(fixed, abs=1e-12)
    assert q.revision_accuracy(p0, 500, p_fix, p_break) == pytest.approx(fixed, abs=1e-9)
    # above the fixed point revision hurts (Huang et al.'s regime), below it helps
    assert q.revision_accuracy(0.9, 2, p_fix, p_break) < 0.9
    assert q.revision_accuracy(0.2, 2, p_fix, p_break) > 0.2

    rng = np.random.default_rng(5)
    trials, rounds = 20_000, 3
    hits = 0
    for _ in range(trials):
        right = bool(rng.random() < p0)
        for _ in range(rounds):
            right = q.revision_step(right, p_fix, p_break, rng)
        hits += right
    assert _within_3_sigma(hits, trials, q.revision_accuracy(p0, rounds, p_fix, p_break))


# ------------------------------------------------------------------------ beam search


def test_beam_select_keeps_the_highest_scores():
    rng = np.random.default_rng(2)
    alive = np.array([False, True, False, True, False, False])
    idx = q.beam_select(alive, 2, math.inf, rng)
    assert sorted(idx.tolist()) == [1, 3]
    assert len(q.beam_select(alive, 10, 1.0, rng)) == 6                   # fewer if fewer candidates
    assert len(set(q.beam_select(alive, 4, 1.0, rng).tolist())) == 4
    # highest first: reproduce the scores with the same generator state
    state = np.random.default_rng(9)
    scores = state.standard_normal(6) + np.where(alive, 1.5, 0.0)
    idx = q.beam_select(alive, 3, 1.5, np.random.default_rng(9))
    assert idx.tolist() == np.argsort(-scores)[:3].tolist()


def test_beam_search_limits():
    trials = 20_000
    for p in (0.2, 0.6):
        single = q.beam_search_accuracy(p, 6, 1, 1, 2.0)
        assert _within_3_sigma(single * trials, trials, p)
        blind = q.beam_search_accuracy(p, 6, 4, 3, 0.0)
        assert _within_3_sigma(blind * trials, trials, p)
    assert q.beam_search_accuracy(0.0, 4, 2, 2, 1.0) == 0.0
    assert q.beam_search_accuracy(1.0, 4, 2, 2, 1.0) == 1.0


def test_beam_search_is_deterministic_and_helped_by_width_with_a_good_prm():
    a = q.beam_search_accuracy(0.3, 5, 4, 4, 1.0)
    q.beam_search_accuracy.cache_clear()
    assert q.beam_search_accuracy(0.3, 5, 4, 4, 1.0) == a
    widths = [q.beam_search_accuracy(0.3, 5, w, 2, 1.0) for w in (1, 2, 4, 8)]
    assert all(b > a + 0.02 for a, b in zip(widths, widths[1:]))
    assert widths[0] > 0.3 + 0.1                          # even one beam with 2 expansions beats one path
    better_prm = [q.beam_search_accuracy(0.3, 5, 4, 4, d) for d in (0.0, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(better_prm, better_prm[1:]))


def test_beam_search_agrees_with_a_loop_over_beam_select():
    """A job-style simulation built on beam_select has the expectation beam_search_accuracy gives."""
    p, depth, width, expansions, d = 0.3, 4, 3, 2, 1.0
    q_step = p ** (1.0 / depth)
    rng = np.random.default_rng(13)
    trials, hits = 4000, 0
    for _ in range(trials):
        beams = np.array([True])
        for level in range(depth):
            fan = width * expansions if level == 0 else expansions
            children = np.repeat(beams, fan) & (rng.random(beams.size * fan) < q_step)
            beams = children[q.beam_select(children, width, d, rng)]
        hits += bool(beams[0])
    expected = q.beam_search_accuracy(p, depth, width, expansions, d)
    se = math.sqrt(expected * (1 - expected) / trials) + math.sqrt(expected * (1 - expected) / 20_000)
    assert abs(hits / trials - expected) <= 3 * se


# ------------------------------------------------------------------------ fitted defaults


@pytest.fixture(scope="module")
def fit():
    return q.fit_defaults()


def test_defaults_are_the_rounded_fit(fit):
    for default, fitted in zip(q.DEFAULT_LEVELS, fit["levels"]):
        assert default.name == fitted.name
        for field in ("weight", "accuracy", "truncated_accuracy", "thinking_sigma", "answer_sigma", "coverage"):
            assert getattr(default, field) == pytest.approx(getattr(fitted, field), abs=6e-4), field
        for field in ("thinking_median", "answer_median"):
            assert getattr(default, field) == pytest.approx(getattr(fitted, field), rel=1e-3, abs=0.6), field
    assert q.DEFAULT_VERIFIER_AUC == pytest.approx(fit["verifier_auc"], abs=6e-4)
    assert q.DEFAULT_PRM_AUC == pytest.approx(fit["prm_auc"], abs=6e-4)
    assert q.DEFAULT_P_FIX == pytest.approx(fit["p_fix"], abs=6e-4)
    assert q.DEFAULT_P_BREAK == pytest.approx(fit["p_break"], abs=6e-4)


def test_defaults_are_physically_sensible():
    levels = q.DEFAULT_LEVELS
    assert [lv.name for lv in levels] == ["easy", "medium", "hard"]
    assert sum(lv.weight for lv in levels) == pytest.approx(1.0, abs=1e-9)
    acc = [lv.accuracy for lv in levels]
    assert all(0.0 < a < 1.0 for a in acc) and acc[0] > acc[1] > acc[2]
    assert all(0.0 <= lv.truncated_accuracy < lv.accuracy for lv in levels)
    thinking = [lv.thinking_median for lv in levels]
    assert thinking[0] < thinking[1] < thinking[2]                      # harder levels think longer
    assert 0.5 < q.DEFAULT_VERIFIER_AUC < q.DEFAULT_PRM_AUC < 1.0
    assert 0.0 < q.DEFAULT_P_BREAK < q.DEFAULT_P_FIX < 1.0


def test_defaults_reproduce_r1_zero_aime():
    levels = q.DEFAULT_LEVELS
    pass1 = sum(lv.weight * lv.accuracy for lv in levels)
    cons64 = sum(lv.weight * q.majority_vote_accuracy(lv.accuracy, 64) for lv in levels)
    assert pass1 == pytest.approx(0.710, abs=0.01)
    assert cons64 == pytest.approx(0.867, abs=0.01)


def test_defaults_reproduce_servegen_lengths():
    levels = q.DEFAULT_LEVELS
    mean = sum(lv.weight * (lv.thinking_median * math.exp(lv.thinking_sigma ** 2 / 2)
                            + lv.answer_median * math.exp(lv.answer_sigma ** 2 / 2)) for lv in levels)
    assert mean == pytest.approx(1527.0, rel=0.15)
    # sample outputs the way a job would and check the aggregate figures
    rng = np.random.default_rng(17)
    n = 400_000
    which = rng.choice(3, size=n, p=[lv.weight for lv in levels])
    med_t = np.array([lv.thinking_median for lv in levels])[which]
    sig_t = np.array([lv.thinking_sigma for lv in levels])[which]
    med_a = np.array([lv.answer_median for lv in levels])[which]
    sig_a = np.array([lv.answer_sigma for lv in levels])[which]
    think = med_t * np.exp(sig_t * rng.standard_normal(n))
    total = think + med_a * np.exp(sig_a * rng.standard_normal(n))
    assert total.mean() == pytest.approx(1527.0, rel=0.15)
    for quantile, target in ((0.5, 792.0), (0.9, 3432.0), (0.99, 12607.0)):
        assert np.quantile(total, quantile) == pytest.approx(target, rel=0.15)
    assert np.mean(think / total) == pytest.approx(0.70, abs=0.03)
    assert np.median(think / total) == pytest.approx(0.76, abs=0.03)


def test_default_verifiers_reproduce_lightman_best_of_1860(fit):
    a = q.ANCHORS["lightman_math"]
    mixture = ((a["majority"], a["solvable_accuracy"]), (1.0 - a["majority"], a["hard_accuracy"]))

    def bon(auc):
        return sum(w * q.best_of_n_accuracy(p, a["n"], q.auc_to_d_prime(auc)) for w, p in mixture)

    assert sum(w * q.majority_vote_accuracy(p, a["n"]) for w, p in mixture) == pytest.approx(0.696, abs=1e-9)
    assert bon(q.DEFAULT_VERIFIER_AUC) == pytest.approx(0.724, abs=0.005)
    assert bon(q.DEFAULT_PRM_AUC) == pytest.approx(0.782, abs=0.005)
    assert abs(fit["verifier"]["orm"]["error"]) < 1e-6 and abs(fit["verifier"]["prm"]["error"]) < 1e-6


def test_default_revision_reproduces_huang_gsm8k():
    assert q.revision_accuracy(0.759, 1, q.DEFAULT_P_FIX, q.DEFAULT_P_BREAK) == pytest.approx(0.751, abs=0.003)
    assert q.revision_accuracy(0.759, 2, q.DEFAULT_P_FIX, q.DEFAULT_P_BREAK) == pytest.approx(0.747, abs=0.003)


def test_fit_errors_are_small(fit):
    assert abs(fit["mixture"]["pass1_error"]) < 1e-3 and abs(fit["mixture"]["cons64_error"]) < 1e-3
    assert all(abs(e) < 0.05 for e in fit["lengths"]["relative_errors"].values())
    assert all(abs(e) < 0.01 for e in fit["lengths"]["share_errors"].values())
    assert np.all(np.abs(fit["revision"]["errors"]) < 0.003)
