"""Sweep runner: serial vs Ray on a real two-node (loopback) cluster, retries, resume, failures.

The point function here is a small stand-in with the contract of ``sim.run.run_point``
(``fn(scenario, out, point_id) -> summary dict``, tables written under ``out``); it can
raise, kill its worker process once, or kill the whole driver, as a scenario key says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from raycluster import loopback_cluster
import yaml

from sim.output import storage
from sim.cli.commands import cmd_sweep
from sim.cli.main import add_sweep_arguments
from sim.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
VOLATILE = ["node_id", "wall_s"]


# --------------------------------------------------------------------------- stand-in point
def fake_point(scn: dict, out: str, point_id: str) -> dict:
    """Writes calls/ and steps/ partitions and a manifest; returns a summary row.

    Keys of ``scn`` steer it: ``attempts_dir`` (log every attempt), ``fail_x`` (raise when
    x equals it), ``crash_once_dir`` (os._exit on the first attempt of points with x in
    ``crash_x``), ``crash_always_x``, ``kill_driver_x`` (exit the process: the serial
    driver), ``sleep_s``.
    """
    fs, base = storage.open_output(out)
    x, run = scn["x"], scn["run"]
    if scn.get("attempts_dir"):
        Path(scn["attempts_dir"], f"{point_id}.{uuid.uuid4().hex}").touch()
    partial = storage.join(storage.partition_dir(base, "calls", point_id), "part-9.parquet")
    if scn.get("crash_once_dir") and x in scn.get("crash_x", []):
        marker = Path(scn["crash_once_dir"], point_id)
        if not marker.exists():
            marker.touch()
            storage.atomic_write_table(fs, partial, pa.table({"junk": [1]}))
            os._exit(17)
    if x == scn.get("crash_always_x"):
        os._exit(18)
    if x == scn.get("kill_driver_x"):
        storage.atomic_write_table(fs, partial, pa.table({"junk": [1]}))
        os._exit(3)
    if x == scn.get("fail_x"):
        raise ValueError(f"x={x} is not allowed")
    time.sleep(scn.get("sleep_s", 0))
    rng = np.random.default_rng([scn["seed"], run, x])
    n = 20 + 10 * x
    latency = rng.exponential(1.0 / x, n)
    calls = pa.table({"call_id": np.arange(n), "latency_s": latency, "tokens": rng.integers(1, 500, n)})
    steps = pa.table({"step": np.arange(3), "energy_j": rng.uniform(0, 1, 3)})
    storage.atomic_write_table(fs, storage.join(storage.partition_dir(base, "calls", point_id), "part-0.parquet"), calls)
    storage.atomic_write_table(fs, storage.join(storage.partition_dir(base, "steps", point_id), "part-0.parquet"), steps)
    storage.write_text_atomic(fs, storage.join(base, point_id, "manifest.json"), json.dumps({"point_id": point_id}))
    return {"calls": n, "mean_latency_s": float(latency.mean()), "p99_latency_s": float(np.quantile(latency, 0.99)), "label": f"x{x}"}


def as_raw(point):
    return point.raw


def scenario(tmp: Path, **extra) -> dict:
    raw = {"seed": 5, "x": 1, "attempts_dir": str(tmp / "attempts"), "sweep": {"grid": {"x": [1, 2, 3, 4]}, "replications": 2}}
    (tmp / "attempts").mkdir(exist_ok=True)
    raw.update(extra)
    return raw


def sweep(raw, out, **kw):
    kw.setdefault("point_fn", fake_point)
    kw.setdefault("make_scenario", as_raw)
    kw.setdefault("progress", False)
    return run_sweep(raw, str(out), **kw)


def attempts(tmp: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in (tmp / "attempts").iterdir():
        pid = f.name.split(".")[0]
        counts[pid] = counts.get(pid, 0) + 1
    return counts


def stable(table: pa.Table) -> pa.Table:
    return table.drop_columns([c for c in VOLATILE if c in table.column_names])


def dataset(out, name) -> pa.Table:
    t = storage.read_table(str(out), name)
    keys = [("point_id", "ascending")] + [(c, "ascending") for c in ("call_id", "step") if c in t.column_names]
    return t.sort_by(keys)


def assert_same_tables(out_a, out_b):
    for name in ("points.parquet", "summary.parquet"):
        a, b = pq.read_table(Path(out_a, name)), pq.read_table(Path(out_b, name))
        assert stable(a).equals(stable(b)), name
    for name in ("calls", "steps"):
        assert dataset(out_a, name).equals(dataset(out_b, name)), name


# --------------------------------------------------------------------------- serial
@pytest.mark.timeout(60, method="thread")
def test_serial_sweep_writes_points_summary_and_hive_tables(tmp_path):
    out = tmp_path / "out"
    res = sweep(scenario(tmp_path), out, executor="serial")
    pts = pq.read_table(out / "points.parquet")
    assert pts.column_names == ["point_id", "x", "run", "seed", "status", "error", "node_id", "wall_s"]
    assert pts["point_id"].to_pylist() == [p.point_id for p in res.points]
    assert pts["x"].to_pylist() == [1, 1, 2, 2, 3, 3, 4, 4] and pts["run"].to_pylist() == [0, 1] * 4
    assert set(pts["status"].to_pylist()) == {"ok"} and set(pts["node_id"].to_pylist()) == {"local"}
    summ = pq.read_table(out / "summary.parquet")
    assert summ.column_names == ["point_id", "calls", "mean_latency_s", "p99_latency_s", "label"]
    assert summ["calls"].to_pylist() == [30, 30, 40, 40, 50, 50, 60, 60]
    calls = dataset(out, "calls")
    assert calls.num_rows == sum(summ["calls"].to_pylist())
    assert calls.schema.field("point_id").type == pa.string()
    assert sorted(storage.committed_point_ids(*storage.open_output(str(out)))) == sorted(pts["point_id"].to_pylist())
    assert not list(out.rglob(".*tmp-*")), "temporary files left behind"
    # the same sweep again gives byte-identical summary values
    res2 = sweep(scenario(tmp_path), tmp_path / "again", executor="serial")
    assert stable(res2.points_table).equals(stable(res.points_table)) and res2.summary_table.equals(res.summary_table)


@pytest.mark.timeout(60, method="thread")
def test_a_failing_point_is_recorded_and_the_others_run(tmp_path):
    out = tmp_path / "out"
    res = sweep(scenario(tmp_path, fail_x=2), out, executor="serial")
    pts = pq.read_table(out / "points.parquet").to_pylist()
    failed = [r for r in pts if r["status"] == "failed"]
    assert [r["x"] for r in failed] == [2, 2]
    assert all(r["error"].startswith("ValueError: x=2 is not allowed") for r in failed)
    assert all(r["error"] is None for r in pts if r["status"] == "ok")
    assert res.n_failed == 2
    summ = pq.read_table(out / "summary.parquet")
    assert summ.num_rows == 6 and set(summ["point_id"].to_pylist()) == {r["point_id"] for r in pts if r["status"] == "ok"}
    fs, base = storage.open_output(str(out))
    for r in failed:
        assert not storage.is_committed(fs, base, r["point_id"])
        assert (out / "_failures" / f"{r['point_id']}.json").exists()


def _kill_driver_midway(tmp_path: Path, out: Path) -> subprocess.CompletedProcess:
    """Run the serial sweep in a child process that exits hard at the first point with x=3."""
    code = (
        "import sys, yaml\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]\n"
        "import test_sweep as t\n"
        f"raw = yaml.safe_load(open({str(tmp_path / 'scn.yaml')!r}))\n"
        f"t.sweep(raw, {str(out)!r}, executor='serial')\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(90, method="thread")
def test_resume_after_the_driver_was_killed_runs_exactly_the_missing_points(tmp_path):
    raw = scenario(tmp_path)
    (tmp_path / "scn.yaml").write_text(yaml.safe_dump({**raw, "kill_driver_x": 3}))
    out = tmp_path / "out"
    proc = _kill_driver_midway(tmp_path, out)
    assert proc.returncode == 3, proc.stderr
    fs, base = storage.open_output(str(out))
    done_before = storage.committed_point_ids(fs, base)
    assert len(done_before) == 4  # x=1,2 (two runs each) finished before the kill
    assert not (out / "points.parquet").exists()
    killed = [f.parent.name.split("=")[1] for f in out.glob("calls/*/part-9.parquet")]
    assert len(killed) == 1  # a half-written point

    # resuming needs the killed scenario's identity; the kill switch is not part of it
    res = sweep({**raw, "kill_driver_x": 3}, out, executor="serial", resume=True, point_fn=_point_without_kill)
    assert sorted(res.ran) == sorted({p.point_id for p in res.points} - done_before)
    assert killed[0] in res.ran
    n = attempts(tmp_path)
    assert all(n[pid] == 1 for pid in done_before)  # nothing ran twice ...
    assert n[killed[0]] == 2  # ... except the point that was cut off
    assert sum(n.values()) == len(res.points) + 1
    assert not list(out.glob("calls/*/part-9.parquet")), "partial files of the killed point survived"

    clean = tmp_path / "clean"
    sweep({**raw, "kill_driver_x": 3}, clean, executor="serial", point_fn=_point_without_kill)
    assert_same_tables(out, clean)
    # a second resume has nothing left to do and rewrites the same tables
    again = sweep({**raw, "kill_driver_x": 3}, out, executor="serial", resume=True, point_fn=_point_without_kill)
    assert again.ran == []
    assert_same_tables(out, clean)


def _point_without_kill(scn, out, point_id):
    return fake_point({k: v for k, v in scn.items() if k != "kill_driver_x"}, out, point_id)


def test_out_must_be_new_unless_resuming_the_same_scenario(tmp_path):
    out = tmp_path / "out"
    sweep(scenario(tmp_path), out, executor="serial")
    parser = add_sweep_arguments(argparse.ArgumentParser())
    scn = tmp_path / "s.yaml"
    scn.write_text(yaml.safe_dump(scenario(tmp_path)))
    from sim.errors import ScenarioError

    with pytest.raises(ScenarioError, match="already holds a sweep"):
        sweep(scenario(tmp_path), out, executor="serial")
    with pytest.raises(ScenarioError, match="different scenario"):
        sweep(scenario(tmp_path, seed=6), out, executor="serial", resume=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(ScenarioError, match="not empty"):
        sweep(scenario(tmp_path), tmp_path / "full", executor="serial")
    assert parser.parse_args([str(scn), "--out", str(out)]).executor == "ray"


def test_cli_exit_codes_and_one_line_errors(tmp_path, capsys):
    parser = add_sweep_arguments(argparse.ArgumentParser())
    scn = tmp_path / "s.yaml"

    def cli(*argv, **kw):
        return cmd_sweep(parser.parse_args([str(scn), *argv]), **kw)

    scn.write_text(yaml.safe_dump({**scenario(tmp_path), "sweep": {"zip": {"x": [1, 2], "seed": [1]}}}))
    assert cli("--out", str(tmp_path / "o1"), "--executor", "serial", point_fn=fake_point) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(scn) in err and "sweep: zip: all lists must have the same length" in err

    assert cmd_sweep(parser.parse_args([str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o2")])) == 2
    assert "missing.yaml" in capsys.readouterr().err

    scn.write_text(yaml.safe_dump(scenario(tmp_path, fail_x=4)))
    assert cli("--dry-run", "--out", str(tmp_path / "o3")) == 0
    assert "8 points" in capsys.readouterr().out and not (tmp_path / "o3").exists()


def test_storage_atomic_writes_on_local_uri_and_object_store_like_fs(tmp_path):
    from pyarrow.fs import _MockFileSystem

    table = pa.table({"a": [1, 2, 3]})
    # file:// URIs go through FileSystem.from_uri
    fs, base = storage.open_output(f"file://{tmp_path}/u")
    storage.atomic_write_table(fs, storage.join(base, "t", "point_id=pabc", "part-0.parquet"), table)
    storage.commit_marker(fs, base, "pabc", {"summary": {"n": 3}})
    assert storage.is_committed(fs, base, "pabc") and not storage.is_committed(fs, base, "pdef")
    assert storage.read_commit(fs, base, "pabc")["summary"] == {"n": 3}
    storage.atomic_write_table(fs, storage.join(base, "t", "point_id=pdef", "part-0.parquet"), table)  # never committed
    assert storage.read_table(f"file://{tmp_path}/u", "t")["point_id"].to_pylist() == ["pabc"] * 3
    assert storage.read_table(str(tmp_path / "u"), "t", committed_only=False).num_rows == 6
    assert [p.name for p in (tmp_path / "u").rglob("*") if p.name.startswith(".")] == []
    storage.clear_point(fs, base, "pabc")
    assert not storage.is_committed(fs, base, "pabc") and not (tmp_path / "u" / "t" / "point_id=pabc").exists()
    # an object store (no rename): written in place, read back whole
    mock = _MockFileSystem()
    storage.atomic_write_table(mock, "bucket/s/t/point_id=p1/part-0.parquet", table)
    storage.commit_marker(mock, "bucket/s", "p1")
    assert storage.committed_point_ids(mock, "bucket/s") == {"p1"}
    assert pq.read_table("bucket/s/t/point_id=p1/part-0.parquet", filesystem=mock).equals(table)


@pytest.mark.timeout(60, method="thread")
def test_sweep_to_a_file_uri(tmp_path):
    res = sweep(scenario(tmp_path), f"file://{tmp_path}/uri", executor="serial")
    assert res.n_failed == 0
    assert_same_tables(tmp_path / "uri", tmp_path / "uri")
    assert pq.read_table(tmp_path / "uri" / "summary.parquet").num_rows == 8


# --------------------------------------------------------------------------- Ray, two nodes
@pytest.fixture(scope="module")
def ray_cluster():
    """A head (127.0.0.2) and a worker (127.0.0.3) node, 1 CPU each, started once per module."""
    with loopback_cluster([REPO, TESTS]) as cluster:
        yield cluster


def _alive_nodes():
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.mark.timeout(180, method="thread")
def test_ray_sweep_uses_both_nodes_and_equals_serial(ray_cluster, tmp_path):
    raw = scenario(tmp_path, sleep_s=0.3)
    res = sweep(raw, tmp_path / "ray", executor="ray")
    sweep(raw, tmp_path / "serial", executor="serial")
    nodes = pq.read_table(tmp_path / "ray" / "points.parquet")["node_id"].to_pylist()
    assert set(nodes) == _alive_nodes() and len(set(nodes)) == 2
    assert res.n_failed == 0
    assert_same_tables(tmp_path / "ray", tmp_path / "serial")


@pytest.mark.timeout(180, method="thread")
def test_ray_retries_a_point_whose_worker_died(ray_cluster, tmp_path):
    (tmp_path / "crashed").mkdir()
    raw = scenario(tmp_path, crash_once_dir=str(tmp_path / "crashed"), crash_x=[2, 3])
    res = sweep(raw, tmp_path / "ray", executor="ray", max_retries=2)
    assert res.n_failed == 0
    crashed = {f.name for f in (tmp_path / "crashed").iterdir()}
    by_x = {p.point_id: p.params["x"] for p in res.points}
    assert crashed == {pid for pid, x in by_x.items() if x in (2, 3)}
    n = attempts(tmp_path)
    assert {pid: n[pid] for pid in by_x} == {pid: (2 if x in (2, 3) else 1) for pid, x in by_x.items()}
    assert not list((tmp_path / "ray").glob("calls/*/part-9.parquet")), "the crashed attempt's file survived the retry"
    sweep(raw, tmp_path / "serial", executor="serial")  # markers exist now: no crash
    assert_same_tables(tmp_path / "ray", tmp_path / "serial")


@pytest.mark.timeout(180, method="thread")
def test_ray_failures_do_not_stop_the_sweep(ray_cluster, tmp_path):
    raw = scenario(tmp_path, fail_x=1, crash_always_x=4)
    res = sweep(raw, tmp_path / "ray", executor="ray", max_retries=1, max_in_flight=3)
    rows = {r["x"]: r for r in res.points_table.to_pylist()}
    assert rows[1]["status"] == "failed" and rows[1]["error"].startswith("ValueError: x=1 is not allowed")
    assert rows[4]["status"] == "failed" and "after 1 retries" in rows[4]["error"]
    assert rows[2]["status"] == rows[3]["status"] == "ok"
    assert res.summary_table.num_rows == 4
    n = attempts(tmp_path)
    assert sorted(n[p.point_id] for p in res.points if p.params["x"] == 4) == [2, 2]  # first try + 1 retry


@pytest.mark.timeout(180, method="thread")
def test_ray_resume_after_driver_kill_completes_exactly_the_missing_points(ray_cluster, tmp_path):
    raw = scenario(tmp_path)
    (tmp_path / "scn.yaml").write_text(yaml.safe_dump({**raw, "kill_driver_x": 3}))
    out = tmp_path / "out"
    assert _kill_driver_midway(tmp_path, out).returncode == 3
    fs, base = storage.open_output(str(out))
    done_before = storage.committed_point_ids(fs, base)
    res = sweep({**raw, "kill_driver_x": 3}, out, executor="ray", resume=True, point_fn=_point_without_kill)
    assert len(done_before) == 4 and set(res.ran) == {p.point_id for p in res.points} - done_before
    assert sum(attempts(tmp_path).values()) == len(res.points) + 1
    sweep({**raw, "kill_driver_x": 3}, tmp_path / "clean", executor="serial", point_fn=_point_without_kill)
    assert_same_tables(out, tmp_path / "clean")


# --------------------------------------------------------------------------- real simulator
def small_real_scenario() -> dict:
    from sim.config import load_raw

    raw = load_raw(REPO / "scenarios" / "quickstart.yaml")
    raw.update(duration_s=30, warmup_s=5)
    raw["sweep"] = {"grid": {"workload.classes.chat.arrival.rate_per_s": [2, 6]}, "replications": 2}
    return raw


@pytest.mark.timeout(120, method="thread")
def test_cli_sweep_of_the_real_simulator_serially(tmp_path, capsys):
    from sim.cli.main import main

    scn = tmp_path / "small.yaml"
    scn.write_text(yaml.safe_dump(small_real_scenario(), sort_keys=False))
    assert main(["sweep", str(scn), "--out", str(tmp_path / "out"), "--executor", "serial", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "4 points, 0 failed" in printed and "rate_per_s" in printed
    pts = pq.read_table(tmp_path / "out" / "points.parquet")
    assert pts["workload.classes.chat.arrival.rate_per_s"].to_pylist() == [2, 2, 6, 6]
    summ = pq.read_table(tmp_path / "out" / "summary.parquet")
    calls = storage.read_table(str(tmp_path / "out"), "calls")
    assert calls.num_rows == sum(summ["calls_created"].to_pylist())
    for pid in pts["point_id"].to_pylist():
        assert (tmp_path / "out" / pid / "manifest.json").exists()
    # resuming a complete sweep runs nothing and exits 0
    assert main(["sweep", str(scn), "--out", str(tmp_path / "out"), "--executor", "serial", "--resume", "--no-progress"]) == 0
    assert "0 run, 4 already done" in capsys.readouterr().out


@pytest.mark.timeout(180, method="thread")
def test_real_simulator_on_two_nodes_equals_serial(ray_cluster, tmp_path):
    raw = small_real_scenario()
    source = str(REPO / "scenarios" / "small.yaml")
    res = run_sweep(raw, str(tmp_path / "ray"), source=source, executor="ray", progress=False)
    run_sweep(raw, str(tmp_path / "serial"), source=source, executor="serial", progress=False)
    assert res.n_failed == 0
    assert len(set(res.points_table["node_id"].to_pylist())) == 2
    for name in ("points.parquet", "summary.parquet"):
        a, b = pq.read_table(tmp_path / "ray" / name), pq.read_table(tmp_path / "serial" / name)
        assert stable(a).equals(stable(b)), name
    for name in ("calls", "steps", "events"):
        a = storage.read_table(str(tmp_path / "ray"), name)
        b = storage.read_table(str(tmp_path / "serial"), name)
        assert a.num_rows == b.num_rows and a.num_rows > 0 or name == "events"
        a = a.sort_by([(c, "ascending") for c in a.column_names])
        b = b.sort_by([(c, "ascending") for c in b.column_names])
        assert a.equals(b), name


@pytest.mark.timeout(180, method="thread")
def test_cli_joins_a_running_cluster_with_address(ray_cluster, tmp_path):
    scn = tmp_path / "small.yaml"
    scn.write_text(yaml.safe_dump(small_real_scenario(), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "sim.cli", "sweep", str(scn), "--out", str(tmp_path / "out"), "--address", ray_cluster.address, "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = set(pq.read_table(tmp_path / "out" / "points.parquet")["node_id"].to_pylist())
    assert nodes == _alive_nodes()  # ran on the fixture's two nodes, not on a new local Ray


def test_a_point_the_schema_rejects_stops_the_sweep_before_anything_is_written(tmp_path, capsys):
    from sim.cli.main import main

    raw = small_real_scenario()
    raw["sweep"] = {"grid": {"datacenter.pools.h100.replicas": [1, 0]}}
    scn = tmp_path / "bad.yaml"
    scn.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["sweep", str(scn), "--out", str(tmp_path / "out"), "--executor", "serial", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "datacenter.pools.h100.replicas" in err and "replicas=0" in err
    assert not (tmp_path / "out").exists()


def small_real_plan() -> dict:
    """The quickstart pool, planned over accelerator x replicas (4 candidates, all simulated)."""
    raw = small_real_scenario()
    raw.pop("sweep")
    raw["plan"] = {
        "space": {"datacenter.pools.h100.accelerator": ["h100-sxm", "a100-80gb"],
                  "datacenter.pools.h100.replicas": [1, 2]},
        "constraints": [{"metric": "ttft_p99_s", "max": 2.0, "class": "chat"}],
        "objective": "usd_per_million_output_tokens",
        "search": {"trials": 4, "seed": 0},
        "sensitivity": None,
    }
    return raw


@pytest.mark.timeout(240, method="thread")
def test_cli_plan_on_a_cluster_equals_the_embedded_plan(ray_cluster, tmp_path):
    """`dcsim plan --address` runs its trials on the cluster's nodes (not on a Ray of its own), and
    its tables equal those of the same plan on the embedded Ray (a process of its own: this one
    holds the cluster). Which node takes a trial depends on timing: Tune may start the next trial
    after the last one freed the head's only CPU, so the test does not require both nodes (the
    sweep test above does, with points kept busy)."""
    scn = tmp_path / "plan.yaml"
    scn.write_text(yaml.safe_dump(small_real_plan(), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    base = [sys.executable, "-m", "sim.cli", "plan", str(scn), "--no-progress"]
    on_cluster = subprocess.run(base + ["--out", str(tmp_path / "cluster"), "--address", ray_cluster.address],
                                capture_output=True, text=True, timeout=200, env=env, cwd=tmp_path)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    nodes = set(pq.read_table(tmp_path / "cluster" / "points.parquet")["node_id"].to_pylist())
    assert nodes and nodes <= _alive_nodes()  # the fixture's nodes ran the trials, no new local Ray
    embedded = subprocess.run(base + ["--out", str(tmp_path / "embedded")],
                              capture_output=True, text=True, timeout=200, env=env, cwd=tmp_path)
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    for name in ("points.parquet", "summary.parquet", "plan_trials.parquet", "frontier.parquet"):
        a, b = (pq.read_table(tmp_path / d / name) for d in ("cluster", "embedded"))
        drop = [c for c in a.column_names if c in ("wall_s", "node_id")]
        assert a.num_rows > 0 and a.drop(drop).equals(b.drop(drop)), name
    for table in ("calls", "steps"):
        a, b = (storage.read_table(str(tmp_path / d), table) for d in ("cluster", "embedded"))
        assert a.num_rows > 0 and a.equals(b), table
    rec = [json.loads((tmp_path / d / "recommendation.json").read_text()) for d in ("cluster", "embedded")]
    assert rec[0]["recommendation"]["point_id"] == rec[1]["recommendation"]["point_id"]
