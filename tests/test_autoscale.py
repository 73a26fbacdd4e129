"""Autoscaling with power states: replicas boot, serve, drain and switch off as the policy
says; off replicas draw nothing; a perfect policy saves energy at the same latency; a rate
schedule's arrivals follow it."""

import math

import numpy as np
import pytest

from scenarios import run_tables, same_calls
from sim import config as C
from sim.cluster.autoscale import boot_seconds
from sim.config import validate
from sim.errors import ScenarioError
from sim.rng import stream
from sim.workloads.arrivals import RateSchedule

STEPS = {"times_s": [0, 300, 600, 900], "rates_per_s": [2, 12, 6, 1]}  # a day's shape in 20 minutes


def scaled(autoscale, duration=1200.0, replicas=4, arrival=None, **pool):
    return {"name": "as", "seed": 3, "duration_s": duration, "warmup_s": 0.0,
            "datacenter": {"pools": [{"name": "main", "accelerator": "h100-sxm", "model": "llama-3.1-8b",
                                      "replicas": replicas, "router": {"kind": "jsq"}, "autoscale": autoscale,
                                      **pool}]},
            "workload": {"classes": [{
                "name": "chat", "pool": "main", "arrival": arrival or {"kind": "schedule", **STEPS},
                "prompt_tokens": {"kind": "lognormal", "median": 900, "sigma": 0.8, "max": 16000},
                "output_tokens": {"kind": "lognormal", "median": 250, "sigma": 0.7, "max": 2000}}]}}


def _events(events, kind):
    k = events["kind"].to_numpy(zero_copy_only=False)
    return [r for r, x in zip(events.to_pylist(), k) if x == kind]


def test_perfect_autoscaler_with_zero_boot_saves_energy_at_the_same_latency(tmp_path):
    """Knowing the coming rate (the 'rate' policy reads the workload's schedule) and booting
    instantly, the pool serves with as many replicas as the load needs: the same TTFT and
    time per token as all four replicas always on, for less energy (idle replicas are off,
    hosts included)."""
    always = scaled(None)
    del always["datacenter"]["pools"][0]["autoscale"]
    on, _ = run_tables(always, tmp_path, "on", "calls")
    auto, steps, events = run_tables(scaled({"policy": "rate", "capacity_rps": 3, "interval_s": 10, "boot_s": 0}),
                                     tmp_path, "auto", "steps", "events")
    assert auto["calls_finished"] == auto["calls_created"] == on["calls_created"]  # same arrivals, all served
    for m in ("ttft_p50_s", "tpot_p50_s", "e2e_p50_s"):
        assert auto[m] == pytest.approx(on[m], rel=0.10), m
    assert auto["ttft_p90_s"] < 1.5 * on["ttft_p90_s"]
    assert auto["facility_energy_j"] < 0.75 * on["facility_energy_j"]
    assert auto["host_energy_j"] < on["host_energy_j"]
    assert auto["replicas_on_mean"] < 0.7 * 4
    kinds = steps["kind"].to_numpy(zero_copy_only=False)
    off = kinds == "off"
    assert off.any() and np.all(steps["energy_j"].to_numpy()[off] == 0)
    assert len(_events(events, "off")) >= 2 and len(_events(events, "ready")) >= 2


def test_boot_takes_weight_load_time_at_idle_power(tmp_path):
    """A replica switched on serves only after start-up plus its weights read from storage;
    meanwhile it draws idle power."""
    cfg = C.Autoscale(policy="rate", capacity_rps=4, interval_s=10, startup_s=20, storage_gb_s=2.0)
    s, steps, events = run_tables(scaled(cfg.model_dump()), tmp_path, "b", "steps", "events")
    weights = 8.03e9 * 2  # Llama-3.1-8B bf16, bytes
    assert boot_seconds(cfg, s_weight_gib(tmp_path)) == pytest.approx(20 + weights / 2e9, rel=0.02)
    boots, ready = _events(events, "boot"), _events(events, "ready")
    assert boots and len(ready) == len(boots)
    for b in boots:
        r = next(x for x in ready if x["replica"] == b["replica"] and x["time_s"] >= b["time_s"])
        assert r["time_s"] - b["time_s"] == pytest.approx(boot_seconds(cfg, s_weight_gib(tmp_path)), rel=1e-9)
    kinds = steps["kind"].to_numpy(zero_copy_only=False)
    booting = kinds == "booting"
    power = steps["avg_power_w"].to_numpy()[booting]
    assert booting.any() and np.allclose(power, power[0]) and 50 < power[0] < 200
    # predictive: booted lead_s = boot time ahead of the rise at 300 s, so it serves by then
    assert min(r["time_s"] for r in ready) <= 300


def s_weight_gib(tmp_path):
    from sim.cluster.pools import resolve_pool

    sc = validate(scaled({"policy": "queue"}))
    return resolve_pool(sc, 0, "").weight_gib


@pytest.mark.parametrize("policy", [{"policy": "queue", "target_queue": 16},
                                    {"policy": "utilization", "target_utilization": 0.3},
                                    {"policy": "latency", "target_ttft_s": 0.2}])
