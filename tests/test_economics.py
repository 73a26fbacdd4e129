"""Economics (sim/models/economics.py): the cost of owning or renting the fleet, time-of-day tariffs,
revenue and margin per class and reasoning-effort tier, and the errors bad input gets.

Expected values are computed here from first principles (annuity present values, the steps
table split at the tariff's steps, the jobs and calls tables priced by hand), not copied from
the module under test."""

import copy
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from scenarios import llm_scenario
from sim.config import economics as econ_config
from sim.models import economics
from sim.output import economics as econ_tables
from sim.config import load_raw, validate
from sim.errors import ScenarioError
from sim.run import run_point
from sim.cluster.world import build

ROOT = Path(__file__).parent.parent


def annuity_share(rate: float, years: float) -> float:
    """Yearly payment per dollar borrowed, from the present value of a level annuity paid at the
    end of each of ``years`` years (integer years: an explicit sum)."""
    if rate == 0:
        return 1.0 / years
    return 1.0 / sum((1 + rate) ** -k for k in range(1, int(years) + 1))


def run(raw: dict, tmp_path, name: str = "p"):
    """Run a scenario dict; return its summary and a reader of its tables."""
    s = run_point(validate(copy.deepcopy(raw), "t.yaml", "."), str(tmp_path), name)
    return s, lambda t: pq.read_table(tmp_path / t / f"point_id={name}" / "part-0.parquet")


def owned(**capex) -> dict:
    return {"capex": {"kind": "owned", **capex}}


# --------------------------------------------------------------------------- TCO
@pytest.mark.parametrize("rate,years", [(0.10, 5), (0.075, 20), (0.0, 4), (0.3, 1)])
def test_capital_recovery_factor_is_the_annuity_that_repays_the_price(rate, years):
    assert math.isclose(economics.capital_recovery_factor(rate, years), annuity_share(rate, years), rel_tol=1e-12)


def test_owned_tco_per_hour_is_amortization_plus_facility_plus_energy(tmp_path):
    raw = llm_scenario()
    raw["datacenter"]["host_w_per_device"] = 300.0
    raw["datacenter"]["economics"] = owned(purchase_usd={"h100-sxm": 30000}, node_overhead_share=0.5, life_years=4,
                                           financing_rate=0.08, it_w_per_device={"h100-sxm": 1300},
                                           facility_usd_per_mw=10e6, facility_life_years=15,
                                           facility_financing_rate=0.06)
    s, _ = run(raw, tmp_path)
    devices = 2
    capex_h = devices * 30000 * 1.5 * annuity_share(0.08, 4) / 8760
    facility_h = devices * 1300e-6 * 10e6 * annuity_share(0.06, 15) / 8760
    hours = (s["duration_s"] - s["warmup_s"]) / 3600
    # facility energy comes from resource_metrics (devices' step energy + hosts, times PUE)
    energy_usd = s["facility_energy_j"] / 3.6e6 * 0.08
    assert math.isclose(s["capex_usd_per_hour"], capex_h, rel_tol=1e-12)
    assert math.isclose(s["facility_usd_per_hour"], facility_h, rel_tol=1e-12)
    assert math.isclose(s["energy_cost_usd"], energy_usd, rel_tol=1e-9)
    assert math.isclose(s["cost_usd_per_hour"], capex_h + facility_h + energy_usd / hours, rel_tol=1e-9)
    assert math.isclose(s["cost_usd"], (capex_h + facility_h) * hours + energy_usd, rel_tol=1e-9)
    out_tokens = s["output_tokens_per_s"] * (s["duration_s"] - s["warmup_s"])
    assert math.isclose(s["usd_per_million_output_tokens"], s["cost_usd"] / out_tokens * 1e6, rel_tol=1e-9)


def test_default_owned_rates_use_the_sourced_price_and_the_card_node_power():
    raw = llm_scenario()
    raw["datacenter"]["economics"] = owned()
    world = build(validate(raw), None)
    r = world.rates.devices["main"]
    acc = world.specs[0].acc
    price = economics.purchase_prices()["h100-sxm"]
    expect_capex = price * (1 + econ_config.NODE_OVERHEAD_SHARE) * annuity_share(econ_config.DEVICE_FINANCING_RATE, 5) / 8760
    expect_facility = (acc.node_max_power_w / acc.devices_per_node) / 1e6 * econ_config.FACILITY_USD_PER_MW \
        * annuity_share(econ_config.FACILITY_FINANCING_RATE, 20) / 8760
    assert math.isclose(r.capex_usd_per_hour, expect_capex, rel_tol=1e-12)
    assert math.isclose(r.facility_usd_per_hour, expect_facility, rel_tol=1e-12)


