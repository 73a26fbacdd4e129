"""Power, energy, cost and carbon of devices: pure functions of activity.

A device draws its idle power plus, while a model is resident, a small adder;
during an iteration it draws more in proportion to how hard the iteration drives
the tensor cores (achieved FLOP/s over peak) and HBM (achieved bytes/s over peak
bandwidth), up to TDP, outside the collectives between a replica's devices (during
which its SMs wait on the links); slow grouped-expert kernels add their own draw.
Energy is power times the iteration's duration, summed exactly over iterations by
the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from typing import Any, Optional

from sim.hardware.catalog import Accelerator
from sim.models.perf import IterationCost, minimum

# A resident model adds roughly 25-50 W over bare idle on HBM GPUs (clocks and HBM
# refresh held up by the loaded context); 30 W is the default adder.
RESIDENT_ADDER_W = 30.0
# Weights of compute and memory activity in the dynamic power; hardware/calibration
# holds values fitted per accelerator to measured power (by the calibration tool).
COMPUTE_WEIGHT = 1.6
MEMORY_WEIGHT = 0.85
# Lowest core clock a power cap can force, as a fraction of the boost clock (H100 SXM:
# ~ 600 of 1980 MHz under the lowest settable limit).
MIN_CLOCK = 0.3


@dataclass(frozen=True)
class PowerModel:
    """Power of one device of an accelerator type with a model resident.

    Power while an iteration runs is ``B + L c + S s + Q q + (TDP - B) * min(1 - c, cw * u_c * f^2 + mw * u_m)``
    where ``B`` is the resident idle plus the active adder, ``u_c`` achieved FLOP/s over
    datasheet peak, ``u_m`` achieved HBM bytes/s over peak bandwidth (both over the whole
    iteration), ``f`` the core clock relative to boost, ``c`` the iteration's share in
    collectives (0 on one device), ``s`` its share in grouped-expert kernels running below
    their roofline and ``q`` its share in the engine's per-sequence cost; at most TDP. A power cap lowers ``f`` until
    the draw fits (DVFS: voltage falls with frequency, so compute power falls ~ f^3 at fixed
    work rate while compute-bound time grows 1/f); HBM traffic is not slowed, so
    memory-bound decode loses little speed under a cap, unless the cap is below what its
    HBM traffic alone draws at the lowest clock: then the iteration stretches to fit.
    """

    acc: Accelerator
    peak_flops: float
    resident_w: float = RESIDENT_ADDER_W
    compute_weight: float = COMPUTE_WEIGHT
    memory_weight: float = MEMORY_WEIGHT
    idle_w_override: Optional[float] = None
    cap_w: Optional[float] = None
    # Extra draw of each device of a multi-device replica during its collectives, over the busy
    # base: NVLink/xGMI links and the collectives' kernels (fitted; no collectives on one device).
    link_active_w: float = 0.0
    devices: int = 1
    # Extra draw of any device while an iteration runs, beyond the resident idle (clocks and
    # SMs held up between kernels; fitted to measured power).
    active_w: float = 0.0
    # Extra draw while grouped-expert kernels run below their roofline (SMs busy dequantizing,
    # scheduling tiles, waiting on loads; fitted; a calibration card's key, not a scenario's).
    stall_w: float = 0.0
    # Extra draw during the step's per-sequence cost: measured power rises with the batch more
    # than the roofline activity does, as if the device stayed busy through that time (fitted; a
    # calibration card's key, not a scenario's)
    seq_w: float = 0.0

    @property
    def idle_w(self) -> float:
        """Power of a device holding a model but running nothing."""
        base = self.idle_w_override if self.idle_w_override is not None else self.acc.idle_power_w
        return base + self.resident_w

    def busy_w(self, time_s: np.ndarray, flops: np.ndarray, nbytes: np.ndarray, clock=1.0,
               compute_weight=None, comm_s=None, stall_s=None, seq_s=None) -> np.ndarray:
        """Power during iterations of the given duration, FLOPs and HBM bytes at core ``clock``,
        of which ``comm_s`` is spent in collectives between the replica's devices and ``stall_s``
        in grouped-expert kernels running below their roofline (None: none).

        The compute and HBM activity drive the device outside the collectives only (up to TDP
        there): during a collective the SMs wait on the links, which draw ``link_active_w`` over
        the busy base. Slow expert kernels keep their SMs busy: ``stall_w`` over their share; the
        step's per-sequence time (``seq_s``) draws ``seq_w`` over it."""
        cw = self.compute_weight if compute_weight is None else compute_weight
        u_c = flops / (time_s * self.peak_flops)
        u_m = nbytes / (time_s * self.acc.memory_bandwidth)
        compute = cw * u_c
        if not (isinstance(clock, float) and clock == 1.0):  # (times 1.0 changes nothing)
            compute = compute * (clock * clock)
        base = self.active_base_w
        span = self.acc.tdp_w - base
        if comm_s is None or self.devices <= 1:
            power = base + span * minimum(1.0, compute + self.memory_weight * u_m)
        else:
            comm = minimum(1.0, comm_s / time_s)
            # time-averaged: (1 - c) min(1, a / (1 - c)) over the non-collective share = min(1 - c, a)
            power = base + self.link_active_w * comm + span * minimum(1.0 - comm, compute + self.memory_weight * u_m)
        # both are SMs kept busy, in the core clock's domain: they fall with the clock as compute does
        f2: Any = 1.0 if isinstance(clock, float) and clock == 1.0 else clock * clock
        if stall_s is not None and self.stall_w:
            power = minimum(self.acc.tdp_w, power + self.stall_w * f2 * (stall_s / time_s))
        if seq_s is not None and self.seq_w:
            power = minimum(self.acc.tdp_w, power + self.seq_w * f2 * (seq_s / time_s))
        return power

    @property
    def active_base_w(self) -> float:
        """Draw while an iteration runs at zero activity outside collectives: idle and the active
        adder (the clocks and SMs held up between kernels)."""
        return self.idle_w + self.active_w

    def under_cap(self, cost: IterationCost) -> tuple[IterationCost, np.ndarray]:
        """The iterations' cost and power once the power cap (if any) has set the clock.

        Bisection on the clock per iteration, elementwise only, so a run priced at once
        equals the same iterations priced one by one; iterations already under the cap are
        returned untouched.
        """
        power = self._busy(cost, cost.time_s, 1.0, None)
        if self.cap_w is None or cost.compute_s is None or not np.any(power > self.cap_w):
            return cost, power
        # An iteration whose activity reaches TDP already runs at the clock TDP allows (the
        # fitted efficiencies include that throttling): its compute weight at f = 1 is what the
        # HBM share leaves of the budget, so a cap just below TDP slows it only a little.
        mem = self.memory_weight * cost.bytes / (cost.time_s * self.acc.memory_bandwidth)
        comp = self.compute_weight * cost.flops / (cost.time_s * self.peak_flops)
        cw = self.compute_weight * np.minimum(1.0, np.maximum(0.0, 1.0 - mem) / np.maximum(comp, 1e-300))
        lo = np.zeros_like(cost.time_s) + MIN_CLOCK
        hi = np.ones_like(cost.time_s)
        for _ in range(24):
            mid = (lo + hi) * 0.5
            fits = self._at_clock(cost, mid, cw) <= self.cap_w
            lo = np.where(fits, mid, lo)
            hi = np.where(fits, hi, mid)
        over = power > self.cap_w
        clock = np.where(over, lo, 1.0)
        time_s = cost.time_s + cost.compute_s * (1.0 / clock - 1.0)
        # Below the lowest clock (HBM traffic alone over the cap) the whole device throttles:
        # the iteration stretches until its dynamic power, ~ activity / time, fits the cap.
        # (Not possible for a cap at or below the busy base draw, which nothing fits under.)
        base = self.active_base_w
        dynamic = cw * cost.flops / self.peak_flops * (clock * clock) \
            + self.memory_weight * cost.bytes / self.acc.memory_bandwidth
        floor_s = dynamic * ((self.acc.tdp_w - base) / max(self.cap_w - base, 1e-9))
        # the collectives' and slow expert kernels' draws are energies of fixed durations too
        extra_j: Any = 0.0  # (a float, or an array where the phase times are)
        if cost.comm_s is not None and self.devices > 1:
            extra_j = extra_j + self.link_active_w * cost.comm_s
        if cost.stall_s is not None:
            extra_j = extra_j + self.stall_w * (clock * clock) * cost.stall_s
        if cost.seq_s is not None:
            extra_j = extra_j + self.seq_w * (clock * clock) * cost.seq_s
        floor_s = floor_s + extra_j / max(self.cap_w - base, 1e-9)
        floor = (self._busy(cost, time_s, clock, cw) > self.cap_w) & (self.cap_w > base)
        time_s = np.where(over, np.where(floor, np.maximum(time_s, floor_s), time_s), cost.time_s)
        capped = IterationCost(time_s, cost.flops, cost.bytes, cost.compute_s, cost.comm_s, cost.stall_s, cost.seq_s)
        return capped, np.where(over, self._busy(cost, time_s, clock, cw), power)

    def _busy(self, cost: IterationCost, time_s: np.ndarray, clock, cw) -> np.ndarray:
        return self.busy_w(time_s, cost.flops, cost.bytes, clock, cw, cost.comm_s, cost.stall_s, cost.seq_s)

    def _at_clock(self, cost: IterationCost, clock: np.ndarray, cw: np.ndarray) -> np.ndarray:
        return self._busy(cost, cost.time_s + cost.compute_s * (1.0 / clock - 1.0), clock, cw)  # type: ignore[operator]


@dataclass(frozen=True)
class Tariff:
    """Facility-level conversion of device energy and time into money and carbon."""

    pue: float
    usd_per_kwh: float
    carbon_g_per_kwh: float
    schedule: Any = None  # config.CarbonSchedule: intensity over time, else the constant

    # (energies: floats or arrays)
    def facility_j(self, it_energy_j: Any) -> Any:
        return it_energy_j * self.pue

    def energy_usd(self, facility_j: Any) -> Any:
        return facility_j / 3.6e6 * self.usd_per_kwh

    def carbon_g(self, facility_j: Any) -> Any:
        return facility_j / 3.6e6 * self.carbon_g_per_kwh

    def carbon_g_over(self, facility_j, t) -> float:
        """Carbon of facility energies ``facility_j`` drawn at times ``t`` (arrays), under the
        intensity schedule (or the constant)."""
        import numpy as np

        g = self.schedule.at(t) if self.schedule is not None else self.carbon_g_per_kwh
        return float(np.sum(np.asarray(facility_j) / 3.6e6 * g))
