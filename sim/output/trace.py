"""Trace recorder: rows collected column-wise, flushed to Parquet in bounded memory.

One :class:`TableSink` per table (calls, steps, events). Model code appends rows
through :class:`Recorder` methods; a sink flushes a row group whenever its
buffer reaches ``row_group_rows``, so memory does not grow with run length. Files
are written under a hidden temporary name and moved into place on close, so a
reader of the dataset never sees a half-written table.

Appending a row costs one list append: a sink keeps its newest rows (at most
:data:`CHUNK_ROWS`) as tuples and turns them into Arrow columns a chunk at a time,
so the rest of the row group waits in typed columnar memory (8 bytes a number)
rather than as Python objects, and writing it is a copy.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from sim.output import arrow, storage

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # (only the compiler reads the decorator: without mypy it changes nothing)
    def mypyc_attr(*_args: Any, **_kwargs: Any) -> Any:  # type: ignore[misc]
        return lambda cls: cls

CALLS_SCHEMA = pa.schema(
    [
        ("call_id", pa.int64()),
        ("class", pa.string()),
        ("pool", pa.string()),
        ("replica", pa.int32()),
        ("job_id", pa.int64()),
        ("session_id", pa.int64()),
        ("priority", pa.int32()),
        ("status", pa.string()),
        ("arrival_s", pa.float64()),
        ("admitted_s", pa.float64()),
        ("first_token_s", pa.float64()),
        ("finish_s", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("generated_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),  # prompt tokens found in a shared prefix's KV blocks
        ("preemptions", pa.int32()),
        ("energy_j", pa.float64()),  # device energy attributed to the call (share of each iteration)
        ("device_s", pa.float64()),  # device-seconds attributed likewise
        ("kv_transfer_s", pa.float64()),  # disaggregation: KV cache moving from the prefill replica
    ]
)

STEPS_SCHEMA = pa.schema(
    [
        ("pool", pa.string()),
        ("replica", pa.int32()),
        ("kind", pa.string()),  # decode | mixed | prefill | idle | partial | down | off | booting
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("iterations", pa.int64()),
        ("batch_seqs", pa.int32()),
        ("prefill_tokens", pa.int64()),
        ("decode_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("waiting", pa.int32()),
        ("kv_blocks_used", pa.int64()),
        ("energy_j", pa.float64()),
        ("avg_power_w", pa.float64()),
    ]
)

EVENTS_SCHEMA = pa.schema(
    [
        ("time_s", pa.float64()),
        ("kind", pa.string()),
        ("pool", pa.string()),
        ("replica", pa.int32()),
        ("call_id", pa.int64()),
        ("detail", pa.string()),
    ]
)

JOBS_SCHEMA = pa.schema(
    [
        ("job_id", pa.int64()),
        ("class", pa.string()),
        ("pool", pa.string()),
        ("strategy", pa.string()),  # kind of the strategy that ran
        ("level", pa.string()),  # true difficulty level
        ("predicted_level", pa.string()),  # adaptive policies: what the predictor said
        ("width", pa.int32()),  # samples (best-of-N, self-consistency), beams, or rounds + 1
        ("thinking_budget_tokens", pa.int64()),  # -1: none
        ("status", pa.string()),  # finished | failed | timed-out
        ("arrival_s", pa.float64()),
        ("finish_s", pa.float64()),
        ("latency_s", pa.float64()),
        ("calls", pa.int32()),
        ("calls_cancelled", pa.int32()),
        ("prompt_tokens", pa.int64()),  # the question
        ("input_tokens", pa.int64()),  # all calls' prompts
        ("output_tokens", pa.int64()),  # all calls' generated tokens
        ("thinking_tokens", pa.int64()),
        ("truncated_samples", pa.int32()),
        ("cached_tokens", pa.int64()),  # prompt tokens served from shared prefix KV
        ("kv_saved_bytes", pa.float64()),  # KV not stored twice thanks to prefix sharing
        ("energy_j", pa.float64()),  # device energy attributed to its calls
        ("cost_usd", pa.float64()),  # attributed device-time and facility energy cost
        ("expected_accuracy", pa.float64()),
        ("correct", pa.bool_()),
    ]
)

SESSIONS_SCHEMA = pa.schema(
    [
        ("session_id", pa.int64()),
        ("class", pa.string()),
        ("pool", pa.string()),
        ("kv_policy", pa.string()),
        ("status", pa.string()),  # finished | failed | timed-out
        ("arrival_s", pa.float64()),
        ("finish_s", pa.float64()),
        ("e2e_s", pa.float64()),
        ("turns", pa.int32()),  # drawn
        ("turns_done", pa.int32()),
        ("ttft_mean_s", pa.float64()),  # over its turns
        ("ttft_max_s", pa.float64()),
        ("llm_s", pa.float64()),  # time in model calls
        ("tool_s", pa.float64()),  # tool calls and think time
        ("reload_s", pa.float64()),  # waiting for KV reloads from host memory
        ("prompt_tokens", pa.int64()),
        ("output_tokens", pa.int64()),
        ("cached_tokens", pa.int64()),  # prompt tokens found in the prefix cache
        ("recomputed_tokens", pa.int64()),  # history computed again (KV dropped, reclaimed or lost)
        ("kv_device_gib_s", pa.float64()),  # KV held on the device (during calls and pinned)
        ("kv_pinned_gib_s", pa.float64()),  # of which pinned between turns
        ("kv_host_gib_s", pa.float64()),  # KV held in host memory
        ("migrations", pa.int32()),  # moves off a full home replica
        ("energy_j", pa.float64()),  # its calls' device energy plus the idle power share of pinned KV
        ("cost_usd", pa.float64()),
    ]
)

VIDEOS_SCHEMA = pa.schema(
    [
        ("job_id", pa.int64()),
        ("class", pa.string()),
        ("pool", pa.string()),
        ("replica", pa.int32()),
        ("status", pa.string()),  # finished | timed-out
        ("arrival_s", pa.float64()),
        ("admitted_s", pa.float64()),  # start of its batch (NaN: never started)
        ("finish_s", pa.float64()),  # output decoded (NaN unless finished)
        ("latency_s", pa.float64()),  # finish - arrival
        ("frames", pa.int32()),
        ("steps", pa.int32()),
        ("resolution_scale", pa.float64()),  # pixel area over the card's default
        ("latent_tokens", pa.int64()),
        ("batch", pa.int32()),  # jobs in its batch (0: never started)
        ("device_s", pa.float64()),  # device-seconds attributed (its share of the batch)
        ("energy_j", pa.float64()),  # device energy attributed likewise
        ("cost_usd", pa.float64()),  # device_s x price + energy x usd_per_j
    ]
)

TRAINING_SCHEMA = pa.schema(
    [
        ("job_id", pa.int64()),
        ("class", pa.string()),
        ("pool", pa.string()),
        ("state", pa.string()),  # train | checkpoint | restart | wait (for a gang: no devices)
        ("status", pa.string()),  # kept (checkpointed) | lost (a failure or preemption undid it) | open (at the end) | "" (wait)
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("replicas", pa.int32()),  # the pool's replicas the job holds
        ("devices", pa.int32()),  # their devices
        ("dp", pa.int32()),  # data-parallel replicas running
        ("group_devices", pa.int32()),  # devices of one data-parallel replica (tp x pp): dp x this train
        ("steps", pa.int64()),  # optimizer steps done in the interval
        ("tokens", pa.int64()),  # tokens trained in the interval
        ("step_s", pa.float64()),  # seconds a step at this dp
        ("energy_j", pa.float64()),  # device energy of the held devices over the interval
    ]
)

SCHEMAS = {"calls": CALLS_SCHEMA, "steps": STEPS_SCHEMA, "events": EVENTS_SCHEMA, "jobs": JOBS_SCHEMA,
           "sessions": SESSIONS_SCHEMA, "videos": VIDEOS_SCHEMA, "training": TRAINING_SCHEMA}


# Rows a sink keeps as tuples before turning them into Arrow columns.
CHUNK_ROWS = 4096


@mypyc_attr(allow_interpreted_subclasses=True)  # (the in-memory sink is one)
class TableSink:
    """Buffers rows of one table by column and streams them to one Parquet file, one row group
    of ``row_group_rows`` rows at a time."""

    def __init__(self, fs: pafs.FileSystem | None, path: str | None, schema: pa.Schema, row_group_rows: int, compression: str):
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0  # rows written to the file
        self._rows: list[tuple] = []  # newest rows, as tuples
        self._chunks: list[pa.RecordBatch] = []  # older rows of the row group, columnar
        self._chunked = 0  # rows in _chunks
        self._limit = min(CHUNK_ROWS, row_group_rows)  # tuples kept before the next chunk
        self._fs: Any = fs  # None: a table counted, not written
        self._path: Any = path
        self._tmp: Any = None
        self._writer: Any = None
        self._compression = None if compression == "none" else compression

    @property
    def buffered(self) -> int:
        """Rows appended and not yet written."""
        return self._chunked + len(self._rows)

    def append(self, row: tuple) -> None:
        rows = self._rows
        rows.append(row)
        if len(rows) >= self._limit:
            self._columnize()

    def _columnize(self) -> None:
        """Turn the buffered tuples into a columnar chunk; write the row group once it is full."""
        rows = self._rows
        if not rows:
            return
        self._chunks.append(pa.record_batch([arrow.array(c, f.type) for c, f in zip(zip(*rows), self.schema)],
                                            schema=self.schema))
        self._chunked += len(rows)
        self._rows = []
        if self._chunked >= self.row_group_rows:
            self.flush()
        else:  # chunks end where the row group does
            self._limit = min(CHUNK_ROWS, self.row_group_rows - self._chunked)

    def buffered_table(self) -> pa.Table:
        """The rows appended and not yet written, as one table (a sink kept in memory)."""
        self._columnize()
        return pa.Table.from_batches(self._chunks, schema=self.schema).combine_chunks()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if self._fs is None:
            return
        if self._rows:
            self._columnize()  # (writes the row group itself if that fills it)
        n = self._chunked
        if n == 0:
            return
        table = pa.Table.from_batches(self._chunks, schema=self.schema).combine_chunks()
        self._chunks, self._chunked = [], 0
        self._limit = min(CHUNK_ROWS, self.row_group_rows)
        if self._writer is None:
            self._open()
        self._writer.write_table(table, row_group_size=n)
        self.rows += n

    def close(self) -> None:
        """Write what is buffered (an empty table if nothing) and move the file into place."""
        if self._fs is None:
            return
        self.flush()
        if self._writer is None:  # no rows: still write the table so readers see the schema
            self._open()
        self._writer.close()
        if self._tmp != self._path:
            self._fs.move(self._tmp, self._path)
        self._writer = None

    def _open(self) -> None:
        """Start the file: a hidden temporary name on a local disk (renamed on close); the
        final name on an object store, where an object appears only once its upload completes."""
        parent, name = self._path.rsplit("/", 1)
        self._fs.create_dir(parent, recursive=True)
        local = storage.is_local(self._fs)
        self._tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if local else self._path
        self._writer = pq.ParquetWriter(self._tmp, self.schema, filesystem=self._fs, compression=self._compression)

    def abort(self) -> None:
        """Drop a partly written file (after an error). The delete does not depend on the close:
        on a full disk closing the writer fails too (its footer cannot be written), and the
        temporary file must still go."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the file is being dropped; whatever the close says
            pass
        try:
            if storage.exists(self._fs, self._tmp):
                self._fs.delete_file(self._tmp)
        except OSError:
            pass


