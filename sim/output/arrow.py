"""Arrow columns built from, and read back into, numpy arrays without pyarrow's pandas shim.

Why this module exists: whenever pandas is installed, pyarrow imports it (0.4-0.5 s) the first
time ``pa.array`` is handed a list or a numpy array (its shim checks whether the object is a
pandas one), the first time ``Array.to_numpy`` converts (the converter initialises pandas'
static data), and likewise in ``pa.scalar``, ``pa.table(dict of lists)`` and
``pa.Table.from_pylist``. No code of a run uses pandas, so every process would pay that import
for nothing. The functions here build columns straight from their buffers
(``pa.Array.from_buffers``: a validity bitmap, then the values, or the offsets and UTF-8 bytes
of a string column) and read them back with ``np.frombuffer``. Their results equal what
``pa.array(values, type)`` and ``col.to_numpy(zero_copy_only=False)`` give (same type, nulls
and values; ``tests/test_output_arrow.py`` checks them against pyarrow on many inputs).

Numeric, boolean and string types of the usual values are handled here (the numbers through
the standard library's ``array.array``, as fast as pyarrow's converter); any other type, and
values pyarrow would cast or refuse, go to pyarrow itself, for its own result or error.
"""

from __future__ import annotations

import array as _array
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

# Arrow numeric types and the numpy dtype of their value buffer.
NUMPY_DTYPES = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float32(): np.float32, pa.float64(): np.float64,
}
# ... and the standard library's array typecodes of the same widths (checked at import below)
_TYPECODES = {pa.int8(): "b", pa.int16(): "h", pa.int32(): "i", pa.int64(): "q", pa.uint8(): "B", pa.uint16(): "H",
              pa.uint32(): "I", pa.uint64(): "Q", pa.float32(): "f", pa.float64(): "d"}
assert all(_array.array(c).itemsize == np.dtype(NUMPY_DTYPES[t]).itemsize for t, c in _TYPECODES.items())
_STRING_BYTES_MAX = 2**31 - 1  # a ``string`` column's int32 offsets bound its total bytes


def _bitmap(bits: np.ndarray) -> pa.Buffer:
    """Arrow's bit-packed layout: least significant bit first."""
    return pa.py_buffer(np.packbits(bits, bitorder="little"))


def _validity(valid: np.ndarray | None) -> pa.Buffer | None:
    """The validity bitmap, or None when every slot is valid (as pyarrow itself leaves it)."""
    return None if valid is None or valid.all() else _bitmap(valid)


def from_numpy(values: np.ndarray, type: pa.DataType | None = None, valid: np.ndarray | None = None) -> pa.Array:
    """A numeric or boolean numpy array as an Arrow array of ``type`` (by default its dtype's
    type); ``valid`` (booleans) marks the non-null slots (all of them if None)."""
    values = np.asarray(values)
    if type is None:
        type = pa.bool_() if values.dtype == np.bool_ else pa.from_numpy_dtype(values.dtype)
    n = len(values)
    if type == pa.bool_():
        data = _bitmap(values.astype(np.bool_, copy=False))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values, dtype=NUMPY_DTYPES[type]))
    return pa.Array.from_buffers(type, n, [_validity(valid), data])


def strings(values: Sequence[str | None]) -> pa.Array:
    """Python strings (None for null) as an Arrow ``string`` array, like ``pa.array(values, pa.string())``:
    the offsets (cumulative byte lengths) and the joined UTF-8 bytes, and a validity bitmap."""
    n = len(values)
    valid = None
    try:
        text = "".join(values)
    except TypeError:  # a null, or a value that is no string
        valid = np.fromiter((v is not None for v in values), np.bool_, n)
        filled = ["" if v is None else v for v in values]
        try:
            text = "".join(filled)
        except TypeError:  # bytes, numbers...: pyarrow's own result or error
            return pa.array(values, pa.string())
        values = filled
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate: pyarrow's own error
        return pa.array(values, pa.string())
    lengths = np.fromiter(map(len, values), np.int64, n)
    if len(data) != len(text):  # some non-ASCII text: lengths in bytes differ from lengths in characters
        lengths = np.fromiter((len(v.encode()) for v in values), np.int64, n)
    if len(data) > _STRING_BYTES_MAX:
        raise OverflowError(f"string column of {len(data)} bytes is over the 2 GiB of a string array")
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:], dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [_validity(valid), pa.py_buffer(offsets), pa.py_buffer(data)])


def array(values: Sequence, type: pa.DataType) -> pa.Array:
    """Python values (None for null) as an Arrow array of ``type``, like ``pa.array(values, type)``.

    The values go through the standard library's ``array.array`` (one C loop, as fast as
    pyarrow's own converter), which takes ints and floats of the type's kind and range. What it
    refuses (a float for an integer type, an out-of-range integer, a string) goes to pyarrow
    itself, so any input gets pyarrow's own result or error."""
    if type == pa.string():
        return strings(values)
    is_bool = type == pa.bool_()
    code = "b" if is_bool else _TYPECODES.get(type)
    if code is None:
        return pa.array(values, type)  # a type this module does not build
    valid = None
    try:
        try:
            packed = _array.array(code, values)
        except TypeError:  # nulls, or values of another kind
            valid = np.fromiter((v is not None for v in values), np.bool_, len(values))
            if valid.all():
                raise
            packed = _array.array(code, [(False if is_bool else 0) if v is None else v for v in values])
    except (TypeError, OverflowError):
        return pa.array(values, type)
    if is_bool:
        out = np.frombuffer(packed, np.int8)
        if len(out) and (out.min() < 0 or out.max() > 1):  # ints, not booleans
            return pa.array(values, type)
        return from_numpy(out.view(np.bool_), type, valid)
    return pa.Array.from_buffers(type, len(packed), [_validity(valid), pa.py_buffer(packed)])


