"""What ``dcsim run --out`` may write into: a new or empty folder, or, with ``--overwrite``, a
folder holding only an earlier run or sweep, which is cleared first.

A run into a sweep's folder would replace its points and summary by one row and leave the other
points' partitions behind; a run into another run's folder would leave that run's partitions
beside its own. Both are refused (exit 2) unless the user asks for ``--overwrite``; even then
a folder holding anything dcsim does not write (a user's notes, a home folder given by mistake)
is never cleared.
"""

from __future__ import annotations

import re

from sim.errors import ScenarioError
from sim.output import storage

# What dcsim writes at the top of an output folder (sim/run.py, sim/sweep.py, sim/output/storage.py,
# analysis/report.py); point folders (p + 12 hex digits) and atomic-write temporaries besides.
OUTPUT_FILES = {"points.parquet", "summary.parquet", "sweep.json", "report.html"}
OUTPUT_DIRS = {"calls", "steps", "events", "jobs", "sessions", "videos", "training", "economics", storage.COMMITS_DIR,
               storage.FAILURES_DIR}
_POINT_DIR = re.compile(r"p[0-9a-f]{12}")
_TEMPORARY = re.compile(r"\..+\.tmp-[0-9a-f]{32}")


def _is_ours(info) -> bool:
    name = info.base_name
    if info.type == storage.pafs.FileType.Directory:
        return name in OUTPUT_DIRS or bool(_POINT_DIR.fullmatch(name))
    return name in OUTPUT_FILES or bool(_TEMPORARY.fullmatch(name))


def _describe(entries: list) -> str:
    names = {e.base_name for e in entries}
    if "sweep.json" in names:
        return "a sweep"
    points = sorted(n for n in names if _POINT_DIR.fullmatch(n))
    if points:
        return f"a run ({', '.join(points[:3])}{', ...' if len(points) > 3 else ''})"
    return "dcsim output"


def prepare_run_out(out: str, shown: str, overwrite: bool, source: str) -> None:
    """Check ``out`` before a run writes anything; with ``overwrite``, clear an earlier run or sweep.

    ScenarioError (one line, exit 2) when ``out`` is a file, or a non-empty folder without
    ``overwrite``, or a folder holding files dcsim did not write."""
    fs, base = storage.open_output(out)
    info = fs.get_file_info(base)
    if info.type == storage.pafs.FileType.File:
        raise ScenarioError(source, "--out", f"{shown} is a file, not a folder")
    if info.type != storage.pafs.FileType.Directory:
        return
    entries = fs.get_file_info(storage.pafs.FileSelector(base))
    if not entries:
        return
    foreign = sorted(e.base_name for e in entries if not _is_ours(e))
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ScenarioError(source, "--out", f"{shown} is not empty and holds files dcsim did not write ({listed}); "
                                             "choose a new or empty folder")
    if not overwrite:
        raise ScenarioError(source, "--out", f"{shown} already holds {_describe(entries)}; pass --overwrite to "
                                             "replace it, or choose a new --out")
    fs.delete_dir_contents(base)
