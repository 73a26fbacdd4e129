"""Which tokens each throughput, energy and cost column counts (docs/operations.md, "What the
token columns count"): ``output_tokens_per_s`` every generated token (steps), lost attempts
included; ``finished_output_tokens_per_s`` only the tokens of calls that finished, read back
here from the calls table."""

import math

import numpy as np
import pyarrow.compute as pc
import pytest

from test_faults import faulty, run


@pytest.mark.parametrize("policy", ["retry", "fail"])
def test_finished_tokens_leave_out_the_attempts_lost_to_failures(policy, tmp_path):
    s, calls, events, steps = run(faulty(policy, duration=60.0), tmp_path)
    t0, t1 = s["warmup_s"], s["duration_s"]
    assert int(pc.sum(pc.equal(events["kind"], "failure")).as_py()) > 2
    status = calls["status"].to_numpy(zero_copy_only=False)
    arrival = calls["arrival_s"].to_numpy()
    gen = calls["generated_tokens"].to_numpy()
    fin = (status == "finished") & (arrival >= t0) & (arrival < t1)
    assert s["finished_output_tokens_per_s"] == pytest.approx(gen[fin].sum() / (t1 - t0), rel=1e-12)
    # over the whole run the engine generated more tokens than the calls kept: the lost attempts
    generated = int(pc.sum(steps["output_tokens"]).as_py())
    kept = int(gen.sum())
    assert generated > kept
    if policy == "fail":
        assert (status == "failed").any()
    # the per-token energy and cost of delivered tokens are the larger ones
    assert s["finished_output_tokens_per_s"] < s["output_tokens_per_s"]
    span_tokens = s["finished_output_tokens_per_s"] * (t1 - t0)
    assert s["energy_per_finished_output_token_j"] == pytest.approx(s["facility_energy_j"] / span_tokens, rel=1e-12)
    assert s["usd_per_million_finished_output_tokens"] == pytest.approx(s["cost_usd"] / span_tokens * 1e6, rel=1e-12)
    assert s["energy_per_finished_output_token_j"] > s["energy_per_output_token_j"]


def test_without_failures_the_two_throughputs_differ_only_at_the_window_edges(tmp_path):
    s, calls, _, steps = run(faulty(mtbf=1e9, duration=60.0), tmp_path)
    assert int(pc.sum(steps["output_tokens"]).as_py()) == int(pc.sum(calls["generated_tokens"]).as_py())
    assert s["finished_output_tokens_per_s"] == pytest.approx(s["output_tokens_per_s"], rel=0.1)
    assert not math.isnan(s["usd_per_million_finished_output_tokens"])
    assert np.isfinite(s["energy_per_finished_output_token_j"])
