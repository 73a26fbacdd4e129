"""``datacenter.economics``: how devices are paid for (cloud rent or owned capex), the electricity
tariff over time, and the price lists of the work per class and reasoning-effort tier. Schema only;
the rates and tables are computed in sim.models.economics and sim.output.economics."""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Union

import numpy as np
from pydantic import Field, model_validator

from sim.config.base import Frozen, KeyedError, NonNegFloat, PosFloat, Tokens, check_step_function, step_at

KEY = "datacenter.economics"
NonNeg = NonNegFloat
Pos = PosFloat
# Depreciation and facility lives, years: a quarter to a century.
Years = Annotated[float, Field(ge=0.25, le=100)]
# Financing rates per year: 0 to 1000%.
Rate = Annotated[float, Field(ge=0, le=10)]
# Prices, USD: finite, and below a trillion.
Usd = Annotated[float, Field(ge=0, le=1e12)]
PosUsd = Annotated[float, Field(gt=0, le=1e12)]

# --------------------------------------------------------------------------- defaults and sources
# Depreciation life of accelerator servers. Amazon's 10-K for 2024: "changing the useful lives of a
# subset of our servers and networking equipment, effective January 1, 2025, from six years to five
# years", citing the pace of AI technology (Microsoft and Alphabet use six years, Meta five and a
# half); five is the figure tied to AI hardware.
DEVICE_LIFE_YEARS = 5.0
# Cost of capital of GPU purchases: GPU-backed private-credit loans cost 10-17% a year (gpuloans.com,
# "GPU Cost of Capital: Private Credit vs. Banks", Dec 2025); the low end is taken.
DEVICE_FINANCING_RATE = 0.10
# Servers, CPUs, memory, NICs, switches and cabling per dollar of accelerators. Bernstein's cost of a
# GB200 NVL72 rack (Nov 2025, reported by Investing.com): compute hardware USD 3.4M of a USD 5.9M
# total, GPUs 39% of the total (USD 2.3M), so non-GPU compute hardware is 1.1 / 2.3 = 0.48 of the
# GPUs. (Cross-check: SemiAnalysis' ~USD 270,000 DGX H100 against 8 x USD 27,500 GPUs is 0.23 for
# the server alone, before the cluster network Bernstein puts at ~13% of total capex.)
NODE_OVERHEAD_SHARE = 0.48
# Facility construction per MW of critical (IT) load: average of 19 US markets, USD 11.7M (range
# 9.3-15.0), Cushman & Wakefield, Data Center Development Cost Guide 2025 (excludes land, owner-
# furnished equipment and soft costs).
FACILITY_USD_PER_MW = 11.7e6
# Facility life: data-center REIT component lives (DuPont Fabros Technology 10-K 2013, SEC): power
# distribution units and HVAC 20 years, UPS and chillers 25, switchgear and transformers 30,
# building 40; the shortest major mechanical/electrical life is taken.
FACILITY_LIFE_YEARS = 20.0
# Data-center project debt: 15-year-lease-backed notes for a CoreWeave data center priced to yield
# 7.5% (Prime Data Centers / Elk Grove Village Property, Bloomberg, reported by startupfortune.com,
# 2026); Applied Digital's comparable notes 7%.
FACILITY_FINANCING_RATE = 0.075



