"""The plan's conclusions from its trials: Pareto frontier, recommendation (ties to the cheaper),
sensitivity lines, and the searcher's screening and neighbour moves (no Ray needed)."""

from __future__ import annotations

import plan_surrogate as S
from sim.plan import frontier as F
from sim.plan.driver import load_plan
from sim.plan.spec import Objective


def _spec(**plan):
    raw = S.base_scenario()
    raw["plan"].update(plan)
    return load_plan(raw, "p.yaml")[1]


def _trial(i, stage="full", **row):
    return {"index": [i], "params": {"x": i}, "stage": stage, "point_id": f"p{i}", "row": row}


def test_pareto_keeps_exactly_the_undominated_rows():
    axes = [Objective(metric="cost"), Objective(metric="lat"), Objective(metric="acc", goal="max")]
    rows = [_trial(0, cost=1, lat=5, acc=0.5), _trial(1, cost=2, lat=1, acc=0.5), _trial(2, cost=2, lat=5, acc=0.5),
            _trial(3, cost=3, lat=5, acc=0.9), _trial(4, cost=1, lat=5, acc=0.4), _trial(5, cost=float("nan"), lat=0, acc=1)]
    front = F.pareto(rows, axes)
    assert [t["index"][0] for t in front] == [0, 1, 3]  # 2 and 4 are dominated by 0, 5 has no cost


def test_recommendation_is_the_best_feasible_and_ties_go_to_the_cheaper():
    spec = _spec(objective={"metric": "expected_accuracy", "goal": "max"},
                 frontier=["usd_per_million_output_tokens", {"metric": "expected_accuracy", "goal": "max"}])
    ok = {"chat.ttft_p99_s": 1.0, "chat.tpot_p90_s": 0.01}
    trials = [_trial(0, expected_accuracy=0.7, usd_per_million_output_tokens=5, **ok),
              _trial(1, expected_accuracy=0.7 + 1e-16, usd_per_million_output_tokens=3, **ok),
              _trial(2, expected_accuracy=0.9, usd_per_million_output_tokens=1, **{**ok, "chat.ttft_p99_s": 3.0}),
              _trial(3, stage="stopped", expected_accuracy=0.95, usd_per_million_output_tokens=1, **ok)]
    rec = F.recommend(spec, trials)
    assert rec["index"] == [1]  # 2 misses the TTFT bound, 3 never ran in full; 0 and 1 tie, 1 is cheaper
    assert F.recommend(spec, trials[2:]) is None


def test_sensitivity_lines_say_what_holds_and_what_is_best():
    spec = _spec()
    ok = {"chat.ttft_p99_s": 1.0, "chat.tpot_p90_s": 0.01}
    top = [_trial(0, usd_per_million_output_tokens=1, **ok), _trial(1, usd_per_million_output_tokens=2, **ok)]
    at = {1.5: [{**ok, "chat.ttft_p99_s": 4.0, "usd_per_million_output_tokens": 0.8},
                {**ok, "usd_per_million_output_tokens": 1.5}],
          0.5: [{**ok, "usd_per_million_output_tokens": 2}, {**ok, "usd_per_million_output_tokens": 3}]}
    lines = F.sensitivity_line(spec, top[0], top, at)
    assert lines[0] == ("at 0.5x load: the recommendation still meets every constraint and stays the best of the "
                        "top 2 (usd_per_million_output_tokens 2)")
    assert lines[1].startswith("at 1.5x load: the recommendation misses chat.ttft_p99_s (margin -100%); the best "
                               "of the top 2 becomes x=1")


def test_screening_searcher_never_repeats_and_tries_neighbours():
    from sim.plan.search import ScreeningSearcher

    class Inner:  # suggests the same candidate forever: a converged model
        def __init__(self):
            self.told, self._ot_study = [], self
            self.queue = []

        def enqueue_trial(self, params):
            self.queue.append(params)

        def suggest(self, iid):
            return self.queue.pop(0) if self.queue else {"a0": 1, "a1": 1}

        def on_trial_complete(self, iid, result=None, error=False):
            self.told.append((iid, result, error))

    screened = []
    s = ScreeningSearcher(Inner(), lambda ix: ("infeasible", "no") if ix == (0, 1) else None,
                          lambda ix, st, why: screened.append(ix), sizes=[3, 3], ordered=[True, False], startup=1)
    first = s.suggest("t1")
    assert first == {"index": [1, 1], "best": None}
    s.on_trial_complete("t1", {"score": 1.0, "feasible": True, "stage": 2, "objective": 1.0})
    second = s.suggest("t2")  # the incumbent's neighbours: (0, 1) is screened out, (2, 1) is next
    assert screened == [(0, 1)] and second["index"] == [2, 1] and second["best"] == 1.0
    s.on_trial_complete("t2", {"score": 2.0, "feasible": False, "stage": 1, "objective": 2.0})
    seen = {(1, 1), (2, 1), (0, 1)}
    for k in range(3, 9):
        cfg = s.suggest(f"t{k}")
        if cfg == s.FINISHED:
            break
        assert tuple(cfg["index"]) not in seen
        seen.add(tuple(cfg["index"]))
        s.on_trial_complete(f"t{k}", {"score": 3.0, "feasible": False, "stage": 2, "objective": 3.0})
    assert len(seen) == 9 and s.suggest("t99") == s.FINISHED  # every candidate known: the search ends
