"""A workload kind: work above single calls (reasoning jobs, agent sessions, image and video
requests) as one plugin.

A workload class names its kind by the section it carries (``job:``, ``session:``, ``video:``);
a class with none sends plain calls. The world builds one :class:`WorkloadKind` per kind the
scenario uses, hands it the classes of that kind, and asks it to start a unit at each arrival.
The kind runs its units (SimPy processes over the world's calls), writes one row per unit to
its own table, closes the units still open when the run ends, and adds its own columns to the
run's summary (its ``summarize`` is the result hook): the world and ``run_point`` never branch
on kinds. Adding a kind is one class and one entry in :data:`sim.workloads.WORKLOAD_KINDS`
(docs/extending.md): a subclass in a module of this package registers itself.
"""

from __future__ import annotations


class WorkloadKind:
    """Base of the workload kinds; ``key`` is the workload-class section naming the kind and
    ``table`` the table its rows go to."""

    key = ""
    table = ""
    schema = None  # pyarrow schema of its table's rows
    order = 100  # position among the kinds: their summary columns follow it
    written_when_unused = True  # False: a run none of whose classes is of the kind writes no table of it
    _registry: dict = {}

    def __init_subclass__(cls, **kw):
        """A subclass with a ``key`` is a kind: registered by defining it (no registry to edit)."""
        super().__init_subclass__(**kw)
        if cls.key:
            WorkloadKind._registry[cls.key] = cls

    def __init__(self, world, classes: list):
        self.world = world
        self.classes = classes
        self.created = 0  # units started (the table must hold as many rows)
        self.open: dict = {}  # id -> (its class's runner, the unit) of the units not yet recorded
        self.by_class: dict = {}  # class name -> the runner of that class's units (kinds that keep one)

    @classmethod
    def claims(cls, workload_class) -> bool:
        """Whether a workload class is of this kind (it carries the kind's section)."""
        return getattr(workload_class, cls.key, None) is not None

    def start(self, cls, t: float, prompt: int, on_done=None):
        """Start a unit of class ``cls`` arriving at ``t`` (== now) with ``prompt`` tokens (by
        default: its class's runner starts it)."""
        return self.by_class[cls.name].start(t, prompt, on_done)

    def new_id(self) -> int:
        """The next unit's id (0, 1, ... in creation order)."""
        self.created += 1
        return self.created - 1

    @property
    def busy(self) -> bool:
        """Whether units are still open (the run waits for them before it ends)."""
        return bool(self.open)

    def close(self) -> None:
        """End the units still open when the run ends (recorded as timed out)."""

    def wrote_rows(self) -> bool:
        """Whether this run's table of the kind is to be read for the summary."""
        return bool(self.classes)

    def summarize(self, read, calls, t0: float, t1: float, summary: dict) -> dict:
        """The kind's summary columns over the window ``[t0, t1)``: ``read()`` gives its table
        (a ``pyarrow.parquet.ParquetFile``, closed by the caller), ``calls`` the calls table,
        ``summary`` the columns so far (cost and energy of the window). Checks that the table
        holds a row for every unit created."""
        raise NotImplementedError


def fires(event):
    """A call's ``on_done`` that triggers ``event`` (with no value) when the call ends, for a
    unit's process waiting on its call. Not ``event.succeed``: that would make the call the
    event's value, and the call holding the event that holds it is a reference cycle, which only
    the cyclic collector frees (a collection every few thousand calls, each scanning the young
    objects); without it a finished call and its event go as soon as the unit lets go of them.
    The units read their calls, never the events' values."""
    return lambda _call: event.succeed()

