"""Reading the data files a workload names: CSV tables (empirical lengths, rate schedules) and
traces (CSV or JSON lines), as rows of numbers in time order.

Files are read through sim.config.files (regular UTF-8 files within DCSIM_MAX_FILE_MB). Every
cell a simulation uses must be a finite number; a bad one is refused naming the file, the key and
the row, never the cell or any other content of the file (a file that is no trace at all, say a
password file, must not have its first line printed as "the columns").
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from sim import config as C
from sim.config.base import MAX_TOKENS
from sim.config.files import read_user_text
from sim.errors import ScenarioError


def finite(value) -> float:
    """A cell as a finite float; ValueError for text, null, lists, booleans, inf and NaN."""
    if value is None or isinstance(value, (bool, list, dict)):
        raise ValueError("not a number")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError("not finite")
    return x


def _user_path(base_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else base_dir / p


def read_csv(base_dir: Path, path: str, key: str) -> list[dict]:
    """Rows of a CSV file named by the scenario (a regular UTF-8 file within DCSIM_MAX_FILE_MB);
    a short row's missing cells read as empty. Errors name the file and the row, never a cell."""
    p = _user_path(base_dir, path)
    text = read_user_text(p, key, "trace file")
    try:
        return list(csv.DictReader(io.StringIO(text, newline=""), restval=""))
    except csv.Error as e:
        line = getattr(e, "line_num", None)
        raise ScenarioError(str(p), key, "not a well-formed CSV file" + (f" (line {line})" if line else "")) from None


def load_trace(arrival: C.TraceArrivals, base_dir: Path, key: str):
    """(times_s, prompt_tokens or None, output_tokens or None) of a trace, times from start_s."""
    return load_trace_with_hashes(arrival, base_dir, key)[:3]


def load_trace_with_hashes(arrival: C.TraceArrivals, base_dir: Path, key: str):
    """(times_s, prompt_tokens or None, output_tokens or None, prefix hashes or None) of a
    trace (CSV, or JSON lines for a ``.jsonl`` path), in time order, times from start_s."""
    rows = _read_rows(base_dir, arrival.path, key)[: arrival.limit]
    src = str(_user_path(base_dir, arrival.path))
    if not rows:
        raise ScenarioError(src, key, "trace has no rows")
    for col in (arrival.time_column, arrival.prompt_column, arrival.output_column, arrival.hash_column):
        if col and col not in rows[0]:
            # the header is not shown: a file that is no trace would have its first line printed
            raise ScenarioError(src, key, f"no column {col!r} in the trace's header ({len(rows[0])} columns)")
    t = _trace_times(rows, arrival.time_column, src, key)
    order = np.argsort(t, kind="stable")
    t = (t[order] - t[order][0]) * arrival.time_scale + arrival.start_s
    if not np.isfinite(t).all():
        raise ScenarioError(src, f"{key}.time_scale", "the trace's times, scaled, are out of range")

    def col(name):
        if not name:
            return None
        v = np.empty(len(rows), dtype=np.int64)
        for i, r in enumerate(rows):
            try:
                x = round(finite(r[name]))
            except ValueError:
                raise ScenarioError(src, key, f"row {i + 1}: column {name!r} is not a finite number") from None
            if not 0 <= x <= MAX_TOKENS:
                raise ScenarioError(src, key, f"row {i + 1}: column {name!r} must be a token count from 0 to "
                                              f"{MAX_TOKENS:.0e}")
            v[i] = max(1, x)  # an empty prompt or output still takes one token
        return v[order]

    hashes = None
    if arrival.hash_column:
        h = [r[arrival.hash_column] for r in rows]
        if not all(isinstance(x, list) for x in h):
            raise ScenarioError(src, key, f"column {arrival.hash_column!r} must hold lists of prefix-block hashes")
        try:
            hashes = chain_block_ids([h[i] for i in order])
        except TypeError:
            raise ScenarioError(src, key, f"column {arrival.hash_column!r} must hold lists of numbers or strings") from None
    return t, col(arrival.prompt_column), col(arrival.output_column), hashes


def _trace_times(rows: list[dict], column: str, src: str, key: str) -> np.ndarray:
    """The time column as seconds (numbers) or, if any value is not a number, date-times;
    every value finite. Errors name the row, not the value."""
    t = np.empty(len(rows))
    for i, r in enumerate(rows):
        x = r[column]
        try:
            v = None if x is None or isinstance(x, (bool, list, dict)) else float(x)
        except ValueError:
            v = None
        if v is None:
            break  # not seconds: date-times
        if not math.isfinite(v):
            raise ScenarioError(src, key, f"row {i + 1}: column {column!r} is not a finite number")
        t[i] = v
    else:
        return t
    for i, r in enumerate(rows):
        x = r[column]
        try:
            t[i] = finite(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else _parse_time(x)
        except (ValueError, TypeError, AttributeError, OverflowError, OSError):
            raise ScenarioError(src, key, f"row {i + 1}: column {column!r} holds neither finite seconds nor a "
                                          "date-time") from None
    return t


def chain_block_ids(rows: list[list]) -> list[tuple[int, ...]]:
    """Each request's per-block ids made into prefix keys, as vLLM chains its block hashes: a
    block's key stands for its id and every id before it, so two requests share a cached block
    only where they agree on all blocks up to it. Ids that are already chained (the Mooncake
    traces') keep their sharing exactly; ids that are not (one repeated within a request, or
    reused at another position) would otherwise alias unrelated cache blocks."""
    table: dict = {}
    out = []
    for ids in rows:
        prev, keys = -1, []
        for h in ids:
            prev = table.setdefault((prev, h), len(table))
            keys.append(prev)
        out.append(tuple(keys))
    return out


def _read_rows(base_dir: Path, path: str, key: str) -> list[dict]:
    """Rows of a CSV file, or of a JSON-lines file (``.jsonl``)."""
    if not path.endswith(".jsonl"):
        return read_csv(base_dir, path, key)
    p = _user_path(base_dir, path)
    lines = read_user_text(p, key, "trace file").splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScenarioError(str(p), key, f"line {i}: not JSON ({e.msg})") from None
        except RecursionError:
            raise ScenarioError(str(p), key, f"line {i}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise ScenarioError(str(p), key, f"line {i}: expected a JSON object")
        rows.append(row)
    return rows


def _parse_time(s: str) -> float:
    s = s.strip()
    # Azure traces carry 7 fractional digits; datetime takes at most 6.
    if "." in s:
        head, frac = s.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        tail = frac[len(digits):]
        s = f"{head}.{digits[:6]}{tail}"
    return datetime.fromisoformat(s).timestamp()
