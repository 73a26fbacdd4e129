"""dcsim: a discrete-event simulator of AI-inference datacenters.

Layers (data flows down only): ``sim.config.scenario`` (validated scenarios) and
``sim.hardware.catalog`` (hardware and model cards) feed pure models (``sim.models.perf``,
``sim.models.power``, ``sim.engine.kvcache``), which the SimPy world (``sim.engine.replica``,
``sim.cluster.router``, ``sim.workloads.arrivals``) drives; ``sim.output.trace`` streams Parquet and
``sim.run`` ties one simulation point together.
"""

__version__ = "0.1.0"

from os.path import dirname as _dirname  # noqa: E402

from sim import native as _native  # noqa: E402

_native.choose(_dirname(__file__))  # the compiled engine, or its sources (sim/native.py)
