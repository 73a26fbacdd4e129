"""Same scenario and seed give byte-identical tables; another seed gives others."""

import pyarrow.parquet as pq

from scenarios import llm_scenario
from sim.config import validate
from sim.run import run_point


def _read(out, pid):
    return {t: pq.read_table(out / t / f"point_id={pid}" / "part-0.parquet") for t in ("calls", "steps", "events")}


def test_same_seed_same_tables(tmp_path):
    raw = llm_scenario(duration_s=8.0)
    raw["datacenter"]["pools"][0]["router"] = {"kind": "random"}
    s1 = run_point(validate(raw), str(tmp_path / "a"), "p")
    s2 = run_point(validate(raw), str(tmp_path / "b"), "p")
    assert s1 == s2
    a, b = _read(tmp_path / "a", "p"), _read(tmp_path / "b", "p")
    for t in a:
        assert a[t].equals(b[t]), t
    assert (tmp_path / "a/calls/point_id=p/part-0.parquet").read_bytes() == (tmp_path / "b/calls/point_id=p/part-0.parquet").read_bytes()
    s3 = run_point(validate({**raw, "seed": raw["seed"] + 1}), str(tmp_path / "c"), "p")
    assert not _read(tmp_path / "c", "p")["calls"].equals(a["calls"])
    assert s3["calls_created"] != s1["calls_created"] or s3["ttft_p50_s"] != s1["ttft_p50_s"]


def test_adding_a_class_keeps_other_streams(tmp_path):
    """Random streams are per component: a new class does not shift the arrivals of another."""
    raw = llm_scenario(duration_s=8.0)
    run_point(validate(raw), str(tmp_path / "a"), "p")
    raw2 = llm_scenario(duration_s=8.0)
    raw2["workload"]["classes"].append({**raw2["workload"]["classes"][0], "name": "extra"})
    run_point(validate(raw2), str(tmp_path / "b"), "p")
    a = _read(tmp_path / "a", "p")["calls"]
    b = _read(tmp_path / "b", "p")["calls"]
    pick = lambda t: sorted(zip(*(t.filter(t["class"].to_numpy(zero_copy_only=False) == "chat")[c].to_pylist()
                                  for c in ("arrival_s", "prompt_tokens", "output_tokens"))))
    assert pick(a) == pick(b)
