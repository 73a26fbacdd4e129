"""Named random streams.

Every component draws from its own ``numpy.random.Generator`` derived from the
scenario's ``(seed, run)`` and a stable stream name, so adding a component (or a
workload class) never shifts the numbers another component sees.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np


@functools.lru_cache(maxsize=4096)
def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def stream(seed: int, run: int, name: str, *index: int) -> np.random.Generator:
    """Generator for component ``name`` in replication ``run`` of a scenario seeded ``seed``;
    ``index`` (e.g. a job number and a purpose) names a sub-stream of it."""
    seq = np.random.SeedSequence(entropy=[int(seed), int(run)], spawn_key=(_name_key(name), *map(int, index)))
    return np.random.Generator(np.random.PCG64(seq))
