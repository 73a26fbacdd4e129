"""dcsim export-trace: the quickstart point as Chrome trace event JSON, checked against the
format (required keys per phase, microsecond timestamps, nesting, flows, counters) and
against the Parquet tables it came from."""

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

import analysis
from sim.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PHASES = {"X", "C", "M", "i", "s", "f"}  # the phases the exporter may write
META = {"process_name": "name", "thread_name": "name", "process_sort_index": "sort_index", "thread_sort_index": "sort_index"}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_chrome_trace(trace: dict) -> list[dict]:
    """Assert ``trace`` follows the Chrome trace event format as Perfetto and chrome://tracing
    read it; return its events."""
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    assert trace.get("displayTimeUnit", "ms") in ("ms", "ns")
    events = trace["traceEvents"]
    named_pids, named_tids = set(), set()
    seen_body = False
    last_ts = -math.inf
    for e in events:
        assert e["ph"] in PHASES, e
        assert isinstance(e["name"], str) and e["name"], e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int), e
        if e["ph"] == "M":
            assert not seen_body, "metadata events come first"
            assert e["name"] in META and set(e["args"]) == {META[e["name"]]}, e
            if e["name"] == "process_name":
                named_pids.add(e["pid"])
            if e["name"] == "thread_name":
                named_tids.add((e["pid"], e["tid"]))
            continue
        seen_body = True
        assert _num(e["ts"]) and e["ts"] >= 0, e
        assert e["ts"] >= last_ts, "events sorted by ts"
        last_ts = e["ts"]
        assert e["pid"] in named_pids, f"pid {e['pid']} has no process_name"
        if e["ph"] == "X":
            assert _num(e["dur"]) and e["dur"] >= 0, e
            assert (e["pid"], e["tid"]) in named_tids, f"slice on an unnamed thread: {e}"
            assert all(not isinstance(v, float) or math.isfinite(v) for v in e.get("args", {}).values())
        elif e["ph"] == "C":
            assert isinstance(e["args"], dict) and e["args"] and all(_num(v) for v in e["args"].values()), e
        elif e["ph"] == "i":
            assert e["s"] in ("g", "p", "t"), e
        else:  # flow start / finish
            assert "id" in e and "cat" in e, e
            if e["ph"] == "f":
                assert e.get("bp") == "e", e
    return events


