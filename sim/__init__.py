"""dcsim: a discrete-event simulator of AI-inference datacenters.

Layers (data flows down only): ``sim.config`` (validated scenarios) and
``sim.catalog`` (hardware and model cards) feed pure models (``sim.perf``,
``sim.power``, ``sim.kvcache``), which the SimPy world (``sim.engine``,
``sim.router``, ``sim.workload``) drives; ``sim.trace`` streams Parquet and
``sim.run`` ties one simulation point together.
"""

__version__ = "0.1.0"