def test_reactive_policies_follow_the_load(policy, tmp_path):
    """Each reactive policy serves the peak with more replicas than the trough (the peak
    overloads one replica: 40 calls/s)."""
    raw = scaled({**policy, "interval_s": 15, "boot_s": 20},
                 arrival={"kind": "schedule", "times_s": STEPS["times_s"], "rates_per_s": [2, 40, 6, 1]})
    s, steps, events = run_tables(raw, tmp_path, "p", "steps", "events")
    assert s["calls_finished"] == s["calls_created"]
    serving = _serving_over_time(steps, 4)
    assert serving(550) > serving(150) and serving(550) > serving(1150)


def _serving_over_time(steps, replicas):
    kinds = steps["kind"].to_numpy(zero_copy_only=False)
    start, end = steps["start_s"].to_numpy(), steps["end_s"].to_numpy()
    down = np.isin(kinds, ("off", "booting"))

    def serving(t):
        return replicas - int(((start <= t) & (t < end) & down).sum())
    return serving


def test_schedule_policy_keeps_the_planned_replicas(tmp_path):
    plan = {"times_s": [0, 400, 800], "replicas": [1, 3, 2]}
    s, steps = run_tables(scaled({"policy": "schedule", "schedule": plan, "interval_s": 10, "boot_s": 0}),
                          tmp_path, "s", "steps")
    serving = _serving_over_time(steps, 4)
    # draining replicas finish their calls first, so look a minute after each change
    assert [serving(t) for t in (200, 500, 1100)] == [1, 3, 2]


def test_engine_modes_agree_under_autoscaling(tmp_path):
    raw = scaled({"policy": "queue", "target_queue": 8, "interval_s": 10, "boot_s": 5}, duration=400.0)
    _, a = run_tables(raw, tmp_path, "m", "calls")
    _, b = run_tables({**raw, "engine_mode": "per_iteration"}, tmp_path, "r", "calls")
    assert same_calls(a, b)


def test_autoscaling_with_faults_loses_no_call(tmp_path):
    raw = scaled({"policy": "queue", "target_queue": 8, "interval_s": 10, "boot_s": 5}, duration=600.0,
                 faults={"mtbf_s": 60, "mttr_s": 20})
    raw["drain_s"] = 3000
    s, calls = run_tables(raw, tmp_path, "f", "calls")
    status = calls["status"].to_numpy(zero_copy_only=False)
    assert calls.num_rows == s["calls_created"] == int(np.isin(status, ("finished", "failed", "dropped")).sum())
    assert s["availability"] < 1


def test_schedule_arrivals_follow_the_rate():
    """The non-homogeneous Poisson draw: counts per piece match rate x length within 4 sigma."""
    import simpy

    from sim.workloads.arrivals import generate_calls

    cls = C.WorkloadClass(name="c", pool="p", arrival={"kind": "schedule", "times_s": [0, 100, 250],
                                                       "rates_per_s": [5, 0, 20], "period_s": 300},
                          prompt_tokens={"kind": "fixed", "value": 10}, output_tokens={"kind": "fixed", "value": 1})
    env = simpy.Environment()
    times = []
    env.process(generate_calls(env, cls, lambda n: stream(1, 0, n), None, 1200.0,
                               lambda c, t, p, o: times.append(t), "k"))
    env.run()
    t = np.mod(np.array(times), 300)
    for lo, hi, rate in ((0, 100, 5), (100, 250, 0), (250, 300, 20)):
        n, expect = int(((t >= lo) & (t < hi)).sum()), rate * (hi - lo) * 4
        assert abs(n - expect) <= 4 * math.sqrt(max(expect, 1)), (lo, n, expect)


def test_rate_schedule_inverts_its_cumulative_intensity():
    s = RateSchedule([0, 10, 20], [1, 0, 3], 40)
    y = np.array([0.5, 10.0, 12.0, 70.0, 75.0])
    t = s.inverse(y)
    assert np.allclose([s.cumulative(x) for x in t], y)
    m = np.mod(t, 40)
    assert np.all((m <= 10) | (m >= 20))  # never inside the zero-rate piece


def test_servegen_day_reads_from_csv(tmp_path):
    from pathlib import Path

    a = C.ScheduleArrivals(kind="schedule", path="data/servegen_r1_rate_by_10min.csv", rate_column="total_rate_rps",
                           time_scale=1 / 24)
    s = RateSchedule.of(a, Path(__file__).parent.parent / "scenarios", "k")
    assert len(s.times) == 144 and s.times[-1] == pytest.approx(143 * 25)
    assert s.rate(79800 / 24) == pytest.approx(42.52, rel=1e-3)  # the day's peak


def test_bad_autoscale_configs_name_the_key():
    with pytest.raises(ScenarioError, match="autoscale.*needs 'capacity_rps'"):
        validate(scaled({"policy": "rate"}))
    with pytest.raises(ScenarioError, match="autoscale.*must not exceed replicas"):
        validate(scaled({"policy": "queue", "min_replicas": 9}))
    raw = scaled({"policy": "rate", "capacity_rps": 2}, arrival={"kind": "closed", "concurrency": 4})
    from sim.cluster.world import build

    with pytest.raises(ScenarioError, match="autoscale.policy.*rates known in advance"):
        build(validate(raw), None)
