"""Power, energy, cost and carbon of devices: pure functions of activity.

A device draws its idle power plus, while a model is resident, a small adder;
during an iteration it draws more in proportion to how hard the iteration drives
the tensor cores (achieved FLOP/s over peak) and HBM (achieved bytes/s over peak
bandwidth), up to TDP. Energy is power times the iteration's duration, summed
exactly over iterations by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.catalog import Accelerator

# A resident model adds roughly 25-50 W over bare idle on HBM GPUs (clocks and HBM
# refresh held up by the loaded context); 30 W is the default adder.
RESIDENT_ADDER_W = 30.0
# Weights of compute and memory activity in the dynamic power; chosen so that
# memory-bound decode of an 8B model on an H100 draws ~430 W at small batches and
# ~630 W at batch 256 (ML.ENERGY leaderboard v3, Qwen3-8B on H100, lm-arena-chat).
COMPUTE_WEIGHT = 1.6
MEMORY_WEIGHT = 0.85


@dataclass(frozen=True)
class PowerModel:
    """Power of one device of an accelerator type with a model resident."""

    acc: Accelerator
    peak_flops: float
    resident_w: float = RESIDENT_ADDER_W
    compute_weight: float = COMPUTE_WEIGHT
    memory_weight: float = MEMORY_WEIGHT

    @property
    def idle_w(self) -> float:
        """Power of a device holding a model but running nothing."""
        return self.acc.idle_power_w + self.resident_w

    def busy_w(self, time_s: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Power during iterations of the given duration, FLOPs and HBM bytes."""
        u_c = flops / (time_s * self.peak_flops)
        u_m = nbytes / (time_s * self.acc.memory_bandwidth)
        activity = np.minimum(1.0, self.compute_weight * u_c + self.memory_weight * u_m)
        return self.idle_w + (self.acc.tdp_w - self.idle_w) * activity


@dataclass(frozen=True)
class Tariff:
    """Facility-level conversion of device energy and time into money and carbon."""

    pue: float
    usd_per_kwh: float
    carbon_g_per_kwh: float

    def facility_j(self, it_energy_j: float) -> float:
        return it_energy_j * self.pue

    def energy_usd(self, facility_j: float) -> float:
        return facility_j / 3.6e6 * self.usd_per_kwh

    def carbon_g(self, facility_j: float) -> float:
        return facility_j / 3.6e6 * self.carbon_g_per_kwh
