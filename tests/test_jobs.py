"""Test-time-compute jobs: strategies issue the right calls in the right order, share the
prompt's KV, cancel what they no longer need, and record quality consistent with theory."""

import copy
import math

import numpy as np
import pyarrow.compute as pc
import pytest
from scipy import stats

from scenarios import garbage_calls, run_tables, same_calls
from sim.models import quality as Q
from sim.config import validate
from sim.errors import ScenarioError

SHORT = [{"name": "only", "accuracy": 0.6, "truncated_accuracy": 0.2,
          "thinking_tokens": {"kind": "fixed", "value": 40}, "answer_tokens": {"kind": "fixed", "value": 8}}]
MIX = [
    {"name": "easy", "weight": 0.6, "accuracy": 0.92, "truncated_accuracy": 0.5,
     "thinking_tokens": {"kind": "lognormal", "median": 300, "sigma": 0.5}, "answer_tokens": {"kind": "fixed", "value": 40}},
    {"name": "hard", "weight": 0.4, "accuracy": 0.35, "truncated_accuracy": 0.1,
     "thinking_tokens": {"kind": "lognormal", "median": 900, "sigma": 0.5}, "answer_tokens": {"kind": "fixed", "value": 60}},
]


def ttc(strategy: dict, levels=MIX, rate: float = 1.0, duration_s: float = 30.0, prompt: dict | None = None,
        seed: int = 5, replicas: int = 1, **top) -> dict:
    raw = {
        "name": "ttc-test", "seed": seed, "duration_s": duration_s, "warmup_s": 0.0,
        "datacenter": {"pools": [
            {"name": "gen", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": replicas,
             "router": {"kind": "jsq"}},
            {"name": "rm", "accelerator": "h100-sxm", "model": "llama-3.1-8b", "replicas": 1},
        ]},
        "workload": {"classes": [{
            "name": "q", "pool": "gen", "arrival": {"kind": "poisson", "rate_per_s": rate},
            "prompt_tokens": prompt or {"kind": "uniform", "low": 200, "high": 600},
            "job": {"levels": copy.deepcopy(levels), "strategy": strategy},
        }]},
    }
    raw.update(top)
    return raw


def run(raw, tmp_path, name="r"):
    return run_tables(raw, tmp_path, name, "jobs", "calls", "steps")


def calls_of(calls, job_id):
    return calls.filter(pc.equal(calls["job_id"], job_id)).sort_by("call_id").to_pylist()


def test_best_of_n_issues_n_plus_one_calls_and_waits_for_the_slowest(tmp_path):
    n = 4
    summary, jobs, calls, _ = run(ttc({"kind": "best_of_n", "n": n, "verifier": {"pool": "rm", "auc": 0.8}}), tmp_path)
    done = jobs.filter(pc.equal(jobs["status"], "finished")).to_pylist()
    assert len(done) > 15 and summary["jobs_created"] == jobs.num_rows
    for job in done:
        cs = calls_of(calls, job["job_id"])
        assert len(cs) == job["calls"] == n + 1
        samples, (verifier,) = cs[:n], cs[n:]
        assert {c["pool"] for c in samples} == {"gen"} and verifier["pool"] == "rm"
        assert all(c["arrival_s"] == job["arrival_s"] for c in samples)
        # the verifier starts when the slowest sample ends; the job ends with the verifier
        assert verifier["arrival_s"] == max(c["finish_s"] for c in samples)
        assert job["finish_s"] == verifier["finish_s"]
        assert math.isclose(job["latency_s"], max(c["finish_s"] for c in samples) - job["arrival_s"]
                            + (verifier["finish_s"] - verifier["arrival_s"]), rel_tol=1e-12)
        # the verifier reads the question and the n answers
        assert verifier["prompt_tokens"] == job["prompt_tokens"] + sum(c["output_tokens"] for c in samples) - job["thinking_tokens"]


