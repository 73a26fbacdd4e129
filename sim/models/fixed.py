"""A fixed-cost performance model: ``iteration_s + per_token_s * tokens`` per iteration.

For queueing checks against closed forms and for engines measured as a flat step time; no memory
traffic, so its power is the busy base.
"""

from __future__ import annotations

import numpy as np

from sim.models.perf import Batch, IterationCost


class FixedModel:
    """``iteration_s + per_token_s * tokens`` per iteration; no memory traffic."""

    def __init__(self, iteration_s: float, per_token_s: float = 0.0):
        self.iteration_s = iteration_s
        self.per_token_s = per_token_s

    def cost(self, batch: Batch) -> IterationCost:
        t = self.iteration_s + self.per_token_s * batch.tokens
        z = np.zeros_like(batch.kv_tokens, dtype=float)
        return IterationCost(z + t, z, z)
