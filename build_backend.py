"""setuptools' build backend, asking for mypy as well when ``DCSIM_COMPILE=1``.

``DCSIM_COMPILE=1 pip install .`` (or ``-e .``) then fetches mypy into the isolated build
environment and ``setup.py`` compiles the engine's inner loop with mypyc; without the variable
the build needs setuptools only and installs the pure Python engine. The hooks that only ask for
requirements or metadata run ``setup.py`` without compiling.
"""

import contextlib
import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403 (the backend's other hooks, unchanged)

COMPILER = "mypy>=1.11,<3"  # mypyc comes with it


@contextlib.contextmanager
def _not_compiling():
    asked = os.environ.pop("DCSIM_COMPILE", None)
    try:
        yield [COMPILER] if asked == "1" else []
    finally:
        if asked is not None:
            os.environ["DCSIM_COMPILE"] = asked


def get_requires_for_build_wheel(config_settings=None):
    with _not_compiling() as extra:
        return _setuptools.get_requires_for_build_wheel(config_settings) + extra


def get_requires_for_build_editable(config_settings=None):
    with _not_compiling() as extra:
        return _setuptools.get_requires_for_build_editable(config_settings) + extra


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    with _not_compiling():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(metadata_directory, config_settings=None):
    with _not_compiling():
        return _setuptools.prepare_metadata_for_build_editable(metadata_directory, config_settings)