def test_every_sourced_purchase_price_is_a_known_accelerator_with_a_source():
    data = yaml.safe_load((ROOT / "hardware" / "economics.yaml").read_text())
    from sim.hardware import catalog

    for name, card in data["accelerators"].items():
        assert name in catalog.accelerators()
        src = card["purchase_usd"]["source"]
        assert card["purchase_usd"]["value"] > 0 and src.split(" ")[0] in data["sources"]


def test_cloud_economics_reproduces_the_unconfigured_costs_bit_for_bit(tmp_path):
    raw = llm_scenario()
    raw["workload"]["classes"][1]["job"] = {"strategy": {"kind": "single", "thinking_budget": 512}}
    del raw["workload"]["classes"][1]["output_tokens"]
    base, read0 = run(raw, tmp_path / "a")
    raw["datacenter"]["economics"] = {"capex": {"kind": "cloud"}}
    cloud, read1 = run(raw, tmp_path / "b")
    for k in ("device_cost_usd", "energy_cost_usd", "usd_per_1k_jobs"):
        assert math.isclose(cloud[k], base[k], rel_tol=1e-12), k
    assert read0("jobs")["cost_usd"].to_pylist() == read1("jobs")["cost_usd"].to_pylist()  # same per-call costs
    # rent that includes power: the hourly price and nothing else
    raw["datacenter"]["economics"] = {"capex": {"kind": "cloud", "usd_per_device_hour": {"h100-sxm": 2.0},
                                                "energy_billed": False}}
    rent, _ = run(raw, tmp_path / "c")
    assert rent["energy_cost_usd"] == 0 and math.isclose(rent["cost_usd_per_hour"], 2 * 2.0, rel_tol=1e-12)


# --------------------------------------------------------------------------- time of day
def test_tariff_integral_matches_a_fine_sum():
    periodic = econ_config.TariffSchedule(times_s=[0, 7, 13], usd_per_kwh=[0.05, 0.30, 0.10], period_s=20)
    once = econ_config.TariffSchedule(times_s=[0, 7, 13], usd_per_kwh=[0.05, 0.30, 0.10])
    for sched in (periodic, once):
        grid = np.linspace(0, 95, 950001)
        fine = np.concatenate([[0.0], np.cumsum(sched.at(grid[:-1]) * np.diff(grid))])
        for t in (0.0, 3.3, 7.0, 12.99, 20.0, 41.7, 95.0):
            assert math.isclose(float(sched.integral(t)), fine[int(round(t * 10000))], rel_tol=1e-6, abs_tol=1e-9)


