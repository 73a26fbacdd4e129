"""The commands of ``dcsim``: each takes the parsed arguments and returns an exit status.
Heavy modules (the simulator, Ray, the report) are imported inside the command that needs them,
so ``dcsim --help`` and a command's bad-input error stay fast."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path


from sim.cli.display import (BURST_ROWS, ROWS, print_metrics, print_next_step, print_run_summary,
                             print_sweep_summary)
from sim.errors import ScenarioError
from sim.resources import scenario_path

log = logging.getLogger(__name__)


def _apply_sets(raw: dict, sets: list[str], source: str) -> dict:
    from sim.config.sweep import set_path
    from sim.config.yamlio import YamlError, load_yaml

    for item in sets or []:
        if "=" not in item:
            raise ScenarioError(source, "--set", "expects KEY.PATH=VALUE")
        path, value = item.split("=", 1)
        try:
            parsed = load_yaml(value)
        except YamlError as e:
            raise ScenarioError(source, path, f"--set value: {e}") from None
        raw = set_path(raw, path, parsed, source=source)
    return raw


MAX_DURATION_ENV = "DCSIM_QUICK_DURATION_S"


def cap_duration(raw: dict, source: str) -> dict:
    """``raw`` with ``duration_s`` cut to ``$DCSIM_QUICK_DURATION_S`` (when set and shorter) and
    ``warmup_s`` scaled with it, so the measured window keeps its share: a quick smoke run of a
    long scenario or sweep (the README's own test uses it). Unchanged when the variable is unset."""
    text = os.environ.get(MAX_DURATION_ENV)
    if not text:
        return raw
    try:
        cap = float(text)
    except ValueError:
        cap = math.nan
    if not (math.isfinite(cap) and cap > 0):
        raise ScenarioError(MAX_DURATION_ENV, "", f"must be a positive number of seconds, not {text!r}")
    duration = raw.get("duration_s")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not duration > cap:
        return raw
    warmup = raw.get("warmup_s", 0)
    scaled = {**raw, "duration_s": cap}
    if isinstance(warmup, (int, float)) and not isinstance(warmup, bool):
        scaled["warmup_s"] = warmup * cap / duration
    log.warning("%s: duration_s %g s cut to %g s by %s", source, duration, cap, MAX_DURATION_ENV)
    return scaled


def _load(path: str, sets: list[str] | None = None, mode: str | None = None):
    """The scenario at ``path`` with ``--set`` overrides, without its sweep section."""
    from sim import config as config

    raw = cap_duration(config.load_raw(path), path)
    raw = _apply_sets(raw, sets or [], path)
    if mode:
        raw = {**raw, "engine_mode": mode}
    raw.pop("sweep", None)  # a run is one point
    return config.validate(raw, path, Path(path).parent)


def _validate_plan(raw: dict, path: str) -> int:
    """Check a scenario's ``plan:`` section and the schema of every candidate it can make (what
    ``dcsim plan`` would refuse at a trial); returns the candidates' count."""
    from sim.plan.driver import load_plan
    from sim.plan.space import Space

    raw, spec, source = load_plan(raw, path)
    space = Space(raw, spec, source, str(Path(path).parent))
    n = 0
    for index in space.all_indices():
        space.scenario(space.candidate(index).raw)
        n += 1
    return n


def cmd_validate(args) -> int:
    from sim import config
    from sim.cluster.check import check_scenario
    from sim.config.sweep import expand
    from sim.sweep import check_points

    for name in args.files:
        path = scenario_path(name)
        raw = config.load_raw(path)
        sc = config.validate(raw, path, Path(path).parent)
        specs = check_scenario(sc, path)  # what `run` checks: pools, memory, prices, input files
        n = 1
        if raw.get("sweep"):  # every point, as `sweep` checks them before the first one runs
            n = len(check_points(expand(raw, path), path))
        if raw.get("plan") is not None:  # the plan section, and every candidate's schema
            n = _validate_plan(raw, path)
        for sp in specs:
            if sp.model is None:  # diffusion
                print(f"{path}: pool {sp.name}: {sp.replicas} x {sp.perf.card.name} (diffusion) on {sp.tp} x {sp.acc.name}: "
                      f"weights {sp.weight_gib:.1f} GiB/device")
                continue
            print(f"{path}: pool {sp.name}: {sp.replicas} x {sp.model.name} on {sp.tp} x {sp.acc.name}: "
                  f"weights {sp.weight_gib:.1f} GiB/device, KV pool {sp.kv_blocks} blocks ({sp.kv_gib:.1f} GiB/device)")
        print(f"{path}: ok ({len(sc.workload.classes)} workload classes, {n} point{'s' if n != 1 else ''})")
    return 0


@contextlib.contextmanager
def startup_without_gc():
    """A command's start (its imports, the scenario's schema and checks, the hardware cards) with
    Python's cyclic garbage collector off, then what it made frozen out of later collections.

    Start-up makes some 80,000 objects the collector tracks (functions, classes, pydantic schemas,
    cards) that all live to the end of the process, and almost no cyclic garbage; the collector
    would run ~120 times over them (young, middle and a full pass) for nothing: ~70 ms of a run
    (docs/performance.md). Memory stays bounded: the collector is off only for that fixed amount
    of work and back on before the simulation (which ``sim.run`` runs with its own settings). On
    an error it is turned back on without freezing; :func:`cmd_run` unfreezes at its end, so a
    process that goes on (a test, a notebook) collects those objects again once they die."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        if enabled:
            gc.enable()
        raise
    gc.freeze()
    if enabled:
        gc.enable()


def cmd_run(args) -> int:
    """Simulate one scenario point; the objects frozen at start-up are frozen for this command only."""
    frozen = gc.get_freeze_count()
    try:
        return _run(args)
    finally:
        if not frozen:  # (a caller's own frozen objects stay as they were)
            gc.unfreeze()


def _run(args) -> int:
    with startup_without_gc():
        from sim.cli.outdir import prepare_run_out
        from sim.output import storage
        from sim.run import run_point, scenario_point_id

        from sim.cluster.check import check_scenario

        path = scenario_path(args.scenario)
        sc = _load(path, args.set or [], args.mode)
        check_scenario(sc, path)  # refused before anything is written
        storage.check_out_target(args.out)
        out = storage.normalize_out(args.out)
        fresh = "://" not in out and not os.path.lexists(out)
        prepare_run_out(out, args.out, getattr(args, "overwrite", False), path)
        pid = scenario_point_id(sc)
    log.info("simulating %s (%s), point %s, %.0f simulated s, into %s", sc.name, path, pid, sc.duration_s, args.out)
    t0 = time.perf_counter()
    shards = getattr(args, "shards", None)
    if shards is not None:
        from sim.shard import ShardFailed, run_sharded
        from sim.shard.runner import check_window
        from sim.shard.split import plan_groups
        from sim.embedded_ray import check_options

        plan_groups(sc, shards, path)
        check_window(args.window_s, path)  # what cannot be split is refused before anything is written
        check_options("serial" if args.executor == "serial" else "ray", args.address, args.num_cpus, None, 0)
    try:
        if shards is None:
            summary = run_point(sc, out, pid, source=path)
        else:
            summary = run_sharded(sc, out, pid, shards=shards, window_s=args.window_s, executor=args.executor,
                                  address=args.address, num_cpus=args.num_cpus, source=path)
        wall = time.perf_counter() - t0
        _write_single_tables(out, summary, wall)
    except BaseException as exc:
        if fresh:  # a run that fails leaves no folder it made (a point's files are only ever half a run)
            shutil.rmtree(out, ignore_errors=True)
        if shards is not None and isinstance(exc, ShardFailed):
            print(f"error: {path}: {exc}; no output written", file=sys.stderr)
            return 1
        raise
    log.info("point %s: %d calls simulated in %.2f s wall", pid, summary["calls_created"], wall)
    if getattr(args, "verbosity", 0) >= 0:
        print_run_summary(summary, args.scenario, args.out, wall)
        print_next_step(args.out)
    return 0


def _write_single_tables(out: str, summary: dict, wall: float) -> None:
    """points.parquet, summary.parquet and the commit marker of a one-point run."""
    import pyarrow as pa

    from sim.output import arrow, storage

    fs, base = storage.open_output(out)
    pid = summary["point_id"]
    # built from buffers: pyarrow's own converters would import pandas (see sim.output.arrow)
    points = arrow.table({"point_id": [pid], "run": [summary["run"]], "seed": [summary["seed"]], "status": ["ok"],
                          "error": [None], "wall_s": [wall]},
                         pa.schema([("point_id", pa.string()), ("run", pa.int64()), ("seed", pa.int64()),
                                    ("status", pa.string()), ("error", pa.string()), ("wall_s", pa.float64())]))
    storage.atomic_write_table(fs, storage.join(base, "points.parquet"), points)
    storage.atomic_write_table(fs, storage.join(base, "summary.parquet"), arrow.row_table(summary))
    storage.commit_marker(fs, base, pid, {"status": "ok", "summary": summary, "wall_s": wall})



# Options of ``dcsim estimate`` and their (low, high) bounds: what a replica can be asked to serve.
ESTIMATE_BOUNDS = {
    "tp": (1, 4096), "pp": (1, 1024), "concurrency": (1, 10**6), "prompt_tokens": (1, 10**8),
    "output_tokens": (1, 10**8), "max_num_seqs": (1, 10**6), "max_num_batched_tokens": (1, 10**9),
    "power_cap_w": (1e-9, 1e5), "duration_s": (1e-9, 3.2e7), "warmup_s": (0, 3.2e7), "requests": (1, 10**6),
    "gpu_memory_utilization": (1e-9, 1), "seed": (0, 2**63 - 1),
}


def _check_estimate_args(args) -> None:
    """Finite numbers within :data:`ESTIMATE_BOUNDS` (argparse takes ``inf`` and ``nan`` as floats)."""
    for name, (lo, hi) in ESTIMATE_BOUNDS.items():
        v = getattr(args, name, None)
        if v is None:
            continue
        if not (math.isfinite(v) and lo <= v <= hi):
            raise ScenarioError("dcsim estimate", "--" + name.replace("_", "-"), f"must be a number from {lo:g} to {hi:g}, "
                                                                              f"got {v!r}")


def cmd_estimate(args) -> int:
    _check_estimate_args(args)
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
        nan = lambda v: None if isinstance(v, float) and math.isnan(v) else v  # JSON has no NaN
        print(json.dumps({k: [nan(x) for x in v] if isinstance(v, list) else nan(v) for k, v in r.items()}, indent=2))
        return 0
    from sim.hardware import catalog

    experts = catalog.model(r["model"]).expert_weight_dtype  # a card's own expert storage (gpt-oss: mxfp4)
    dtypes = r["weight_dtype"] + (f", {experts} experts" if experts else "")
    where = f"{r['model']} on {r['tp'] * r['pp']} x {r['hardware']} ({dtypes}), "
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
    from sim.sweep import SweepTerminated, run_sweep

    console = Console()
    quiet = getattr(args, "verbosity", 0) < 0
    try:
        args.scenario = scenario_path(args.scenario)
        from sim.sweep import check_options

        # (a dry run starts nothing: its Ray address is not tried)
        check_options("serial" if args.dry_run else args.executor, args.address, args.num_cpus, args.max_in_flight,
                      args.max_retries)
        if not args.dry_run:
            from sim.output.storage import check_out_target

            check_out_target(args.out)
        if args.dry_run:
            from sim.config import load_raw

            points = expand(load_raw(args.scenario), args.scenario)
            for p in points:
                console.print(p.point_id, json.dumps(p.params, sort_keys=False), highlight=False)
            console.print(f"{len(points)} points", highlight=False)
            return 0
        scenario = args.scenario
        if os.environ.get(MAX_DURATION_ENV):
            from sim.config.scenario import load_raw

            scenario = cap_duration(load_raw(args.scenario), args.scenario)
        result = run_sweep(
            scenario,
            args.out,
            source=args.scenario,
            executor=args.executor,
            address=args.address,
            num_cpus=args.num_cpus,
            resume=args.resume,
            max_in_flight=args.max_in_flight,
            max_retries=args.max_retries,
            progress=not (args.no_progress or quiet),
            point_fn=point_fn,
        )
    except ScenarioError as e:  # (here as well as in main: callers may call the command directly)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished points are committed; rerun with --resume to run the rest", file=sys.stderr)
        return 130
    except SweepTerminated:
        print("terminated (SIGTERM): finished points are committed; rerun with --resume to run the rest",
              file=sys.stderr)
        return 143
    if not quiet:
        print_sweep_summary(result, console, shown=args.out)
        console.print(
            f"{len(result.ran)} run, {len(result.points) - len(result.ran)} already done, {result.n_failed} failed "
            f"in {result.wall_s:.1f} s; tables in {args.out}",
            highlight=False,
        )
        print_next_step(args.out, console)
    return 1 if result.n_failed else 0


def cmd_plan(args) -> int:
    """``dcsim plan``: 0 with a recommendation, 1 if no candidate met the constraints, 2 on bad input."""
    from rich.console import Console

    console = Console() if Console().is_terminal else Console(width=200)
    quiet = getattr(args, "verbosity", 0) < 0
    try:
        if args.trials is not None and args.trials < 1:
            raise ScenarioError("", "--trials", "must be >= 1")
        args.scenario = scenario_path(args.scenario)
        from sim.output.storage import check_out_target
        from sim.sweep import check_options

        check_options("ray", args.address, args.num_cpus, None, 0)
        check_out_target(args.out)
        from sim.plan import run_plan
        from sim.plan.display import print_plan

        result = run_plan(args.scenario, args.out, address=args.address, num_cpus=args.num_cpus, resume=args.resume,
                          trials=args.trials, progress=not (args.no_progress or quiet))
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are committed; rerun with --resume to go on", file=sys.stderr)
        return 130
    if not quiet:
        print_plan(result, console)
    return 0 if result.recommendation is not None else 1


def cmd_calibrate(args) -> int:
    from sim.config.files import check_user_file

    for flag, paths in (("--profiles", args.profiles or []), ("--network", [args.network] if args.network else []),
                        ("--measurements", [args.measurements] if args.measurements else [])):
        for path in paths:  # regular files within DCSIM_MAX_FILE_MB: a device or FIFO would be read forever
            check_user_file(path, flag, "table")
    from sim.hardware import catalog
    from sim.tools.calibrate import calibrate, calibrate_sram, default_tables, write_calibration
    from sim.tools.validation import measurements_path

    if getattr(args, "engine", "vllm") == "trtllm":
        from sim.tools import validation_trtllm

        if args.kernels_from:
            catalog.accelerator(args.kernels_from, "dcsim calibrate", "--kernels-from")
        try:
            f = validation_trtllm.fit_profile(args.accelerator, args.workers, args.kernels_from)
        except ValueError as e:
            raise ScenarioError("dcsim calibrate", "--kernels-from" if args.kernels_from else "--accelerator", str(e))
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
                                   max_concurrency=args.max_concurrency, host_from=args.host_from)
    out = Path(args.out) if args.out else catalog.hardware_dir() / "calibration" / f"{args.accelerator}.yaml"
    write_calibration(out, args.accelerator, perf, power, notes)
    catalog.calibration.cache_clear()
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    import pyarrow as pa

    from analysis.report import cmd_report as report

    if args.out is not None:
        from sim.output.storage import check_out_target

        parent = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out):
            raise ScenarioError("", "--out", f"{args.out} is a folder; give the HTML file to write")
        check_out_target(parent)
    if not os.path.isdir(args.dir):
        raise ScenarioError(args.dir, "", "not a folder written by dcsim run or dcsim sweep")
    try:
        return report(args)
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:  # a corrupt or foreign table in the folder
        raise ScenarioError(args.dir, "", f"cannot read the run's tables ({_one_line(e)})") from None


def _one_line(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut at ``limit`` characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def cmd_export_trace(args) -> int:
    """``dcsim export-trace DIR [--point ID] [--out FILE]``: Chrome trace JSON of one point."""
    from sim.output.perfetto import export_trace

    path, info = export_trace(args.dir, args.point, args.out, args.start_s, args.end_s, args.max_calls, args.max_steps)
    cut = " (shortened by --max-calls / --max-steps)" if info["truncated"] else ""
    print(f"{path}: point {info['point_id']}, simulated {info['window_start_s']:g} s to {info['window_end_s']:.6g} s{cut}; "
          f"open it in ui.perfetto.dev or chrome://tracing")
    return 0