def _nested(slices: list[dict]) -> bool:
    """Slices of one thread nest properly (each either inside or after the one before)."""
    stack: list[float] = []
    for s in sorted(slices, key=lambda s: (s["ts"], -s["dur"])):
        while stack and s["ts"] >= stack[-1] - 1e-3:
            stack.pop()
        if stack and s["ts"] + s["dur"] > stack[-1] + 1e-3:
            return False
        stack.append(s["ts"] + s["dur"])
    return True


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The quickstart point, shortened to 30 s (5 s warmup)."""
    out = str(tmp_path_factory.mktemp("trace") / "one")
    assert main(["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--out", out,
                 "--set", "duration_s=30", "--set", "warmup_s=5"]) == 0
    return out


def test_quickstart_trace_follows_the_format_and_the_tables(run, capsys):
    capsys.readouterr()
    assert main(["export-trace", run]) == 0
    line = capsys.readouterr().out.strip()
    (pid,) = [r["point_id"] for r in analysis.summary(run).to_pylist()]
    path = Path(run) / pid / "trace.json"
    assert line.startswith(f"{path}: point {pid}") and "ui.perfetto.dev" in line
    trace = json.loads(path.read_text())
    events = validate_chrome_trace(trace)
    by_ph = defaultdict(list)
    for e in events:
        by_ph[e["ph"]].append(e)

    # one process per pool with a thread per replica, and a process of its calls
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in by_ph["M"] if e["name"] == "thread_name"}
    procs = {e["pid"]: e["args"]["name"] for e in by_ph["M"] if e["name"] == "process_name"}
    assert sorted(procs.values()) == ["calls -> h100", "pool h100"]
    pool_pid = next(p for p, n in procs.items() if n == "pool h100")
    assert sorted(n for (p, _), n in names.items() if p == pool_pid) == ["replica 0", "replica 1"]

    # engine runs: every non-idle step, ts / dur in microseconds, batch and tokens in args
    steps = analysis.load(run, "steps")
    busy = steps.filter(pc.not_equal(steps["kind"], "idle"))
    engine = sorted((e for e in by_ph["X"] if e["cat"] == "engine"), key=lambda e: (e["tid"], e["ts"]))
    assert len(engine) == busy.num_rows > 100
    rows = sorted(busy.to_pylist(), key=lambda r: (r["replica"], r["start_s"]))
    for e, r in zip(engine, rows):
        assert e["tid"] == r["replica"] + 1 and e["name"] == r["kind"]
        assert e["ts"] == pytest.approx(r["start_s"] * 1e6, abs=1e-2)
        assert e["dur"] == pytest.approx((r["end_s"] - r["start_s"]) * 1e6, abs=2e-2)
        assert e["args"]["batch_seqs"] == r["batch_seqs"] and e["args"]["output_tokens"] == r["output_tokens"]
        assert e["args"]["prefill_tokens"] == r["prefill_tokens"]

    # calls: one slice per call from arrival to finish, children inside it, lanes never overlap
    calls = analysis.load(run, "calls").to_pylist()
    tops = [e for e in by_ph["X"] if e["cat"] == "call" and "args" in e]
    assert len(tops) == len(calls)
    by_id = {c["call_id"]: c for c in calls}
    for e in tops:
        c = by_id[e["args"]["call_id"]]
        assert e["name"] == c["class"] and e["ts"] == pytest.approx(c["arrival_s"] * 1e6, abs=1e-2)
        assert e["ts"] + e["dur"] == pytest.approx(c["finish_s"] * 1e6, abs=2e-2)
    threads = defaultdict(list)
    for e in by_ph["X"]:
        threads[(e["pid"], e["tid"])].append(e)
    assert all(_nested(s) for s in threads.values())
    phases = Counter(e["name"] for e in by_ph["X"] if e["cat"] == "call" and "args" not in e)
    assert phases["prefill"] > 0 and phases["decode"] > 0

    # flows: each admitted call's arrow starts inside its slice and ends inside an engine run
    flows = defaultdict(dict)
    for e in by_ph["s"] + by_ph["f"]:
        flows[e["id"]][e["ph"]] = e
    assert len(flows) == sum(1 for c in calls if c["admitted_s"] is not None and not math.isnan(c["admitted_s"]))
    for pair in flows.values():
        s, f = pair["s"], pair["f"]
        assert s["ts"] == f["ts"]
        assert any(x["ts"] - 1e-3 <= f["ts"] <= x["ts"] + x["dur"] + 1e-3 for x in threads[(f["pid"], f["tid"])])

    # counters: KV in % of the replica's blocks, power in W, waiting calls; each series in time order
    series = defaultdict(list)
    for e in by_ph["C"]:
        series[(e["pid"], e["name"])].append(e)
    assert {n for _, n in series} == {"replica 0 KV cache", "replica 1 KV cache", "replica 0 power", "replica 1 power",
                                      "pool power", "waiting calls"}
    for s in series.values():
        ts = [e["ts"] for e in s]
        assert ts == sorted(ts) and len(set(ts)) == len(ts)
    kv = [e["args"] for e in by_ph["C"] if e["name"].endswith("KV cache")]
    assert all(set(a) == {"% used"} for a in kv) and 0 < max(a["% used"] for a in kv) <= 100
    watts = [e["args"]["W"] for e in by_ph["C"] if e["name"].endswith(" power") and "W" in e["args"]]
    assert min(watts) > 0 and max(watts) <= 700 + 1e-6  # an H100 SXM draws at most its 700 W TDP
    # the pool's power counter is the sum of its replicas' (energy over the run agrees with the steps)
    pool = series[(pool_pid, "pool power")]
    t = np.array([e["ts"] for e in pool] + [max(e["ts"] + e["dur"] for e in engine)]) / 1e6
    joules = float(np.sum(np.diff(t) * np.array([e["args"]["kW"] for e in pool]) * 1e3))
    assert joules == pytest.approx(float(pc.sum(steps["energy_j"]).as_py()), rel=1e-3)
    assert trace["otherData"]["point_id"] == pid and not trace["otherData"]["truncated"]


def test_trace_is_bounded_by_the_caps_and_window(run, tmp_path):
    full = tmp_path / "full.json"
    small = tmp_path / "small.json"
    win = tmp_path / "win.json"
    assert main(["export-trace", run, "--out", str(full)]) == 0
    assert main(["export-trace", run, "--out", str(small), "--max-calls", "40", "--max-steps", "0"]) == 0
    assert main(["export-trace", run, "--out", str(win), "--start-s", "10", "--end-s", "12"]) == 0
    t_small = json.loads(small.read_text())
    validate_chrome_trace(t_small)
    tops = [e for e in t_small["traceEvents"] if e["ph"] == "X" and e["cat"] == "call" and "args" in e]
    assert t_small["otherData"]["truncated"] and len(tops) <= 40
    assert small.stat().st_size < full.stat().st_size / 5
    t_win = json.loads(win.read_text())
    validate_chrome_trace(t_win)
    assert (t_win["otherData"]["window_start_s"], t_win["otherData"]["window_end_s"]) == (10.0, 12.0)
    body = [e for e in t_win["traceEvents"] if e["ph"] in ("C", "i", "s", "f")]
    assert body and all(e["ts"] < 12e6 for e in body)
    slices = [e for e in t_win["traceEvents"] if e["ph"] == "X" and (e["cat"] == "engine" or "args" in e)]
    assert slices and all(e["ts"] < 12e6 and e["ts"] + e["dur"] >= 10e6 for e in slices)  # runs and calls in the window


def test_export_trace_bad_input(run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export-trace", run, "--point", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run}: --point: no point 'nope'") and err.count("\n") == 1
    assert main(["export-trace", str(tmp_path / "missing")]) == 2
    assert "not a dcsim run or sweep folder" in capsys.readouterr().err
    assert main(["export-trace", run, "--start-s", "5", "--end-s", "1"]) == 2
    assert "--end-s" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
