"""analysis.metrics: hand-built traces give hand-computed values; simulated runs agree with
their summary and satisfy Little's law."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import analysis
from analysis import metrics as M
from scenarios import llm_scenario
from sim.cli.main import main
from sim.output.trace import SCHEMAS

NAN = math.nan
PID = "p1"


def _table(name: str, rows: list[dict]) -> pa.Table:
    """Rows of one trace table, columns not given filled with zeros / empty strings."""
    schema = SCHEMAS[name]
    fill = lambda f: "" if pa.types.is_string(f.type) else False if pa.types.is_boolean(f.type) else 0
    return pa.Table.from_pylist([{f.name: r.get(f.name, fill(f)) for f in schema} for r in rows], schema=schema)


def _call(cid, cls, status, arrival, admitted, first, finish, gen, energy=0.0):
    return {"call_id": cid, "class": cls, "pool": "p", "status": status, "arrival_s": arrival, "admitted_s": admitted,
            "first_token_s": first, "finish_s": finish, "generated_tokens": gen, "output_tokens": gen,
            "prompt_tokens": 10, "energy_j": energy}


CALLS = [
    _call(1, "chat", "finished", 1.0, 1.5, 2.0, 4.0, 5, 10.0),   # ttft 1, tpot 0.5, e2e 3, wait 0.5
    _call(2, "chat", "finished", 2.0, 2.0, 2.5, 3.5, 3, 6.0),    # ttft 0.5, tpot 0.5, e2e 1.5, wait 0
    _call(3, "long", "finished", 3.0, 4.0, 6.0, 9.0, 4, 20.0),   # ttft 3, tpot 1, e2e 6, wait 1
    _call(4, "chat", "dropped", 5.0, NAN, NAN, 6.0, 0),          # never admitted, left at 6
    _call(5, "chat", "finished", 12.0, 12.0, 12.5, 13.0, 2, 4.0),  # after the window
]
STEPS = [
    {"pool": "p", "replica": 0, "kind": "mixed", "start_s": 0.0, "end_s": 5.0, "batch_seqs": 4, "output_tokens": 10,
     "prefill_tokens": 20, "energy_j": 500.0},
    {"pool": "p", "replica": 0, "kind": "idle", "start_s": 5.0, "end_s": 15.0, "energy_j": 1000.0},
    {"pool": "p", "replica": 1, "kind": "decode", "start_s": 8.0, "end_s": 12.0, "batch_seqs": 2, "output_tokens": 8,
     "energy_j": 400.0},
]
JOBS = [
    {"job_id": 1, "class": "math", "strategy": "single", "width": 1, "status": "finished", "arrival_s": 1.0,
     "latency_s": 2.0, "output_tokens": 50, "energy_j": 100.0, "cost_usd": 0.01, "correct": True},
    {"job_id": 2, "class": "math", "strategy": "single", "width": 1, "status": "finished", "arrival_s": 2.0,
     "latency_s": 4.0, "output_tokens": 25, "energy_j": 100.0, "cost_usd": 0.01, "correct": False},
]
SCENARIO = {
    "datacenter": {"pue": 1.5, "carbon_g_per_kwh": 400.0},
    "workload": {"classes": [{"name": "chat", "slo": {"ttft_s": 0.8, "tpot_s": None, "e2e_s": None}},
                             {"name": "long", "slo": {"e2e_s": 10.0}}]},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A one-point output folder written by hand: window [0, 10)."""
    out = tmp_path_factory.mktemp("tiny")
    for name, rows in (("calls", CALLS), ("steps", STEPS), ("jobs", JOBS), ("events", [])):
        d = out / name / f"point_id={PID}"
        d.mkdir(parents=True)
        pq.write_table(_table(name, rows), d / "part-0.parquet")
    (out / "_commits").mkdir()
    (out / "_commits" / f"{PID}.json").write_text(json.dumps({"point_id": PID}))
    (out / PID).mkdir()
    (out / PID / "scenario.yaml").write_text(yaml.safe_dump(SCENARIO))
    pq.write_table(pa.table({"point_id": [PID], "rate": [4.0], "run": [0], "seed": [1], "status": ["ok"]}),
                   out / "points.parquet")
    pq.write_table(pa.table({"point_id": [PID], "warmup_s": [0.0], "duration_s": [10.0], "output_tokens_per_s": [1.4],
                             "cost_usd": [0.7], "carbon_g": [1.4], "energy_per_output_token_j": [3.0],
                             "device_energy_per_output_token_j": [2.0], "usd_per_million_output_tokens": [5e4]}),
                   out / "summary.parquet")
    return str(out)


