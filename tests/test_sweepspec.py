"""Sweep spec: dotted paths, expansion order, stable ids, random draws, errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.errors import ScenarioError
from sim.config.sweep import SweepSpec, expand, get_path, parse_spec, point_id_of, set_path

BASE = {
    "seed": 11,
    "duration_s": 10.0,
    "datacenter": {"pools": [{"name": "main", "replicas": 1}, {"name": "big", "replicas": 4}]},
    "workload": {"classes": [{"name": "chat", "arrival": {"rate_per_s": 1.0}}]},
}


def with_sweep(**sweep):
    return {**BASE, "sweep": sweep}


# --- set_path / get_path -----------------------------------------------------------------


def test_set_path_by_key_index_and_name_returns_a_copy():
    a = set_path(BASE, "duration_s", 20.0)
    b = set_path(BASE, "datacenter.pools[1].replicas", 8)
    c = set_path(BASE, "datacenter.pools.main.replicas", 3)
    d = set_path(BASE, "workload.classes.chat.arrival.rate_per_s", 2.5)
    e = set_path(BASE, "datacenter.pools.1.replicas", 9)
    assert a["duration_s"] == 20.0
    assert b["datacenter"]["pools"][1]["replicas"] == 8
    assert c["datacenter"]["pools"][0]["replicas"] == 3
    assert d["workload"]["classes"][0]["arrival"]["rate_per_s"] == 2.5
    assert e["datacenter"]["pools"][1]["replicas"] == 9
    assert BASE["datacenter"]["pools"][0]["replicas"] == 1  # input untouched
    assert get_path(c, "datacenter.pools.main.replicas") == 3
    assert get_path(BASE, "datacenter.pools[1].name") == "big"


def test_set_path_may_add_a_last_key_but_not_an_intermediate_one():
    assert set_path(BASE, "run", 2)["run"] == 2
    with pytest.raises(ScenarioError) as e:
        set_path(BASE, "datacenter.nope.replicas", 1, source="s.yaml")
    assert e.value.source == "s.yaml" and e.value.key_path == "datacenter.nope.replicas"
    assert "unknown key 'nope'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "path, words",
    [
        ("datacenter.pools.tiny.replicas", "no element named 'tiny'"),
        ("datacenter.pools[5].replicas", "out of range"),
        ("seed.x", "not a mapping or list"),
        ("datacenter[0].x", "is a mapping, not a list"),
        ("a..b", "bad dotted path"),
    ],
)
def test_set_path_errors_name_the_path(path, words):
    with pytest.raises(ScenarioError) as e:
        set_path(BASE, path, 1, source="s.yaml")
    assert words in str(e.value)
    assert str(e.value).startswith(f"s.yaml: {path}: ")


# --- expansion ------------------------------------------------------------------------------


def test_no_sweep_is_one_point_with_run_zero():
    (p,) = expand(BASE)
    assert p.params == {"run": 0}
    assert p.raw == {**BASE, "run": 0}
    assert "sweep" not in p.raw


def test_grid_order_last_axis_fastest_and_params_resolved():
    pts = expand(with_sweep(grid={"workload.classes.chat.arrival.rate_per_s": [1, 2, 4], "datacenter.pools.main.replicas": [1, 2]}))
    got = [(p.params["workload.classes.chat.arrival.rate_per_s"], p.params["datacenter.pools.main.replicas"]) for p in pts]
    assert got == [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2)]
    for p in pts:
        assert get_path(p.raw, "workload.classes.chat.arrival.rate_per_s") == p.params["workload.classes.chat.arrival.rate_per_s"]
        assert get_path(p.raw, "datacenter.pools.main.replicas") == p.params["datacenter.pools.main.replicas"]
    assert [p.index for p in pts] == list(range(6))


def test_zip_crossed_with_grid_and_replications():
    spec = dict(grid={"duration_s": [10, 20]}, zip={"seed": [1, 2, 3], "datacenter.pools.big.replicas": [4, 5, 6]}, replications=2)
    pts = expand(with_sweep(**spec))
    assert len(pts) == 2 * 3 * 2 == SweepSpec(**spec).size()
    assert [(p.params["duration_s"], p.params["seed"], p.params["run"]) for p in pts[:4]] == [(10, 1, 0), (10, 1, 1), (10, 2, 0), (10, 2, 1)]
    for p in pts:
        assert get_path(p.raw, "datacenter.pools.big.replicas") == p.params["seed"] + 3
        assert p.raw["run"] == p.params["run"]


def test_replications_start_at_the_base_run():
    pts = expand({**BASE, "run": 5, "sweep": {"replications": 3}})
    assert [p.params["run"] for p in pts] == [5, 6, 7]


def test_point_ids_are_stable_unique_and_never_numeric():
    raw = with_sweep(grid={"duration_s": [10, 20, 30]}, replications=4)
    a, b = expand(raw), expand(raw)
    assert [p.point_id for p in a] == [p.point_id for p in b]
    assert len({p.point_id for p in a}) == 12
    for p in a:
        assert p.point_id.startswith("p") and len(p.point_id) == 13
        int(p.point_id[1:], 16)
        assert p.point_id == point_id_of(p.raw)
    # key order of the file does not matter; the resolved configuration does
    reordered = {k: raw[k] for k in reversed(list(raw))}
    assert [p.point_id for p in expand(reordered)] == [p.point_id for p in a]
    # the same resolved point has the same id whichever sweep produced it
    single = expand({**BASE, "duration_s": 20, "run": 3})[0]
    assert single.point_id in {p.point_id for p in a}


def test_points_resolving_to_the_same_scenario_are_an_error():
    with pytest.raises(ScenarioError, match="resolve to the same scenario"):
        expand(with_sweep(grid={"duration_s": [10, 10]}))


def test_random_samples_are_deterministic_in_range_and_independent_per_param():
    params = {
        "duration_s": {"uniform": [5, 6]},
        "workload.classes.chat.arrival.rate_per_s": {"loguniform": [1, 100]},
        "datacenter.pools.main.replicas": {"randint": [1, 3]},
        "datacenter.pools.big.name": {"choice": ["x", "y"]},
    }
    raw = with_sweep(random={"samples": 50, "seed": 7, "params": params})
    pts = expand(raw)
    assert len(pts) == 50 and [p.point_id for p in pts] == [p.point_id for p in expand(raw)]
    for p in pts:
        assert 5 <= p.params["duration_s"] < 6 and isinstance(p.params["duration_s"], float)
        assert 1 <= p.params["workload.classes.chat.arrival.rate_per_s"] <= 100
        assert p.params["datacenter.pools.main.replicas"] in (1, 2, 3)
        assert type(p.params["datacenter.pools.main.replicas"]) is int
        assert p.params["datacenter.pools.big.name"] in ("x", "y")
    assert {p.params["datacenter.pools.main.replicas"] for p in pts} == {1, 2, 3}  # inclusive bounds
    # adding a parameter does not change the others' draws
    fewer = {k: v for k, v in params.items() if k != "duration_s"}
    pts2 = expand(with_sweep(random={"samples": 50, "seed": 7, "params": fewer}))
    for a, b in zip(pts, pts2):
        assert a.params["workload.classes.chat.arrival.rate_per_s"] == b.params["workload.classes.chat.arrival.rate_per_s"]
    # another seed, other draws
    other = expand(with_sweep(random={"samples": 50, "seed": 8, "params": params}))
    assert [p.params["duration_s"] for p in other] != [p.params["duration_s"] for p in pts]


@settings(max_examples=50, deadline=None)
@given(
    lo=st.floats(min_value=1e-3, max_value=1e3),
    width=st.floats(min_value=1e-3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_random_draws_stay_within_bounds(lo, width, seed):
    hi = lo + width
    pts = expand(with_sweep(random={"samples": 5, "seed": seed, "params": {"duration_s": {"loguniform": [lo, hi]}, "x": {"uniform": [lo, hi]}}}))
    for p in pts:
        for key in ("duration_s", "x"):
            v = p.params[key]
            assert lo * (1 - 1e-12) <= v <= hi * (1 + 1e-12) and math.isfinite(v)


@pytest.mark.parametrize(
    "sweep, key_path, words",
    [
        ({"zip": {"seed": [1], "duration_s": [1, 2]}}, "sweep", "same length"),
        ({"grid": {"seed": []}}, "sweep.grid", "at least one value"),
        ({"grid": {"seed": [1]}, "zip": {"seed": [2]}}, "sweep", "swept twice"),
        ({"grids": {"seed": [1]}}, "sweep.grids", "Extra inputs"),
        ({"replications": 0}, "sweep.replications", "greater than or equal to 1"),
        ({"random": {"samples": 2, "params": {"x": {"uniform": [2, 1]}}}}, "sweep.random.params.x", "lo <= hi"),
        ({"random": {"samples": 2, "params": {"x": {"loguniform": [0, 1]}}}}, "sweep.random.params.x", "> 0"),
        ({"random": {"samples": 2, "params": {"x": {"uniform": [0, 1], "choice": [1]}}}}, "sweep.random.params.x", "exactly one"),
        ({"random": {"samples": 2, "params": {"x": {"normal": [0, 1]}}}}, "sweep.random.params.x.normal", "Extra inputs"),
        ({"grid": {"sweep.grid": [1]}}, "sweep.grid", "cannot sweep itself"),
        ({"grid": {"run": [0, 1]}, "replications": 2}, "sweep", "'run' is swept"),
        ({"grid": {"datacenter.racks.a": [1]}}, "sweep.grid.datacenter.racks.a", "unknown key 'racks'"),
        ({"zip": {"datacenter.pools.gpu.replicas": [1]}}, "sweep.zip.datacenter.pools.gpu.replicas", "no element named 'gpu'"),
    ],
)
def test_bad_sweeps_give_one_line_errors_with_key_path(sweep, key_path, words):
    with pytest.raises(ScenarioError) as e:
        expand(with_sweep(**sweep), "s.yaml")
    assert e.value.source == "s.yaml"
    assert e.value.key_path == key_path, str(e.value)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_spec_is_frozen_and_forbids_extra_keys():
    spec = parse_spec({"grid": {"seed": [1, 2]}})
    with pytest.raises(Exception):
        spec.replications = 3  # type: ignore[misc]
    assert spec.swept_paths() == ["seed"] and spec.size() == 2
    assert parse_spec(None) == SweepSpec()


def test_repeated_random_draws_are_dropped_but_repeated_grid_values_are_not():
    pts = expand(with_sweep(random={"samples": 5, "params": {"datacenter.pools.main.replicas": {"randint": [2, 2]}}}))
    assert [p.params["datacenter.pools.main.replicas"] for p in pts] == [2]
    pts = expand(with_sweep(random={"samples": 3, "params": {"x": {"randint": [7, 7]}}}, replications=2))
    assert [p.params["run"] for p in pts] == [0, 1]
