"""Capacity planning: the plan command searches a scenario's ``plan:`` space on Ray Tune for the
cheapest configuration that meets its constraints (docs/planning.md).

Layer: above :mod:`sim.sweep` and :mod:`sim.tools` (it runs points as a sweep does and sizes
replicas with ``estimate``), below the command line. Modules: :mod:`~sim.plan.spec` (the ``plan:``
schema), :mod:`~sim.plan.space` (candidates, memory fit, capacity stage), :mod:`~sim.plan.metrics`
(constraints, margins, score), :mod:`~sim.plan.search` (Tune searcher), :mod:`~sim.plan.trial`
(one trial), :mod:`~sim.plan.frontier` (Pareto, recommendation, sensitivity),
:mod:`~sim.plan.driver` (the run and its tables), :mod:`~sim.plan.display` (printing).
"""

from sim.plan.driver import PlanResult, run_plan

__all__ = ["PlanResult", "run_plan"]
