"""Tables kept in memory instead of Parquet files: what a one-replica estimate and the tests read a
short run's calls and steps from."""

from __future__ import annotations

import pyarrow as pa

from sim.output.trace import SCHEMAS, Recorder, TableSink


class MemorySink(TableSink):
    """A table kept in memory: rows are buffered by column and never flushed to a file."""

    def __init__(self, schema: pa.Schema):
        super().__init__(None, None, schema, row_group_rows=1 << 62, compression="none")
        self._fs = self  # the recorder skips tables without a filesystem; this one records

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def table(self) -> pa.Table:
        return self.buffered_table()


class MemoryRecorder(Recorder):
    """Recorder of the calls and steps tables in memory (events are counted only)."""

    def __init__(self):
        super().__init__({})
        self._calls = self.sinks["calls"] = MemorySink(SCHEMAS["calls"])
        self._steps = self.sinks["steps"] = MemorySink(SCHEMAS["steps"])

    def table(self, name: str) -> pa.Table:
        return self.sinks[name].table()
