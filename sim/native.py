"""Which build of the engine's inner loop runs: compiled (mypyc) or the pure Python sources.

An install built with ``DCSIM_COMPILE=1`` (see ``setup.py``) has the modules of :data:`ENGINE`
compiled by mypyc into extension modules beside their ``.py`` sources, and the SHA-256 of each
source they were compiled from in ``sim/native.json``. Python would import the extension
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

# the modules compiled, in the order they import each other (bottom first): the engine's inner
# loop and the per-iteration and per-call code it calls (the performance and power models'
# scalar paths, the trace recorder)
ENGINE = (
    "sim.models.parallel",
    "sim.models.perf",
    "sim.models.power",
    "sim.output.trace",
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
PROBE = "sim.engine.core"  # the module whose extension file says that a compiled build is there
RECORD = "native.json"  # in the package's folder: {"compiler": ..., "sources": {module: sha256}}
_state = {"build": "pure Python"}


def source_of(root: str, name: str) -> str:
    """The ``.py`` file of module ``name`` (``sim.x.y``) under the package folder ``root``."""
    return os.path.join(root, *name.split(".")[1:]) + ".py"


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


def _compiled_record(root: str) -> tuple[str, bool]:
    """(compiler, whether every compiled module matches its source) from the build's record in
    the package folder ``root``; ("", False) where nothing was compiled, ("unrecorded", False)
    where compiled modules lie there without a readable record (a build from before the record
    moved to the package folder: never run unchecked)."""
    from importlib.machinery import EXTENSION_SUFFIXES

    record = os.path.join(root, RECORD)
    probe = source_of(root, PROBE)[:-3]
    if not any(os.path.isfile(probe + suffix) for suffix in EXTENSION_SUFFIXES):
        return "", False
    if not os.path.isfile(record):
        return "unrecorded", False
    import hashlib
    import json

    try:
        with open(record) as f:
            data = json.load(f)
        sources = data["sources"]
        fresh = set(sources) == set(ENGINE)
        for name in ENGINE if fresh else ():
            with open(source_of(root, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != sources[name]:
                    fresh = False
                    break
        return str(data.get("compiler", "mypyc")), fresh
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "unrecorded", False


def choose(root: str) -> None:
    """Decide, before any compiled module is imported, which build of them runs (see the
    module's doc); ``root``: the package's folder."""
    if any(name in sys.modules for name in ENGINE):
        return  # decided already (the package was imported before, e.g. reloaded)
    compiler, fresh = _compiled_record(root)
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
