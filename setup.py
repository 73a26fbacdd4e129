"""Build step of the dcsim package (the metadata is in pyproject.toml).

The repository keeps its hardware cards, calibration and shipped scenarios in the top-level
``hardware/`` and ``scenarios/`` folders. A wheel (and so ``pip install .``) carries copies of
both inside the package, as ``sim/_data/hardware`` and ``sim/_data/scenarios``, where
``sim.resources`` finds them with importlib.resources. An editable install copies nothing: it
reads the repository's folders in place.

With ``DCSIM_COMPILE=1`` the build also compiles the engine's inner loop (the modules of
``sim.native.ENGINE``) with mypyc into extension modules beside their sources, and records the
sources' SHA-256 in ``sim/native.json`` (``sim.native`` runs the compiled modules only while
they match). Without mypy, or where the C compiler fails, it says so and installs the pure
Python modules, which give the same tables.
"""

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = ("hardware", "scenarios")


def _engine_modules() -> tuple:
    """``sim.native.ENGINE``, the modules compiled (that module alone, not the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_dcsim_native", ROOT / "sim" / "native.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ENGINE


ENGINE = _engine_modules()


class build_py_with_data(build_py):
    """``build_py`` that also copies the data folders into the built package."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in DATA:
            src = ROOT / name
            if not src.is_dir():
                raise SystemExit(f"error: {src} is missing: a dcsim build needs the repository's {name}/ folder")
            dst = Path(self.build_lib) / "sim" / "_data" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


def _say(message: str) -> None:
    print(f"dcsim build: {message}", file=sys.stderr)


def compiled_engine() -> list:
    """mypyc's extension modules for the engine's inner loop, if asked for and mypy is there."""
    if os.environ.get("DCSIM_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("DCSIM_COMPILE=1 but mypy (mypyc) is not installed in the build environment: pure Python engine")
        return []
    paths = [m.replace(".", "/") + ".py" for m in ENGINE]
    # -ffp-contract=off: no fused multiply-adds, so every float is the one Python computes
    os.environ["CFLAGS"] = (os.environ.get("CFLAGS", "") + " -ffp-contract=off").strip()
    try:
        return mypycify(["--ignore-missing-imports", "--follow-imports=silent", *paths], opt_level="3",
                        group_name="sim._native")
    except SystemExit:  # mypy found type errors in them (printed above)
        _say("mypyc could not compile the engine (see above): pure Python engine")
        return []


class build_ext_or_pure(build_ext):
    """``build_ext`` that falls back to the pure Python engine where compiling fails (no C
    compiler, say): the built pieces are removed and the build goes on without them."""

    def run(self):
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as e:  # CompileError, LinkError, a missing compiler: all end the same way
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            _say(f"compiling the engine failed ({type(e).__name__}: {str(e)[:200]}): pure Python engine")
            return
        import mypy.version

        folder = Path(self.get_ext_fullpath("sim.native")).parent  # the package's folder
        sources = {m: hashlib.sha256((ROOT / (m.replace(".", "/") + ".py")).read_bytes()).hexdigest() for m in ENGINE}
        (folder / "native.json").write_text(json.dumps({"compiler": f"mypyc {mypy.version.__version__}",
                                                        "sources": sources}, indent=1) + "\n")
        _say(f"engine compiled with mypyc {mypy.version.__version__}")


setup(cmdclass={"build_py": build_py_with_data, "build_ext": build_ext_or_pure}, ext_modules=compiled_engine())
