"""The README as a script: every ```bash block, in order, in a fresh clone of this working tree,
so the README cannot drift from the code.

The blocks run as written in one bash session, with three shortcuts the README names or that
leave the commands unchanged: ``DCSIM_QUICK_DURATION_S`` cuts each simulated run to a few seconds;
the clone's ``.venv`` is prepared beforehand to reuse this venv's installed packages (through a
``.pth`` line) so ``pip install`` finds every dependency installed (it still fetches setuptools
for its isolated build, as for a user); and the test
command collects the suite (``PYTEST_ADDOPTS=--collect-only``) instead of running it inside
itself. The ```bash cluster block (``ray up`` on AWS) and the ```bash slow block (two capacity plans,
minutes each) are left out.

Cost: about 3 minutes of CPU (ten embedded-Ray sweeps and two venvs); on a shared, loaded
2-core machine it took 10 to 12.5 minutes of wall time, hence the generous timeout.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(bash[^\n]*)\n(.*?)^```", re.M | re.S)


def shell_blocks(text: str) -> list[str]:
    """The bodies of the README's ```bash blocks, in order, without those tagged ``cluster`` (a
    cloud account) or ``slow`` (the capacity plans: minutes each; tests/test_plan.py runs the
    planner)."""
    return [body for info, body in BLOCK.findall(text) if not {"cluster", "slow"} & set(info.split()[1:])]


def _fresh_clone(dst: Path) -> Path:
    """``git clone`` of this repository, with the working tree's uncommitted changes laid over it."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dst)], check=True, timeout=120)
    changed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--modified", "--others", "--exclude-standard"],
                             capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, changed):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
        elif not src.exists() and (dst / rel).exists():
            (dst / rel).unlink()  # deleted in the working tree
    return dst


def test_readme_has_the_commands_this_test_relies_on():
    blocks = shell_blocks((REPO / "README.md").read_text())
    text = "\n".join(blocks)
    assert "dcsim sweep scenarios/quickstart.yaml --out results/quickstart" in blocks[0]
    assert "python -m pytest" in blocks[1]
    assert "ray up" not in text  # the cluster block is tagged and left out
    assert text.count("--out results/sw ") + text.count("--out results/sw\n") == 1  # one sweep into it


@pytest.mark.readme
@pytest.mark.timeout(1800)
def test_readme_shell_blocks_run_in_order_in_a_fresh_clone(tmp_path):
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: no fresh clone to make")
    clone = _fresh_clone(tmp_path / "clone")
    # python3 of the README is this venv's base interpreter, whose venv can reuse this venv's packages
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(bindir / "python3"), "-m", "venv", str(clone / ".venv")], check=True, timeout=120)
    site = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "zz_project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    ray_tmp = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS", "DCSIM_HARDWARE")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", DCSIM_QUICK_DURATION_S="10",
               PYTEST_ADDOPTS="--collect-only -q -p no:cacheprovider",
               PIP_DISABLE_PIP_VERSION_CHECK="1", RAY_TMPDIR=ray_tmp, RAY_DISABLE_USAGE_STATS="1", COLUMNS="80")
    script = "set -euo pipefail\n" + "".join(f"echo '### README block {i}' >&2\n{body}"
                                            for i, body in enumerate(shell_blocks((clone / "README.md").read_text())))
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True, timeout=1700)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-5000:]}"

    res = clone / "results"
    assert pq.read_table(res / "quickstart" / "summary.parquet").num_rows == 3
    assert pq.read_table(res / "one" / "points.parquet").num_rows == 1
    assert (res / "sw" / "report.html").stat().st_size > 0
    assert re.search(r"^tests/test_readme\.py: 2$", proc.stdout, re.M), proc.stdout[-2000:]  # the suite collected
    assert '"output_tokens_per_s"' in proc.stdout  # dcsim estimate --json
