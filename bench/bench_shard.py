"""Sharded runs measured: error against the unsplit run, speed-up, and the exchange cost model.

    python bench/bench_shard.py errors --seeds 3 --shards 2,4 --windows 0.1,0.5,1,5,30 --json e.json
    python bench/bench_shard.py speed --json s.json      # Ray: unsplit vs 2 shards; exchange cost
    python bench/bench_shard.py figure e.json s.json docs/sharding_error.png

``errors``: each seed's unsplit run, then the same scenario sharded in this process for every
shard count and window; the relative error of each headline metric (TTFT / TPOT / e2e p50 and
p99, output tokens/s, facility energy, cost, SLO attainment), beside the yardstick of how much
each latency percentile moves when the unsplit run's own calls are resampled. ``speed``: on an embedded Ray,
the unsplit run's wall time against 2 shards' (Ray already started, so its start is not
counted), the arrival generation alone (each shard generates its pools' whole stream), and the
round trip of one window's exchange with 1 to 8 stand-in actors (a report in, a report out).
Prints figures; asserts nothing (speed targets are read, not tested).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.metrics import slo_met  # noqa: E402
from sim import rng  # noqa: E402
from sim.cli.commands import _load  # noqa: E402
from sim.run import run_point  # noqa: E402
from sim.shard import run_sharded  # noqa: E402

METRICS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s", "e2e_p50_s", "e2e_p99_s", "output_tokens_per_s",
           "facility_energy_j", "cost_usd", "slo_attainment")
PID = "p000000000000"


def slo_attainment(out: Path, sc) -> float:
    """Share of the calls arriving in the window that finished within their class's SLO."""
    calls = pq.read_table(out / "calls")
    slos = {c.name: {k: getattr(c.slo, k) for k in ("ttft_s", "tpot_s", "e2e_s") if c.slo is not None
                     and getattr(c.slo, k, None) is not None} for c in sc.workload.classes}
    a = calls["arrival_s"].to_numpy()
    win = (a >= sc.warmup_s) & (a < sc.duration_s)
    return float(slo_met(calls, slos)[win].mean())


def headline(summary: dict, out: Path, sc) -> dict:
    return {**{k: summary[k] for k in METRICS if k != "slo_attainment"}, "slo_attainment": slo_attainment(out, sc)}