def _rows(t: pa.Table) -> dict:
    return {r.get("class", r.get("pool")): r for r in t.to_pylist()}


def test_latency_by_class(tiny):
    r = _rows(M.latency(tiny))
    assert r["chat"]["calls_measured"] == 3 and r["chat"]["calls_finished"] == 2
    assert r["chat"]["ttft_p50_s"] == pytest.approx(0.75)
    assert r["chat"]["tpot_mean_s"] == pytest.approx(0.5)
    assert r["long"]["e2e_p99_s"] == pytest.approx(6.0)
    assert r[M.ALL]["calls_measured"] == 4
    assert r[M.ALL]["completed_per_s"] == pytest.approx(0.3)
    assert r[M.ALL]["output_tokens_per_s"] == pytest.approx(1.2)
    assert r[M.ALL]["ttft_mean_s"] == pytest.approx(1.5)
    assert r[M.ALL]["e2e_p50_s"] == pytest.approx(3.0)


def test_goodput_and_slos(tiny):
    assert M.class_slos(tiny, PID)["long"] == {"ttft_s": None, "tpot_s": None, "e2e_s": 10.0}
    r = _rows(M.goodput(tiny))
    assert r["chat"]["calls_slo_met"] == 1  # call 1 misses TTFT, call 4 was dropped
    assert r["chat"]["slo_attainment"] == pytest.approx(1 / 3)
    assert r["chat"]["goodput_per_s"] == pytest.approx(0.1)
    assert r["chat"]["slo_ttft_s"] == 0.8 and r["chat"]["slo_tpot_s"] is None
    assert r["long"]["slo_attainment"] == 1.0
    assert r[M.ALL]["slo_attainment"] == pytest.approx(0.5)
    assert r[M.ALL]["goodput_per_s"] == pytest.approx(0.2)


def test_throughput_utilization_timeline(tiny):
    t = M.throughput(tiny).to_pylist()[0]
    assert t["completed_per_s"] == pytest.approx(0.3)
    assert t["output_tokens_per_s"] == pytest.approx(1.4)  # 10 + half of replica 1's 8
    assert t["prompt_tokens_per_s"] == pytest.approx(2.0)
    u = _rows(M.utilization(tiny))["p"]
    assert u["replicas"] == 2
    assert u["utilization"] == pytest.approx(0.35)  # 5 + 2 busy s over 2 x 10
    assert u["mean_batch_seqs"] == pytest.approx(24 / 7)
    assert u["avg_replica_power_w"] == pytest.approx(60.0)  # (500 + 500 + 200) J / (2 x 10 s)
    steps = analysis.load(tiny, "steps")
    tl = M.step_timeline(steps, 5.0, 0.0, 10.0).to_pylist()
    assert [r["t_s"] for r in tl] == [0.0, 5.0]
    assert [r["busy_fraction"] for r in tl] == pytest.approx([0.5, 0.2])
    assert [r["avg_replica_power_w"] for r in tl] == pytest.approx([50.0, 70.0])


def test_queueing(tiny):
    calls = analysis.load(tiny, "calls")
    assert sorted(M.waiting_times(calls)) == pytest.approx([0.0, 0.0, 0.5, 1.0])
    times, lengths = M.queue_length(calls)
    assert times.tolist() == [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 12.0]
    assert lengths.tolist() == [1, 0, 0, 1, 0, 1, 0, 0]
    w = _rows(M.wait_distribution(tiny))
    assert w["chat"]["wait_mean_s"] == pytest.approx(0.25)
    assert w[M.ALL]["wait_max_s"] == 1.0 and w[M.ALL]["calls"] == 3
    ll = M.littles_law(calls, 0.0, 10.0)
    assert ll["L"] == pytest.approx(1.15)  # (3 + 1.5 + 6 + 1) call-seconds over 10 s
    assert ll["lambda_per_s"] == pytest.approx(0.4)
    assert ll["W_s"] == pytest.approx(2.875)
    assert ll["rel_error"] == pytest.approx(0.0, abs=1e-12)