class TariffSchedule(Frozen):
    """Electricity price as a step function of simulated time: ``usd_per_kwh[i]`` from ``times_s[i]``
    until the next time, repeated every ``period_s`` if given (86400 for a daily time-of-use
    tariff: e.g. ``times_s: [0, 25200, 75600]``, ``usd_per_kwh: [0.06, 0.11, 0.06]``)."""

    times_s: list[NonNeg] = Field(min_length=1)
    usd_per_kwh: list[Annotated[float, Field(ge=0, le=1e3)]] = Field(min_length=1)
    period_s: Optional[Pos] = None

    @model_validator(mode="after")
    def _shape(self):
        check_step_function(self.times_s, self.usd_per_kwh, self.period_s, "usd_per_kwh")
        return self

    def at(self, t) -> np.ndarray:
        """Price ($/kWh) at simulated times ``t``."""
        return step_at(self.times_s, self.usd_per_kwh, self.period_s, t)

    def integral(self, t) -> np.ndarray:
        """``integral_0^t price(u) du`` ($/kWh x s) at times ``t >= 0``: exact over the steps."""
        t = np.maximum(np.asarray(t, dtype=float), 0.0)
        start = np.asarray(self.times_s)
        price = np.asarray(self.usd_per_kwh)
        ends = np.append(start[1:], self.period_s if self.period_s is not None else np.inf)
        seg = price[:-1] * (ends[:-1] - start[:-1])
        before = np.concatenate([[0.0], np.cumsum(seg)])  # integral up to each step's start
        if self.period_s is not None:
            full = before[-1] + price[-1] * (self.period_s - start[-1])
            k = np.floor(t / self.period_s)
            x = t - k * self.period_s
        else:
            full, k, x = 0.0, 0.0, t
        i = np.clip(np.searchsorted(start, x, side="right") - 1, 0, len(price) - 1)
        return k * full + before[i] + price[i] * (x - start[i])


class CloudCapex(Frozen):
    """Rented accelerators: each device costs its hourly price, ``usd_per_device_hour[<accelerator>]``
    or else the card's ``price_usd_per_hour`` (a dated public price list). The rent covers the
    facility. ``energy_billed`` adds metered energy at the tariff on top (the simulator's model
    before this section existed, and colocation-style billing); most on-demand GPU clouds include
    power in the hourly price: set it false for them."""

    kind: Literal["cloud"]
    usd_per_device_hour: dict[str, Usd] = {}
    energy_billed: bool = True


class OwnedCapex(Frozen):
    """Owned accelerators: purchase price (``purchase_usd[<accelerator>]``, else hardware/economics.yaml)
    plus node overhead (``node_overhead_usd[<accelerator>]`` per device, else ``node_overhead_share``
    of the price), repaid over ``life_years`` at ``financing_rate``; the facility costs
    ``facility_usd_per_mw`` of provisioned IT power per device (``it_w_per_device[<accelerator>]``,
    else the card's node maximum power over its devices per node), repaid over
    ``facility_life_years`` at ``facility_financing_rate``. Defaults and their sources: module
    constants of sim/models/economics.py and docs/economics.md."""

    kind: Literal["owned"]
    purchase_usd: dict[str, PosUsd] = {}
    node_overhead_usd: dict[str, Usd] = {}
    node_overhead_share: Annotated[float, Field(ge=0, le=100)] = NODE_OVERHEAD_SHARE
    life_years: Years = DEVICE_LIFE_YEARS
    financing_rate: Rate = DEVICE_FINANCING_RATE
    it_w_per_device: dict[str, Annotated[float, Field(gt=0, le=1e6)]] = {}
    facility_usd_per_mw: Usd = FACILITY_USD_PER_MW
    facility_life_years: Years = FACILITY_LIFE_YEARS
    facility_financing_rate: Rate = FACILITY_FINANCING_RATE


Capex = Annotated[Union[CloudCapex, OwnedCapex], Field(discriminator="kind")]

_PRICE_FIELDS = ("input_usd_per_mtok", "cached_input_usd_per_mtok", "output_usd_per_mtok", "per_request_usd")


class TierPrices(Frozen):
    """Prices of one reasoning-effort tier of a class; a field left out keeps the class's price."""

    input_usd_per_mtok: Optional[Usd] = None
    cached_input_usd_per_mtok: Optional[Usd] = None
    output_usd_per_mtok: Optional[Usd] = None
    per_request_usd: Optional[Usd] = None


