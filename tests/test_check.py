"""``validate``, ``run`` and ``sweep`` refuse the same scenarios: each goes through
sim.cluster.check before anything runs, so a point that ``run`` would refuse stops a sweep
up front (exit 2, one line, no output folder) instead of failing it half-way."""

from __future__ import annotations

import pytest
import yaml

from scenarios import llm_scenario
from sim.cli.main import main


def _missing_trace(raw):
    raw["workload"]["classes"][0]["arrival"] = {"kind": "trace", "path": "absent.csv", "time_column": "t"}


def _missing_length_csv(raw):
    raw["workload"]["classes"][1]["output_tokens"] = {"kind": "empirical", "path": "nolens.csv", "column": "n"}


def _bad_tp(raw):
    raw["datacenter"]["pools"][0]["tp"] = 3


def _negative_seed(raw):
    raw["seed"] = -1


CASES = {  # what `run` refuses -> (the scenario change, a sweep axis reaching it, words of the error)
    "missing_trace": (_missing_trace, None, ("absent.csv", "workload.classes.chat.arrival", "cannot read")),
    "missing_length_csv": (_missing_length_csv, None, ("nolens.csv", "workload.classes.long.output_tokens", "cannot read")),
    "tp_3": (_bad_tp, {"datacenter.pools.main.tp": [1, 3]}, ("datacenter.pools.main.tp", "not divisible by tp=3")),
    "seed_-1": (_negative_seed, {"seed": [1, -1]}, ("seed", "greater than or equal to 0")),
}


def _scenario(tmp_path, case: str, swept: bool):
    raw = llm_scenario()
    change, axis, _ = CASES[case]
    if swept and axis is not None:
        raw["sweep"] = {"grid": axis}  # the base is fine; one point of the grid is not
    else:
        change(raw)
        if swept:
            raw["sweep"] = {"grid": {"workload.classes.long.arrival.rate_per_s": [0.2, 0.4]}}
    path = tmp_path / "scn.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "run", "sweep"])
def test_every_command_refuses_what_run_refuses(command, case, tmp_path, capsys):
    path = _scenario(tmp_path, case, swept=command != "run")
    out = tmp_path / "out"
    args = [command, str(path)] + ([] if command == "validate" else ["--out", str(out)])
    if command == "sweep":
        args += ["--executor", "serial", "--no-progress"]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert all(w in lines[0] for w in CASES[case][2]), lines[0]
    if command == "sweep" and CASES[case][1] is not None:
        assert "at sweep point" in lines[0]
    assert not out.exists()  # refused before anything was written


def test_validate_checks_every_sweep_point_and_counts_them(tmp_path, capsys):
    raw = llm_scenario()
    raw["sweep"] = {"grid": {"datacenter.pools.main.tp": [1, 2, 4]}, "replications": 2}
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["validate", str(path)]) == 0
    assert "6 points" in capsys.readouterr().out
