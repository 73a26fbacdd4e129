"""Economics of inference: what a fleet costs to own or rent, what its work earns, the margin.

Pure functions and pydantic configuration classes; no SimPy. A scenario opts in with one
optional section, ``datacenter.economics`` (:class:`Economics`); without it every cost is the
simulator's earlier model (each accelerator card's hourly cloud price plus metered energy at
``datacenter.energy_usd_per_kwh``), unchanged to the last bit.

Three parts:

1. **Rates** (:func:`resolve` -> :class:`Rates`). Per device-hour of each pool:

   * *capex*: owned hardware (``capex: {kind: owned}``) costs the level payment that repays its
     purchase price plus node overhead (servers, CPUs, NICs, switches) over its depreciation
     life at the financing rate: ``(price + overhead) * CRF(rate, life) / 8760`` with the
     capital recovery factor ``CRF(r, n) = r (1 + r)^n / ((1 + r)^n - 1)`` (``1 / n`` at r = 0).
     Rented hardware (``kind: cloud``) costs its hourly price.
   * *facility*: the building, power and cooling plant, priced per MW of provisioned IT power
     and annualised the same way over the facility's own (longer) life; charged per device on
     the node's maximum power per device. Zero for cloud rental (the rent includes it).
   * *energy*: IT energy (devices plus host share) times PUE at a flat ``$/kWh`` or a
     time-of-day step tariff (:class:`TariffSchedule`).

2. **Fleet cost of a window** (:func:`pool_costs`, :func:`fleet_metrics`): capex and facility
   for every device over the window, and energy priced exactly under a time-of-day tariff: each
   steps-table row's energy is spread evenly over its span and priced by the integral of the
   tariff over the part of the row inside the window.

3. **Revenue, cost and margin per workload class and reasoning-effort tier**
   (:func:`class_table`): price lists per class (input, cached-input and output tokens, a price
   per request: call, job, session or video) with overrides per effort tier (a job's tier is
   chosen by its thinking budget). A unit that arrived in the window earns its price if it
   finished. Each pool's whole cost in the window, idle capacity included, is shared among the
   classes and tiers in proportion to the work their units ran on it (tokens run; device-seconds
   on diffusion pools), so the class costs add up to the fleet total exactly; a pool nobody used
   goes to a row ``(unused)``. The part of each share that paid for idle capacity is reported
   beside it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from typing import Optional

import numpy as np

from sim.hardware import catalog
from sim.errors import ScenarioError
from sim.config.economics import KEY, Economics, OwnedCapex, TariffSchedule

HOURS_PER_YEAR = 8760.0  # 365 days: annual capital charges spread over every hour of the year
J_PER_KWH = 3.6e6

def capital_recovery_factor(rate: float, years: float) -> float:
    """Share of a price paid each year by a level annuity that repays it over ``years`` at
    ``rate``: ``r (1 + r)^n / ((1 + r)^n - 1)``, and ``1 / n`` (straight-line) at r = 0."""
    if rate == 0:
        return 1.0 / years
    g = (1.0 + rate) ** years
    return rate * g / (g - 1.0)


@functools.lru_cache(maxsize=None)
def purchase_prices() -> dict[str, float]:
    """Purchase price (USD) per accelerator with a public source, from hardware/economics.yaml."""
    path = catalog.hardware_dir() / "economics.yaml"
    if not path.is_file():
        return {}
    data = catalog.read_card(path)
    out = {}
    for name, card in (data.get("accelerators") or {}).items():
        v = (card or {}).get("purchase_usd")
        if isinstance(v, dict):
            v = v.get("value")
        if v is not None:
            out[name] = float(v)
    return out


# --------------------------------------------------------------------------- rates
@dataclass(frozen=True)
class DeviceRates:
    """What one device of a pool costs per hour, and the host power it carries."""

    capex_usd_per_hour: float
    facility_usd_per_hour: float
    host_w: float

    @property
    def usd_per_hour(self) -> float:
        return self.capex_usd_per_hour + self.facility_usd_per_hour


@dataclass(frozen=True)
class Rates:
    """Resolved cost rates of a scenario: per pool device rates, the device group a pool's devices
    belong to (a diffusion pool sharing an LLM pool's devices is in that pool's group), PUE and
    the electricity price over time."""

    devices: dict
    group: dict
    pue: float
    usd_per_kwh: float
    schedule: Optional[TariffSchedule] = None
    energy_billed: bool = True
    economics: Optional[Economics] = None

    @property
    def configured(self) -> bool:
        """True when the scenario has a ``datacenter.economics`` section."""
        return self.economics is not None

    def price_integral(self, t) -> np.ndarray:
        """``integral_0^t price`` ($/kWh x s)."""
        if self.schedule is not None:
            return self.schedule.integral(t)
        return self.usd_per_kwh * np.asarray(t, dtype=float)

    def mean_price(self, a, b) -> np.ndarray:
        """Mean electricity price ($/kWh) over each ``[a, b]`` (the price at ``a`` where ``b <= a``)."""
        a = np.asarray(a, dtype=float)
        b = np.maximum(np.asarray(b, dtype=float), a)
        if self.schedule is None:
            return np.full(np.broadcast(a, b).shape, self.usd_per_kwh)
        dur = b - a
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = (self.schedule.integral(b) - self.schedule.integral(a)) / dur
        return np.where(dur > 0, mean, self.schedule.at(a))

    def energy_usd(self, it_j: float, a: float, b: float) -> float:
        """Cost of ``it_j`` joules of IT energy drawn evenly over ``[a, b]`` (PUE applied)."""
        if not self.energy_billed:
            return 0.0
        if self.schedule is None:  # the same operations as power.Tariff, so unconfigured runs are unchanged
            return it_j * self.pue / J_PER_KWH * self.usd_per_kwh
        if it_j == 0:
            return 0.0
        a = a if a == a else b  # NaN (never admitted, never finished): the other end
        b = b if b == b else a
        return it_j * self.pue / J_PER_KWH * float(self.mean_price(a if a == a else 0.0, b if b == b else 0.0))

    def call_cost_usd(self, pool: str, device_s: float, energy_j: float, a: float, b: float) -> float:
        """Own cost of work on ``pool``: ``device_s`` device-seconds at the device rate plus its
        device energy and the host power over those device-seconds, priced over ``[a, b]``."""
        r = self.devices[pool]
        return r.usd_per_hour * device_s / 3600 + self.energy_usd(energy_j + r.host_w * device_s, a, b)


def _accelerator_keys(mapping: dict, key: str, source: str) -> None:
    """Names in a per-accelerator mapping must be accelerator cards (typos are errors)."""
    known = catalog.accelerators()
    for name in mapping:
        if name not in known:
            raise ScenarioError(source, f"{key}.{name}", f"unknown accelerator '{name}' (known: {', '.join(sorted(known))})")


def owned_rates(capex: OwnedCapex, acc: catalog.Accelerator, source: str = "") -> tuple[float, float]:
    """(capex, facility) USD per device-hour of accelerator ``acc`` owned under ``capex``."""
    key = f"{KEY}.capex"
    price = capex.purchase_usd.get(acc.name, purchase_prices().get(acc.name))
    if price is None:
        raise ScenarioError(source, f"{key}.purchase_usd",
                            f"no purchase price with a public source for {acc.name} in hardware/economics.yaml; "
                            f"give {key}.purchase_usd.{acc.name} (USD per device)")
    overhead = capex.node_overhead_usd.get(acc.name, capex.node_overhead_share * price)
    device = (price + overhead) * capital_recovery_factor(capex.financing_rate, capex.life_years) / HOURS_PER_YEAR
    it_w = capex.it_w_per_device.get(acc.name)
    if it_w is None:
        if not acc.node_max_power_w:
            raise ScenarioError(source, f"{key}.it_w_per_device",
                                f"the {acc.name} card has no node maximum power to size the facility by; "
                                f"give {key}.it_w_per_device.{acc.name} (provisioned IT watts per device)")
        it_w = acc.node_max_power_w / acc.devices_per_node
    facility = it_w / 1e6 * capex.facility_usd_per_mw \
        * capital_recovery_factor(capex.facility_financing_rate, capex.facility_life_years) / HOURS_PER_YEAR
    return device, facility


def resolve(scenario, specs, source: str = "<scenario>") -> Rates:
    """Cost rates of a scenario's resolved pools (``specs``: sim.cluster.pools.PoolSpec); ScenarioError
    naming the key for a price that is missing or names an unknown accelerator."""
    dc = scenario.datacenter
    eco = dc.economics
    group = {}
    for pool in dc.pools:
        group[pool.name] = pool.share_with or pool.name
    devices = {}
    if eco is not None:
        cap = eco.capex
        for name in ("usd_per_device_hour",) if cap.kind == "cloud" else ("purchase_usd", "node_overhead_usd",
                                                                           "it_w_per_device"):
            _accelerator_keys(getattr(cap, name), f"{KEY}.capex.{name}", source)
    for s in specs:
        acc = s.acc
        if eco is None:
            capex, facility = acc.price_usd_per_hour, 0.0
        elif eco.capex.kind == "cloud":
            capex, facility = eco.capex.usd_per_device_hour.get(acc.name, acc.price_usd_per_hour), 0.0
            if acc.name not in eco.capex.usd_per_device_hour and not acc.price_usd_per_hour:
                raise ScenarioError(source, f"{KEY}.capex.usd_per_device_hour",
                                    f"the {acc.name} card has no hourly cloud price; give "
                                    f"{KEY}.capex.usd_per_device_hour.{acc.name}")
        else:
            capex, facility = owned_rates(eco.capex, acc, source)
        devices[s.name] = DeviceRates(capex, facility, s.host_w_per_device)
    schedule = eco.tariff if eco is not None else None
    billed = eco.capex.energy_billed if eco is not None and eco.capex.kind == "cloud" else True
    return Rates(devices, group, dc.pue, dc.energy_usd_per_kwh, schedule, billed, eco)


# --------------------------------------------------------------------------- fleet cost of a window