def _shared_vs_independent(tmp_path, n: int, prompt: int, out_tokens: int = 300):
    """One job of n samples vs n independent calls of the same lengths, all sent at t=0."""
    lv = [{"name": "x", "accuracy": 0.5, "truncated_accuracy": 0.5,
           "thinking_tokens": {"kind": "fixed", "value": out_tokens - 20}, "answer_tokens": {"kind": "fixed", "value": 20}}]
    job = ttc({"kind": "self_consistency", "n": n}, levels=lv, duration_s=0.5, prompt={"kind": "fixed", "value": prompt})
    job["workload"]["classes"][0]["arrival"] = {"kind": "closed", "concurrency": 1}
    indep = copy.deepcopy(job)
    cls = indep["workload"]["classes"][0]
    del cls["job"]
    cls["output_tokens"] = {"kind": "fixed", "value": out_tokens}
    cls["arrival"] = {"kind": "closed", "concurrency": n}
    return run(job, tmp_path, "shared"), run(indep, tmp_path, "indep")


def test_prefix_sharing_uses_fewer_kv_blocks_than_independent_calls(tmp_path):
    n, prompt, bs = 8, 2000, 16
    (_, jobs, calls, steps), (_, _, icalls, isteps) = _shared_vs_independent(tmp_path, n, prompt)
    assert calls.num_rows == icalls.num_rows == n
    assert sorted(calls["output_tokens"].to_pylist()) == sorted(icalls["output_tokens"].to_pylist())
    # siblings find every full block of the prompt but the one holding its last token
    hit = ((prompt - 1) // bs) * bs
    assert sorted(calls["cached_tokens"].to_pylist()) == [0] + [hit] * (n - 1)
    assert jobs["cached_tokens"][0].as_py() == (n - 1) * hit and jobs["kv_saved_bytes"][0].as_py() > 0
    assert sum(icalls["cached_tokens"].to_pylist()) == 0
    # the prompt is computed once, not n times
    assert sum(steps["prefill_tokens"].to_pylist()) == prompt + (n - 1) * (prompt - hit)
    assert sum(isteps["prefill_tokens"].to_pylist()) == n * prompt
    # and stored once: the peak KV in use is lower by the shared blocks
    peak = max(steps["kv_blocks_used"].to_pylist())
    ipeak = max(isteps["kv_blocks_used"].to_pylist())
    assert ipeak - peak >= 0.95 * (n - 1) * (hit // bs)


def test_majority_vote_accuracy_matches_the_binomial_law(tmp_path):
    n, p = 5, 0.6
    _, jobs, _, _ = run(ttc({"kind": "self_consistency", "n": n}, levels=SHORT, rate=40.0, duration_s=25.0,
                            prompt={"kind": "fixed", "value": 64}), tmp_path)
    jobs = jobs.filter(pc.equal(jobs["status"], "finished"))
    m = jobs.num_rows
    assert m > 600
    law = 1 - stats.binom.cdf(n // 2, n, p)  # more than n/2 right (n odd: no ties)
    assert np.allclose(jobs["expected_accuracy"].to_numpy(), law, rtol=1e-12)
    acc = float(np.mean(jobs["correct"].to_pylist()))
    assert abs(acc - law) < 3 * math.sqrt(law * (1 - law) / m)
    assert acc > p + 0.05  # voting beats one sample at p > 1/2


def test_early_stop_cancels_samples_but_keeps_every_answer(tmp_path):
    n = 7
    base = ttc({"kind": "self_consistency", "n": n}, levels=SHORT, rate=4.0, duration_s=20.0)
    early = ttc({"kind": "self_consistency", "n": n, "early_stop": True}, levels=SHORT, rate=4.0, duration_s=20.0)
    early["workload"]["classes"][0]["job"]["levels"][0]["thinking_tokens"] = {"kind": "uniform", "low": 20, "high": 400}
    base["workload"]["classes"][0]["job"]["levels"][0]["thinking_tokens"] = {"kind": "uniform", "low": 20, "high": 400}
    _, jb, cb, _ = run(base, tmp_path, "all")
    _, je, ce, _ = run(early, tmp_path, "early")
    assert jb.num_rows == je.num_rows > 50
    # the same jobs (paired random numbers) reach the same verdicts
    assert jb["correct"].equals(je["correct"]) and jb["level"].equals(je["level"])
    cancelled = pc.equal(ce["status"], "cancelled")
    assert sum(je["calls_cancelled"].to_pylist()) == pc.sum(cancelled).as_py() > 0
    assert sum(je["output_tokens"].to_pylist()) < sum(jb["output_tokens"].to_pylist())
    assert np.all(je["latency_s"].to_numpy() <= jb["latency_s"].to_numpy() + 1e-9)
    # a cancelled call keeps what it generated, short of its output
    c = ce.filter(cancelled)
    assert np.all(c["generated_tokens"].to_numpy() < c["output_tokens"].to_numpy())


def test_thinking_budget_truncates_and_lowers_accuracy(tmp_path):
    budget = 400
    _, jobs, calls, _ = run(ttc({"kind": "single", "thinking_budget": budget}, rate=3.0), tmp_path, "b")
    _, free_jobs, _, _ = run(ttc({"kind": "single"}, rate=3.0), tmp_path, "free")
    answers = {"easy": 40, "hard": 60}
    for job, c in zip(jobs.to_pylist(), [calls_of(calls, j)[0] for j in jobs["job_id"].to_pylist()]):
        assert job["thinking_tokens"] <= budget
        assert c["output_tokens"] == job["thinking_tokens"] + answers[job["level"]]
    hard = jobs.filter(pc.equal(jobs["level"], "hard"))
    share = pc.sum(hard["truncated_samples"]).as_py() / hard.num_rows
    within = stats.lognorm.cdf(budget, 0.5, scale=900)  # P(thinking <= budget) for the hard level
    assert abs(share - (1 - within)) < 4 * math.sqrt(within * (1 - within) / hard.num_rows)
    expected = hard["expected_accuracy"][0].as_py()
    assert math.isclose(expected, Q.budget_accuracy(0.35, 0.1, within), abs_tol=0.01)
    assert np.mean(jobs["expected_accuracy"].to_numpy()) < np.mean(free_jobs["expected_accuracy"].to_numpy())
    assert sum(jobs["output_tokens"].to_pylist()) < sum(free_jobs["output_tokens"].to_pylist())


def test_revision_rounds_run_one_after_another_on_growing_context(tmp_path):
    rounds = 2
    _, jobs, calls, _ = run(ttc({"kind": "revision", "rounds": rounds, "p_fix": 0.3, "p_break": 0.05}), tmp_path)
    assert jobs.num_rows > 15
    for job in jobs.filter(pc.equal(jobs["status"], "finished")).to_pylist():
        cs = calls_of(calls, job["job_id"])
        assert len(cs) == rounds + 1
        for prev, nxt in zip(cs, cs[1:]):
            assert nxt["arrival_s"] == prev["finish_s"]
            assert nxt["prompt_tokens"] > job["prompt_tokens"]  # carries the previous answer
        p0 = 0.92 if job["level"] == "easy" else 0.35
        assert math.isclose(job["expected_accuracy"], Q.revision_accuracy(p0, rounds, 0.3, 0.05), rel_tol=1e-9)


def test_beam_search_expands_scores_and_shares_beam_prefixes(tmp_path):
    w, e, depth = 2, 3, 3
    strat = {"kind": "beam_search", "width": w, "expansions": e, "depth": depth, "step_tokens": 64,
             "prm": {"pool": "rm", "auc": 0.9}}
    _, jobs, calls, _ = run(ttc(strat, rate=0.5), tmp_path)
    done = jobs.filter(pc.equal(jobs["status"], "finished")).to_pylist()
    assert len(done) > 5
    for job in done:
        cs = calls_of(calls, job["job_id"])
        gen = [c for c in cs if c["pool"] == "gen"]
        prm = [c for c in cs if c["pool"] == "rm"]
        assert len(gen) == len(prm) == depth * w * e
        assert max(c["prompt_tokens"] for c in gen) == job["prompt_tokens"] + (depth - 1) * 64
        assert job["cached_tokens"] > 0  # expansions of one beam share its path
        p = 0.92 if job["level"] == "easy" else 0.35
        assert job["expected_accuracy"] == Q.beam_search_accuracy(p, depth, w, e, Q.auc_to_d_prime(0.9))


def _frontier_point(tmp_path, name, strategy):
    _, jobs, _, _ = run(ttc(strategy, rate=2.0, duration_s=40.0), tmp_path, name)
    return float(np.mean(jobs["cost_usd"].to_numpy())), float(np.mean(jobs["expected_accuracy"].to_numpy())), jobs


def test_adaptive_routing_with_a_perfect_predictor_beats_the_fixed_frontier(tmp_path):
    single = {"kind": "single"}
    search = {"kind": "best_of_n", "n": 8, "verifier": {"pool": "rm", "auc": 0.85}}
    fixed = {name: _frontier_point(tmp_path, name, s) for name, s in (("single", single), ("search", search))}
    adaptive = {a: _frontier_point(tmp_path, f"adaptive{a}", {"kind": "adaptive", "predictor_accuracy": a,
                                                              "policies": {"easy": single, "hard": search}})
                for a in (1.0, 0.6)}
    (c1, a1, j1), (c8, a8, _) = fixed["single"], fixed["search"]
    ca, aa, ja = adaptive[1.0]
    # the same jobs under every policy (paired draws)
    assert ja["level"].equals(j1["level"])
    assert c1 < ca < c8
    assert aa > a1 + (a8 - a1) * (ca - c1) / (c8 - c1) + 0.02  # above the fixed policies' frontier
    for c, a, _ in fixed.values():  # and dominated by none
        assert not (c <= ca and a >= aa)
    # a worse predictor sends hard jobs to the single sample: less accuracy
    cw, aw, jw = adaptive[0.6]
    assert aw < aa - 0.02
    assert np.mean(jw["predicted_level"].to_numpy(zero_copy_only=False) == jw["level"].to_numpy(zero_copy_only=False)) < 0.8


def test_jobs_are_identical_in_both_engine_modes(tmp_path):
    raw = ttc({"kind": "adaptive", "predictor_accuracy": 0.8, "policies": {
        "easy": {"kind": "self_consistency", "n": 5, "early_stop": True},
        "hard": {"kind": "best_of_n", "n": 4, "verifier": {"auc": 0.8}}}}, rate=2.0, duration_s=15.0, replicas=2)
    _, jm, cm, _ = run({**raw, "engine_mode": "macro"}, tmp_path, "m")
    _, ji, ci, _ = run({**raw, "engine_mode": "per_iteration"}, tmp_path, "i")
    assert cm.num_rows > 100 and same_calls(cm, ci)
    exact = [c for c in jm.column_names if c not in ("energy_j", "cost_usd")]
    assert jm.select(exact).equals(ji.select(exact))
    assert np.allclose(jm["cost_usd"].to_numpy(), ji["cost_usd"].to_numpy(), rtol=1e-9)
    _, again, _, _ = run({**raw, "engine_mode": "macro"}, tmp_path, "m2")
    assert again.equals(jm)


def test_no_search_gets_past_the_coverage_of_a_level(tmp_path):
    """Questions out of the model's reach stay wrong however many samples a strong verifier sees."""
    lv = [{"name": "x", "accuracy": 0.3, "truncated_accuracy": 0.1, "coverage": 0.5,
           "thinking_tokens": {"kind": "fixed", "value": 30}, "answer_tokens": {"kind": "fixed", "value": 5}}]
    _, jobs, _, _ = run(ttc({"kind": "best_of_n", "n": 16, "verifier": {"auc": 0.99}}, levels=lv, rate=20.0,
                            duration_s=20.0, prompt={"kind": "fixed", "value": 32}), tmp_path)
    m = jobs.num_rows
    expected = 0.5 * Q.best_of_n_accuracy(0.6, 16, Q.auc_to_d_prime(0.99))
    assert m > 300 and np.allclose(jobs["expected_accuracy"].to_numpy(), expected)
    acc = float(np.mean(jobs["correct"].to_pylist()))
    assert abs(acc - expected) < 3 * math.sqrt(expected * (1 - expected) / m) and acc <= 0.5 + 3 * math.sqrt(0.25 / m)
    # one sample keeps its accuracy: coverage only correlates the samples of a question
    _, single, _, _ = run(ttc({"kind": "single"}, levels=lv, rate=20.0, duration_s=20.0,
                              prompt={"kind": "fixed", "value": 32}), tmp_path, "single")
    assert np.allclose(single["expected_accuracy"].to_numpy(), 0.3)


def test_default_levels_and_verifier_work_without_parameters(tmp_path):
    raw = ttc({"kind": "best_of_n", "n": 2}, rate=0.5, duration_s=20.0)
    del raw["workload"]["classes"][0]["job"]["levels"]
    summary, jobs, _, _ = run(raw, tmp_path)
    assert set(jobs["level"].to_pylist()) <= {lv.name for lv in Q.DEFAULT_LEVELS}
    assert 0 < summary["expected_accuracy"] < 1 and summary["usd_per_1k_jobs"] > 0


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["job"]["strategy"].update(verifier={"pool": "nope"}), "workload.classes.q.job.strategy.verifier.pool"),
    (lambda c: c["job"].update(strategy={"kind": "adaptive", "predictor_accuracy": 0.9, "policies": {"easy": {"kind": "single"}}}),
     "strategy.policies"),
    (lambda c: c.update(output_tokens={"kind": "fixed", "value": 5}), "workload.classes.q"),
    (lambda c: c["job"]["strategy"].update(kind="majority"), "workload.classes.q.job.strategy"),
    (lambda c: c["job"]["strategy"].update(n=0), "workload.classes.q.job.strategy.n"),
])
def test_bad_job_config_names_the_key(edit, key):
    raw = ttc({"kind": "best_of_n", "n": 4})
    edit(raw["workload"]["classes"][0])
    with pytest.raises(ScenarioError) as e:
        validate(raw, "ttc.yaml")
    assert key in str(e.value) and "ttc.yaml" in str(e.value)


