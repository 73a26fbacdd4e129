"""A run imports only what its scenario uses: a chat run never loads scipy (the quality model's
curves import it at their first use) nor pandas (installed by the test extra; pyarrow would import
it from its converters, which sim.output.arrow avoids), nor pyarrow's compute functions (~0.1 s),
or its CSV reader (the summary reads strings without them); and
``dcsim --help`` loads neither the simulator nor yaml."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# runs the command line in this process, then prints the top-level packages it imported
PROBE = """
import runpy, sys
sys.argv = ["dcsim"] + sys.argv[1:]
try:
    runpy.run_module("sim.cli", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
print(sorted(sys.modules))
"""


def _imported(tmp_path, *args) -> set:
    """Every module the command imported, and each top-level package of them."""
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    modules = set(ast.literal_eval(r.stdout.strip().splitlines()[-1]))
    return modules | {m.split(".")[0] for m in modules}


def test_chat_run_does_not_import_scipy_or_pandas(tmp_path):
    mods = _imported(tmp_path, "run", "scenarios/vidur_reference.yaml", "--out", str(tmp_path / "out"),
                     "--set", "duration_s=5")
    assert "sim" in mods and "simpy" in mods and "rich" in mods  # it did simulate and print its summary
    assert "scipy" not in mods
    assert "pandas" not in mods  # (run_point, its summary and the tables the command line writes)
    assert not {"pyarrow.compute", "pyarrow.csv", "pyarrow.dataset"} & mods
    assert not {"ray", "sim.shard", "sim.plan", "sim.tools", "sim.sweep", "analysis"} & mods


def test_help_imports_no_simulator(tmp_path):
    mods = _imported(tmp_path, "--help")
    assert not {"scipy", "simpy", "pyarrow", "pydantic", "yaml", "numpy"} & mods