def test_time_of_day_tariff_prices_each_step_at_its_hour(tmp_path):
    raw = llm_scenario()
    raw["datacenter"]["host_w_per_device"] = 300.0
    cheap, dear = 0.05, 0.30
    raw["datacenter"]["economics"] = {**owned(), "tariff": {"times_s": [0, 5], "usd_per_kwh": [cheap, dear], "period_s": 10}}
    s, read = run(raw, tmp_path)
    t0, t1 = s["warmup_s"], s["duration_s"]
    steps = read("steps").to_pylist()
    price = lambda t: cheap if (t % 10) < 5 else dear
    # split every row at the tariff's steps and the window's edges; its energy is spread evenly
    joule_usd = 0.0
    for r in steps:
        if r["end_s"] <= r["start_s"]:
            continue
        cuts = sorted({r["start_s"], r["end_s"], *[k * 5.0 for k in range(int(r["start_s"] // 5) + 1, int(r["end_s"] // 5) + 1)]})
        for a, b in zip(cuts, cuts[1:]):
            a, b = max(a, t0), min(b, t1)
            if b > a:
                joule_usd += r["energy_j"] * (b - a) / (r["end_s"] - r["start_s"]) * price((a + b) / 2)
    edges = sorted({t0, t1, *[k * 5.0 for k in range(int(t0 // 5) + 1, int(t1 // 5) + 1)]})
    host_w = 300.0 * 2
    joule_usd += sum(host_w * (b - a) * price((a + b) / 2) for a, b in zip(edges, edges[1:]))
    expected = joule_usd * 1.2 / 3.6e6
    assert math.isclose(s["energy_cost_usd"], expected, rel_tol=1e-9)
    flat_mean = s["facility_energy_j"] / 3.6e6 * (cheap + dear) / 2
    assert not math.isclose(s["energy_cost_usd"], flat_mean, rel_tol=1e-3)  # the hour of use matters


# --------------------------------------------------------------------------- margins
PRICES = {"in": 0.4, "cached": 0.1, "out": 2.0}
TIER_OUT = {"low": 1.0, "medium": 2.0, "high": 6.0}
PER_JOB = {"low": 0.0, "medium": 0.0005, "high": 0.002}


def tiered_scenario() -> dict:
    """Chat calls and reasoning jobs whose effort an adaptive policy picks per question."""
    raw = llm_scenario(duration_s=60.0, warmup_s=10.0)
    raw["workload"]["classes"][1] = {
        "name": "think", "pool": "main", "arrival": {"kind": "poisson", "rate_per_s": 0.6},
        "prompt_tokens": {"kind": "fixed", "value": 300},
        "job": {"strategy": {"kind": "adaptive", "predictor_accuracy": 0.9, "policies": {
            "easy": {"kind": "single", "thinking_budget": 256},
            "medium": {"kind": "self_consistency", "n": 2, "thinking_budget": 1024},
            "hard": {"kind": "single"}}}},
    }
    raw["datacenter"]["economics"] = {**owned(), "pricing": {
        "effort_tiers": {"low": 256, "medium": 1024, "high": None},
        "classes": {
            "chat": {"input_usd_per_mtok": PRICES["in"], "output_usd_per_mtok": PRICES["out"]},
            "think": {"input_usd_per_mtok": PRICES["in"], "cached_input_usd_per_mtok": PRICES["cached"],
                      "output_usd_per_mtok": PRICES["out"],
                      "tiers": {t: {"output_usd_per_mtok": TIER_OUT[t], "per_request_usd": PER_JOB[t]} for t in TIER_OUT}},
        }}}
    return raw


def test_margin_is_revenue_minus_cost_per_class_and_tier_and_sums_to_the_totals(tmp_path):
    s, read = run(tiered_scenario(), tmp_path)
    t0, t1 = s["warmup_s"], s["duration_s"]
    rows = read("economics").to_pylist()
    by = {(r["class"], r["tier"]): r for r in rows}
    assert set(by) == {("chat", ""), ("think", "low"), ("think", "medium"), ("think", "high")}
    for r in rows:
        assert math.isclose(r["margin_usd"], r["revenue_usd"] - r["cost_usd"], rel_tol=1e-12, abs_tol=1e-15)
        assert 0 <= r["idle_cost_usd"] <= r["cost_usd"]
    # the class costs share out the fleet's whole cost, idle capacity included
    assert math.isclose(sum(r["cost_usd"] for r in rows), s["cost_usd"], rel_tol=1e-9)
    assert math.isclose(sum(r["revenue_usd"] for r in rows), s["revenue_usd"], rel_tol=1e-12)
    assert math.isclose(s["margin_usd"], s["revenue_usd"] - s["cost_usd"], rel_tol=1e-9)
    think = [r for r in rows if r["class"] == "think"]
    assert math.isclose(s["econ_think_margin_usd"], sum(r["margin_usd"] for r in think), rel_tol=1e-9)
    assert math.isclose(s["econ_think_high_margin_usd"], by[("think", "high")]["margin_usd"], rel_tol=1e-12)

    # revenue priced by hand from the jobs table: tier by thinking budget, finished jobs only
    jobs = [j for j in read("jobs").to_pylist() if t0 <= j["arrival_s"] < t1]
    tier_of = lambda b: "high" if b < 0 or b > 1024 else ("low" if b <= 256 else "medium")
    for tier in TIER_OUT:
        mine = [j for j in jobs if tier_of(j["thinking_budget_tokens"]) == tier]
        assert by[("think", tier)]["units"] == len(mine) > 0
        revenue = sum((j["input_tokens"] - j["cached_tokens"]) * PRICES["in"] / 1e6 + j["cached_tokens"] * PRICES["cached"] / 1e6
                      + j["output_tokens"] * TIER_OUT[tier] / 1e6 + PER_JOB[tier] for j in mine if j["status"] == "finished")
        assert math.isclose(by[("think", tier)]["revenue_usd"], revenue, rel_tol=1e-9)
        assert by[("think", tier)]["correct"] == sum(j["correct"] for j in mine)
    # ... and chat from the calls table (no cached-input price given: cached tokens pay the input price)
    calls = [c for c in read("calls").to_pylist() if c["class"] == "chat" and t0 <= c["arrival_s"] < t1]
    chat = sum(c["prompt_tokens"] * PRICES["in"] / 1e6 + c["generated_tokens"] * PRICES["out"] / 1e6
               for c in calls if c["status"] == "finished")
    assert math.isclose(by[("chat", "")]["revenue_usd"], chat, rel_tol=1e-9)
    # costs follow the work run: a tier's share of the fleet cost is its share of the tokens run
    work = {}
    ids = {j["job_id"]: tier_of(j["thinking_budget_tokens"]) for j in jobs}
    for c in read("calls").to_pylist():
        key = ("chat", "") if c["class"] == "chat" and t0 <= c["arrival_s"] < t1 else \
            ("think", ids[c["job_id"]]) if c["job_id"] in ids else None
        if key:
            work[key] = work.get(key, 0) + c["prompt_tokens"] - c["cached_tokens"] + c["generated_tokens"]
    total = sum(work.values())
    for key, w in work.items():
        assert math.isclose(by[key]["cost_usd"], s["cost_usd"] * w / total, rel_tol=1e-9)


def test_sessions_videos_and_an_unused_pool_share_the_fleet_cost(tmp_path):
    raw = {
        "name": "mix", "seed": 5, "duration_s": 60.0, "warmup_s": 5.0, "drain_s": 600.0,
        "datacenter": {"pools": [
            {"name": "chat", "accelerator": "h100-sxm", "model": "llama-3.1-8b"},
            {"name": "gen", "kind": "diffusion", "accelerator": "h100-sxm", "model": "flux.1-dev", "replicas": 1},
            {"name": "spare", "accelerator": "h100-sxm", "model": "llama-3.1-8b"},
        ], "economics": {**owned(), "pricing": {"classes": {"img": {"per_request_usd": 0.01},
                                                            "agent": {"per_request_usd": 0.02}}}}},
        "workload": {"classes": [
            {"name": "agent", "pool": "chat", "arrival": {"kind": "poisson", "rate_per_s": 0.3},
             "prompt_tokens": {"kind": "fixed", "value": 2000},
             "session": {"turns": {"kind": "fixed", "value": 2}, "output_tokens": {"kind": "fixed", "value": 80},
                         "tools": [{"name": "t", "latency_s": {"kind": "fixed", "value": 2.0}}],
                         "tool_calls_per_turn": {"kind": "fixed", "value": 1}}},
            {"name": "img", "pool": "gen", "arrival": {"kind": "poisson", "rate_per_s": 0.3}, "video": {"frames": 1}},
        ]},
    }
    s, read = run(raw, tmp_path)
    rows = {r["class"]: r for r in read("economics").to_pylist()}
    assert set(rows) == {"agent", "img", econ_tables.UNUSED}
    assert rows["agent"]["kind"] == "session" and rows["img"]["kind"] == "video"
    assert math.isclose(sum(r["cost_usd"] for r in rows.values()), s["cost_usd"], rel_tol=1e-9)
    # the idle pool's devices cost a third of the capex and facility, and all of it is idle
    fixed = (s["capex_usd_per_hour"] + s["facility_usd_per_hour"]) * (s["duration_s"] - s["warmup_s"]) / 3600
    assert rows[econ_tables.UNUSED]["cost_usd"] > fixed / 3
    assert math.isclose(rows[econ_tables.UNUSED]["idle_cost_usd"], rows[econ_tables.UNUSED]["cost_usd"], rel_tol=1e-9)
    videos = [v for v in read("videos").to_pylist() if 5.0 <= v["arrival_s"] < 60.0]
    assert math.isclose(rows["img"]["revenue_usd"], 0.01 * sum(v["status"] == "finished" for v in videos), rel_tol=1e-12)
    assert rows["agent"]["units"] > 0 and rows["agent"]["revenue_usd"] == pytest.approx(0.02 * rows["agent"]["billed_units"])


def test_shipped_economics_scenarios_resolve_their_prices(tmp_path):
    from sim.config.sweep import expand
    from sim.cluster.pools import resolve_pool

    for name in ("economics.yaml", "pricing_tiers.yaml"):
        path = ROOT / "scenarios" / name
        points = expand(load_raw(path), str(path))
        for p in points:
            sc = validate(p.raw, str(path), path.parent)
            specs = [resolve_pool(sc, i, str(path)) for i in range(len(sc.datacenter.pools))]
            rates = economics.resolve(sc, specs, str(path))
            assert all(r.capex_usd_per_hour > 0 and r.facility_usd_per_hour > 0 for r in rates.devices.values())
    accs = {validate(p.raw, "e", ROOT / "scenarios").datacenter.pools[0].accelerator
            for p in expand(load_raw(ROOT / "scenarios" / "economics.yaml"), "e")}
    assert len(accs) >= 5
    # one short point of the tier sweep runs end to end and writes its economics table
    sc = validate(expand(load_raw(ROOT / "scenarios" / "pricing_tiers.yaml"), "t")[3].raw, "t", ROOT / "scenarios")
    s = run_point(sc.model_copy(update={"duration_s": 150.0, "warmup_s": 30.0}), str(tmp_path), "q")
    assert s["revenue_usd"] > 0 and {"econ_api_low_margin_usd", "econ_api_high_margin_usd"} <= set(s)


def test_at_slo_picks_the_cheapest_point_that_meets_the_slo(tmp_path):
    from analysis.economics import at_slo

    pts = [("a", 1, 0.1, 0.02, 5.0), ("a", 2, 0.2, 0.04, 3.0), ("a", 3, 9.0, 0.09, 2.0), ("b", 1, 3.0, 0.08, 1.0)]
    pq.write_table(pa.table({"point_id": [f"p{i}" for i in range(4)], "acc": [p[0] for p in pts],
                             "load": [p[1] for p in pts], "status": ["ok"] * 4}), tmp_path / "points.parquet")
    pq.write_table(pa.table({"point_id": [f"p{i}" for i in range(4)], "ttft_p90_s": [p[2] for p in pts],
                             "tpot_p90_s": [p[3] for p in pts], "usd_per_million_output_tokens": [p[4] for p in pts]}),
                   tmp_path / "summary.parquet")
    a, b = at_slo(str(tmp_path), "acc", ttft_p90_s=1.0, tpot_p90_s=0.05)
    assert a["meets_slo"] and a["load"] == 2 and a["usd_per_million_output_tokens"] == 3.0 and a["points_meeting_slo"] == 2
    assert not b["meets_slo"] and math.isnan(b["usd_per_million_output_tokens"])


# --------------------------------------------------------------------------- bad input
def _eco(r, **kw):
    r["datacenter"]["economics"] = kw


BAD = {
    "negative_price": (lambda r: _eco(r, pricing={"classes": {"chat": {"output_usd_per_mtok": -1}}}),
                       "datacenter.economics.pricing.classes.chat.output_usd_per_mtok", "greater than or equal to 0"),
    "negative_purchase": (lambda r: _eco(r, capex={"kind": "owned", "purchase_usd": {"h100-sxm": -5}}),
                          "datacenter.economics.capex.purchase_usd.h100-sxm", "greater than 0"),
    "unknown_tier": (lambda r: _eco(r, pricing={"effort_tiers": {"low": 100},
                                                "classes": {"chat": {"tiers": {"ultra": {"per_request_usd": 1}}}}}),
                     "datacenter.economics.pricing.classes.chat.tiers.ultra", "unknown tier 'ultra'"),
    "unknown_class": (lambda r: _eco(r, pricing={"classes": {"nochat": {"per_request_usd": 1}}}),
                      "datacenter.economics.pricing.classes.nochat", "unknown workload class 'nochat'"),
    "unknown_capex": (lambda r: _eco(r, capex={"kind": "leased"}), "datacenter.economics.capex", "unknown kind 'leased'"),
    "no_price_source": (lambda r: (_eco(r, capex={"kind": "owned"}), r["datacenter"]["pools"][0].update(accelerator="l40s")),
                        "datacenter.economics.capex.purchase_usd", "no purchase price with a public source for l40s"),
    "unknown_accelerator": (lambda r: _eco(r, capex={"kind": "owned", "purchase_usd": {"h1000": 5}}),
                            "datacenter.economics.capex.purchase_usd.h1000", "unknown accelerator 'h1000'"),
    "bad_tariff": (lambda r: _eco(r, tariff={"times_s": [0, 10, 5], "usd_per_kwh": [1, 2, 3]}),
                   "datacenter.economics.tariff", "must start at 0 and increase"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_economics_is_one_line_naming_file_and_key(case, tmp_path):
    fn, key, words = BAD[case]
    raw = llm_scenario()
    fn(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    commands = [["validate", str(path)]] + ([["run", str(path), "--out", str(tmp_path / "o")]]
                                           if case in ("negative_price", "no_price_source") else [])
    for args in commands:
        res = subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, timeout=120)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert str(path) in lines[0] and key in lines[0] and words in lines[0], lines[0]
    assert not (tmp_path / "o").exists()


def test_bad_input_raises_scenario_error_in_process():
    raw = llm_scenario()
    BAD["unknown_class"][0](raw)
    with pytest.raises(ScenarioError, match="datacenter.economics.pricing.classes.nochat"):
        validate(raw, "x.yaml")
