"""The ``dcsim`` command: validate, run and sweep scenarios; estimate one replica.

Bad input (a malformed scenario, unknown names, an impossible configuration)
prints one line ``error: file: key.path: message`` and exits with status 2.
``-v`` / ``-q`` (before or after the command) set the level of the stdlib ``logging`` of the
``sim`` and ``analysis`` packages: warnings by default, progress lines with ``-v``, debugging
with ``-vv``, errors only (and no tables or progress bars) with ``-q``.
"""

from __future__ import annotations

import argparse
import logging
import sys

import sim
from sim import native
import sim.cli.commands as commands  # (by its full name: the package imports this module)
from sim.errors import ScenarioError

LOGGERS = ("sim", "analysis")  # our packages; other libraries' loggers stay at WARNING


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so lines go above a live progress bar
    (rich redirects ``sys.stderr`` while one is shown) and into pytest's captured stream."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def verbosity(args) -> int:
    """-1 quiet, 0 default, 1 progress (-v), 2 debugging (-vv)."""
    return max(-1, min(2, getattr(args, "verbose", 0) - getattr(args, "quiet", 0)))


def setup_logging(level: int) -> None:
    """Route the ``sim`` and ``analysis`` loggers to stderr at the level ``-v`` / ``-q`` chose."""
    handler = _StderrHandler()
    fmt = "%(asctime)s %(name)s: %(message)s" if level > 0 else "%(levelname)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    threshold = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[level]
    for name in LOGGERS:
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
            log.removeHandler(old)  # main() called again in one process (tests)
        log.addHandler(handler)
        log.setLevel(threshold)


def _verbosity_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """``-v`` / ``-q``; on a command's parser they default to SUPPRESS so the global value stays."""
    default = argparse.SUPPRESS if suppress else 0
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="progress lines on stderr (-vv: debugging)")
    parser.add_argument("-q", "--quiet", action="count", default=default,
                        help="errors only: no tables, progress bars or warnings")


