"""How work splits over the devices of a replica: the time of a ring all-reduce between them, and
the busiest device's share when routed items fall on them at random (expert parallelism).

Pure functions of a few numbers, compiled with the performance model that calls them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

_STD_NORMAL = NormalDist()


def ring_allreduce_s(nbytes: float, ranks: int, link_bw: float, latency_s: float) -> float:
    """Ring all-reduce of ``nbytes`` over ``ranks`` devices in the alpha-beta model (Thakur,
    Rabenseifner and Gropp, 2005): 2(n-1) steps (reduce-scatter, then all-gather), each paying
    one hop's latency ``latency_s`` and moving 1/n of the data, so 2(n-1)/n of it crosses each
    link. A small message over 8 devices pays 14 hop latencies, over 2 devices only 2."""
    if ranks <= 1:
        return 0.0
    return 2.0 * (ranks - 1) * latency_s + 2.0 * (ranks - 1) / ranks * nbytes / link_bw


def expected_max_load(mean: float, parts: int) -> float:
    """Expected busiest share when ``mean * parts`` items fall uniformly at random into ``parts``
    bins, in the Gaussian approximation: the multinomial counts, centred, have the covariance
    of ``Y_i - mean(Y)`` for i.i.d. ``Y_i ~ N(0, mean)``, so the busiest bin holds
    ``mean + sqrt(mean) * E[max of parts standard normals]``, the latter by Blom's formula
    ``Phi^-1((parts - 0.375) / (parts + 0.25))`` (5% high for 2 parts, within 2% for 4-256)."""
    if parts <= 1 or mean <= 0:
        return mean
    return mean + math.sqrt(mean) * _STD_NORMAL.inv_cdf((parts - 0.375) / (parts + 0.25))
