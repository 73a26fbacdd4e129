"""The analysis notebooks run from top to bottom in the notebook's own folder (as Jupyter runs
them), show tables as DataFrames, and find a relative DCSIM_NOTEBOOK_OUT from where the user
started; the generated files are what make_notebooks.py writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("pandas")

from analysis.notebook import find_output  # noqa: E402
from sim.sweep import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "analysis" / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))


def test_all_notebooks_present_and_generated(tmp_path):
    assert {p.stem for p in NOTEBOOKS} == {"quickstart_sweep", "test_time_compute", "agent_kv"}
    # make_notebooks.py writes exactly the committed files (edit it, not the .ipynb)
    subprocess.run([sys.executable, str(FOLDER / "make_notebooks.py"), str(tmp_path)], check=True, timeout=120)
    assert {p.name: p.read_bytes() for p in sorted(tmp_path.glob("*.ipynb"))} == {p.name: p.read_bytes() for p in NOTEBOOKS}


def _execute(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    # the kernel runs in the notebook's folder, as Jupyter starts it
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(FOLDER)}})
    client.execute()
    return nb


def _outputs(nb, mime: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if mime in o.get("data", {})]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    """A directory the user starts Jupyter from, holding a short quickstart sweep in results/sw."""
    home = tmp_path_factory.mktemp("user")
    raw = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    raw.update(duration_s=30.0, warmup_s=8.0, drain_s=90.0)
    run_sweep(raw, str(home / "results" / "sw"), source=str(ROOT / "scenarios" / "quickstart.yaml"),
              executor="serial", progress=False)
    return home


def test_relative_output_is_found_from_where_the_user_started(user_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("PWD", str(user_dir))
    monkeypatch.chdir(tmp_path)  # the kernel's working directory is elsewhere
    assert find_output("results/sw") == str((user_dir / "results" / "sw").resolve())
    assert find_output(None) is None
    with pytest.raises(FileNotFoundError, match="results/nothing.*summary.parquet"):
        find_output("results/nothing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, user_dir, monkeypatch):
    if path.stem == "quickstart_sweep":  # analyse the user's sweep, named relative to where they started
        monkeypatch.setenv("DCSIM_NOTEBOOK_OUT", "results/sw")
        monkeypatch.setenv("PWD", str(user_dir))
    else:  # no folder given: the notebook runs its own short sweep
        monkeypatch.delenv("DCSIM_NOTEBOOK_OUT", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _execute(path)
    assert _outputs(nb, "image/png"), "no figure rendered"
    frames = _outputs(nb, "text/html")
    assert frames and all("<table" in "".join(o["data"]["text/html"]) for o in frames), "tables are not DataFrames"
    if path.stem == "quickstart_sweep":
        text = "".join("".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert f"analysing {(user_dir / 'results' / 'sw').resolve()}" in text
