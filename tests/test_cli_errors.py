"""Bad input: one line naming the file and key, exit status 2, no traceback."""

import subprocess
import sys

import pytest
import yaml

from scenarios import llm_scenario


def _dcsim(*args):
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, timeout=120)


def _write(tmp_path, raw, name="bad.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def _mutate(raw, fn):
    fn(raw)
    return raw


BAD = {
    "unknown_key": (lambda r: r["datacenter"]["pools"][0].update(replica=3), "datacenter.pools.main.replica", "unknown key"),
    "unknown_hardware": (lambda r: r["datacenter"]["pools"][0].update(accelerator="h1000"), "datacenter.pools.main.accelerator", "unknown accelerator 'h1000'"),
    "unknown_model": (lambda r: r["datacenter"]["pools"][0].update(model="llama-9"), "datacenter.pools.main.model", "unknown model"),
    "negative_rate": (lambda r: r["workload"]["classes"][0]["arrival"].update(rate_per_s=-2), "workload.classes.chat.arrival.rate_per_s", "greater than 0"),
    "too_large": (lambda r: r["datacenter"]["pools"][0].update(model="llama-3.1-70b"), "datacenter.pools.main.model", "does not fit"),
    "unknown_router": (lambda r: r["datacenter"]["pools"][0].update(router={"kind": "psychic"}), "datacenter.pools.main.router", "unknown kind 'psychic'"),
    "bad_pool_ref": (lambda r: r["workload"]["classes"][1].update(pool="nope"), "workload.classes.long.pool", "unknown pool 'nope'"),
    "missing_duration": (lambda r: r.pop("duration_s"), "duration_s", "required"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_scenario_one_line_exit_2(case, command, tmp_path):
    fn, key, words = BAD[case]
    path = _write(tmp_path, _mutate(llm_scenario(), fn))
    args = [command, str(path)] + (["--out", str(tmp_path / "out")] if command == "run" else [])
    res = _dcsim(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert str(path) in lines[0] and key in lines[0] and words in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\n  bad: [indent\n")
    res = _dcsim("validate", str(p))
    assert res.returncode == 2 and "broken.yaml" in res.stderr and "invalid YAML" in res.stderr
    res = _dcsim("validate", str(tmp_path / "absent.yaml"))
    assert res.returncode == 2 and "absent.yaml" in res.stderr and "cannot read" in res.stderr


def test_bad_trace_file_named(tmp_path):
    raw = llm_scenario()
    raw["workload"]["classes"][0]["arrival"] = {"kind": "trace", "path": "missing.csv", "time_column": "t",
                                                "prompt_column": "p", "output_column": "o"}
    del raw["workload"]["classes"][0]["prompt_tokens"], raw["workload"]["classes"][0]["output_tokens"]
    res = _dcsim("run", str(_write(tmp_path, raw)), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "missing.csv" in res.stderr and "cannot read" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_validate_reports_kv_pool(tmp_path):
    res = _dcsim("validate", str(_write(tmp_path, llm_scenario(), "ok.yaml")))
    assert res.returncode == 0, res.stderr
    assert "KV pool" in res.stdout and "ok" in res.stdout
