"""Digest of every table of every shipped scenario (shortened) and bench configuration.

A refactor that moves code must leave every table byte-identical. This tool runs, through the
``dcsim`` command only (so it works whatever the package's inner layout), every point of every
``scenarios/*.yaml`` with its horizon cut to ``--duration-s`` (warm-up and drain scaled down with
it), and the bench configurations over a short horizon, in the serial executor; then prints one
SHA-256 line per Parquet file (its content, less wall-clock columns) and one for the whole set.

    python bench/tables_digest.py > before.txt
    ... change the code ...
    python bench/tables_digest.py > after.txt && diff before.txt after.txt
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
WALL_COLUMNS = ("wall_s",)  # the only columns that depend on the machine, not on the model


def shorten(raw: dict, duration_s: float) -> dict:
    """The scenario over at most ``duration_s`` simulated seconds, warm-up and drain cut to fit."""
    raw = dict(raw)
    d = min(float(raw.get("duration_s", duration_s)), duration_s)
    raw["duration_s"] = d
    raw["warmup_s"] = min(float(raw.get("warmup_s", 0.0)), d / 4)
    if "drain_s" in raw:
        raw["drain_s"] = min(float(raw["drain_s"]), d)
    return raw


def digest_file(path: Path) -> str:
    """SHA-256 of a Parquet file's rows and schema, wall-clock columns left out."""
    table = pq.read_table(path)
    keep = [c for c in table.column_names if c not in WALL_COLUMNS]
    table = table.select(keep)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=90.0, help="horizon of each shortened scenario")
    ap.add_argument("--only", default=None, help="substring of the scenario names to run")
    args = ap.parse_args()
    dcsim = [sys.executable, "-m", "sim.cli"]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        jobs = []
        for path in sorted((ROOT / "scenarios").glob("*.yaml")):
            raw = shorten(yaml.safe_load(path.read_text()), args.duration_s)
            jobs.append((path.stem, raw, path.parent))
        sys.path.insert(0, str(ROOT / "bench"))
        import bench_engine

        for name, make in bench_engine.CONFIGS.items():
            for mode in ("macro", "per_iteration"):
                raw = make(20.0 if "1,024" in name else 60.0, mode)
                jobs.append((f"bench {name} {mode}", raw, ROOT / "scenarios"))
        for name, raw, base in jobs:
            if args.only and args.only not in name:
                continue
            # written beside the shipped scenarios so relative trace paths resolve
            scen = base / f".digest-{abs(hash(name))}.yaml"
            out = tmp / name.replace(" ", "_").replace(",", "")
            scen.write_text(yaml.safe_dump(raw, sort_keys=False))
            try:
                if raw.get("sweep"):
                    run(dcsim + ["sweep", str(scen), "--out", str(out), "--executor", "serial", "--no-progress"])
                else:
                    run(dcsim + ["run", str(scen), "--out", str(out)])
            finally:
                scen.unlink()
            for f in sorted(out.rglob("*.parquet")):
                lines.append(f"{name}: {f.relative_to(out)} {digest_file(f)}")
    for line in lines:
        print(line)
    print("all:", hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16])


if __name__ == "__main__":
    main()
