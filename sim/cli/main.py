"""The ``dcsim`` command: validate, run and sweep scenarios; estimate one replica.

Bad input (a malformed scenario, unknown names, an impossible configuration)
prints one line ``error: file: key.path: message`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from sim.errors import ScenarioError

P50_90_99 = ("p50", "p90", "p99")
HEADLINE = [  # (label, key or keys shown " / "-joined, format)
    ("calls measured", "calls_measured", "{:.0f}"),
    ("calls finished (all)", "calls_finished", "{:.0f}"),
    ("completed calls/s", "completed_per_s", "{:.2f}"),
    ("output tokens/s", "output_tokens_per_s", "{:,.0f}"),
    ("TTFT p50 / p90 / p99 (s)", tuple(f"ttft_{q}_s" for q in P50_90_99), "{:.4f}"),
    ("time per output token p50 / p90 / p99 (s)", tuple(f"tpot_{q}_s" for q in P50_90_99), "{:.4f}"),
    ("end-to-end p50 / p90 / p99 (s)", tuple(f"e2e_{q}_s" for q in P50_90_99), "{:.4f}"),
    ("queue wait mean (s)", "wait_mean_s", "{:.4f}"),
    ("utilization (busy fraction)", "utilization", "{:.1%}"),
    ("mean running batch", "mean_batch_seqs", "{:.1f}"),
    ("avg power per device (W)", "avg_device_power_w", "{:.0f}"),
    ("energy per output token (J, facility)", "energy_per_output_token_j", "{:.3f}"),
    ("$ per million output tokens", "usd_per_million_output_tokens", "{:.3f}"),
    ("cost of the window ($)", "cost_usd", "{:.4f}"),
]


def print_metrics(title: str, rows: list, values: dict, footer: str) -> None:
    """A two-column rich table of ``values`` picked and formatted by ``rows``, then ``footer``."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for label, keys, fmt in rows:
        keys = keys if isinstance(keys, tuple) else (keys,)
        t.add_row(label, " / ".join(fmt.format(values[k]) for k in keys))
    console = Console()
    console.print(t)
    console.print(footer)


def _apply_sets(raw: dict, sets: list[str], source: str) -> dict:
    from sim.config.sweep import set_path

    for item in sets or []:
        if "=" not in item:
            raise ScenarioError(source, item, "--set expects KEY.PATH=VALUE")
        path, value = item.split("=", 1)
        raw = set_path(raw, path, yaml.safe_load(value), source=source)
    return raw


def _load(path: str, sets: list[str] | None = None, mode: str | None = None):
    """The scenario at ``path`` with ``--set`` overrides, without its sweep section."""
    from sim.config import scenario as config

    raw = config.load_raw(path)
    raw = _apply_sets(raw, sets or [], path)
    if mode:
        raw = {**raw, "engine_mode": mode}
    raw.pop("sweep", None)  # a run is one point
    return config.validate(raw, path, Path(path).parent)


def cmd_validate(args) -> int:
    from sim.cluster import world as W
    from sim.config.sweep import expand

    for path in args.files:
        from sim.config import scenario as config

        raw = config.load_raw(path)
        sc = config.validate(raw, path, Path(path).parent)
        specs = [W.resolve_pool(sc, i, path) for i in range(len(sc.datacenter.pools))]
        from sim.models.economics import resolve as resolve_economics

        resolve_economics(sc, specs, path)  # prices with a source for every device (datacenter.economics)
        n = len(expand(raw, path)) if raw.get("sweep") else 1
        for sp in specs:
            if sp.model is None:  # diffusion
                print(f"{path}: pool {sp.name}: {sp.replicas} x {sp.perf.card.name} (diffusion) on {sp.tp} x {sp.acc.name}: "
                      f"weights {sp.weight_gib:.1f} GiB/device")
                continue
            print(f"{path}: pool {sp.name}: {sp.replicas} x {sp.model.name} on {sp.tp} x {sp.acc.name}: "
                  f"weights {sp.weight_gib:.1f} GiB/device, KV pool {sp.kv_blocks} blocks ({sp.kv_gib:.1f} GiB/device)")
        print(f"{path}: ok ({len(sc.workload.classes)} workload classes, {n} point{'s' if n != 1 else ''})")
    return 0


def cmd_run(args) -> int:
    from sim.output import storage
    from sim.run import run_point, scenario_point_id

    sc = _load(args.scenario, args.set or [], args.mode)
    out = storage.normalize_out(args.out)
    t0 = time.perf_counter()
    summary = run_point(sc, out, scenario_point_id(sc), source=args.scenario)
    wall = time.perf_counter() - t0
    _write_single_tables(out, summary, wall)
    print_run_summary(summary, args.scenario, args.out, wall)
    return 0


