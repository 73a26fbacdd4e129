"""Build step of the dcsim package (the metadata is in pyproject.toml).

The repository keeps its hardware cards, calibration and shipped scenarios in the top-level
``hardware/`` and ``scenarios/`` folders. A wheel (and so ``pip install .``) carries copies of
both inside the package, as ``sim/_data/hardware`` and ``sim/_data/scenarios``, where
``sim.resources`` finds them with importlib.resources. An editable install copies nothing: it
reads the repository's folders in place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = ("hardware", "scenarios")


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


setup(cmdclass={"build_py": build_py_with_data})
