"""setuptools' build backend, asking for mypy as well when ``DCSIM_COMPILE=1``.

``DCSIM_COMPILE=1 pip install .`` (or ``-e .``) then fetches mypy into the isolated build
environment and ``setup.py`` compiles the engine's inner loop with mypyc; without the variable
the build needs setuptools only and installs the pure Python engine.
"""

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403 (the backend's other hooks, unchanged)

COMPILER = "mypy>=1.11,<3"  # mypyc comes with it


def _compiler() -> list:
    return [COMPILER] if os.environ.get("DCSIM_COMPILE") == "1" else []


def get_requires_for_build_wheel(config_settings=None):
    return _setuptools.get_requires_for_build_wheel(config_settings) + _compiler()


def get_requires_for_build_editable(config_settings=None):
    return _setuptools.get_requires_for_build_editable(config_settings) + _compiler()
