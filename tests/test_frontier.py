"""The frontier keeps exactly the undominated policies."""

import math

from analysis.frontier import pareto_front


def test_pareto_front_drops_dominated_points_and_nans():
    rows = [
        {"name": "cheap", "usd_per_1k_jobs": 1.0, "accuracy": 0.6},
        {"name": "dominated", "usd_per_1k_jobs": 3.0, "accuracy": 0.6},
        {"name": "mid", "usd_per_1k_jobs": 2.0, "accuracy": 0.7},
        {"name": "tie-costlier", "usd_per_1k_jobs": 2.5, "accuracy": 0.7},
        {"name": "best", "usd_per_1k_jobs": 9.0, "accuracy": 0.9},
        {"name": "broken", "usd_per_1k_jobs": math.nan, "accuracy": 0.99},
    ]
    assert [r["name"] for r in pareto_front(rows)] == ["cheap", "mid", "best"]
    # every dropped row is dominated by a kept one
    kept = pareto_front(rows)
    for r in rows:
        if r not in kept and not math.isnan(r["usd_per_1k_jobs"]):
            assert any(k["usd_per_1k_jobs"] <= r["usd_per_1k_jobs"] and k["accuracy"] >= r["accuracy"] for k in kept)
