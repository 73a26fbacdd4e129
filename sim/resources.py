"""Where the shipped data lies: hardware and model cards, calibration, scenarios and their data.

The repository keeps them in its top-level ``hardware/`` and ``scenarios/`` folders. A wheel or a
``pip install .`` carries copies of both as package data under ``sim/_data/`` (``setup.py`` copies
them at build time), read here with :mod:`importlib.resources`; a checkout or an editable install
has no ``sim/_data/`` and reads the repository's folders in place, so an edited card takes effect
at once. ``$DCSIM_HARDWARE`` names a folder of the same layout used instead of the shipped
hardware (a user's own cards and calibrations). This module sits at the bottom of the layers
beside :mod:`sim.errors`: it only finds folders and never reads a card.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

HARDWARE_ENV = "DCSIM_HARDWARE"


def _shipped(name: str) -> Path:
    """The folder ``name`` of the shipped data: the package's copy, else the repository's."""
    packaged = resources.files("sim").joinpath("_data", name)
    if packaged.is_dir():  # an installed wheel: package data on the file system
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / name


def hardware_dir() -> Path:
    """The card folder: ``$DCSIM_HARDWARE`` if set, else the shipped ``hardware/``."""
    env = os.environ.get(HARDWARE_ENV)
    return Path(env).expanduser() if env else _shipped("hardware")


def scenarios_dir() -> Path:
    """The shipped scenarios (``scenarios/``, with their trace and distribution files in ``data/``)."""
    return _shipped("scenarios")


def shipped_scenarios() -> list[str]:
    """Names of the shipped scenarios (``quickstart``, ``agents_kv``, ...), sorted."""
    folder = scenarios_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def scenario_path(arg: str) -> str:
    """The scenario file ``arg`` names: ``arg`` itself when it is a file or a path, else the
    shipped scenario of that name (``quickstart`` or ``quickstart.yaml``); ``arg`` unchanged when
    neither exists, so loading it fails with its own one-line error."""
    if os.path.exists(arg) or os.sep in arg or (os.altsep and os.altsep in arg):
        return arg
    name = arg[:-len(".yaml")] if arg.endswith(".yaml") else arg
    shipped = scenarios_dir() / f"{name}.yaml"
    return str(shipped) if shipped.is_file() else arg