def cmd_errors(args) -> dict:
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    try:
        for seed in range(args.seeds):
            sc = _load(args.scenario, [*args.set, f"seed={100 + seed}"], None)
            t = time.perf_counter()
            u = headline(run_point(sc, str(tmp / "u"), PID), tmp / "u", sc)
            wall_u = time.perf_counter() - t
            print(f"seed {seed}: unsplit {wall_u:.1f} s", flush=True)
            rows.append({"seed": seed, "shards": 1, "window_s": 0.0, "unsplit": u,
                         "bootstrap_cv": bootstrap_cv(tmp / "u", sc, seed)})
            for n in args.shards:
                for w in args.windows:
                    shutil.rmtree(tmp / "s", ignore_errors=True)
                    s = headline(run_sharded(sc, str(tmp / "s"), PID, shards=n, window_s=w), tmp / "s", sc)
                    err = {k: (s[k] - u[k]) / u[k] if u[k] else math.nan for k in METRICS}
                    rows.append({"seed": seed, "shards": n, "window_s": w, "error": err})
                    print(f"  {n} shards, window {w:g} s: " + ", ".join(f"{k} {100 * v:+.2f}%" for k, v in err.items()),
                          flush=True)
                    shutil.rmtree(tmp / "s", ignore_errors=True)
            shutil.rmtree(tmp / "u", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    for n in args.shards:
        for w in args.windows:
            sel = [r["error"] for r in rows if r["shards"] == n and r["window_s"] == w and "error" in r]
            summary[f"{n}/{w:g}"] = {k: float(np.mean([abs(e[k]) for e in sel])) for k in METRICS}
    base = [r["unsplit"] for r in rows if "unsplit" in r]
    if len(base) > 1:  # what the metrics vary by between seeds of the unsplit run: the yardstick
        summary["seed_cv"] = {k: float(np.std([b[k] for b in base]) / abs(np.mean([b[k] for b in base])))
                              for k in METRICS}
    boot = [r["bootstrap_cv"] for r in rows if "bootstrap_cv" in r]
    summary["bootstrap_cv"] = {k: float(np.mean([b[k] for b in boot])) for k in boot[0]}
    print("mean |relative error| over seeds (shards/window):")
    for key, errs in summary.items():
        print(f"  {key:>8}: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in errs.items()))
    return {"scenario": args.scenario, "set": args.set, "seeds": args.seeds, "rows": rows, "mean_abs": summary}


def bootstrap_cv(out: Path, sc, seed: int, draws: int = 200) -> dict:
    """The yardstick: the relative standard deviation of each latency percentile of a run when
    its own calls (those arriving in the window) are resampled with replacement."""
    from analysis.metrics import call_latencies

    calls = pq.read_table(out / "calls")
    a = calls["arrival_s"].to_numpy()
    lat = call_latencies(calls.filter((a >= sc.warmup_s) & (a < sc.duration_s)))
    g = np.random.default_rng(seed)
    row = {}
    for name in ("ttft", "tpot", "e2e"):
        x = lat[name][~np.isnan(lat[name])]
        for q in (50, 99):
            est = [np.percentile(x[g.integers(0, len(x), len(x))], q) for _ in range(draws)]
            row[f"{name}_p{q}_s"] = float(np.std(est) / np.percentile(x, q))
    return row


def generation_s(sc) -> tuple[float, int]:
    """CPU seconds to generate the scenario's arrival streams alone (no calls created)."""
    import simpy

    from sim.workloads.arrivals import generate_calls

    env = simpy.Environment()
    count = [0]

    def make_call(cls, t, prompt, output, on_done=None, hashes=None):
        count[0] += 1

    for cls in sc.workload.classes:
        streams = lambda name, c=cls: rng.stream(sc.seed, sc.run, f"workload/{c.name}/{name}")
        env.process(generate_calls(env, cls, streams, sc.base_dir, sc.duration_s, make_call, cls.name))
    t = time.process_time()
    env.run()
    return time.process_time() - t, count[0]


class _Echo:
    """A stand-in shard for the exchange round trip: takes the reports, returns its own."""

    def advance(self, until, reports):
        return {"chat": (12, 40), "reasoning": (3, 10)}, False, until, 0.0


def exchange_s(ray, n: int, windows: int = 300) -> float:
    """Seconds per window for ``n`` stand-in actors: submit to all, wait for all."""
    actor = ray.remote(num_cpus=0)(_Echo)
    hs = [actor.remote() for _ in range(n)]
    reports = [{"chat": (12, 40), "reasoning": (3, 10)}] * n
    ray.get([h.advance.remote(0.0, reports) for h in hs])
    t = time.perf_counter()
    for i in range(windows):
        got = ray.get([h.advance.remote(float(i), reports) for h in hs])
        reports = [g[0] for g in got]
    per = (time.perf_counter() - t) / windows
    for h in hs:
        ray.kill(h)
    return per


def day_calls(sc) -> float:
    """Calls of a full day of the scenario's schedule classes: mean rate x rate_scale x 86,400 s."""
    from pyarrow import csv

    total = 0.0
    for c in sc.workload.classes:
        a = c.arrival
        if a.kind != "schedule" or a.path is None:
            raise SystemExit(f"class {c.name}: the day model reads schedule arrivals from a file only")
        rates = csv.read_csv(Path(sc.base_dir) / a.path)[a.rate_column].to_numpy()
        total += float(np.mean(rates)) * a.rate_scale * 86400.0
    return total


def day_model(sc, m: dict, window_s: float) -> dict:
    """The full day's wall time on N cores as a model of measured inputs:
    T(N) = G + E / N + (86,400 / W) (xa + xb N): G the arrival generation every shard repeats,
    E the rest of the unsplit run's work (both CPU seconds per call, so that other load on the
    machine does not count, times the day's calls), xa + xb N one
    window's exchange (least squares over the stand-in actors' round trips)."""
    calls = day_calls(sc)
    gen = m["generation_s"] / m["generated_calls"]
    engine = (m["unsplit_cpu_s"] - m["generation_s"]) / m["calls"]
    ns = np.array(sorted(m["exchange_s_per_window"]), dtype=float)
    xs = np.array([m["exchange_s_per_window"][int(n)] for n in ns])
    xb, xa = np.polyfit(ns, xs, 1)
    model = {"day_calls": calls, "gen_s_per_call": gen, "engine_s_per_call": engine, "gen_s": gen * calls,
             "engine_s": engine * calls, "window_s": window_s, "windows": 86400.0 / window_s, "xa": float(xa),
             "xb": float(xb)}
    t = lambda n: model["gen_s"] + model["engine_s"] / n + model["windows"] * (xa + xb * n)
    model["projected_s"] = {n: t(n) for n in (1, 2, 64, 256)}
    model["projected_s"][1] = model["gen_s"] + model["engine_s"]  # unsplit: no exchange
    for w in (1.0, 10.0, 60.0):
        model[f"projected_s_window_{w:g}"] = {n: model["gen_s"] + model["engine_s"] / n + 86400.0 / w * (xa + xb * n)
                                             for n in (64, 256)}
    return model


def cmd_speed(args) -> dict:
    from sim import embedded_ray

    sc = _load(args.scenario, args.set, None)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shard-"))
    handle = embedded_ray.start(None, 2)
    try:
        import ray

        t, c = time.perf_counter(), time.process_time()
        u = run_point(sc, str(tmp / "u"), PID)
        wall_u, cpu_u = time.perf_counter() - t, time.process_time() - c
        out = {"scenario": args.scenario, "set": args.set, "calls": u["calls_created"], "unsplit_s": wall_u,
               "unsplit_cpu_s": cpu_u, "loadavg_1min": os.getloadavg()[0]}
        for w in sorted({args.window, 1.0}):
            t = time.perf_counter()
            run_sharded(sc, str(tmp / f"s{w}"), PID, shards=2, window_s=w, executor="ray")
            wall = time.perf_counter() - t
            man = json.loads((tmp / f"s{w}" / PID / "manifest.json").read_text())["shards"]
            key = "sharded_2" if w == args.window else f"sharded_2_window_{w:g}"
            out[f"{key}_s"] = wall
            out[f"{key}_manifest"] = {k: man[k] for k in ("window_s", "windows", "busiest_shard_s", "busiest_shard_cpu_s",
                                                          "shards_cpu_s", "exchange_s")}
        out["generation_s"], out["generated_calls"] = generation_s(sc)
        out["exchange_s_per_window"] = {n: exchange_s(ray, n) for n in (1, 2, 4, 8)}
        out["model"] = day_model(sc, out, args.window)
    finally:
        handle.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return out


def cmd_figure(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = json.loads(Path(args.errors).read_text())
    speed = json.loads(Path(args.speed).read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    shards = sorted({r["shards"] for r in errors["rows"] if "error" in r})
    windows = sorted({r["window_s"] for r in errors["rows"] if "error" in r})
    colours = {"ttft_p99_s": "C0", "e2e_p99_s": "C1", "tpot_p99_s": "C2", "ttft_p50_s": "C3", "output_tokens_per_s": "C4"}
    for n, style in zip(shards, ("-o", "--s", ":^")):
        for k, colour in colours.items():
            ys = [100 * errors["mean_abs"][f"{n}/{w:g}"][k] for w in windows]
            a.plot(windows, ys, style, color=colour, label=f"{k} ({n} shards)", markersize=3)
    boot = errors["mean_abs"].get("bootstrap_cv", {}).get("ttft_p99_s")
    if boot:
        a.axhline(100 * boot, color="C0", alpha=0.3, lw=4, label="ttft_p99_s bootstrap spread (unsplit)")
    a.set_xscale("log")
    a.set_xlabel("exchange window (simulated s)")
    a.set_ylabel("mean |error| vs unsplit (%)")
    a.legend(fontsize=5, loc="upper left", ncol=2)
    a.set_title("error against the unsplit run")
    cores = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    model = speed["model"]
    one = model["gen_s"] + model["engine_s"]
    for w in (model["window_s"], 1.0, 10.0, 60.0):
        proj = [model["gen_s"] + model["engine_s"] / c + 86400.0 / w * (model["xa"] + model["xb"] * c) for c in cores]
        b.plot(cores, one / np.array(proj), "-o", markersize=3, label=f"model, window {w:g} s")
    b.plot([2], [speed["unsplit_s"] / speed["sharded_2_s"]], "r*", markersize=10,
           label="measured wall, 2 shards (busy 2-core machine)")
    cpu = speed["unsplit_cpu_s"] / speed["sharded_2_window_1_manifest"]["busiest_shard_cpu_s"]
    b.plot([2], [cpu], "k*", markersize=8, label="measured CPU, busiest shard (window 1 s)")
    b.plot(cores, cores, ":", color="grey", label="linear")
    b.set_xscale("log", base=2)
    b.set_yscale("log", base=2)
    b.set_xlabel("shards (one core each)")
    b.set_ylabel("speed-up over the unsplit run")
    b.legend(fontsize=6, loc="lower left")
    b.set_title("full region day: projected speed-up")
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("errors")
    s = sub.add_parser("speed")
    for p in (e, s):
        p.add_argument("--scenario", default=str(ROOT / "scenarios" / "region_day.yaml"))
        p.add_argument("--set", action="append", default=[])
        p.add_argument("--json", default=None)
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument("--shards", type=lambda v: [int(x) for x in v.split(",")], default=[2, 4])
    e.add_argument("--windows", type=lambda v: [float(x) for x in v.split(",")], default=[0.1, 0.5, 1.0, 5.0, 30.0])
    s.add_argument("--window", type=float, default=0.1)
    f = sub.add_parser("figure")
    f.add_argument("errors")
    f.add_argument("speed")
    f.add_argument("out")
    args = ap.parse_args()
    if args.cmd == "figure":
        cmd_figure(args)
        return
    result = cmd_errors(args) if args.cmd == "errors" else cmd_speed(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