class ClassPrices(Frozen):
    """Price list of one workload class: USD per million prompt tokens computed (``input``), per
    million prompt tokens served from the prefix cache (``cached_input``; None: the input price),
    per million generated tokens (``output``; reasoning tokens included, as reasoning APIs bill
    them) and per request (a call, a job, a session or a video, whichever the class sends);
    ``tiers`` override them per reasoning-effort tier."""

    input_usd_per_mtok: Usd = 0.0
    cached_input_usd_per_mtok: Optional[Usd] = None
    output_usd_per_mtok: Usd = 0.0
    per_request_usd: Usd = 0.0
    tiers: dict[str, TierPrices] = {}

    def effective(self, tier: str) -> tuple[float, float, float, float]:
        """(input, cached input, output per million tokens, per request) for ``tier``."""
        base = [self.input_usd_per_mtok, self.cached_input_usd_per_mtok, self.output_usd_per_mtok, self.per_request_usd]
        over = self.tiers.get(tier)
        if over is not None:
            base = [getattr(over, f) if getattr(over, f) is not None else b for f, b in zip(_PRICE_FIELDS, base)]
        if base[1] is None:
            base[1] = base[0]
        return tuple(float(x) for x in base)


class Pricing(Frozen):
    """Prices per workload class (``classes``, keyed by class name) and the reasoning-effort tiers a
    job falls into: ``effort_tiers`` maps a tier name to the largest thinking budget it covers
    (``null``: any budget, and jobs without one). A job takes the first tier, in increasing budget
    order, that covers its budget; jobs no tier covers stay untiered (``""``)."""

    effort_tiers: dict[str, Optional[Tokens]] = {}
    classes: dict[str, ClassPrices] = {}

    @model_validator(mode="after")
    def _tiers(self):
        caps = [v for v in self.effort_tiers.values() if v is not None]
        if len(caps) != len(set(caps)):
            raise KeyedError(f"{KEY}.pricing.effort_tiers", "two tiers cover the same thinking budget")
        if len(self.effort_tiers) - len(caps) > 1:
            raise KeyedError(f"{KEY}.pricing.effort_tiers", "at most one tier may cover any budget (null)")
        for cls, prices in self.classes.items():
            for tier in prices.tiers:
                if tier not in self.effort_tiers:
                    known = ", ".join(self.effort_tiers) or "none defined in pricing.effort_tiers"
                    raise KeyedError(f"{KEY}.pricing.classes.{cls}.tiers.{tier}", f"unknown tier '{tier}' (tiers: {known})")
        return self

    def ordered_tiers(self) -> list[tuple[str, float]]:
        """(tier, largest budget covered) from the smallest budget up; ``inf`` for ``null``."""
        return sorted(((n, math.inf if v is None else float(v)) for n, v in self.effort_tiers.items()),
                      key=lambda x: x[1])

    def tier_of(self, budgets: np.ndarray) -> np.ndarray:
        """Tier name of each job's thinking budget (-1: no budget)."""
        b = np.where(np.asarray(budgets) < 0, np.inf, np.asarray(budgets, dtype=float))
        out = np.full(len(b), "", dtype=object)
        done = np.zeros(len(b), dtype=bool)
        for name, cap in self.ordered_tiers():
            m = ~done & (b <= cap)
            out[m] = name
            done |= m
        return out

    def unknown_class(self, classes: list[str]) -> tuple[str, str] | None:
        """(key path, message) of the first price list naming a class the workload lacks."""
        for name in self.classes:
            if name not in classes:
                return f"{KEY}.pricing.classes.{name}", f"unknown workload class '{name}' (classes: {', '.join(classes)})"
        return None


class Economics(Frozen):
    """``datacenter.economics``: how devices are paid for (``capex``, default rented at the cards'
    hourly prices), the electricity ``tariff`` over time (default the flat
    ``datacenter.energy_usd_per_kwh``) and the ``pricing`` of the work."""

    capex: Capex = CloudCapex(kind="cloud")
    tariff: Optional[TariffSchedule] = None
    pricing: Pricing = Pricing()
