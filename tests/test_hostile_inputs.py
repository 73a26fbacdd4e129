"""Hostile and unlucky inputs, named one by one (issue 18): absurd sizes, file contents in errors,
nonsense that used to be accepted, and inputs that used to end in a traceback. Each must be
refused with exit 2, one line on stderr naming the key, no traceback, nothing written, in
bounded time and memory. They run in this process (tests/hostile.py); a handful run as real
subprocesses at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from hostile import ROOT, assert_refused, run_cli, write
from scenarios import llm_scenario

SECRET = "root:$6$Zx9SECRETHASH$abcdefghijklmnop:19000:0:99999:7:::"


def sc(fn=None, **top) -> dict:
    raw = llm_scenario(**top)
    if fn is not None:
        fn(raw)
    return raw


def chat(raw) -> dict:
    return raw["workload"]["classes"][0]


def pool(raw) -> dict:
    return raw["datacenter"]["pools"][0]


def trace_class(path, **arrival):
    """A scenario whose chat class replays ``path`` with token counts from the trace."""
    def fn(raw):
        c = chat(raw)
        c["arrival"] = {"kind": "trace", "path": str(path), "time_column": "t", "prompt_column": "p",
                        "output_column": "o", **arrival}
        del c["prompt_tokens"], c["output_tokens"]
    return fn


def job(strategy):
    def fn(raw):
        c = chat(raw)
        del c["output_tokens"]
        c["job"] = {"strategy": strategy}
    return fn


# --------------------------------------------------------------------------- scenario cases
# name -> (scenario builder taking the work folder, words the error line must hold)
SCENARIOS = {
    # item 2: absurd sizes
    "rate_inf": (lambda d: sc(lambda r: chat(r)["arrival"].update(rate_per_s=float("inf"))), ("rate_per_s", "finite")),
    "rate_1e9": (lambda d: sc(lambda r: chat(r)["arrival"].update(rate_per_s=1e9)), ("rate_per_s", "DCSIM_MAX_CALLS")),
    "duration_1e12": (lambda d: sc(duration_s=1e12), ("duration_s", "DCSIM_MAX_DURATION_S")),
    "duration_inf": (lambda d: sc(duration_s=float("inf")), ("duration_s", "finite")),
    "drain_1e12": (lambda d: sc(drain_s=1e12), ("drain_s", "DCSIM_MAX_DURATION_S")),
    "replicas_1e9": (lambda d: sc(lambda r: pool(r).update(replicas=10**9)), ("replicas", "DCSIM_MAX_REPLICAS")),
    "replicas_2e5": (lambda d: sc(lambda r: pool(r).update(replicas=200_000)), ("replicas", "DCSIM_MAX_REPLICAS")),
    "burst_1e8": (lambda d: sc(lambda r: chat(r).update(arrival={"kind": "burst", "count": 10**8})), ("count", "DCSIM_MAX_AT_ONCE")),
    "closed_1e9": (lambda d: sc(lambda r: chat(r).update(arrival={"kind": "closed", "concurrency": 10**9})),
                   ("concurrency", "DCSIM_MAX_AT_ONCE")),
    "self_consistency_1e9": (lambda d: sc(job({"kind": "self_consistency", "n": 10**9})), ("strategy", "DCSIM_MAX_AT_ONCE")),
    "best_of_n_1e6": (lambda d: sc(job({"kind": "best_of_n", "n": 10**6})), ("strategy", "DCSIM_MAX_CALLS")),
    "beam_huge": (lambda d: sc(job({"kind": "beam_search", "width": 10**4, "expansions": 10**4, "depth": 10, "step_tokens": 10})),
                  ("strategy", "DCSIM_MAX_AT_ONCE")),
    "session_turns_1e9": (lambda d: sc(lambda r: (chat(r).pop("output_tokens"), chat(r).update(
        session={"turns": {"kind": "fixed", "value": 10**9}}))), ("session.turns",)),
    "session_turns_1e7": (lambda d: sc(lambda r: (chat(r).pop("output_tokens"), chat(r).update(
        session={"turns": {"kind": "fixed", "value": 10**7}}))), ("session.turns", "DCSIM_MAX_CALLS")),
    "autoscale_interval_1e-9": (lambda d: sc(lambda r: pool(r).update(autoscale={"policy": "queue", "interval_s": 1e-9})),
                                ("interval_s",)),
    "autoscale_interval_1e-3": (lambda d: sc(duration_s=1e6, warmup_s=0, drain_s=0, fn=None) | {
        "datacenter": {"pools": [{**pool(sc()), "autoscale": {"policy": "queue", "interval_s": 1e-3}}]},
        "workload": {"classes": [{**chat(sc()), "arrival": {"kind": "poisson", "rate_per_s": 1e-3}}]}},
        ("interval_s", "DCSIM_MAX_EVENTS")),
    "faults_mtbf_tiny": (lambda d: sc(lambda r: pool(r).update(faults={"mtbf_s": 1e-6, "mttr_s": 1})), ("mtbf_s", "DCSIM_MAX_EVENTS")),
    "schedule_rate_huge": (lambda d: sc(lambda r: chat(r).update(arrival={"kind": "schedule", "times_s": [0, 5],
                                                                           "rates_per_s": [1, 1e12]})), ("rates_per_s", "DCSIM_MAX_CALLS")),
    # item 4: nonsense that used to be accepted
    "lognormal_median_inf": (lambda d: sc(lambda r: chat(r)["prompt_tokens"].update(median=float("inf"))), ("median",)),
    "lognormal_sigma_1e300": (lambda d: sc(lambda r: chat(r)["prompt_tokens"].update(sigma=1e300)), ("sigma",)),
    "lognormal_min_gt_max": (lambda d: sc(lambda r: chat(r)["prompt_tokens"].update(min=5000, max=10)), ("prompt_tokens", "max")),
    "uniform_low_gt_high": (lambda d: sc(lambda r: r["workload"]["classes"][1]["prompt_tokens"].update(low=900, high=10)),
                            ("prompt_tokens", "high")),
    "empirical_weight_inf": (lambda d: sc(lambda r: chat(r).update(prompt_tokens={"kind": "empirical", "values": [1, 2],
                                                                                    "weights": [1, float("inf")]})), ("weights",)),
    "empirical_weight_sum_overflow": (lambda d: sc(lambda r: chat(r).update(prompt_tokens={
        "kind": "empirical", "values": [1, 2], "weights": [1e308, 1e308]})), ("prompt_tokens", "finite")),
    "tdp_inf": (lambda d: sc(lambda r: pool(r).update(power={"tdp_w": float("inf")})), ("tdp_w",)),
    "tdp_1e300": (lambda d: sc(lambda r: pool(r).update(power={"tdp_w": 1e300})), ("tdp_w",)),
    "slowdown_inf": (lambda d: sc(lambda r: pool(r).update(stragglers={"fraction": 0.5, "slowdown": float("inf")})), ("slowdown",)),
    "iteration_inf": (lambda d: sc(lambda r: pool(r).update(performance={"kind": "fixed", "iteration_s": float("inf")})),
                      ("iteration_s",)),
    "pue_inf": (lambda d: sc(lambda r: r["datacenter"].update(pue=float("inf"))), ("pue",)),
    "energy_price_inf": (lambda d: sc(lambda r: r["datacenter"].update(energy_usd_per_kwh=float("inf"))), ("energy_usd_per_kwh",)),
    "carbon_inf": (lambda d: sc(lambda r: r["datacenter"].update(carbon_g_per_kwh=float("inf"))), ("carbon_g_per_kwh",)),
    "carbon_schedule_nan": (lambda d: sc(lambda r: r["datacenter"].update(carbon_schedule={"times_s": [0], "g_per_kwh": [float("nan")]})),
                            ("g_per_kwh",)),
    "price_inf": (lambda d: sc(lambda r: r["datacenter"].update(economics={"pricing": {"classes": {"chat": {
        "output_usd_per_mtok": float("inf")}}}})), ("output_usd_per_mtok",)),
    "tariff_inf": (lambda d: sc(lambda r: r["datacenter"].update(economics={"tariff": {"times_s": [0], "usd_per_kwh": [float("inf")]}})),
                   ("usd_per_kwh",)),
    "life_years_1e-9": (lambda d: sc(lambda r: r["datacenter"].update(economics={"capex": {"kind": "owned", "life_years": 1e-9}})),
                        ("life_years",)),
    "facility_life_tiny": (lambda d: sc(lambda r: r["datacenter"].update(economics={"capex": {"kind": "owned",
                                                                                              "facility_life_years": 0.01}})),
                           ("facility_life_years",)),
    "num_gpu_blocks_1e12": (lambda d: sc(lambda r: pool(r).update(engine={"num_gpu_blocks": 10**12})), ("num_gpu_blocks",)),
    "num_gpu_blocks_beyond_memory": (lambda d: sc(lambda r: pool(r).update(engine={"num_gpu_blocks": 5 * 10**7})),
                                     ("num_gpu_blocks", "GiB")),
    "stop_before_start": (lambda d: sc(lambda r: chat(r).update(start_s=10, stop_s=5)), ("stop_s",)),
    "replicas_true": (lambda d: sc(lambda r: pool(r).update(replicas=True)), ("replicas", "integer")),
    "rate_true": (lambda d: sc(lambda r: chat(r)["arrival"].update(rate_per_s=True)), ("rate_per_s",)),
    "tp_string": (lambda d: sc(lambda r: pool(r).update(tp="2")), ("tp",)),
    "replicas_float": (lambda d: sc(lambda r: pool(r).update(replicas=2.5)), ("replicas",)),
    # item 5: used to end in a traceback
    "seed_negative": (lambda d: sc(seed=-1), ("seed",)),
    "seed_2_80": (lambda d: sc(seed=2**80), ("seed",)),
    "seed_10_30": (lambda d: sc(seed=10**30), ("seed",)),
    "run_negative": (lambda d: sc(run=-3), ("run",)),
    "run_2_80": (lambda d: sc(run=2**80), ("run",)),
    "tokens_overflow": (lambda d: sc(lambda r: chat(r).update(prompt_tokens={"kind": "fixed", "value": 2**70})), ("value",)),
    "tokens_1e30": (lambda d: sc(lambda r: chat(r).update(output_tokens={"kind": "uniform", "low": 1, "high": 10**30})), ("high",)),
    "exponential_mean_huge": (lambda d: sc(lambda r: chat(r).update(output_tokens={"kind": "exponential", "mean": 1e300})), ("mean",)),
    "priority_overflow": (lambda d: sc(lambda r: chat(r).update(priority=2**40)), ("priority",)),
    "priority_negative_overflow": (lambda d: sc(lambda r: chat(r).update(priority=-(2**63))), ("priority",)),
    "cv_1e-300": (lambda d: sc(lambda r: r["workload"]["classes"][1]["arrival"].update(cv=1e-300)), ("cv",)),
    "beta_tiny": (lambda d: sc(job({"kind": "single"})) | {}, ()),  # placeholder replaced below
    "row_group_huge": (lambda d: sc(trace={"row_group_rows": 10**12}), ("row_group_rows",)),
    "block_size_huge": (lambda d: sc(lambda r: pool(r).update(engine={"block_size": 10**9})), ("block_size",)),
    "trace_time_scale_1e-300": (lambda d: sc(trace_class(_trace(d), time_scale=1e-300, loop=True)), ("time_scale",)),
    "empty_workload": (lambda d: sc(lambda r: r["workload"].update(classes=[])), ("classes",)),
    "scenario_is_list": (lambda d: "- a\n- b\n", ("mapping",)),
    "scenario_is_scalar": (lambda d: "12\n", ("mapping",)),
    "scenario_empty": (lambda d: "", ("mapping",)),
}


def training(pool_extra=None, **spec):
    """The chat pool autoscaled and a training class on it with ``spec`` over a valid job."""
    def fn(raw):
        pool(raw).update(autoscale={"policy": "queue"}, **(pool_extra or {}))
        base = {"model": "llama-3.1-8b", "batch_tokens": 2**20, "tp": 1, "dp": 2, "restart_s": 60,
                "checkpoint": {"interval_s": 600}}
        for k, v in spec.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                base[k] = {**base[k], **v}
            else:
                base[k] = v
        raw["workload"]["classes"].append({"name": "pretrain", "pool": "main", "arrival": {"kind": "burst", "count": 1},
                                           "training": base})
    return fn


SCENARIOS.update({
    # training jobs (issue 23)
    "training_no_autoscale": (lambda d: sc(lambda r: (training()(r), pool(r).pop("autoscale"))), ("pool", "autoscale")),
    "training_unknown_model": (lambda d: sc(training(model="gpt-9")), ("training.model", "gpt-9")),
    "training_gang_too_big": (lambda d: sc(training(dp=1000)), ("training.dp", "devices")),
    "training_degree_huge": (lambda d: sc(training(tp=2**40)), ("tp",)),
    "training_min_dp_over_dp": (lambda d: sc(training(min_dp=3)), ("min_dp",)),
    "training_mfu_over_1": (lambda d: sc(training(mfu=1.5)), ("mfu",)),
    "training_mfu_nan": (lambda d: sc(training(mfu=float("nan"))), ("mfu",)),
    "training_interval_zero": (lambda d: sc(training(checkpoint={"interval_s": 0})), ("interval_s",)),
    "training_write_inf": (lambda d: sc(training(checkpoint={"write_gb_s": float("inf")})), ("write_gb_s",)),
    "training_bytes_per_param_huge": (lambda d: sc(training(checkpoint={"bytes_per_param": 1e300})), ("bytes_per_param",)),
    "training_batch_overflow": (lambda d: sc(training(batch_tokens=2**70)), ("batch_tokens",)),
    "training_restart_negative": (lambda d: sc(training(restart_s=-1)), ("restart_s",)),
    "training_unknown_key": (lambda d: sc(training(optimizer="adam")), ("optimizer",)),
    "training_sharing_unknown": (lambda d: sc(training(sharing={"kind": "lottery"})), ("sharing",)),
    "training_static_too_many": (lambda d: sc(training(sharing={"kind": "static", "inference_replicas": 3})),
                                 ("inference_replicas", "2 replicas")),
    "training_schedule_unsorted": (lambda d: sc(training(sharing={"kind": "schedule", "times_s": [0, 5, 3],
                                                                  "inference_replicas": [1, 1, 1]})), ("times_s",)),
    "training_priority_all": (lambda d: sc(training(sharing={"kind": "priority", "min_training_replicas": 2})),
                              ("min_training_replicas",)),
    "training_poisson_arrivals": (lambda d: sc(lambda r: (training()(r), r["workload"]["classes"][-1].update(
        arrival={"kind": "poisson", "rate_per_s": 1.0}))), ("arrival", "burst")),
    "training_with_prompt": (lambda d: sc(lambda r: (training()(r), r["workload"]["classes"][-1].update(
        prompt_tokens={"kind": "fixed", "value": 5}))), ("training", "prompt_tokens")),
    "training_two_classes_one_pool": (lambda d: sc(lambda r: (training()(r), r["workload"]["classes"].append(
        {**r["workload"]["classes"][-1], "name": "second"}))), ("pool", "already")),
})
del SCENARIOS["beta_tiny"]
SCENARIOS["beta_tiny"] = (lambda d: sc(lambda r: (chat(r).pop("output_tokens"), chat(r).update(job={
    "levels": [{"name": "x", "accuracy": 0.5, "truncated_accuracy": 0.1, "output_tokens": {"kind": "fixed", "value": 10},
                "reasoning_share": {"kind": "beta", "a": 1e-300, "b": 1}}], "strategy": {"kind": "single"}}))), ("a",))


def _trace(folder, rows=None, name="t.csv") -> str:
    p = folder / name
    p.write_text(rows if rows is not None else "t,p,o\n0,10,5\n1,20,5\n2,30,6\n")
    return str(p)


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_bad_scenario_is_refused(case, command, tmp_path, capsys):
    build, words = SCENARIOS[case]
    path = write(tmp_path, build(tmp_path))
    argv = [command, path] + (["--out", tmp_path / "out"] if command == "run" else [])
    if command == "validate" and case in ("trace_time_scale_1e-300",):
        words = ("time_scale",)
    line = assert_refused(argv, capsys, watch=tmp_path, words=words)
    assert str(path) in line or "s.yaml" in line


# --------------------------------------------------------------------------- traces and data files
def _fifo(d):
    p = d / "fifo.csv"
    os.mkfifo(p)
    return str(p)


TRACES = {
    # path builder -> words; run reads the trace (validate does not read data files)
    "dev_zero": (lambda d: "/dev/zero", ("/dev/zero", "device")),
    "fifo": (_fifo, ("fifo.csv", "FIFO")),
    "folder": (lambda d: str(d), ("folder",)),
    "missing": (lambda d: str(d / "absent.csv"), ("absent.csv", "cannot read")),
    "shadow_like": (lambda d: _trace(d, SECRET + "\n" + SECRET + "\n"), ("no column 't'",)),
    "binary": (lambda d: str(_write_bytes(d / "b.csv", b"t,p,o\n\x00\xff\xfe\x81\x00" * 20)), ("UTF-8",)),
    "utf16": (lambda d: str(_write_bytes(d / "u.csv", "t,p,o\n0,1,1\n".encode("utf-16"))), ("UTF-8",)),
    "nul_bytes": (lambda d: _trace(d, "t,p,o\n0,1\x00,1\n"), ("NUL",)),
    "short_row": (lambda d: _trace(d, "t,p,o\n0,10,5\n1,20\n"), ("row 2", "'o'")),
    "nan_time": (lambda d: _trace(d, "t,p,o\n0,10,5\nnan,20,5\n"), ("row 2", "'t'")),
    "inf_time": (lambda d: _trace(d, "t,p,o\n0,10,5\ninf,20,5\n"), ("row 2",)),
    "inf_tokens": (lambda d: _trace(d, "t,p,o\n0,10,5\n1,inf,5\n"), ("row 2", "'p'")),
    "negative_tokens": (lambda d: _trace(d, "t,p,o\n0,10,5\n1,-20,5\n"), ("row 2", "'p'")),
    "huge_tokens": (lambda d: _trace(d, "t,p,o\n0,10,5\n1,1e30,5\n"), ("row 2", "'p'")),
    "text_tokens": (lambda d: _trace(d, "t,p,o\n0,10,5\n1,lots,5\n"), ("row 2",)),
    "no_rows": (lambda d: _trace(d, "t,p,o\n"), ("no rows",)),
    "bad_dates": (lambda d: _trace(d, "t,p,o\n2024-01-01,1,1\nyesterday,1,1\n"), ("row 2",)),
    "jsonl_null": (lambda d: _trace(d, '{"t": 0, "p": 1, "o": 1}\n{"t": null, "p": 1, "o": 1}\n', "n.jsonl"), ("row 2",)),
    "jsonl_null_tokens": (lambda d: _trace(d, '{"t": 0, "p": 1, "o": 1}\n{"t": 1, "p": null, "o": 1}\n', "n.jsonl"), ("row 2",)),
    "jsonl_list_time": (lambda d: _trace(d, '{"t": [1], "p": 1, "o": 1}\n', "n.jsonl"), ("row 1",)),
    "jsonl_bool_tokens": (lambda d: _trace(d, '{"t": 0, "p": true, "o": 1}\n', "n.jsonl"), ("row 1",)),
    "jsonl_not_json": (lambda d: _trace(d, '{"t": 0, "p": 1, "o": 1}\n' + SECRET + "\n", "n.jsonl"), ("line 2", "not JSON")),
    "jsonl_not_object": (lambda d: _trace(d, "[1, 2]\n", "n.jsonl"), ("line 1",)),
    "jsonl_deep": (lambda d: _trace(d, "[" * 100000 + "]" * 100000 + "\n", "n.jsonl"), ("line 1",)),
}


def _write_bytes(p, data: bytes):
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("case", sorted(TRACES))
def test_bad_trace_is_refused_without_its_contents(case, tmp_path, capsys):
    make, words = TRACES[case]
    path = write(tmp_path, sc(trace_class(make(tmp_path))))
    assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=words, secret="SECRETHASH")


def test_real_shadow_file_as_a_trace_prints_no_line_of_it(tmp_path, capsys):
    if not os.access("/etc/shadow", os.R_OK):
        pytest.skip("/etc/shadow is not readable here")
    first = open("/etc/shadow").readline().strip()
    path = write(tmp_path, sc(trace_class("/etc/shadow")))
    line = assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=("/etc/shadow",))
    assert first not in line and first.split(":")[0] + ":" not in line


def test_looped_trace_squeezed_to_nothing_is_refused(tmp_path, capsys):
    path = write(tmp_path, sc(trace_class(_trace(tmp_path), time_scale=1e-6, loop=True), duration_s=1e5, warmup_s=0))
    assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=("loop", "DCSIM_MAX_CALLS"))


def test_file_size_limit_and_its_variable(tmp_path, capsys, monkeypatch):
    big = _trace(tmp_path, "t,p,o\n" + "0,10,5\n" * 200_000)
    path = write(tmp_path, sc(trace_class(big)))
    monkeypatch.setenv("DCSIM_MAX_FILE_MB", "0.5")
    assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=("DCSIM_MAX_FILE_MB",))
    monkeypatch.setenv("DCSIM_MAX_FILE_MB", "nonsense")
    assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=("DCSIM_MAX_FILE_MB",))


def test_a_limit_can_be_raised_by_its_variable(tmp_path, capsys, monkeypatch):
    raw = sc(lambda r: chat(r).update(arrival={"kind": "burst", "count": 10}))
    path = write(tmp_path, raw)
    monkeypatch.setenv("DCSIM_MAX_AT_ONCE", "5")
    assert_refused(["validate", path], capsys, watch=tmp_path, words=("count", "DCSIM_MAX_AT_ONCE"))
    monkeypatch.setenv("DCSIM_MAX_AT_ONCE", "50")
    rc, out, err, _ = run_cli(["validate", path], capsys)
    assert rc == 0, err


EMPIRICAL = {
    "inf_weight": ("v,w\n10,1\n20,inf\n", ("row 3",)),
    "nan_value": ("v,w\nnan,1\n", ("row 2",)),
    "huge_value": ("v,w\n1e30,1\n", ("row 2",)),
    "short_row": ("v,w\n10\n", ("row 2",)),
    "weight_overflow": ("v,w\n10,1e308\n20,1e308\n", ("finite",)),
    "missing_column": (SECRET + "\n1\n", ("no column 'v'",)),
}


@pytest.mark.parametrize("case", sorted(EMPIRICAL))
def test_bad_empirical_csv_is_refused(case, tmp_path, capsys):
    text, words = EMPIRICAL[case]
    csv_path = _trace(tmp_path, text, "e.csv")
    raw = sc(lambda r: chat(r).update(prompt_tokens={"kind": "empirical", "path": csv_path, "column": "v",
                                                     "weight_column": "w"}))
    path = write(tmp_path, raw)
    assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=words, secret="SECRETHASH")


def test_bad_rate_schedule_csv_is_refused(tmp_path, capsys):
    for text in ("timestamp_s,rate_per_s\n0,1\nnan,2\n", "timestamp_s,rate_per_s\n0,inf\n", SECRET + "\n"):
        csv_path = _trace(tmp_path, text, "rates.csv")
        path = write(tmp_path, sc(lambda r: chat(r).update(arrival={"kind": "schedule", "path": csv_path})))
        assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, secret="SECRETHASH")


def test_profile_csv_parse_error_prints_no_data_line(tmp_path, capsys):
    src = ROOT / "hardware" / "profiles" / "vidur" / "h100_llama-2-7b.csv"
    lines = src.read_text().splitlines()
    bad = tmp_path / "prof.csv"
    bad.write_text("\n".join(lines[:5] + ["SECRETHASH,1,2"] + lines[5:10]) + "\n")
    raw = sc(lambda r: pool(r).update(model="llama-2-7b", performance={"kind": "profile", "path": str(bad)}))
    path = write(tmp_path, raw)
    line = assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=("prof.csv",),
                          secret="SECRETHASH")
    bad.write_text("\n".join(lines[:3] + [lines[3].replace(lines[3].split(",")[1], "SECRETHASH", 1)]) + "\n")
    line = assert_refused(["run", path, "--out", tmp_path / "out"], capsys, watch=tmp_path, words=("prof.csv",),
                          secret="SECRETHASH")
    assert "number" in line


# --------------------------------------------------------------------------- scenario files and YAML
BOMB = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _with_sweep(grid_yaml: str) -> str:
    return yaml.safe_dump(sc(), sort_keys=False) + grid_yaml


FILES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), ("UTF-8",)),
    "utf16": (yaml.safe_dump(sc()).encode("utf-16"), ("UTF-8",)),
    "nul": (b"name: x\x00\n", ("not text",)),
    "bad_yaml": (b"name: x\n  bad: [indent\n", ("invalid YAML",)),
    "tab_yaml": (b"a:\n\t- 1\n", ("invalid YAML",)),
    "duplicate_key": (b"name: a\nseed: 1\nname: b\n", ("line 3", "'name'", "twice")),
    "duplicate_nested": (yaml.safe_dump(sc()).replace("  pools:", "  pue: 1.3\n  pue: 1.4\n  pools:", 1).encode(),
                         ("'pue'", "twice")),
    "python_tag": (b"name: !!python/object/apply:os.system ['true']\n", ("invalid YAML",)),
    "recursive": (b"a: &a [*a]\n", ("recursive",)),
    "deep": (b"[" * 50000 + b"]" * 50000, ("YAML",)),
    "alias_bomb": (("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + BOMB).encode(), ("expands",)),
    "alias_bomb_in_grid": (_with_sweep("x: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + BOMB +
                                       "sweep:\n  grid:\n    seed: *i\n").encode(), ("expands",)),
    "duplicate_grid": (_with_sweep("sweep:\n  grid:\n    seed: [1, 2]\n    seed: [3, 4]\n").encode(), ("'seed'", "twice")),
    # 7 axes of 10 values: 10^7 points, refused before one is expanded
    "ten_million_points": (_with_sweep("sweep:\n  grid:\n" + "".join(
        f"    {k}: [{', '.join(map(str, range(1, 11)))}]\n" for k in ("seed", "run", "datacenter.pools.main.replicas",
                                                                      "datacenter.pools.main.tp", "warmup_s", "drain_s",
                                                                      "datacenter.pue"))).encode(), ("sweep", "DCSIM_MAX_POINTS")),
    "random_samples_huge": (_with_sweep("sweep:\n  random:\n    samples: 1000000000000\n    params:\n"
                                        "      seed: {randint: [1, 5]}\n").encode(), ("DCSIM_MAX_POINTS",)),
    "randint_1e30": (_with_sweep("sweep:\n  random:\n    samples: 2\n    params:\n      seed: {randint: [1, 1e30]}\n").encode(),
                     ("randint",)),
    "uniform_inf": (_with_sweep("sweep:\n  random:\n    samples: 2\n    params:\n      warmup_s: {uniform: [0, .inf]}\n").encode(),
                    ("uniform",)),
    "replications_true": (_with_sweep("sweep:\n  replications: true\n").encode(), ("replications",)),
    "random_seed_negative": (_with_sweep("sweep:\n  random:\n    samples: 2\n    seed: -1\n    params:\n"
                                         "      seed: {randint: [1, 5]}\n").encode(), ("seed",)),
    "zip_unequal": (_with_sweep("sweep:\n  zip:\n    seed: [1, 2]\n    run: [1]\n").encode(), ("zip",)),
    "grid_unknown_key": (_with_sweep("sweep:\n  grid:\n    nope.nothing: [1, 2]\n").encode(), ("nope",)),
}


@pytest.mark.parametrize("command", ["validate", "dry_run", "sweep"])
@pytest.mark.parametrize("case", sorted(FILES))
def test_bad_scenario_file_is_refused(case, command, tmp_path, capsys):
    data, words = FILES[case]
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    argv = {"validate": ["validate", path], "dry_run": ["sweep", path, "--out", tmp_path / "o", "--dry-run"],
            "sweep": ["sweep", path, "--out", tmp_path / "o", "--executor", "serial", "--no-progress"]}[command]
    assert_refused(argv, capsys, watch=tmp_path, words=words)


# --------------------------------------------------------------------------- command-line flags
def _ok(d):
    return write(d, sc(duration_s=2.0, warmup_s=0.0))


def _sweep_ok(d):
    return write(d, sc(duration_s=2.0, warmup_s=0.0, sweep={"grid": {"seed": [1, 2]}}))


def _unreachable_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


EST = ["estimate", "--hardware", "h100-sxm", "--model", "llama-3.1-8b", "--concurrency", "4", "--prompt-tokens", "10",
       "--output-tokens", "10"]


def _est(*extra):
    return lambda d: [*EST, *extra]


FLAGS = {
    "set_bad_yaml": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "seed=[1"], ("seed", "--set")),
    "set_duplicate_key": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "trace={calls: true, calls: false}"],
                          ("twice",)),
    "set_no_equals": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "seed"], ("--set",)),
    "set_unknown_path": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "a.b.c=1"], ("a.b.c",)),
    "set_seed_huge": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", f"seed={2**80}"], ("seed",)),
    "set_run_negative": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "run=-1"], ("run",)),
    "set_nan": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "datacenter.pue=.nan"], ("pue",)),
    "set_bomb": (lambda d: ["run", _ok(d), "--out", d / "o", "--set", "name=" + ("[" * 20000)], ("name",)),
    "unknown_command": (lambda d: ["frobnicate"], ("invalid choice",)),
    "missing_argument": (lambda d: ["run"], ("required",)),
    "bad_int_flag": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--num-cpus", "lots"], ("--num-cpus",)),
    "num_cpus_negative": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--num-cpus", "-3"], ("--num-cpus",)),
    "num_cpus_zero": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--num-cpus", "0"], ("--num-cpus",)),
    "max_in_flight_zero": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--max-in-flight", "0"], ("--max-in-flight",)),
    "max_retries_negative": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--max-retries", "-1"], ("--max-retries",)),
    "address_refused": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--address", f"127.0.0.1:{_unreachable_port()}"],
                        ("--address", "cannot reach")),
    "address_garbage": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--address", "nonsense"], ("--address",)),
    "address_bad_port": (lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--address", "127.0.0.1:99999"], ("--address",)),
    "estimate_duration_inf": (_est("--duration-s", "inf"), ("--duration-s",)),
    "estimate_duration_nan": (_est("--duration-s", "nan"), ("--duration-s",)),
    "estimate_duration_huge": (_est("--duration-s", "1e12"), ("--duration-s",)),
    "estimate_warmup_negative": (_est("--warmup-s", "-1"), ("--warmup-s",)),
    "estimate_concurrency_huge": (lambda d: [*EST[:-6], "--concurrency", "1000000000", *EST[-4:]], ("--concurrency",)),
    "estimate_concurrency_zero": (lambda d: [*EST[:-6], "--concurrency", "0", *EST[-4:]], ("--concurrency",)),
    "estimate_tokens_huge": (_est("--prompt-tokens", str(10**12)), ("--prompt-tokens",)),
    "estimate_requests_huge": (_est("--requests", str(10**9)), ("--requests",)),
    "estimate_seed_negative": (_est("--seed", "-1"), ("--seed",)),
    "estimate_tp_zero": (_est("--tp", "0"), ("--tp",)),
    "estimate_power_cap_inf": (_est("--power-cap-w", "inf"), ("--power-cap-w",)),
    "estimate_memory_share": (_est("--gpu-memory-utilization", "2"), ("--gpu-memory-utilization",)),
    "calibrate_dev_zero": (lambda d: ["calibrate", "--accelerator", "h100-sxm", "--profiles", "/dev/zero", "--out",
                                      d / "cal.yaml"], ("--profiles", "device")),
    "calibrate_fifo": (lambda d: ["calibrate", "--accelerator", "h100-sxm", "--network", _fifo(d), "--out", d / "cal.yaml"],
                       ("--network", "FIFO")),
    "validate_missing_file": (lambda d: ["validate", d / "absent.yaml"], ("absent.yaml", "cannot read")),
    "validate_folder": (lambda d: ["validate", d], ("folder",)),
    "validate_dev_zero": (lambda d: ["validate", "/dev/zero"], ("device",)),
    "validate_fifo": (lambda d: ["validate", _fifo(d)], ("FIFO",)),
}


@pytest.mark.parametrize("case", sorted(FLAGS))
def test_bad_flag_is_refused(case, tmp_path, capsys):
    argv, words = FLAGS[case]
    argv = argv(tmp_path)
    line = assert_refused(argv, capsys, watch=tmp_path, words=words, seconds=15)
    assert "Traceback" not in line


# --------------------------------------------------------------------------- --out targets
def _file(d):
    (d / "f").write_text("x")
    return d / "f"


def _read_only(d):
    ro = d / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return ro / "out"


OUTS = {
    "a_file": (_file, ("not a folder",)),
    "under_a_file": (lambda d: _file(d) / "sub" / "out", ("not a folder",)),
    "dev_null": (lambda d: "/dev/null", ("not a folder",)),
    "proc": (lambda d: "/proc/dcsim-out", ("/proc",)),
    "sys": (lambda d: "/sys/dcsim-out", ("/sys",)),
    "unknown_scheme": (lambda d: "foo://bucket/x", ("foo",)),
    "bad_scheme_chars": (lambda d: "::://x", ("--out",)),
    "read_only": (_read_only, ("writable",)),
}


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("case", sorted(OUTS))
def test_bad_out_target_is_refused(case, command, tmp_path, capsys):
    if case == "read_only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    out = OUTS[case][0](tmp_path)
    scenario = _ok(tmp_path) if command == "run" else _sweep_ok(tmp_path)
    argv = ["run", scenario, "--out", out] if command == "run" else ["sweep", scenario, "--out", out, "--executor",
                                                                     "serial", "--no-progress"]
    assert_refused(argv, capsys, watch=tmp_path, words=("--out", *OUTS[case][1]))


# --------------------------------------------------------------------------- dcsim report
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from sim.cli.main import main

    d = tmp_path_factory.mktemp("finished")
    scenario = write(d, sc(duration_s=2.0, warmup_s=0.0))
    assert main(["run", str(scenario), "--out", str(d / "out")]) == 0
    return d / "out"


def _corrupt(out, which):
    import shutil

    copy_ = out.parent / f"corrupt-{which}"
    shutil.copytree(out, copy_)
    target = copy_ / "summary.parquet" if which == "summary" else next((copy_ / "calls").rglob("*.parquet"))
    target.write_bytes(b"PAR1" + b"\x00garbage" * 10)
    return copy_


@pytest.mark.parametrize("which", ["summary", "partition"])
def test_report_of_a_corrupt_table_is_one_line(which, finished_run, capsys):
    folder = _corrupt(finished_run, which)
    assert_refused(["report", folder], capsys, watch=folder, words=(str(folder),))


def test_report_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert_refused(["report", tmp_path], capsys, watch=tmp_path)
    assert_refused(["report", tmp_path / "absent"], capsys, watch=tmp_path)


# --------------------------------------------------------------------------- a full disk
def test_abort_deletes_the_temporary_file_when_close_fails(tmp_path):
    """On a full disk the writer's close fails too; the .tmp file must still go."""
    import pyarrow.fs as pafs

    from sim.output.trace import Recorder

    fs = pafs.LocalFileSystem()
    rec = Recorder({"events": (fs, str(tmp_path / "events" / "part-0.parquet"))}, row_group_rows=1024)
    sink = rec.sinks["events"]
    for i in range(3000):
        rec.event(float(i), "x", "p", 0, i)
    sink.flush()
    assert list((tmp_path / "events").glob(".*.tmp"))

    class Full:
        def __init__(self, w):
            self.w = w

        def close(self):
            raise OSError(28, "No space left on device")

    real = sink._writer
    sink._writer = Full(real)
    rec.abort()
    real.close()  # the real writer's handle (its file is already gone)
    assert not list((tmp_path / "events").glob(".*.tmp"))