def test_servegen_reasoning_lengths_split_output_by_reasoning_share(tmp_path):
    """A level drawn from ServeGen's DeepSeek-R1 output and reasoning-share PMFs reproduces their means."""
    from pathlib import Path

    data = Path(__file__).parent.parent / "scenarios" / "data"
    lv = [{"name": "prod", "accuracy": 0.7, "truncated_accuracy": 0.3,
           "output_tokens": {"kind": "empirical", "path": str(data / "r1_agg_output_tokens_pmf.csv"),
                             "column": "output_tokens", "weight_column": "probability"},
           "reasoning_share": {"kind": "empirical", "path": str(data / "r1_agg_reason_ratio_pmf.csv"),
                               "column": "reason_ratio", "weight_column": "probability"},
           "early_exit": {"probability": 0.2, "at": {"kind": "beta", "a": 2, "b": 2}}}]
    raw = ttc({"kind": "single", "thinking_budget": 8192}, levels=lv, rate=30.0, duration_s=60.0,
              prompt={"kind": "fixed", "value": 16})
    raw["datacenter"]["pools"][0]["replicas"] = 4
    _, jobs, calls, _ = run(raw, tmp_path)
    out = calls["output_tokens"].to_numpy().astype(float)
    think = jobs["thinking_tokens"].to_numpy().astype(float)
    assert jobs.num_rows > 1500
    # early exit keeps 0.2 * (1 - E[at]) = 10% of the thinking out; the budget cuts the rest of the tail
    share = think.sum() / out.sum()
    assert 0.60 < share < 0.70  # ServeGen: 0.70 of output tokens before early exits and budgets
    assert 1250 < out.mean() < 1500 and out.min() >= 1 and think.max() <= 8192
    with pytest.raises(ScenarioError, match="output_tokens.*reasoning_share|thinking_tokens"):
        bad = copy.deepcopy(lv)
        del bad[0]["reasoning_share"]
        validate(ttc({"kind": "single"}, levels=bad), "x.yaml")


def test_finished_calls_of_jobs_are_freed_without_the_cyclic_collector():
    """A job waits on its calls through events; a call ending must not leave a call <-> event
    reference cycle (one per call: the cyclic collector's main work in a job-heavy run)."""
    raw = ttc({"kind": "self_consistency", "n": 4, "early_stop": True}, rate=2.0, duration_s=20.0)
    assert garbage_calls(raw) == 0
