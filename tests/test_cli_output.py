"""The command line's conventions: --version, -v / -q, shipped scenarios by name, run --out that
refuses a folder holding another run or a sweep unless --overwrite, and tables that read at 80
columns (in a terminal or piped) ending with the next command to run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import sim
from sim import native
from sim.cli.main import main
from sim.output.headline import HEADLINE

SHORT = ["--set", "duration_s=25"]  # quickstart: 20 s warm-up, 5 s measured (~1 s wall)


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _eighty_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # rich's width when piped; set so the test does not depend on it


def test_version_matches_the_package(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dcsim {sim.__version__} (engine: {native.build()})"


def test_run_by_name_reads_at_80_columns_and_points_at_the_report(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = "one"  # short: the path is printed whole, however long
    code, text, err = _run(capsys, "run", "quickstart", "--out", out, *SHORT)
    assert code == 0, err
    lines = text.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text
    for label, _, _ in HEADLINE:  # every label in full, on one line
        assert label in text, label
    assert "utilization (busy share of replica time)" in text
    assert lines[-1] == f"next: dcsim report {out}   -> {out}/report.html"
    (pid,) = pq.read_table(tmp_path / out / "points.parquet")["point_id"].to_pylist()
    manifest = json.loads((tmp_path / out / pid / "manifest.json").read_text())
    source = manifest["source"]
    for table in ("calls", "steps"):  # the manifest counts each table's rows as written
        (part,) = (tmp_path / out / table).rglob("*.parquet")
        assert manifest["rows"][table] == pq.read_metadata(part).num_rows, table
    repo = Path(sim.__file__).resolve().parents[1]
    if (repo / ".git").exists() and shutil.which("git"):  # provenance: the commit this checkout is at
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert source["kind"] == "git checkout" and source["git_commit"] == head.strip()
        assert isinstance(source["git_dirty"], bool)


def test_verbose_logs_progress_and_quiet_prints_nothing(tmp_path, capsys):
    code, text, err = _run(capsys, "run", "quickstart", "--out", str(tmp_path / "v"), "-v", *SHORT)
    assert code == 0
    assert "sim.cli.commands: simulating quickstart" in err and "calls simulated in" in err
    code, text, err = _run(capsys, "-q", "run", "quickstart", "--out", str(tmp_path / "q"), *SHORT)
    assert code == 0 and text == "" and err == ""
    assert (tmp_path / "q" / "summary.parquet").is_file()


def test_run_refuses_a_folder_holding_a_run_or_a_sweep_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(capsys, "run", "quickstart", "--out", str(out), *SHORT)[0] == 0
    first = pq.read_table(out / "points.parquet")["point_id"][0].as_py()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    code, text, err = _run(capsys, "run", "quickstart", "--out", str(out), "--set", "duration_s=26")
    assert code == 2 and text == ""
    assert len(err.strip().splitlines()) == 1 and f"{out} already holds a run ({first})" in err and "--overwrite" in err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # untouched

    code, _, err = _run(capsys, "run", "quickstart", "--out", str(out), "--set", "duration_s=26", "--overwrite")
    assert code == 0, err
    second = pq.read_table(out / "points.parquet")["point_id"].to_pylist()
    assert len(second) == 1 and second[0] != first
    assert sorted(p.name for p in (out / "calls").iterdir()) == [f"point_id={second[0]}"]  # no stale partition
    assert not (out / first).exists()

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    (sweep / "points.parquet").write_bytes(b"")
    code, _, err = _run(capsys, "run", "quickstart", "--out", str(sweep), *SHORT)
    assert code == 2 and f"{sweep} already holds a sweep" in err


def test_overwrite_never_clears_files_dcsim_did_not_write(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "points.parquet").write_bytes(b"")
    code, text, err = _run(capsys, "run", "quickstart", "--out", str(mine), "--overwrite", *SHORT)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "notes.txt" in err and "did not write" in err
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "points.parquet").exists()
    (tmp_path / "afile").write_text("x")
    code, _, err = _run(capsys, "run", "quickstart", "--out", str(tmp_path / "afile"), *SHORT)
    assert code == 2 and "afile" in err and ("is a file" in err or "not a folder" in err)


def test_unknown_scenario_name_is_a_one_line_error(tmp_path, capsys):
    code, text, err = _run(capsys, "run", "quickstrat", "--out", str(tmp_path / "x"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "quickstrat" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_sweep_table_fits_80_columns_and_names_the_parquet_with_the_rest(tmp_path):
    """A real terminal-less sweep (subprocess, piped): headline columns only, a note, the next command."""
    out = "sw"
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "sweep", "quickstart", "--out", out, "--executor",
                           "serial", "--no-progress"], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**__import__("os").environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.rstrip("\n").splitlines()
    assert max(len(line) for line in lines) <= 80, proc.stdout
    assert "…" not in proc.stdout
    assert "rate_per_s" in proc.stdout and "TTFT" in proc.stdout
    for pid in pq.read_table(tmp_path / out / "points.parquet")["point_id"].to_pylist():
        assert pid in proc.stdout
    assert f"{out}/summary.parquet" in proc.stdout
    assert lines[-1] == f"next: dcsim report {out}   -> {out}/report.html"