def _write_single_tables(out: str, summary: dict, wall: float) -> None:
    """points.parquet, summary.parquet and the commit marker of a one-point run."""
    import pyarrow as pa

    from sim.output import storage

    fs, base = storage.open_output(out)
    pid = summary["point_id"]
    points = pa.table({"point_id": [pid], "run": [summary["run"]], "seed": [summary["seed"]], "status": ["ok"],
                       "error": pa.array([None], pa.string()), "wall_s": [wall]})
    storage.atomic_write_table(fs, storage.join(base, "points.parquet"), points)
    storage.atomic_write_table(fs, storage.join(base, "summary.parquet"), pa.Table.from_pylist([summary]))
    storage.commit_marker(fs, base, pid, {"status": "ok", "summary": summary, "wall_s": wall})


JOB_HEADLINE = [
    ("jobs measured / finished (all)", ("jobs_measured", "jobs_finished"), "{:.0f}"),
    ("accuracy (sampled / expected)", ("accuracy", "expected_accuracy"), "{:.1%}"),
    ("job latency p50 / p90 / p99 (s)", tuple(f"job_latency_{q}_s" for q in P50_90_99), "{:.2f}"),
    ("$ per 1k jobs / per right answer", ("usd_per_1k_jobs", "usd_per_correct"), "{:.4f}"),
    ("energy per right answer (kJ, facility)", "energy_per_correct_kj", "{:.2f}"),
]


SESSION_HEADLINE = [
    ("sessions measured / finished (all)", ("sessions_measured", "sessions_finished"), "{:.0f}"),
    ("session end-to-end p50 / p90 (s)", ("session_e2e_p50_s", "session_e2e_p90_s"), "{:.1f}"),
    ("turn TTFT p50 / p90 / p99 (s)", tuple(f"turn_ttft_{q}_s" for q in P50_90_99), "{:.3f}"),
    ("KV GiB-s per session: device / pinned / host", ("session_kv_device_gib_s_mean", "session_kv_pinned_gib_s_mean",
                                                      "session_kv_host_gib_s_mean"), "{:,.0f}"),
    ("prompt tokens from cache / recomputed per session", ("session_cached_share", "session_recomputed_tokens_mean"),
     "{:,.2f}"),
    ("energy (kJ) / cost ($) per session", ("session_energy_kj_mean", "session_cost_usd_mean"), "{:.3f}"),
]


def video_rows(s: dict) -> list:
    """Summary rows of each image / video class of a run (keys ``video_<class>_...``)."""
    rows = [("videos measured / finished (all)", ("videos_measured", "videos_finished"), "{:.0f}")]
    for cls in sorted(k[len("video_"):-len("_per_s")] for k in s if k.startswith("video_") and k.endswith("_per_s")):
        p = f"video_{cls}_"
        rows += [(f"{cls}: latency p50 / p90 / p99 (s)", tuple(f"{p}latency_{q}_s" for q in P50_90_99), "{:.2f}"),
                 (f"{cls}: batch / energy (kJ) / $ per request", (p + "batch_mean", p + "energy_kj_mean", p + "cost_usd_mean"),
                  "{:.3f}")]
        s[p + "energy_kj_mean"] = s[p + "energy_j_mean"] / 1000
    return rows


def print_run_summary(s: dict, scenario: str, out: str, wall: float) -> None:
    s = dict(s)  # derived display values are added to a copy
    rows = HEADLINE
    if "jobs_created" in s:
        s = {**s, "energy_per_correct_kj": s["energy_per_correct_j"] / 1000}
        rows = rows + JOB_HEADLINE
    if "sessions_created" in s:
        s = {**s, "session_energy_kj_mean": s["session_energy_j_mean"] / 1000}
        rows = rows + SESSION_HEADLINE
    if "videos_created" in s:
        rows = rows + video_rows(s)
    if "calls_prefilled" in s:
        rows = rows + [("KV transfer to decode mean / p99 (s)", ("kv_transfer_mean_s", "kv_transfer_p99_s"), "{:.4f}")]
    if s.get("replicas_on_mean", s.get("replicas")) != s.get("replicas"):
        rows = rows + [("replicas installed / on (mean)", ("replicas", "replicas_on_mean"), "{:.2f}")]
    if "capex_usd_per_hour" in s:
        rows = rows + ECON_HEADLINE
    print_metrics(f"{s['scenario']} ({scenario}) point {s['point_id']}", rows, s,
                  f"simulated {s['sim_end_s']:.0f} s ({s['calls_created']} calls) in {wall:.2f} s wall; tables in {out}")
    if "jobs_created" in s:
        print_strategies(out, s["point_id"], s["warmup_s"], s["duration_s"])
    if "revenue_usd" in s:
        print_economics(out, s["point_id"])