def test_a_failed_run_leaves_no_output_folder(tmp_path, capsys, monkeypatch):
    """A run that fails after it started writing (here: the disk fills while the tables are written)
    removes the folder it created. (The Parquet writer is patched, not the recorder: compiled, its
    classes cannot be.)"""
    import pyarrow.parquet as pq

    close, failed = pq.ParquetWriter.close, []

    def full(self, *a, **k):  # the first table's close fails; later closes (the clean-up's) work
        if not failed:
            failed.append(1)
            raise OSError(28, "No space left on device")
        return close(self, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "close", full)
    out = tmp_path / "out"
    line = assert_refused(["run", _ok(tmp_path), "--out", out], capsys, words=("No space left",))
    assert not out.exists(), line


# --------------------------------------------------------------------------- a few real processes
SUBPROCESS = {
    "alias_bomb": lambda d: ["validate", _bytes_file(d, FILES["alias_bomb"][0])],
    "rate_1e9": lambda d: ["run", write(d, SCENARIOS["rate_1e9"][0](d)), "--out", d / "o"],
    "dev_zero_trace": lambda d: ["run", write(d, sc(trace_class("/dev/zero"))), "--out", d / "o"],
    "num_cpus_zero": lambda d: ["sweep", _sweep_ok(d), "--out", d / "o", "--num-cpus", "0"],
    "estimate_inf": lambda d: [*EST, "--duration-s", "inf"],
}


def _bytes_file(d, data: bytes):
    p = d / "bytes.yaml"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("case", sorted(SUBPROCESS))
def test_hostile_input_in_a_real_process(case, tmp_path):
    argv = [str(a) for a in SUBPROCESS[case](tmp_path)]
    before = sorted(p.name for p in tmp_path.iterdir())
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "sim.cli", *argv], capture_output=True, text=True, timeout=120)
    assert time.perf_counter() - t0 < 120
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
