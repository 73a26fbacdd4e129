"""sim.output.arrow builds and reads columns exactly as pyarrow's own converters do (which import
pandas): same types, nulls, values and Parquet bytes, on many generated inputs."""

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim.output import arrow
from sim.output.trace import SCHEMAS

RNG = np.random.default_rng(7)
WORDS = ["", "ok", "finished", "prefilled", "pool-a", "größe", "日本", "x" * 40]


def _values(t: pa.DataType, n: int, nulls: bool) -> list:
    if t == pa.string():
        vals = [WORDS[i] for i in RNG.integers(0, len(WORDS), n)]
    elif t == pa.bool_():
        vals = [bool(b) for b in RNG.integers(0, 2, n)]
    elif pa.types.is_floating(t):
        vals = [float(v) for v in RNG.normal(0, 1e6, n)]
        vals[: n // 10] = [math.nan] * (n // 10)  # NaN is a value, not a null
    else:
        info = np.iinfo(arrow.NUMPY_DTYPES[t])
        vals = [int(v) for v in RNG.integers(info.min, info.max, n, endpoint=True)]
    if nulls:
        for i in RNG.integers(0, n, max(1, n // 7)) if n else []:
            vals[i] = None
    return vals


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


TYPES = [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.float32(), pa.float64(), pa.bool_(), pa.string()]


@pytest.mark.parametrize("t", TYPES, ids=str)
def test_array_equals_pyarrow(t):
    for n in (0, 1, 7, 8, 9, 100, 4096):
        for nulls in (False, True):
            vals = _values(t, n, nulls)
            ours, ref = arrow.array(vals, t), pa.array(vals, t)
            ours.validate(full=True)
            assert ours.type == ref.type and ours.null_count == ref.null_count
            assert _parquet(pa.table({"c": ours})) == _parquet(pa.table({"c": ref}))
            # tuples (as a sink's zip of rows gives) and numpy scalars convert alike
            assert _parquet(pa.table({"c": arrow.array(tuple(vals), t)})) == _parquet(pa.table({"c": ref}))


def test_odd_values_get_pyarrow_own_result_or_error():
    cases = [([1.5, 2.0], pa.int64()), ([2.0, None], pa.int64()), ([2**31], pa.int32()), ([-1], pa.uint8()),
             ([2], pa.bool_()), (["a", 3], pa.string()), (["1.5"], pa.float64()), ([True, None], pa.float64()),
             ([np.float64(2.5)], pa.float64()), ([np.int64(7), 3], pa.int32()), ([np.True_, False], pa.bool_())]
    for values, t in cases:
        try:
            ref = pa.array(values, t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as e:
            with pytest.raises(type(e)):
                arrow.array(values, t)
        else:
            assert _parquet(pa.table({"c": arrow.array(values, t)})) == _parquet(pa.table({"c": ref})), values


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return np.array_equal(a, b, equal_nan=True)
    return a.tolist() == b.tolist()


@pytest.mark.parametrize("t", TYPES, ids=str)
def test_to_numpy_equals_pyarrow(t):
    for n in (0, 1, 9, 1000):
        for nulls in (False, True):
            vals = _values(t, n, nulls)
            col = pa.array(vals, t)
            assert _same(arrow.to_numpy(col), col.to_numpy(zero_copy_only=False))
            if n > 3:  # slices (a buffer offset) and chunked columns
                s = col.slice(3, n - 5)
                assert _same(arrow.to_numpy(s), s.to_numpy(zero_copy_only=False))
                ch = pa.chunked_array([col.slice(0, 2), col.slice(2)])
                assert _same(arrow.to_numpy(ch), ch.to_numpy())
            assert _same(arrow.to_numpy(pa.chunked_array([], t)), pa.chunked_array([], t).to_numpy())


@pytest.mark.parametrize("keys_bytes_max", [arrow._KEYS_BYTES_MAX, 100])
def test_strings_to_numpy_edge_words(keys_bytes_max, monkeypatch):
    """Distinct words found from the buffers (no hash kernel): words with NUL bytes, prefixes of
    each other, empty, non-ASCII; words longer than the numpy keys, and columns whose keys would
    take too much memory, through pyarrow's encoding."""
    monkeypatch.setattr(arrow, "_KEYS_BYTES_MAX", keys_bytes_max)
    words = ["a", "a\x00", "a\x00\x00", "", "ab", "b", "日本", "x" * 64, "x" * 65, "y" * 300]
    for pool in (words[:7], words[:8], words):
        for nulls in (False, True):
            vals = [pool[i] for i in RNG.integers(0, len(pool), 500)]
            if nulls:
                vals[::9] = [None] * len(vals[::9])
            col = pa.array(vals, pa.string())
            for c in (col, col.slice(5, 400), col.slice(490, 7), col.cast(pa.large_string())):
                assert _same(arrow.to_numpy(c), c.to_numpy(zero_copy_only=False))


def test_mask_filters_like_pyarrow():
    table = pa.table({"x": np.arange(1000)})
    for n_true in (0, 1, 500, 1000):
        sel = np.zeros(1000, bool)
        sel[RNG.choice(1000, n_true, replace=False)] = True
        assert table.filter(arrow.mask(sel)).equals(table.filter(pa.array(sel)))


def test_row_table_infers_like_from_pylist():
    row = {"point_id": "p1", "run": 0, "seed": 2**40, "ok": True, "mean": 1.25, "nan": math.nan, "none": None,
           "neg": -3, "text": "größe"}
    ours, ref = arrow.row_table(row), pa.Table.from_pylist([row])
    assert ours.schema == ref.schema and _parquet(ours) == _parquet(ref)
    nested = {"a": 1, "b": [1, 2]}  # beyond the scalars: pyarrow's own inference
    assert arrow.row_table(nested).equals(pa.Table.from_pylist([nested]))


def test_rows_table_and_trace_schemas():
    for schema in SCHEMAS.values():
        rows = [{f.name: _values(f.type, 1, nulls=bool(i % 2))[0] for f in schema} for i in range(50)]
        rows[3].pop(schema[0].name)  # a missing key is a null
        ours = arrow.rows_table(rows, schema)
        ref = pa.Table.from_pylist(rows, schema=schema)
        assert ours.schema == ref.schema and _parquet(ours) == _parquet(ref)
