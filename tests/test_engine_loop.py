"""The engine loop's exact helpers: a run's energy summed in Python as numpy sums it."""

import numpy as np

from sim.engine.plan import pairwise_sum


def test_pairwise_sum_is_numpys_reduction():
    """Every length a run's energies come in (1 to a few hundred), contiguous and strided (the
    pool's price lines are sliced every n-th), from any offset: the same float, to the bit."""
    rng = np.random.default_rng(7)
    for trial in range(3000):
        n = int(rng.integers(1, 300)) if trial % 10 else int(rng.integers(300, 2000))
        stride = 1 if trial % 3 == 0 else int(rng.integers(2, 40))
        lo = int(rng.integers(0, 5))
        line = rng.lognormal(3.0, 1.5, size=(lo + n) * stride)[::stride]
        values = line.tolist()
        assert pairwise_sum(values, lo, n) == float(np.add.reduce(line[lo: lo + n])), (n, stride, lo)
