"""Generated hostile inputs: every number of every shipped scenario replaced by NaN, infinity, a
boolean, a string (each must be refused: exit 2, one line naming the key, nothing written), and
by -1, 0, 1e300 and 2**70 (refused or accepted as the schema decides, but never a traceback, a
hang or a memory blow-up). ``dcsim validate`` checks them all in this process; a sample of the
accepted ones is simulated for a short while with ``dcsim run``."""

from __future__ import annotations

import math

import pytest

from hostile import SHIPPED, assert_refused, dotted, numeric_leaves, run_cli, shipped_raw, with_value, write

REFUSED = {"nan": math.nan, "inf": math.inf, "true": True, "string": "12"}
EITHER = {"minus_one": -1, "zero": 0, "huge": 1e300, "int_overflow": 2**70}


def _base(path) -> dict:
    raw = shipped_raw(path.name)
    raw.pop("sweep", None)  # the base scenario is what validate checks; sweeps have their own cases
    return raw


def _key_name(path: tuple) -> str:
    """The last named key of a leaf's path (list indices skipped), which the error must name."""
    return next(str(k) for k in reversed(path) if not isinstance(k, int))


@pytest.mark.parametrize("value_name", sorted(REFUSED))
@pytest.mark.parametrize("scenario", SHIPPED, ids=lambda p: p.stem)
def test_every_number_of_every_shipped_scenario_refuses_nonnumbers(scenario, value_name, tmp_path, capsys):
    raw = _base(scenario)
    failures = []
    for path, _ in numeric_leaves(raw):
        f = write(tmp_path, with_value(raw, path, REFUSED[value_name]))
        try:
            assert_refused(["validate", f], capsys, watch=tmp_path, words=(_key_name(path),))
        except AssertionError as e:
            failures.append(f"{dotted(path)}: {e}")
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("value_name", sorted(EITHER))
@pytest.mark.parametrize("scenario", SHIPPED, ids=lambda p: p.stem)
def test_every_number_of_every_shipped_scenario_out_of_range_never_crashes(scenario, value_name, tmp_path, capsys):
    raw = _base(scenario)
    failures, refused = [], 0
    for path, _ in numeric_leaves(raw):
        f = write(tmp_path, with_value(raw, path, EITHER[value_name]))
        rc, out, err, wall = run_cli(["validate", f], capsys, watch=tmp_path)
        lines = err.strip().splitlines()
        if rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "out of memory" not in err:
            refused += 1
        elif rc != 0 or "Traceback" in err:
            failures.append(f"{dotted(path)}: exit {rc}: {err[-300:]!r}")
    assert not failures, "\n".join(failures[:10])
    if value_name in ("int_overflow", "huge"):
        assert refused > 0  # most fields bound these; the check above is not vacuous


def test_the_mutations_cover_well_over_150_cases():
    n = sum(len(list(numeric_leaves(_base(p)))) for p in SHIPPED)
    assert n * (len(REFUSED) + len(EITHER)) > 1000


# a short quickstart run: what validate accepts must also simulate without a crash
RUN_LEAVES = ("warmup_s", "datacenter.pue", "datacenter.pools[0].replicas", "datacenter.pools[0].engine.block_size",
              "datacenter.pools[0].batcher.max_num_seqs", "workload.classes[0].arrival.rate_per_s",
              "workload.classes[0].prompt_tokens.sigma", "workload.classes[1].arrival.cv",
              "workload.classes[1].output_tokens.max", "workload.classes[0].slo.ttft_s")


@pytest.mark.parametrize("value", [0, 1e300, 2**40])
def test_accepted_mutations_simulate_or_are_refused(value, tmp_path, capsys):
    raw = _base(SHIPPED[[p.stem for p in SHIPPED].index("quickstart")])
    raw.update(duration_s=1.0, warmup_s=0.0, drain_s=5.0)
    leaves = {dotted(p): p for p, _ in numeric_leaves(raw)}
    failures, ran = [], set()
    for name in RUN_LEAVES:
        work = tmp_path / name.replace("[", "_").replace("]", "_")
        work.mkdir()
        f = write(work, with_value(raw, leaves[name], value))
        out = work / "out"
        rc, _, err, wall = run_cli(["run", f, "--out", out], capsys, seconds=60)
        if rc == 2:
            lines = err.strip().splitlines()
            if len(lines) != 1 or "Traceback" in err or out.exists() or "out of memory" in err:
                failures.append(f"{name}={value}: {err[-300:]!r}, out exists: {out.exists()}")
        elif rc != 0:
            failures.append(f"{name}={value}: exit {rc}: {err[-300:]!r}")
        elif not (out / "summary.parquet").exists():
            failures.append(f"{name}={value}: exit 0 without a summary")
        else:
            ran.add(name)
    assert not failures, "\n".join(failures)
    if value == 0:  # zero is legitimate for these keys: they must simulate, not just be refused
        assert {"warmup_s", "workload.classes[0].prompt_tokens.sigma"} <= ran, ran
