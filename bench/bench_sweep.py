"""Sweep speed: speed-up of an embedded Ray with 1 vs 2 CPUs, and per-task overhead.

Not a test: it prints figures. Usage::

    python bench/bench_sweep.py                 # synthetic CPU-bound points
    python bench/bench_sweep.py --points 16 --work-s 0.5
    python bench/bench_sweep.py --scenario scenarios/X.yaml   # real points (sim.run.run_point)

Figures:
* wall time of the same sweep serially, on Ray with 1 CPU and on Ray with N CPUs (Ray
  start-up excluded: it is paid once per sweep, ~5 s), and the speed-up N vs 1 CPU;
* per-task overhead: (Ray 1 CPU - serial) / points for points that do nothing but commit,
  i.e. what scheduling, argument shipping, the commit marker and result collection cost.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from sim.sweep import run_sweep  # noqa: E402


def busy_point(scn: dict, out: str, point_id: str) -> dict:
    """About ``work_s`` seconds of pure-Python CPU work (calibrated in the driver)."""
    n, acc = scn["loops"], 0
    for i in range(n):
        acc += i * i % 7
    return {"acc": acc}


def empty_point(scn: dict, out: str, point_id: str) -> dict:
    return {"x": scn["x"]}


def calibrate(work_s: float) -> int:
    n = 200_000
    while True:
        t = time.perf_counter()
        busy_point({"loops": n}, "", "")
        dt = time.perf_counter() - t
        if dt > 0.3:
            return max(1, int(n * work_s / dt))
        n *= 4


def timed(raw, fn, executor, make=lambda p: p.raw) -> float:
    out = tempfile.mkdtemp(prefix="bench-sweep-")
    try:
        t = time.perf_counter()
        res = run_sweep(raw, out + "/o", executor=executor, point_fn=fn, make_scenario=make, progress=False)
        dt = time.perf_counter() - t
        assert res.n_failed == 0, [r["error"] for r in res.records if r["status"] != "ok"]
        return dt
    finally:
        shutil.rmtree(out, ignore_errors=True)


def with_ray(num_cpus: int, body):
    from sim import embedded_ray  # the sweep's own loopback-only Ray

    t = time.perf_counter()
    handle = embedded_ray.start(None, num_cpus, object_store_memory=200 * 2**20)
    start = time.perf_counter() - t
    try:
        return start, body()
    finally:
        handle.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=12, help="points of the CPU-bound sweep")
    ap.add_argument("--work-s", type=float, default=0.5, help="CPU seconds per synthetic point")
    ap.add_argument("--overhead-points", type=int, default=200, help="points of the empty sweep")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the wide run")
    ap.add_argument("--scenario", help="a scenario with a sweep: section, run with sim.run.run_point")
    args = ap.parse_args()

    if args.scenario:
        from sim.config import load_raw, validate
        from sim.run import run_point

        raw, fn, label = load_raw(args.scenario), run_point, args.scenario
        base_dir = Path(args.scenario).parent

        def make(p):
            return validate(p.raw, args.scenario, base_dir)
    else:
        loops = calibrate(args.work_s)
        raw = {"loops": loops, "x": 0, "sweep": {"grid": {"x": list(range(args.points))}}}
        fn, label = busy_point, f"{args.points} synthetic points x {args.work_s} s CPU"

        def make(p):
            return p.raw

    load = os.getloadavg()[0]
    print(f"sweep benchmark: {label}; {os.cpu_count()} cores on this machine, load average {load:.1f}")
    if load > 0.5:
        print("  (other work is running: the speed-up below is understated)")
    serial = timed(raw, fn, "serial", make)
    start1, ray1 = with_ray(1, lambda: timed(raw, fn, "ray", make))
    startn, rayn = with_ray(args.cpus, lambda: timed(raw, fn, "ray", make))
    print(f"  serial (in process)      {serial:8.2f} s")
    print(f"  ray, 1 CPU               {ray1:8.2f} s   (ray start {start1:.1f} s, not counted)")
    print(f"  ray, {args.cpus} CPUs              {rayn:8.2f} s   (ray start {startn:.1f} s, not counted)")
    print(f"  speed-up {args.cpus} vs 1 CPU        {ray1 / rayn:8.2f} x   (ideal {args.cpus:.0f} x)")
    print(f"  speed-up {args.cpus} CPUs vs serial  {serial / rayn:8.2f} x")

    n = args.overhead_points
    empty = {"x": 0, "sweep": {"grid": {"x": list(range(n))}}}
    s_empty = timed(empty, empty_point, "serial")
    _, r_empty = with_ray(1, lambda: timed(empty, empty_point, "ray"))
    print(f"per-task overhead ({n} empty points, each still cleared and committed):")
    print(f"  serial                   {1e3 * s_empty / n:8.2f} ms/point")
    print(f"  ray, 1 CPU               {1e3 * r_empty / n:8.2f} ms/point")
    print(f"  ray overhead             {1e3 * (r_empty - s_empty) / n:8.2f} ms/task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