@mypyc_attr(allow_interpreted_subclasses=True)  # (the in-memory recorder is one)
class Recorder:
    """The one object model code reports to: calls, steps, events.

    ``tables`` maps a table name to ``(filesystem, path)``; a table that is not
    listed (or switched off in the trace options) is counted but not written.
    """

    def __init__(self, tables: dict[str, tuple[pafs.FileSystem, str]], row_group_rows: int = 65536, compression: str = "zstd",
                 schemas: dict[str, pa.Schema] | None = None):
        schemas = SCHEMAS if schemas is None else schemas  # a workload kind's own table joins these
        self.sinks = {}
        for name, schema in schemas.items():
            fs, path = tables.get(name, (None, None))
            self.sinks[name] = TableSink(fs, path, schema, row_group_rows, compression)
        self._calls = self.sinks["calls"]
        self._steps = self.sinks["steps"]
        self._events = self.sinks["events"]
        self.calls_recorded = 0

    def call(self, c) -> None:
        """A call reached its terminal status: ``c.row()`` is its row, in the order of
        :data:`CALLS_SCHEMA` (built by the call's own typed class, which reads its fields
        without a generic attribute lookup each)."""
        self.calls_recorded += 1
        if self._calls._fs is None:
            return
        self._calls.append(c.row())

    def step(self, pool: str, replica: int, kind: str, start_s: float, end_s: float, iterations: int, batch_seqs: int,
             prefill_tokens: int, decode_tokens: int, output_tokens: int, waiting: int, kv_blocks_used: int,
             energy_j: float) -> None:
        sink = self._steps
        if sink._fs is None:
            return
        dur = end_s - start_s
        power = energy_j / dur if dur > 0 else math.nan
        rows = sink._rows  # (TableSink.append, inlined: one row per engine run)
        rows.append((pool, replica, kind, start_s, end_s, iterations, batch_seqs, prefill_tokens, decode_tokens,
                     output_tokens, waiting, kv_blocks_used, energy_j, power))
        if len(rows) >= sink._limit:
            sink._columnize()

    def event(self, time_s: float, kind: str, pool: str, replica: int, call_id: int, detail: str = "") -> None:
        if self._events._fs is None:
            return
        self._events.append((time_s, kind, pool, replica, call_id, detail))

    def row(self, table: str, row: tuple) -> None:
        """A unit of a workload kind ended (a job, a session, a video): its row, in the order
        of the table's schema."""
        sink = self.sinks[table]
        if sink._fs is not None:
            sink.append(row)

    def close(self) -> None:
        for s in self.sinks.values():
            s.close()

    def abort(self) -> None:
        for s in self.sinks.values():
            s.abort()
