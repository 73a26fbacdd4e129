"""The shards' tables merged into one run's tables, in shard order.

Each shard numbers its calls, units and replicas from 0. In the merged tables a replica keeps the
index it has in the unsplit world (pool by pool, in the pool's order; sim/shard/split.py), and
an id ``i`` of shard ``k`` of ``N`` (``call_id``, ``job_id``, ``session_id``; -1 stays -1)
becomes ``i * N + k``: unique over the run, and with one shard the id itself. The rows of shard
0 come first, then shard 1's, and so on, so the merged files depend only on what the shards
computed. Each table is written under a hidden name and moved into place whole
(sim/output/storage.py), one row group in memory at a time.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sim.output import storage

ID_COLUMNS = ("call_id", "job_id", "session_id")


def remap(table: pa.Table, k: int, n: int, replicas: np.ndarray) -> pa.Table:
    """Shard ``k``'s table with global ids and replica indices."""
    for name in ID_COLUMNS:
        if name in table.column_names:
            col = table[name]
            i = table.schema.get_field_index(name)
            ids = pc.if_else(pc.less(col, 0), col, pc.add(pc.multiply(col, n), k)).cast(col.type)
            table = table.set_column(i, table.schema.field(i), ids)
    if "replica" in table.column_names and table.num_rows:
        i = table.schema.get_field_index("replica")
        local = table["replica"].to_numpy(zero_copy_only=False)
        mapped = np.where(local >= 0, replicas[np.clip(local, 0, len(replicas) - 1)], local)
        table = table.set_column(i, table.schema.field(i), pa.array(mapped, table.schema.field(i).type))
    return table


def merge_tables(fs, shard_paths: list[dict], out_paths: dict, replicas: list[list[int]], trace) -> dict:
    """Merge each table of the shards (``shard_paths[k][table]``) into ``out_paths[table]``;
    return the rows of each merged table."""
    n = len(shard_paths)
    maps = [np.asarray(r, dtype=np.int64) for r in replicas]
    rows = {}
    for table, path in out_paths.items():
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        local = storage.is_local(fs)
        tmp = storage._tmp_name(path) if local else path
        writer = None
        rows[table] = 0
        try:
            for k in range(n):
                with pq.ParquetFile(shard_paths[k][table], filesystem=fs) as src:
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, src.schema_arrow, filesystem=fs, compression=trace.compression)
                    for i in range(src.num_row_groups):  # a row group at a time: memory bounded as the recorder's
                        part = remap(src.read_row_group(i), k, n, maps[k])
                        writer.write_table(part, row_group_size=trace.row_group_rows)
                        rows[table] += part.num_rows
            writer.close()
            writer = None
            if tmp != path:
                fs.move(tmp, path)
        except BaseException:
            if writer is not None:
                writer.close()
            storage._delete_quietly(fs, tmp)
            raise
    return rows
