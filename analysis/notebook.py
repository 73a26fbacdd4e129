"""Helpers of the analysis notebooks: find the folder to analyse from any working directory,
find a shipped scenario, show tables as DataFrames and figures as PNGs.

Jupyter starts a notebook's kernel in the notebook's own folder, not where the user typed
``DCSIM_NOTEBOOK_OUT=results/sw jupyter lab ...``; :func:`find_output` therefore resolves a
relative ``DCSIM_NOTEBOOK_OUT`` against the directory the user started from (``$PWD``, which
the shell set and the kernel inherits unchanged), then the kernel's working directory, then
the project root, and takes the first that holds a run or sweep (a ``summary.parquet``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_output", "project_root", "scenario_path", "show", "plot", "table"]


def project_root() -> Path:
    """The folder holding the ``analysis`` package (the clone, for an editable install)."""
    return Path(__file__).resolve().parents[1]


def _bases() -> list[Path]:
    bases = []
    for b in (os.environ.get("PWD"), os.getcwd(), str(project_root())):
        if b and Path(b) not in bases:
            bases.append(Path(b))
    return bases


def find_output(value: str | None) -> str | None:
    """The run or sweep folder named by ``value`` (``DCSIM_NOTEBOOK_OUT``), as an absolute path
    or URI; None when ``value`` is empty. A relative path is tried against ``$PWD``, the working
    directory and the project root; FileNotFoundError lists the places tried when none has a
    ``summary.parquet``."""
    if not value:
        return None
    if "://" in value:
        return value
    path = Path(value).expanduser()
    tried = [path] if path.is_absolute() else [b / path for b in _bases()]
    for p in tried:
        if (p / "summary.parquet").exists():
            return str(p.resolve())
    raise FileNotFoundError(f"DCSIM_NOTEBOOK_OUT={value}: no dcsim run or sweep (summary.parquet) in "
                            + ", ".join(str(p) for p in tried))


def scenario_path(name: str) -> Path:
    """A shipped scenario (``quickstart.yaml``) from the project's ``scenarios/`` folder, looked
    up from the project root, ``$PWD`` and the working directory and their parents."""
    starts = [project_root(), *_bases()]
    for start in starts:
        for folder in (start, *start.parents):
            if (folder / "scenarios" / name).is_file():
                return folder / "scenarios" / name
    raise FileNotFoundError(f"scenario {name} not found under {', '.join(map(str, starts))} or their parents")


def table(rows, cols: list[str] | None = None, n: int = 50):
    """An Arrow table or list of dicts as a pandas DataFrame (first ``n`` rows, ``cols`` in order)."""
    import pandas as pd

    if hasattr(rows, "to_pylist"):
        rows = rows.to_pylist()
    rows = list(rows)[:n]
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df.columns]] if cols else df


def show(rows, cols: list[str] | None = None, n: int = 50) -> None:
    """Display :func:`table` in the notebook (an HTML table, 4 significant digits)."""
    import pandas as pd
    from IPython.display import display

    with pd.option_context("display.precision", 4, "display.max_columns", 40, "display.width", 200):
        display(table(rows, cols, n))


def plot(fig, dpi: int = 90) -> None:
    """Display a matplotlib Figure of :mod:`analysis.plots` as a PNG (works with any backend)."""
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    display(Image(data=buf.getvalue()))