def mask(selected: np.ndarray) -> pa.Array:
    """A boolean numpy array as an Arrow filter mask (``table.filter(mask(...))``)."""
    return from_numpy(np.asarray(selected, dtype=np.bool_), pa.bool_())


def _infer(value) -> pa.DataType | None:
    """The type ``pa.array([value])`` infers, for the scalars this module builds; None otherwise."""
    if value is None:
        return pa.null()
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64() if -2**63 <= value < 2**63 else None
    if isinstance(value, float):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    return None


def row_table(row: dict) -> pa.Table:
    """A one-row table of ``row`` with the types pyarrow infers (``pa.Table.from_pylist([row])``):
    bool, int64, double, string, or null for None. A row with any other value goes to pyarrow."""
    types = [_infer(v) for v in row.values()]
    if any(t is None for t in types):
        return pa.Table.from_pylist([row])
    cols = [pa.nulls(1) if t == pa.null() else array([v], t) for v, t in zip(row.values(), types)]
    return pa.Table.from_arrays(cols, names=list(row))


def table(columns: dict[str, Sequence], schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from Python values by column name, like ``pa.table(columns, schema)``."""
    return pa.Table.from_arrays([array(columns[f.name], f.type) for f in schema], schema=schema)


def rows_table(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from dict rows, like ``pa.Table.from_pylist(rows, schema=schema)``
    (a key missing from a row is a null)."""
    return table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema)


def to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``col.to_numpy(zero_copy_only=False)``: numeric columns without nulls as a (read-only) view
    of their buffer; with nulls, floats with NaN there and integers as float64 with NaN; booleans
    as bool, or objects with None where null; strings as objects (None where null)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    t, n = col.type, len(col)
    if t in NUMPY_DTYPES:
        values = _values(col, NUMPY_DTYPES[t])
        if not col.null_count:
            return values
        out = values.astype(values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64)
        out[~_valid(col)] = np.nan
        return out
    if t == pa.bool_():
        values = _bits(col.buffers()[1], col.offset, n)
        if not col.null_count:
            return values
        out = values.astype(object)
        out[~_valid(col)] = None
        return out
    if t == pa.string() or t == pa.large_string():
        if n == 0:
            return np.empty(0, object)
        words, idx = _distinct_strings(col)  # few distinct words: Python objects made once each
        if col.null_count:
            idx[~_valid(col)] = len(words) - 1
        return words[idx]
    return col.to_numpy(zero_copy_only=False)


# Longest string (in UTF-8 bytes) whose distinct values :func:`_distinct_strings` finds with numpy,
# and the most bytes its keys may take (a row group of 65,536 rows of 64-byte words: 4 MiB);
# beyond either, pyarrow's hash-based ``dictionary_encode`` finds them.
_KEY_BYTES_MAX = 64
_KEYS_BYTES_MAX = 64 << 20


def _distinct_strings(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct words of a string column, then None; each slot's index into them).

    Status, class and pool columns hold a few distinct short words. Each slot's bytes, padded
    with zeros and followed by its length, make a fixed-width key that numpy sorts and
    deduplicates (``np.unique``), so no hash kernel is needed: pyarrow's ``dictionary_encode``
    would import ``pyarrow.compute``, ~0.1 s of a process's start. Null slots count as empty
    (the caller points them at the final None)."""
    n = len(col)
    wide = col.type == pa.large_string()
    odt = np.dtype(np.int64 if wide else np.int32)
    validity, offsets_buf, data_buf = col.buffers()
    offsets = np.frombuffer(offsets_buf, odt, count=n + 1, offset=col.offset * odt.itemsize).astype(np.int64)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if validity is not None:
        lengths = np.where(_valid(col), lengths, 0)
    width = int(lengths.max())
    if width > _KEY_BYTES_MAX or n * (width + 1) > _KEYS_BYTES_MAX:
        enc = col.dictionary_encode()
        words = np.array(enc.dictionary.to_pylist() + [None], dtype=object)
        return words, _values(enc.indices, NUMPY_DTYPES[enc.indices.type]).astype(np.int64)
    data = np.frombuffer(data_buf, np.uint8) if width else np.empty(0, np.uint8)
    keys = np.zeros((n, width + 1), np.uint8)
    for j in range(width):
        has = lengths > j
        keys[has, j] = data[starts[has] + j]
    keys[:, width] = lengths
    _, first, idx = np.unique(keys.view(f"S{width + 1}").ravel(), return_index=True, return_inverse=True)
    words = [data[s:s + k].tobytes().decode() for s, k in zip(starts[first].tolist(), lengths[first].tolist())]
    return np.array(words + [None], dtype=object), idx.astype(np.int64, copy=False)


def _values(col: pa.Array, dtype) -> np.ndarray:
    """The value buffer of a primitive array, its slice offset applied."""
    n = len(col)
    if n == 0:
        return np.empty(0, dtype)
    return np.frombuffer(col.buffers()[1], dtype, count=n, offset=col.offset * np.dtype(dtype).itemsize)


def _bits(buf: pa.Buffer | None, offset: int, n: int) -> np.ndarray:
    if n == 0:
        return np.empty(0, np.bool_)
    raw = np.frombuffer(buf, np.uint8)
    return np.unpackbits(raw, count=offset + n, bitorder="little")[offset:].astype(np.bool_)


def _valid(col: pa.Array) -> np.ndarray:
    """Booleans: True where ``col`` is not null."""
    buf = col.buffers()[0]
    if buf is None:
        return np.ones(len(col), np.bool_)
    return _bits(buf, col.offset, len(col))