ECON_HEADLINE = [  # datacenter.economics (sim/models/economics.py)
    ("$ per hour: capex / facility / energy", ("capex_usd_per_hour", "facility_usd_per_hour", "energy_usd_per_hour"),
     "{:.3f}"),
    ("revenue / margin of the window ($)", ("revenue_usd", "margin_usd"), "{:.4f}"),
]


def print_economics(out: str, point_id: str) -> None:
    """Revenue, cost and margin per class and effort tier (the economics table of a run)."""
    from rich.console import Console
    from rich.table import Table

    from sim.output import storage

    import pyarrow.dataset as ds

    rows = storage.read_table(out, "economics", filter=ds.field("point_id") == point_id).to_pylist()
    t = Table(title="economics by class and tier (idle capacity shared by tokens run)")
    for col in ("class", "tier", "units", "revenue $", "cost $", "of which idle $", "margin $", "$/unit", "$/M out"):
        t.add_column(col, justify="left" if col in ("class", "tier") else "right")
    for r in rows:
        t.add_row(r["class"], r["tier"], str(r["units"]), f"{r['revenue_usd']:.4f}", f"{r['cost_usd']:.4f}",
                  f"{r['idle_cost_usd']:.4f}", f"{r['margin_usd']:.4f}", f"{r['cost_per_unit_usd']:.5f}",
                  f"{r['cost_per_million_output_tokens_usd']:.3f}")
    Console(width=120).print(t)


def print_strategies(out: str, point_id: str, t0: float, t1: float) -> None:
    """Per-strategy table of a run's jobs (adaptive runs mix several)."""
    from rich.console import Console
    from rich.table import Table

    from sim.output import storage
    from sim.output.summary import jobs_by_strategy

    import pyarrow.dataset as ds

    jobs = storage.read_table(out, "jobs", filter=ds.field("point_id") == point_id)
    rows = jobs_by_strategy(jobs, t0, t1)
    t = Table(title="jobs by strategy (attributed cost)")
    for col in ("strategy", "width", "jobs", "accuracy", "expected", "$/1k jobs", "$/right", "p50 s", "p90 s"):
        t.add_column(col, justify="left" if col == "strategy" else "right")
    for r in rows:
        t.add_row(r["strategy"], str(r["width"]), str(r["jobs"]), f"{r['accuracy']:.1%}", f"{r['expected_accuracy']:.1%}",
                  f"{r['usd_per_1k_jobs']:.3f}", f"{r['usd_per_correct']:.5f}", f"{r['latency_p50_s']:.1f}",
                  f"{r['latency_p90_s']:.1f}")
    Console(width=120).print(t)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dcsim", description="Discrete-event simulator of AI-inference datacenters")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check scenario files (schema, hardware and model names, memory fit)")
    v.add_argument("files", nargs="+")
    v.set_defaults(func=cmd_validate)

    r = sub.add_parser("run", help="simulate one scenario (ignoring its sweep section) and print a summary")
    r.add_argument("scenario")
    r.add_argument("--out", required=True, help="output folder or object-store URI")
    r.add_argument("--mode", choices=["macro", "per_iteration"], help="engine mode (default: the scenario's)")
    r.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a scenario key (repeatable)")
    r.set_defaults(func=cmd_run)

    from sim.tools.estimate import add_estimate_arguments, cmd_estimate

    e = sub.add_parser("estimate", help="steady state of one replica under a fixed concurrency (closed loop, no files)")
    add_estimate_arguments(e)
    e.set_defaults(func=cmd_estimate)

    from sim.sweep import add_sweep_arguments, cmd_sweep

    s = sub.add_parser("sweep", help="run every point of a scenario's sweep (embedded Ray by default)")
    add_sweep_arguments(s)
    s.set_defaults(func=cmd_sweep)

    from sim.tools.calibrate import add_arguments as add_calibrate_arguments, cmd_calibrate

    c = sub.add_parser("calibrate", help="fit an accelerator's performance and power parameters to measurements")
    add_calibrate_arguments(c)
    c.set_defaults(func=cmd_calibrate)

    from analysis.report import cmd_report

    rp = sub.add_parser("report", help="write a self-contained HTML report of a run or sweep folder")
    rp.add_argument("dir", help="output folder of dcsim run / sweep")
    rp.add_argument("--out", default=None, metavar="FILE", help="HTML file to write (default: DIR/report.html)")
    rp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
