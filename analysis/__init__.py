"""Analysis of dcsim outputs: reads only the Parquet tables a run or sweep wrote.

``load(out, "calls")`` returns one Arrow table for a whole run or sweep (every
committed point, with its ``point_id`` column); ``summary(out)`` the per-point
summary table. Convert with ``.to_pandas()`` or ``polars.from_arrow``.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from sim import storage


def load(out: str, table: str, **to_table_options) -> pa.Table:
    """One table (``calls``, ``steps``, ``events``) of every committed point under ``out``."""
    return storage.read_table(out, table, **to_table_options)


def summary(out: str) -> pa.Table:
    """The per-point summary table of a run or sweep."""
    fs, base = storage.open_output(out)
    return pq.read_table(storage.join(base, "summary.parquet"), filesystem=fs)
