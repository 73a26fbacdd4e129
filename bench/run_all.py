"""The benchmark suite (not a test): speed, events per call, memory and Parquet writing.

    python bench/run_all.py            # full suite (~25 minutes on 2 cores)
    python bench/run_all.py --quick    # shorter horizons (~5 minutes)
    python bench/run_all.py --only "1,024 accelerators"
    python bench/run_all.py --only "Vidur reference"   # scenarios/vidur_reference.yaml
    python bench/run_all.py --only "agents pool"       # the 1,024 configuration's agents alone

Every configuration runs in a fresh subprocess (bench/bench_engine.py's child), so its peak
RSS is its own, in the macro-step mode and, over a shorter horizon, in the per-iteration
reference mode. Printed per run: simulated calls per wall second, simulated seconds per
wall second, SimPy events processed per call, engine iterations per planned run, peak RSS
and Parquet rows written per wall second; then the speed-up of the macro-step mode, peak
RSS against run length (a run 4x longer), the 1,024-accelerator hour's summary, and the
Parquet writer alone (rows per second through sim.output.trace.Recorder), and two whole
processes: ``dcsim run`` on the Vidur reference workload (wall and CPU seconds, peak RSS)
and ``dcsim --help``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_engine  # noqa: E402

ROOT = bench_engine.ROOT

# (configuration, macro horizon, per-iteration horizon) in simulated seconds: full, quick
SUITE = {
    "Vidur reference": ((1667, 300), (1667, 100)),
    "1 replica, high load": ((600, 60), (120, 15)),
    "1 replica, reasoning": ((3600, 600), (900, 150)),
    "64 replicas": ((600, 30), (120, 10)),
    "1,024 accelerators": ((3600, 20), (300, 5)),
    "agents pool": ((2400, 300), (600, 60)),  # its agent sessions alone: CPU per agent turn
}
# memory against run length: (configuration, short horizon); the long run is 4x
MEMORY = {False: ("64 replicas", 900), True: ("64 replicas", 300)}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(x.split()[1]) for x in open("/proc/meminfo") if x.startswith("MemTotal")) / 2**20
    except (OSError, StopIteration):
        mem = float("nan")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"load average {load:.1f} at start")


HEAD = (f"{'configuration':<22} {'mode':>13} {'sim s':>6} {'calls':>8} {'wall s':>7} {'CPU s':>7} {'calls/s':>8} "
        f"{'sim s/s':>8} {'events':>9} {'ev/call':>7} {'it/run':>7} {'peak MiB':>8} {'rows/s':>8}")


def row(name: str, mode: str, r: dict) -> str:
    """One run's figures (CPU seconds too: on a shared machine they vary less than wall time)."""
    return (f"{name:<22} {mode:>13} {r['sim_s']:>6.0f} {r['calls']:>8} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
            f"{r['calls'] / r['wall_s']:>8.0f} {r['sim_s'] / r['wall_s']:>8.2f} {r['events']:>9} "
            f"{r['events'] / max(1, r['calls']):>7.1f} {r['iterations'] / max(1, r['runs']):>7.1f} {r['rss_mib']:>8.0f} "
            f"{r['rows'] / r['wall_s']:>8.0f}")


def process_figures(args: list[str], repeat: int = 3) -> tuple[float, float, float]:
    """Median wall seconds, median CPU seconds and largest peak RSS (MiB) of a whole command run
    ``repeat`` times in a fresh process each (start-up, imports and writing included)."""
    walls, cpus, rss = [], [], 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        walls.append(time.perf_counter() - t)
        if status:
            raise RuntimeError(f"{' '.join(args)} failed: {p.stderr.read().decode()[-2000:]}")
        p.stderr.close()
        cpus.append(usage.ru_utime + usage.ru_stime)
        rss = max(rss, usage.ru_maxrss / 1024)
    return statistics.median(walls), statistics.median(cpus), rss


def whole_process() -> None:
    """``dcsim run`` on the Vidur reference workload and ``dcsim --help``, as whole processes."""
    dcsim = [sys.executable, "-m", "sim.cli"]
    out = tempfile.mkdtemp(prefix="dcsim-bench-reference-")
    runs = [dcsim + ["run", str(bench_engine.REFERENCE), "--out", f"{out}/{i}"] for i in range(3)]
    figures = []
    for args in runs:  # a fresh output folder each time
        figures.append(process_figures(args, repeat=1))
    wall = statistics.median(f[0] for f in figures)
    cpu = statistics.median(f[1] for f in figures)
    rss = max(f[2] for f in figures)
    print(f"dcsim run scenarios/vidur_reference.yaml, whole process (median of 3): {wall:.2f} wall s, {cpu:.2f} CPU s, "
          f"peak {rss:.0f} MiB")
    wall, cpu, rss = process_figures(dcsim + ["--help"], repeat=5)
    print(f"dcsim --help, whole process (median of 5): {wall:.2f} wall s, {cpu:.2f} CPU s, peak {rss:.0f} MiB")