def add_estimate_arguments(p) -> None:
    """Options of ``dcsim estimate`` (names as in :func:`estimate`)."""
    p.add_argument("--hardware", required=True, help="accelerator card name, e.g. h100-sxm")
    p.add_argument("--model", required=True, help="model card name, e.g. llama-3.1-8b")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel devices (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    p.add_argument("--concurrency", type=int, required=True,
                   help="clients sending calls back to back (with --requests: the batch cap, unless --max-num-seqs)")
    p.add_argument("--prompt-tokens", type=int, required=True)
    p.add_argument("--output-tokens", type=int, required=True, help="output tokens per call (the mean with --output-dist exponential)")
    p.add_argument("--output-dist", default="fixed", help="fixed (default) or exponential (geometric with that mean)")
    p.add_argument("--weight-dtype", default=None, help="bf16, fp8, int4, fp4 (default: the model card's)")
    p.add_argument("--kv-dtype", default="bf16", help="bf16 (default), fp8")
    p.add_argument("--max-num-seqs", type=int, default=None, help="running-batch cap (default: max(256, concurrency))")
    p.add_argument("--max-num-batched-tokens", type=int, default=8192, help="token budget per iteration (default 8192)")
    p.add_argument("--power-cap-w", type=float, default=None, help="board power limit per device")
    p.add_argument("--expert-parallel", action="store_true", help="shard MoE experts whole over the devices")
    p.add_argument("--attention-dp", action="store_true",
                   help="with --expert-parallel: data-parallel attention, each device serving its own sequences")
    p.add_argument("--duration-s", type=float, default=None, help="end of the measured window, simulated s (default: ~10 calls per client)")
    p.add_argument("--warmup-s", type=float, default=None, help="start of the measured window (default: one call's service time)")
    p.add_argument("--requests", type=int, default=None,
                   help="burst mode: send this many calls at once to a server capped at --max-num-seqs (default "
                        "--concurrency) running sequences and measure the steady-state window in which the batch "
                        "stays full, as the ML.ENERGY benchmark does (sim/tools/burst.py)")
    p.add_argument("--gpu-memory-utilization", type=float, default=None, help="memory share of the engine (default 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")


def add_sweep_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of ``dcsim sweep``."""
    parser.add_argument("scenario", help="scenario YAML with a sweep: section, or a shipped scenario's name")
    parser.add_argument("--out", required=True, help="output folder or object-store URI (s3://bucket/prefix)")
    parser.add_argument("--executor", choices=["ray", "serial"], default="ray", help="ray (default) or serial (in this process)")
    parser.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="tasks submitted at once (default: 2 x cluster CPUs)")
    parser.add_argument("--max-retries", type=int, default=3, help="retries of a point whose worker died (default 3)")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted sweep: run only points without a commit marker")
    parser.add_argument("--dry-run", action="store_true", help="list the points and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def add_calibrate_arguments(ap) -> None:
    ap.add_argument("--accelerator", required=True, help="accelerator card name, e.g. h100-sxm")
    ap.add_argument("--profiles", nargs="*", default=None,
                    help="per-operator tables (vidur layout); default hardware/profiles/vidur/<prefix>_*.csv")
    ap.add_argument("--network", default=None, help="NCCL all-reduce table (vidur layout)")
    ap.add_argument("--measurements", default=None, help="serving measurements CSV (default the shipped one)")
    ap.add_argument("--kernels-from", default=None,
                    help="take what this accelerator has no measurements for from another accelerator's card")
    ap.add_argument("--host-from", default=None,
                    help="take the engine's host-side overheads (per step, per sequence, per layer of a prefill "
                         "step) from another accelerator's card and fit only the device-side parameters")
    ap.add_argument("--out", default=None, help="calibration card to write (default hardware/calibration/<acc>.yaml)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-concurrency", type=int, default=512,
                    help="fit only on measured points with at most this batch cap (simulation time)")
    ap.add_argument("--engine", choices=("vllm", "trtllm"), default="vllm",
                    help="trtllm: fit the TensorRT-LLM engine profile's overheads for the accelerator "
                         "(hardware/calibration/trtllm.yaml) to its 'fit' rows of trtllm_throughput.csv")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (``error: dcsim run: ...``), exit 2, like
    every other bad input; ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message.splitlines()[0] if message else 'bad arguments'} "
                     f"(see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dcsim", description="Discrete-event simulator of AI-inference datacenters",
                epilog="Shipped scenarios (pass a name or a path): " + ", ".join(shipped_scenarios()))
    p.add_argument("--version", action="version", version=f"dcsim {sim.__version__} (engine: {native.build()})")
    _verbosity_options(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _verbosity_options(common, suppress=True)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_parser_with(common))

    v = sub.add_parser("validate", help="check scenario files (schema, hardware and model names, memory fit)")
    v.add_argument("files", nargs="+", help="scenario files or shipped scenario names")
    v.set_defaults(func=commands.cmd_validate)

    r = sub.add_parser("run", help="simulate one scenario (ignoring its sweep section) and print a summary")
    r.add_argument("scenario", help="scenario file, or the name of a shipped scenario (e.g. quickstart)")
    r.add_argument("--out", required=True, help="output folder or object-store URI (must be new or empty)")
    r.add_argument("--overwrite", action="store_true",
                   help="clear --out first when it holds an earlier run or sweep (never files dcsim did not write)")
    r.add_argument("--mode", choices=["macro", "per_iteration"], help="engine mode (default: the scenario's)")
    r.add_argument("--set", action="append", metavar="KEY.PATH=VALUE", help="override a scenario key (repeatable)")
    r.add_argument("--shards", type=int, default=None, metavar="N",
                   help="split the datacenter into N shards exchanging load reports every --window-s (docs/sharding.md)")
    r.add_argument("--window-s", type=float, default=0.1, help="sharded: simulated seconds between exchanges (default 0.1)")
    r.add_argument("--executor", choices=["ray", "serial"], default="ray",
                   help="sharded: an actor per shard on Ray (default) or every shard in this process")
    r.add_argument("--address", default=None, help="sharded: Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    r.add_argument("--num-cpus", type=int, default=None, help="sharded: CPUs of the embedded local Ray (default: all)")
    r.set_defaults(func=commands.cmd_run)

    e = sub.add_parser("estimate", help="steady state of one replica under a fixed concurrency (closed loop, no files)")
    add_estimate_arguments(e)
    e.set_defaults(func=commands.cmd_estimate)

    s = sub.add_parser("sweep", help="run every point of a scenario's sweep (embedded Ray by default)")
    add_sweep_arguments(s)
    s.set_defaults(func=commands.cmd_sweep)

    pl = sub.add_parser("plan", help="search a scenario's plan: section for the cheapest configuration that meets its "
                                     "constraints (Ray Tune; docs/planning.md)")
    pl.add_argument("scenario", help="scenario YAML with a plan: section")
    pl.add_argument("--out", required=True, help="output folder or object-store URI (laid out as a sweep's)")
    pl.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray)")
    pl.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    pl.add_argument("--trials", type=int, default=None, help="simulated candidates at most (default: plan.search.trials)")
    pl.add_argument("--resume", action="store_true", help="finish an interrupted plan: committed runs are read back")
    pl.add_argument("--no-progress", action="store_true", help="no trial progress from Ray Tune")
    pl.set_defaults(func=commands.cmd_plan)

    c = sub.add_parser("calibrate", help="fit an accelerator's performance and power parameters to measurements")
    add_calibrate_arguments(c)
    c.set_defaults(func=commands.cmd_calibrate)

    rp = sub.add_parser("report", help="write a self-contained HTML report of a run or sweep folder")
    rp.add_argument("dir", help="output folder of dcsim run / sweep")
    rp.add_argument("--out", default=None, metavar="FILE", help="HTML file to write (default: DIR/report.html)")
    rp.set_defaults(func=commands.cmd_report)

    xt = sub.add_parser("export-trace", help="write one point's timeline as Chrome trace JSON (ui.perfetto.dev, chrome://tracing)")
    xt.add_argument("dir", help="output folder of dcsim run / sweep")
    xt.add_argument("--point", default=None, metavar="ID", help="point id (default: the only point of a run)")
    xt.add_argument("--out", default=None, metavar="FILE", help="JSON file to write (default: DIR/ID/trace.json)")
    xt.add_argument("--start-s", type=float, default=None, help="start of the simulated-time window (default 0)")
    xt.add_argument("--end-s", type=float, default=None, help="end of the window (default: the end of the run)")
    xt.add_argument("--max-calls", type=int, default=10_000,
                    help="end the window early so at most this many calls are in it (default 10000; 0: no cap)")
    xt.add_argument("--max-steps", type=int, default=100_000,
                    help="... and at most this many engine runs (default 100000; 0: no cap)")
    xt.set_defaults(func=commands.cmd_export_trace)
    return p


def _parser_with(common: argparse.ArgumentParser):
    """The subparser class: every command also takes ``-v`` / ``-q`` after its name."""

    class CommandParser(_Parser):
        def __init__(self, *a, **kw):
            kw.setdefault("parents", [common])
            super().__init__(*a, **kw)

    return CommandParser


def shipped_scenarios() -> list[str]:
    from sim.resources import shipped_scenarios as names

    return names()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbosity = verbosity(args)
    setup_logging(args.verbosity)
    try:
        return args.func(args)
    except ScenarioError as e:
        print(f"error: {str(e).replace(chr(10), chr(92) + 'n')[:2000]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; see 'Limits' in README.md for the bounds on a run's size", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: input nested too deeply", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        # what precise checks at the source missed (a file that went away, a disk that filled up):
        # still one line, never a traceback
        text = str(e).strip()
        print(f"error: {type(e).__name__}: {_one_line(text) if text else 'failed'}", file=sys.stderr)
        return 2


def _one_line(text: str, limit: int = 500) -> str:
    """The first line of ``text``, cut at ``limit`` characters."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[:limit] + "..."


if __name__ == "__main__":
    sys.exit(main())
