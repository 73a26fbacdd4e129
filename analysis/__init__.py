"""Analysis of dcsim outputs: reads only the Parquet tables a run or sweep wrote.

``load(out, "calls")`` returns one Arrow table for a whole run or sweep (every
committed point, with its ``point_id`` column); ``summary(out)`` the per-point
summary table. Convert with ``.to_pandas()`` or ``polars.from_arrow``.

:mod:`analysis.metrics` computes tidy per-point, per-class metrics (latency, SLO goodput,
throughput, utilization, queueing and Little's law, energy / cost / carbon per token, jobs and
sessions); :mod:`analysis.plots` draws them (matplotlib); :mod:`analysis.report` writes the
self-contained HTML page of ``dcsim report DIR``. The metric functions are re-exported here.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from sim.output import storage

__all__ = [
    "load", "summary", "metrics",
    "latency", "goodput", "throughput", "utilization", "wait_distribution", "queue_length", "littles_law",
    "littles_law_table", "energy_per_token", "class_energy", "per_job", "per_session", "jobs_by_strategy_table",
    "step_timeline", "class_slos", "windows",
]


def load(out: str, table: str, **to_table_options) -> pa.Table:
    """One table (``calls``, ``steps``, ``events``) of every committed point under ``out``."""
    return storage.read_table(out, table, **to_table_options)


def summary(out: str) -> pa.Table:
    """The per-point summary table of a run or sweep."""
    fs, base = storage.open_output(out)
    return pq.read_table(storage.join(base, "summary.parquet"), filesystem=fs)


from analysis import metrics  # noqa: E402  (after load / summary, which metrics uses)
from analysis.metrics import (  # noqa: E402
    class_energy,
    class_slos,
    energy_per_token,
    goodput,
    jobs_by_strategy_table,
    latency,
    littles_law,
    littles_law_table,
    per_job,
    per_session,
    queue_length,
    step_timeline,
    throughput,
    utilization,
    wait_distribution,
    windows,
)
