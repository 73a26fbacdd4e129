"""The compiled engine (``DCSIM_COMPILE=1``, mypyc) and its pure Python sources give byte-identical
tables, ``DCSIM_PURE_PYTHON=1`` picks the sources, and a compiled build older than its sources
is never run (``sim/native.py``)."""

import hashlib
import json
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sim import native

COMPILED = native.build().startswith("compiled")


def _fake_build(root: Path) -> None:
    """A package folder laid out as a compiled build: the sources in their subpackages, a compiled
    ``engine/core`` and the record."""
    sources = {}
    for name in native.ENGINE:
        text = f"# {name}\n".encode()
        path = Path(native.source_of(str(root), name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        sources[name] = hashlib.sha256(text).hexdigest()
    (root / "engine" / ("core" + EXTENSION_SUFFIXES[0])).write_bytes(b"")
    (root / native.RECORD).write_text(json.dumps({"compiler": "mypyc 9.9", "sources": sources}))


def test_the_compiled_set_reaches_beyond_the_engine():
    assert {"sim.models.perf", "sim.output.trace", "sim.engine.core"} <= set(native.ENGINE)
    assert native.source_of("/x/sim", "sim.models.perf") == os.path.join("/x/sim", "models", "perf.py")


@pytest.mark.parametrize("edited", ["sim.engine.plan", "sim.models.perf"])
def test_a_compiled_build_runs_only_while_it_matches_its_sources(tmp_path, edited):
    assert native._compiled_record(str(tmp_path)) == ("", False)  # nothing compiled
    _fake_build(tmp_path)
    assert native._compiled_record(str(tmp_path)) == ("mypyc 9.9", True)
    Path(native.source_of(str(tmp_path), edited)).write_text("# edited after the build\n")
    assert native._compiled_record(str(tmp_path)) == ("mypyc 9.9", False)
    (tmp_path / native.RECORD).write_text("{not json")
    assert native._compiled_record(str(tmp_path)) == ("unrecorded", False)  # compiled, unchecked: the sources run
    (tmp_path / native.RECORD).unlink()  # an older build's record elsewhere
    assert native._compiled_record(str(tmp_path)) == ("unrecorded", False)


def test_the_pure_finder_loads_the_compiled_modules_from_their_sources(tmp_path):
    _fake_build(tmp_path)
    spec = native.PureFinder.find_spec("sim.engine.core", [str(tmp_path / "engine")])
    assert spec.origin == str(tmp_path / "engine" / "core.py")  # the source, though a compiled core is beside it
    spec = native.PureFinder.find_spec("sim.models.perf", [str(tmp_path / "models")])
    assert spec.origin == str(tmp_path / "models" / "perf.py")
    assert native.PureFinder.find_spec("sim.engine.diffusion", [str(tmp_path / "engine")]) is None  # not compiled
    assert native.PureFinder.find_spec("sim.engine.core", [str(tmp_path / "elsewhere")]) is None


def _run(scenario: str, out: Path, pure: bool) -> Path:
    env = {k: v for k, v in os.environ.items() if k != "DCSIM_PURE_PYTHON"}
    if pure:
        env["DCSIM_PURE_PYTHON"] = "1"
    res = subprocess.run([sys.executable, "-m", "sim.cli", "run", scenario, "--out", str(out), "--set", "duration_s=40",
                          "--set", "warmup_s=5"], capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _tables(out: Path) -> tuple[dict, str]:
    """The bytes of every Parquet table of a run (as an Arrow stream, less its wall-clock column),
    and the engine build its manifest names."""
    tables = {}
    for f in sorted(out.rglob("*.parquet")):
        t = pq.read_table(f)
        t = t.drop_columns([c for c in t.column_names if c == "wall_s"])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        tables[str(f.relative_to(out))] = sink.getvalue().to_pybytes()
    (manifest,) = out.rglob("manifest.json")
    return tables, json.loads(manifest.read_text())["versions"]["engine"]


@pytest.mark.skipif(not COMPILED, reason=f"the engine is not compiled here ({native.build()}); "
                                         "build it with DCSIM_COMPILE=1 pip install -e .")
@pytest.mark.parametrize("scenario", ["faults", "agents_kv"])
def test_compiled_and_pure_engines_write_identical_tables(scenario, tmp_path):
    compiled, build_c = _tables(_run(scenario, tmp_path / "compiled", pure=False))
    pure, build_p = _tables(_run(scenario, tmp_path / "pure", pure=True))
    assert build_c.startswith("compiled") and build_p == "pure Python, DCSIM_PURE_PYTHON set"
    assert compiled.keys() == pure.keys() and len(compiled) >= 3
    for name in compiled:
        assert compiled[name] == pure[name], name
