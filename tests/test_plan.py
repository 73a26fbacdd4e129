"""dcsim plan: the plan: schema and its errors, the screens (memory fit, capacity from `estimate`),
and the search on Ray Tune: it finds the exhaustive optimum of a 96-candidate space with at most a
third of the simulations, and resumes after an interruption with the same tables.

The search tests run the real machinery (Tune, Optuna, screening, early stopping, commit markers)
with a fast stand-in point function (tests/plan_surrogate.py); the screen tests use the real
resolve_pool and estimate."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import plan_surrogate as S
from ray import cloudpickle

cloudpickle.register_pickle_by_value(S)  # Ray's workers do not have tests/ on their path
from sim.errors import ScenarioError
from sim.plan import metrics
from sim.plan.driver import load_plan, run_plan
from sim.plan.space import Space, scale_load

TESTS = Path(__file__).parent
REPO = TESTS.parent
ACC, TP, REPLICAS = "datacenter.pools.main.accelerator", "datacenter.pools.main.tp", "datacenter.pools.main.replicas"


# --------------------------------------------------------------------------- schema and screens
@pytest.mark.parametrize("edit, key, words", [
    (lambda p: p.update(objective=None), "plan.objective", ""),
    (lambda p: p.update(bogus=1), "plan.bogus", "unknown key"),
    (lambda p: p["constraints"].append({"metric": "ttft_p99_s"}), "plan.constraints.2", "max: or min:"),
    (lambda p: p["constraints"].append({"metric": "accuracy", "max": 1, "class": "chat"}), "plan.constraints.2",
     "per-class metric"),
    (lambda p: p["space"].update({"sweep.grid": [1]}), "plan.space", "cannot search its own"),
    (lambda p: p["search"].update(early_stop={"rule": "sometimes"}), "plan.search.early_stop.rule", ""),
])
def test_bad_plan_sections_name_their_key(edit, key, words):
    raw = S.base_scenario()
    edit(raw["plan"])
    with pytest.raises(ScenarioError) as e:
        load_plan(raw, "p.yaml")
    assert e.value.source == "p.yaml" and e.value.key_path == key and words in e.value.message


def test_unknown_space_path_and_class_fail_before_anything_runs(tmp_path):
    raw = S.base_scenario()
    raw["plan"]["space"]["datacenter.pools.nope.tp"] = [1, 2]
    with pytest.raises(ScenarioError) as e:
        run_plan(raw, str(tmp_path / "o"), source="p.yaml")
    assert e.value.key_path == "plan.space.datacenter.pools.nope.tp" and "no element named 'nope'" in e.value.message
    raw = S.base_scenario()
    raw["plan"]["constraints"][0]["class"] = "other"
    with pytest.raises(ScenarioError) as e:
        run_plan(raw, str(tmp_path / "o"), source="p.yaml")
    assert e.value.key_path == "plan.constraints[0].class"
    assert not (tmp_path / "o").exists(), "a bad plan wrote output"


def test_run_and_sweep_ignore_the_plan_section():
    from sim.config.scenario import validate
    from sim.run import scenario_point_id

    raw = S.base_scenario()
    bare = {k: v for k, v in raw.items() if k != "plan"}
    assert scenario_point_id(validate(raw)) == scenario_point_id(validate(bare))


def test_memory_fit_rejects_what_a_run_would_refuse():
    raw, spec, src = load_plan(S.base_scenario(), "p.yaml")
    space = Space(raw, spec, src)
    big = space.candidate((1, 0, 0))  # llama-3.1-70b bf16 on one H100: 131 GiB of weights
    stage, reason = space.screen(big)
    assert stage == "infeasible" and "does not fit on h100-sxm at tp=1" in reason
    assert space.screen(space.candidate((3, 0, 0))) is None  # one B200 (192 GB) holds it


def test_capacity_stage_prunes_replicas_below_the_estimated_need():
    """With the real `estimate`: one replica of 4 x H100 serves ~a few calls/s of 1000/250 tokens, so
    at 20 calls/s one or two replicas are pruned and enough replicas are not."""
    raw = S.base_scenario(rate=20.0)
    raw["plan"]["capacity"] = {"pool": "main", "class": "chat"}
    raw["plan"]["space"][REPLICAS] = [1, 2, 8]
    raw, spec, src = load_plan(raw, "p.yaml")
    space = Space(raw, spec, src)
    stage, reason = space.screen(space.candidate((1, 2, 0)))
    assert stage == "capacity" and "1 replicas <" in reason
    est = next(iter(space._estimates.values()))
    assert 2 < est["requests_per_s"] < 20 and 0 < est["unloaded_ttft_s"] < 2.0
    need = 20.0 / est["requests_per_s"]
    assert (space.screen(space.candidate((1, 2, 1))) is None) == (2 >= need)
    assert space.screen(space.candidate((1, 2, 2))) is None  # 8 replicas are plenty


def test_scale_load_scales_every_arrival_kind():
    raw = S.base_scenario()
    classes = raw["workload"]["classes"]
    classes.append({**copy.deepcopy(classes[0]), "name": "c", "arrival": {"kind": "closed", "concurrency": 10}})
    out = scale_load(raw, 1.5)
    assert out["workload"]["classes"][0]["arrival"]["rate_per_s"] == 9.0
    assert out["workload"]["classes"][1]["arrival"]["concurrency"] == 15
    assert raw["workload"]["classes"][0]["arrival"]["rate_per_s"] == 6.0  # the input is left alone


def test_margins_and_feasibility():
    raw, spec, _ = load_plan(S.base_scenario(), "p.yaml")
    ok = metrics.check(spec, {"chat.ttft_p99_s": 1.5, "chat.tpot_p90_s": 0.04})
    assert ok["feasible"] and ok["margins"]["chat.ttft_p99_s"] == pytest.approx(0.25)
    bad = metrics.check(spec, {"chat.ttft_p99_s": 3.0, "chat.tpot_p90_s": float("nan")})
    assert not bad["feasible"] and bad["violation"] == pytest.approx(0.5 + 1.0)


# --------------------------------------------------------------------------- search on Ray Tune
@pytest.fixture(scope="module")
def ray_local():
    """An embedded Ray (2 CPUs) whose workers import this folder (the stand-in point function)."""
    import ray

    tmp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    env = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": tmp}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, _temp_dir=tmp,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}})
        yield
    finally:
        ray.shutdown()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        shutil.rmtree(tmp, ignore_errors=True)


def _calls(out: Path) -> int:
    """Points the stand-in simulated under ``out`` (full and short horizons)."""
    return sum(len(os.listdir(d)) for d in (out / "_calls_log", out / "_short" / "_calls_log") if d.exists())


def _exhaustive(raw: dict) -> tuple[float, dict, int]:
    """The cheapest candidate that meets the constraints, by screening and evaluating all of them."""
    raw, spec, src = load_plan(raw, "p.yaml")
    space = Space(raw, spec, src, capacity_fn=S.capacity)
    best, n = None, 0
    for index in space.all_indices():
        n += 1
        c = space.candidate(index)
        if space.screen(c) is not None:
            continue
        row = S.figures(c.params[ACC], c.params[TP], c.params[REPLICAS], raw["workload"]["classes"][0]["arrival"]
                        ["rate_per_s"], raw["duration_s"] - raw["warmup_s"])
        if metrics.check(spec, row)["feasible"] and (best is None or row["usd_per_million_output_tokens"] < best[0]):
            best = (row["usd_per_million_output_tokens"], c.params)
    return best[0], best[1], n


@pytest.mark.timeout(240)
def test_plan_finds_the_exhaustive_optimum_with_a_third_of_the_simulations(ray_local, tmp_path):
    raw = S.base_scenario(trials=24)
    raw["plan"]["sensitivity"] = {"loads": [1.5], "top": 2}
    raw["plan"]["capacity"] = {"pool": "main", "class": "chat"}  # the cheap first stage (its stand-in)
    cost, params, n = _exhaustive(raw)
    assert n == 96
    out = tmp_path / "plan"
    res = run_plan(raw, str(out), source="p.yaml", point_fn=S.point, capacity_fn=S.capacity)
    rec = res.recommendation
    assert rec is not None and rec["row"]["usd_per_million_output_tokens"] <= 1.02 * cost, (rec["params"], params)
    sens = res.counts["sensitivity_runs"]
    searched = _calls(out) - sens  # every point the stand-in ran, short horizons included
    assert searched == res.simulations - sens <= n // 3
    # a sweep's layout: points.parquet lists the full runs (search order, then sensitivity), summary the ok ones
    points = pq.read_table(out / "points.parquet").to_pylist()
    assert [p["status"] for p in points] == ["ok"] * len(points) and len(points) == res.counts["full"] + sens
    assert {p["point_id"] for p in points} == set(pq.read_table(out / "summary.parquet")["point_id"].to_pylist())
    assert all((out / "_commits" / f"{p['point_id']}.json").exists() for p in points)
    trials = pq.read_table(out / "plan_trials.parquet").to_pylist()
    assert sum(t["feasible"] for t in trials) >= 1 and {t["stage"] for t in trials} <= {
        "infeasible", "capacity", "stopped", "full", "failed"}
    front = pq.read_table(out / "frontier.parquet").to_pylist()
    assert rec["point_id"] in {f["point_id"] for f in front}
    assert len(res.sensitivity) == 1 and res.sensitivity[0].startswith("at 1.5x load")


def _rows(path: Path) -> list[dict]:
    """A table's rows without its timing columns, NaN as None (NaN != NaN)."""
    rows = pq.read_table(path).to_pylist()
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items() if k not in ("wall_s", "node_id")}
            for r in rows]