def test_energy_cost_carbon_jobs(tiny):
    e = M.energy_per_token(tiny).to_pylist()[0]
    assert e["output_tokens"] == pytest.approx(14.0)
    assert e["usd_per_output_token"] == pytest.approx(0.05)
    assert e["carbon_g_per_output_token"] == pytest.approx(0.1)
    c = _rows(M.class_energy(tiny))
    assert c["chat"]["device_energy_per_output_token_j"] == pytest.approx(2.0)  # 16 J over 8 tokens
    assert c["chat"]["carbon_g_per_output_token"] == pytest.approx(16 * 1.5 / 3.6e6 * 400 / 8)
    j = M.per_job(tiny).to_pylist()
    assert [r["energy_per_output_token_j"] for r in j] == pytest.approx([2.0, 4.0])
    assert [r["usd_per_output_token"] for r in j] == pytest.approx([0.0002, 0.0004])
    assert j[0]["carbon_g"] == pytest.approx(100 * 1.5 / 3.6e6 * 400)
    s = M.jobs_by_strategy_table(tiny).to_pylist()
    assert len(s) == 1 and s[0]["accuracy"] == 0.5
    assert s[0]["accuracy_per_usd"] == pytest.approx(50.0)
    assert M.per_session(tiny) is None  # no sessions table


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated single-class run, 200 s with a 20 s warm-up."""
    d = tmp_path_factory.mktemp("sim")
    raw = llm_scenario(duration_s=200.0, warmup_s=20.0)
    raw["workload"]["classes"] = raw["workload"]["classes"][:1]
    raw["workload"]["classes"][0]["slo"] = {"ttft_s": 0.5, "tpot_s": 0.05}
    (d / "s.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(d / "s.yaml"), "--out", str(d / "o")]) == 0
    return str(d / "o")


def test_metrics_agree_with_printed_summary(simulated):
    s = analysis.summary(simulated).to_pylist()[0]
    lat = _rows(analysis.latency(simulated))[M.ALL]
    for k in ("calls_measured", "completed_per_s", "ttft_p90_s", "tpot_p50_s", "e2e_p99_s", "ttft_mean_s"):
        assert lat[k] == pytest.approx(s[k], rel=1e-12), k
    thr = analysis.throughput(simulated).to_pylist()[0]
    for k in ("completed_per_s", "output_tokens_per_s", "prompt_tokens_per_s"):
        assert thr[k] == pytest.approx(s[k], rel=1e-9), k
    u = analysis.utilization(simulated).to_pylist()[0]
    assert u["utilization"] == pytest.approx(s["utilization"], rel=1e-9)
    assert u["mean_batch_seqs"] == pytest.approx(s["mean_batch_seqs"], rel=1e-9)
    w = _rows(analysis.wait_distribution(simulated))[M.ALL]
    assert w["wait_mean_s"] == pytest.approx(s["wait_mean_s"], rel=1e-9)
    g = _rows(analysis.goodput(simulated))["chat"]
    assert 0 < g["slo_attainment"] <= 1 and g["goodput_per_s"] <= s["completed_per_s"]


def test_littles_law_on_simulated_trace(simulated):
    ll = analysis.littles_law_table(simulated).to_pylist()[0]
    assert ll["L"] > 1
    assert ll["rel_error"] < 0.03, ll
    # the queue-length process is consistent with the waiting times: mean queue length over
    # the run = arrival rate x mean wait (Little's law for the queue alone)
    calls = analysis.load(simulated, "calls")
    times, lengths = analysis.queue_length(calls)
    assert lengths.min() >= 0 and lengths[-1] == 0
    span = times[-1] - times[0]
    lq = float((lengths[:-1] * np.diff(times)).sum()) / span
    assert lq == pytest.approx(calls.num_rows / span * M.waiting_times(calls).mean(), rel=1e-6)
