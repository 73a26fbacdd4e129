"""The package as a user gets it: a wheel built from the repository, installed into a fresh venv
outside the clone, simulates a shipped scenario by name and estimates a replica; and the pins CI
installs with cover every dependency pyproject.toml declares."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "build", "dist", "results", ".pytest_cache", ".hypothesis", "__pycache__"}


def _copy_source(dst: Path) -> Path:
    """The repository's files without venvs, build folders and results (what a clone has)."""
    def ignore(folder, names):
        return [n for n in names if n in SKIP or n.startswith(".venv") or n.endswith(".egg-info")]

    shutil.copytree(REPO, dst, ignore=ignore)
    return dst


@pytest.mark.timeout(240)
def test_wheel_installed_outside_the_clone_runs_a_shipped_scenario_and_estimate(tmp_path):
    src = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    # no build isolation and no index: setuptools comes from the test extra, so this runs offline
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", "-w", str(wheels), str(src)], capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("dcsim-*.whl")

    # a fresh venv outside the clone; the project venv's installed dependencies are reused through a
    # .pth line (its editable dcsim hook is not: .pth files of an added folder are not processed)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                           "--no-index", str(wheel)], capture_output=True, text=True, timeout=120)
    assert inst.returncode == 0, inst.stderr[-3000:]

    work = tmp_path / "elsewhere"  # not the clone: nothing found through the working directory
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DCSIM_HARDWARE", "RAY_ADDRESS")}
    dcsim = str(venv / "bin" / "dcsim")

    def run(*args):
        return subprocess.run([dcsim, *args], capture_output=True, text=True, timeout=120, cwd=work, env=env)

    where = subprocess.run([str(py), "-c", "import sim, sim.resources as r; print(sim.__file__); "
                            "print(r.hardware_dir()); print(r.scenarios_dir())"],
                           capture_output=True, text=True, cwd=work, env=env, check=True).stdout.split()
    assert all(p.startswith(site) for p in where), where  # the wheel's own code and data, not the repository's

    res = run("run", "quickstart", "--out", "one", "--set", "duration_s=25")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "next: dcsim report one" in res.stdout
    summary = pq.read_table(work / "one" / "summary.parquet").to_pylist()
    assert len(summary) == 1 and summary[0]["scenario"] == "quickstart" and summary[0]["calls_measured"] > 0
    manifest = json.loads((work / "one" / summary[0]["point_id"] / "manifest.json").read_text())
    assert manifest["source"] == {"kind": "installed package", "distribution_version": "0.1.0", "git_commit": None}

    res = run("estimate", "--hardware", "h100-sxm", "--model", "llama-3.1-8b", "--concurrency", "8",
              "--prompt-tokens", "200", "--output-tokens", "50", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    est = json.loads(res.stdout)
    assert est["output_tokens_per_s"] > 0 and est["kv_blocks"] > 0
    lo, hi = est["output_tokens_per_s_p10_p90"]  # the shipped interval table travels with the wheel
    assert 0 < lo < hi and summary[0]["output_tokens_per_s_p10"] > 0

    res = run("--version")
    assert res.returncode == 0 and res.stdout.strip() == "dcsim 0.1.0 (engine: pure Python)"


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_constraints_pin_every_declared_dependency_within_its_range():
    from packaging.requirements import Requirement

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(meta["dependencies"]) + [r for extra in meta["optional-dependencies"].values() for r in extra]
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version
    for req in map(Requirement, declared):
        name = _name(req.name)
        assert name in pins, f"constraints.txt has no pin for {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} outside {req.specifier}"
