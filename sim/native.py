"""Which build of the engine's inner loop runs: compiled (mypyc) or the pure Python sources.

An install built with ``DCSIM_COMPILE=1`` (see ``setup.py``) has the modules of :data:`ENGINE`
compiled by mypyc into extension modules beside their ``.py`` sources, and the SHA-256 of each
source they were compiled from in ``sim/engine/native.json``. Python would import the extension
modules first; :func:`choose`, run once when the package is imported, lets it only while every
recorded digest matches its source (an edited source runs as written, never a stale build) and
``DCSIM_PURE_PYTHON`` is unset or 0. Otherwise it puts a finder first on ``sys.meta_path`` that
loads those modules from their sources, all of them together (the compiled ones call each
other directly). Both builds give byte-identical tables (``tests/test_native.py``).
:func:`build` says which one runs, for ``dcsim --version`` and the run manifest.
"""

from __future__ import annotations

import os
import sys

# the engine's inner loop, in the order they import each other (bottom first)
ENGINE = (
    "sim.engine.kvcache",
    "sim.engine.call",
    "sim.engine.dclock",
    "sim.engine.instant",
    "sim.engine.prices",
    "sim.engine.scheduler",
    "sim.engine.plan",
    "sim.engine.lazy",
    "sim.engine.core",
    "sim.engine.replica",
)
RECORD = "native.json"  # beside the compiled modules: {"compiler": ..., "sources": {module: sha256}}
_state = {"build": "pure Python"}


class PureFinder:
    """A ``sys.meta_path`` finder that loads the :data:`ENGINE` modules from their ``.py`` files."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in ENGINE:
            return None
        source = name.rpartition(".")[2] + ".py"
        for folder in path or ():
            candidate = os.path.join(folder, source)
            if os.path.isfile(candidate):
                from importlib.util import spec_from_file_location  # (only here: it costs an import)

                return spec_from_file_location(name, candidate)
        return None


def _compiled_record(engine_dir: str) -> tuple[str, bool]:
    """(compiler, whether every compiled module matches its source) from the build's record;
    ("", False) where nothing was compiled."""
    from importlib.machinery import EXTENSION_SUFFIXES

    record = os.path.join(engine_dir, RECORD)
    if not os.path.isfile(record) or not any(
            os.path.isfile(os.path.join(engine_dir, "core" + suffix)) for suffix in EXTENSION_SUFFIXES):
        return "", False
    import hashlib
    import json

    try:
        with open(record) as f:
            data = json.load(f)
        sources = data["sources"]
        fresh = set(sources) == set(ENGINE)
        for name in ENGINE if fresh else ():
            with open(os.path.join(engine_dir, name.rpartition(".")[2] + ".py"), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != sources[name]:
                    fresh = False
                    break
        return str(data.get("compiler", "mypyc")), fresh
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "", False


def choose(engine_dir: str) -> None:
    """Decide, before any engine module is imported, which build of them runs (see the module's doc)."""
    if any(name in sys.modules for name in ENGINE):
        return  # decided already (the package was imported before, e.g. reloaded)
    compiler, fresh = _compiled_record(engine_dir)
    if not compiler:
        return  # nothing compiled: the sources are all there is
    pure = os.environ.get("DCSIM_PURE_PYTHON", "").strip() not in ("", "0")
    if compiler and fresh and not pure:
        _state["build"] = f"compiled, {compiler}"
        return
    _state["build"] = ("pure Python, DCSIM_PURE_PYTHON set" if pure
                       else "pure Python, its compiled modules are older than their sources")
    if not any(isinstance(f, PureFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, PureFinder())


def build() -> str:
    """Which build of the engine this process runs, in words."""
    return _state["build"]
