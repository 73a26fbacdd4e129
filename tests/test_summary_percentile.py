"""The summary's percentiles are numpy's, to the bit, without numpy's import of numpy.ma."""

import math
import struct

import numpy as np

from sim.output.summary import _pct

QS = (0, 1, 25, 50, 90, 99, 99.9, 100, 33.3)


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


def _arrays():
    rng = np.random.default_rng(20)
    for n in (1, 2, 3, 4, 5, 7, 10, 101, 1000, 4097):
        yield rng.lognormal(-2, 1.5, n)  # latencies
        yield np.round(rng.normal(0, 1, n), 1)  # many ties, signed zeros among them
        yield rng.integers(0, 5, n).astype(np.float64) * 0.1
        yield np.full(n, 0.25)
    yield np.array([0.0, -0.0, 0.0, -0.0, 1.0])
    yield np.array([1.0, np.inf, 2.0, 3.0])
    yield np.array([np.inf, np.inf, 1.0])
    yield np.array([-np.inf, 1.0, 2.0])
    yield np.array([1.0, np.nan, 2.0])
    yield np.array([np.nan])
    yield np.array([1e308, -1e308, 5e307])
    yield rng.lognormal(0, 1, 50)[::3]  # a strided view


def test_percentile_equals_numpy_to_the_bit():
    n = 0
    for x in _arrays():
        for q in QS:
            with np.errstate(invalid="ignore"):  # inf - inf
                ref = float(np.percentile(x, q))
            ours = _pct(x, q)
            assert (math.isnan(ref) and math.isnan(ours)) or _bits(ours) == _bits(ref), (x[:8], q, ours, ref)
            n += 1
    assert n > 300


def test_input_untouched_and_other_types_to_numpy():
    x = np.array([3.0, 1.0, 2.0])
    assert _pct(x, 50) == 2.0 and x.tolist() == [3.0, 1.0, 2.0]
    assert math.isnan(_pct(np.empty(0), 50))
    ints = np.array([1, 2, 3, 10])
    assert _pct(ints, 90) == float(np.percentile(ints, 90))
    f32 = np.array([0.1, 0.7, 0.3], dtype=np.float32)
    assert _pct(f32, 50) == float(np.percentile(f32, 50))
