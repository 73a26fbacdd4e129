"""The commands of ``dcsim``: each takes the parsed arguments and returns an exit status.
Heavy modules (the simulator, Ray, the report) are imported inside the command that needs them,
so ``dcsim --help`` and a command's bad-input error stay fast."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from sim.cli.display import BURST_ROWS, ROWS, print_metrics, print_run_summary, print_sweep_summary
from sim.errors import ScenarioError

def _apply_sets(raw: dict, sets: list[str], source: str) -> dict:
    import yaml

    from sim.config.sweep import set_path

    for item in sets or []:
        if "=" not in item:
            raise ScenarioError(source, item, "--set expects KEY.PATH=VALUE")
        path, value = item.split("=", 1)
        raw = set_path(raw, path, yaml.safe_load(value), source=source)
    return raw


def _load(path: str, sets: list[str] | None = None, mode: str | None = None):
    """The scenario at ``path`` with ``--set`` overrides, without its sweep section."""
    from sim import config as config

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
        from sim import config as config

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



def cmd_estimate(args) -> int:
    names = ("tp", "pp", "weight_dtype", "kv_dtype", "output_dist", "max_num_batched_tokens", "power_cap_w",
             "expert_parallel", "attention_dp", "seed")
    opts = {n: getattr(args, n) for n in names}
    t0 = time.perf_counter()
    if args.requests is not None:
        from sim.tools.burst import burst

        cap = args.max_num_seqs if args.max_num_seqs is not None else args.concurrency
        r = burst(args.hardware, args.model, args.requests, cap, args.prompt_tokens, args.output_tokens,
                  gpu_memory_utilization=args.gpu_memory_utilization, **opts)
    else:
        from sim.tools.estimate import estimate

        r = estimate(args.hardware, args.model, args.concurrency, args.prompt_tokens, args.output_tokens,
                     max_num_seqs=args.max_num_seqs, duration_s=args.duration_s, warmup_s=args.warmup_s,
                     gpu_memory_utilization=args.gpu_memory_utilization, **opts)
    wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}, indent=2))
        return 0
    where = f"{r['model']} on {r['tp'] * r['pp']} x {r['hardware']} ({r['weight_dtype']}), "
    if args.requests is not None:
        print_metrics(where + f"{r['requests']} calls at once, batch cap {r['max_num_seqs']}, "
                      f"{r['prompt_tokens']}/{r['output_tokens']} tokens", BURST_ROWS, r,
                      f"steady-state window {r['window_start_s']:.1f}-{r['window_end_s']:.1f} simulated s "
                      f"in {wall:.2f} s wall")
        return 0
    print_metrics(where + f"{r['concurrency']} clients x {r['prompt_tokens']}/{r['output_tokens']} tokens", ROWS, r,
                  f"window {r['warmup_s']:.1f}-{r['duration_s']:.1f} simulated s ({r['calls_measured']} calls) "
                  f"in {wall:.2f} s wall")
    return 0


def cmd_sweep(args: argparse.Namespace, *, point_fn=None) -> int:
    """``dcsim sweep``: 0 if every point is ok, 1 if some failed, 2 on bad input."""
    from rich.console import Console

    from sim.config.sweep import expand
    from sim.sweep import run_sweep

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    try:
        if args.max_in_flight is not None and args.max_in_flight < 1:
            raise ScenarioError("", "--max-in-flight", "must be >= 1")
        if args.max_retries < 0:
            raise ScenarioError("", "--max-retries", "must be >= 0")
        if args.dry_run:
            from sim.config import load_raw

            points = expand(load_raw(args.scenario), args.scenario)
            for p in points:
                console.print(p.point_id, json.dumps(p.params, sort_keys=False), highlight=False)
            console.print(f"{len(points)} points", highlight=False)
            return 0
        result = run_sweep(
            args.scenario,
            args.out,
            executor=args.executor,
            address=args.address,
            num_cpus=args.num_cpus,
            resume=args.resume,
            max_in_flight=args.max_in_flight,
            max_retries=args.max_retries,
            progress=not args.no_progress,
            point_fn=point_fn,
        )
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished points are committed; rerun with --resume to run the rest", file=sys.stderr)
        return 130
    print_sweep_summary(result, console)
    console.print(
        f"{len(result.ran)} run, {len(result.points) - len(result.ran)} already done, {result.n_failed} failed "
        f"in {result.wall_s:.1f} s; tables in {result.out}",
        highlight=False,
    )
    return 1 if result.n_failed else 0


def cmd_calibrate(args) -> int:
    from sim.hardware import catalog
    from sim.tools.calibrate import calibrate, calibrate_sram, default_tables, write_calibration
    from sim.tools.validation import measurements_path

    if getattr(args, "engine", "vllm") == "trtllm":
        from sim.tools import validation_trtllm

        f = validation_trtllm.fit_profile(args.accelerator, args.workers)
        print(f"wrote {validation_trtllm.write_profile(args.accelerator, f)}: "
              + ", ".join(f"{k} {f[k]:.4g}" for k in validation_trtllm.PROFILE_KEYS)
              + f" (fit mean |error| {f['mean_abs_error']:.1%}, worst {f['worst_abs_error']:.1%})")
        return 0
    if catalog.accelerator(args.accelerator, "dcsim calibrate", "--accelerator").architecture == "sram_pipeline":
        # no kernel tables or serving measurements: the per-layer latency from published speeds
        perf, notes, data = calibrate_sram(args.accelerator)
        out = Path(args.out) if args.out else catalog.hardware_dir() / "calibration" / f"{args.accelerator}.yaml"
        write_calibration(out, args.accelerator, perf, {}, notes, data)
        catalog.calibration.cache_clear()
        print(f"wrote {out}")
        return 0
    tables, net = default_tables(args.accelerator)
    profiles = [Path(p) for p in args.profiles] if args.profiles is not None else tables
    network = Path(args.network) if args.network else net
    measurements = Path(args.measurements) if args.measurements else measurements_path()
    perf, power, notes = calibrate(args.accelerator, profiles, network, measurements, args.kernels_from, args.workers,
                                   max_concurrency=args.max_concurrency)
    out = Path(args.out) if args.out else catalog.hardware_dir() / "calibration" / f"{args.accelerator}.yaml"
    write_calibration(out, args.accelerator, perf, power, notes)
    catalog.calibration.cache_clear()
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    from analysis.report import cmd_report as report

    return report(args)