def recorder_rate(rows: int = 1_000_000) -> tuple[float, float]:
    """Rows per second written through the Recorder alone (synthetic call rows, zstd), and the
    file's size in MiB."""
    from types import SimpleNamespace

    from pyarrow import fs as pafs

    from sim.output.trace import Recorder

    out = tempfile.mkdtemp(prefix="dcsim-bench-trace-")
    path = f"{out}/calls/part-0.parquet"
    rec = Recorder({"calls": (pafs.LocalFileSystem(), path)})
    c = SimpleNamespace(call_id=0, cls="chat", pool="h100", replica=3, job_id=-1, session_id=-1, priority=0,
                        status="finished", arrival_s=0.0, admitted_s=0.0, first_token_s=0.0, finish_s=0.0, prompt_tokens=800,
                        output_tokens=250, generated=250, cached_tokens=0, preemptions=0, energy_j=0.0, device_s=0.0,
                        kv_transfer_s=0.0)
    t = time.perf_counter()
    for i in range(rows):
        c.call_id = i
        c.arrival_s = i * 0.01
        c.admitted_s = c.arrival_s + 0.002
        c.first_token_s = c.arrival_s + 0.03
        c.finish_s = c.arrival_s + 2.5
        c.energy_j = 0.1 * (i % 97)
        rec.call(c)
    rec.close()
    dt = time.perf_counter() - t
    return rows / dt, os.path.getsize(path) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter horizons")
    ap.add_argument("--only", action="append", help="run only this configuration (repeatable)")
    ap.add_argument("--no-per-iteration", action="store_true", help="skip the per-iteration reference runs")
    a = ap.parse_args()
    which = 1 if a.quick else 0
    print(f"dcsim benchmark suite ({'quick' if a.quick else 'full'}): {machine()}")
    print(HEAD)
    rates, cluster = {}, None
    for name, horizons in SUITE.items():
        if a.only and name not in a.only:
            continue
        macro_s, iter_s = horizons[which]
        for mode, dur in (("macro", macro_s), ("per_iteration", iter_s)):
            if mode == "per_iteration" and a.no_per_iteration:
                continue
            r = bench_engine.run_child(config=name, duration_s=float(dur), mode=mode)
            rates[(name, mode)] = r["calls"] / r["wall_s"]
            if name == "1,024 accelerators" and mode == "macro":
                cluster = r
            print(row(name, mode, r), flush=True)
            if name == "Vidur reference" and mode == "macro":
                print(f"  Vidur reference: {r['simulate_s']:.2f} s to build, simulate and write the tables, "
                      f"{r['wall_s']:.2f} s with the summary; {1e6 * r['cpu_s'] / r['calls']:.0f} CPU us per call", flush=True)
    for name in SUITE:
        if (name, "macro") in rates and (name, "per_iteration") in rates:
            print(f"speed-up of the macro-step mode, {name}: "
                  f"{rates[(name, 'macro')] / rates[(name, 'per_iteration')]:.1f}x (simulated calls per wall second)")
    if cluster is not None:
        s = cluster["summary"]
        print(f"1,024 accelerators, {cluster['sim_s']:.0f} simulated s in {cluster['wall_s']:.0f} wall s "
              f"({cluster['cpu_s']:.0f} CPU s, of which the summary {cluster['wall_s'] - cluster['simulate_s']:.1f} s); "
              f"{cluster['cached_chunks']:,} prefix-cache entries held at the end:")
        print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))
    name, short = MEMORY[a.quick]
    if not a.only or name in a.only:
        rs = [bench_engine.run_child(config=name, duration_s=float(d), mode="macro") for d in (short, 4 * short)]
        for r in rs:
            print(row(name, "macro", r))
        print(f"peak RSS against run length, {name}: {rs[0]['rss_mib']:.0f} MiB over {short} simulated s, "
              f"{rs[1]['rss_mib']:.0f} MiB over {4 * short} s ({100 * (rs[1]['rss_mib'] / rs[0]['rss_mib'] - 1):+.1f}%)")
    if not a.only or "Vidur reference" in a.only:
        whole_process()
    if not a.only:
        rate, mib = recorder_rate(200_000 if a.quick else 1_000_000)
        print(f"Parquet writer alone: {rate:,.0f} call rows per second (19 columns, zstd, {mib:.1f} MiB file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