@pytest.mark.timeout(240)
def test_an_interrupted_plan_resumes_to_the_same_tables(ray_local, tmp_path):
    """The state an interruption leaves (plan.json, some commit markers, no final tables) resumes
    by replaying the seeded search: committed runs are read back, only the rest run, and the tables
    equal an uninterrupted plan's."""
    raw = S.base_scenario(trials=10)
    raw["plan"]["sensitivity"] = None
    raw["plan"]["capacity"] = {"pool": "main", "class": "chat"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    run_plan(raw, str(whole), source="p.yaml", point_fn=S.point, capacity_fn=S.capacity)
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "_calls_log")
    shutil.rmtree(cut / "_short" / "_calls_log")
    markers = sorted((cut / "_commits").glob("*.json")) + sorted((cut / "_short" / "_commits").glob("*.json"))
    lost = markers[::2]  # as if the plan stopped before these were committed
    for m in lost:
        m.unlink()
    for name in ("points.parquet", "summary.parquet", "plan_trials.parquet", "frontier.parquet", "recommendation.json"):
        (cut / name).unlink()
    with pytest.raises(ScenarioError, match="already holds a plan; pass --resume"):
        run_plan(raw, str(cut), source="p.yaml", point_fn=S.point, capacity_fn=S.capacity)
    res = run_plan(raw, str(cut), source="p.yaml", point_fn=S.point, capacity_fn=S.capacity, resume=True)
    assert _calls(cut) == len(lost) == res.ran
    for name in ("points.parquet", "summary.parquet", "plan_trials.parquet", "frontier.parquet"):
        assert _rows(whole / name) == _rows(cut / name), name
    other = copy.deepcopy(raw)
    other["workload"]["classes"][0]["arrival"]["rate_per_s"] = 5.0
    with pytest.raises(ScenarioError, match="different scenario"):
        run_plan(other, str(cut), source="p.yaml", point_fn=S.point, resume=True)


@pytest.mark.parametrize("name", ["plan_chat.yaml", "plan_reasoning.yaml"])
def test_shipped_plans_validate_and_every_axis_value_applies(name):
    path = REPO / "scenarios" / name
    raw, spec, src = load_plan(path)
    space = Space(raw, spec, src, str(path.parent))
    first = space.candidate((0,) * len(space.paths))
    last = space.candidate(tuple(len(v) - 1 for v in space.values))
    for cand in (first, last):
        space.scenario(cand.raw)  # every axis value is a valid scenario key


def test_cli_plan_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from sim.cli.main import main

    scn = tmp_path / "s.yaml"
    import yaml

    raw = S.base_scenario()
    raw["plan"]["search"]["trials"] = 0
    scn.write_text(yaml.safe_dump(raw))
    assert main(["plan", str(scn), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "plan.search.trials" in err[0] and str(scn) in err[0]
    assert main(["plan", str(scn), "--out", str(tmp_path / "o"), "--trials", "0"]) == 2
    assert not (tmp_path / "o").exists()
