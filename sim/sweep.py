"""Run every point of a sweep: serially, on an embedded local Ray, or on a Ray cluster.

``dcsim sweep SCENARIO --out DIR`` expands the scenario's ``sweep:`` section into points
(:mod:`sim.config.sweep`), validates every point up front, then runs each one as a Ray task
(or in this process with ``--executor serial``). Workers write their tables straight to
``--out`` (a local folder or an object-store URI, see :mod:`sim.output.storage`); the driver only
collects one small record per point.

Layout of ``--out`` (one hive partition per point, so a whole sweep reads as one table)::

    points.parquet          one row per point: point_id, swept params, run, seed, status,
                            error, node_id, wall_s (in expansion order)
    summary.parquet         point_id + the summary row of every ok point
    sweep.json              which scenario made this folder (checked by --resume)
    calls/point_id=<id>/part-0.parquet, steps/..., events/...   written by the point function
    <id>/scenario.yaml, <id>/manifest.json
    _commits/<id>.json      commit marker, written last: the point is done iff it exists
    _failures/<id>.json     error of a point that raised (the point is not done)

Failures: a point function that raises is recorded (status ``failed``, the error text in
``points.parquet``) and the sweep goes on; a worker process that dies is retried by Ray
(``--max-retries``); ``--resume`` reruns only points without a commit marker (failed ones
included) after deleting whatever they had partly written.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from sim.output import storage
from sim.errors import ScenarioError
from sim.embedded_ray import check_options
from sim.config.sweep import Point, canonical_json, expand, parse_spec

log = logging.getLogger(__name__)

__all__ = [
    "SweepResult",
    "SweepTerminated",
    "run_sweep",
    "run_points",
]

PointFn = Callable[[Any, str, str], dict]
SWEEP_META = "sweep.json"
NOT_SWEPT_COLUMNS = ("point_id", "run", "seed", "status", "error", "node_id", "wall_s")
@dataclass
class SweepResult:
    """What a sweep did. ``records`` holds one record per point, in expansion order."""

    out: str
    points: list[Point]
    records: list[dict]
    points_table: pa.Table
    summary_table: pa.Table
    ran: list[str] = field(default_factory=list)  # ids executed by this call (not resumed)
    wall_s: float = 0.0

    @property
    def n_failed(self) -> int:
        return sum(1 for r in self.records if r["status"] != "ok")


# --------------------------------------------------------------------------- one point
def _node_id() -> str:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            return ray.get_runtime_context().get_node_id()
        except Exception:  # pragma: no cover - not inside a Ray worker
            pass
    return "local"


def _error_text(exc: BaseException) -> str:
    """One line naming the exception, then the innermost frames (short)."""
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{head} [at {where}]" if where else head


def execute_point(point_fn: PointFn, scenario: Any, out: str, point_id: str) -> dict:
    """Run one point where this is called (a Ray worker or the driver) and commit it.

    Clears anything an earlier, interrupted attempt left for this point, calls
    ``point_fn(scenario, out, point_id)`` (which writes the point's tables under ``out``
    and returns its summary row), then writes the commit marker holding the record. An
    exception from ``point_fn`` becomes a ``failed`` record (and ``_failures/<id>.json``),
    never a crashed sweep. Returns the record exactly as stored (JSON round-tripped), so
    a fresh and a resumed sweep build identical tables.
    """
    fs, base = storage.open_output(out)
    storage.clear_point(fs, base, point_id)
    t0 = time.perf_counter()
    try:
        summary = point_fn(scenario, out, point_id)
        if summary is None:
            summary = {}
        if not isinstance(summary, dict):
            raise TypeError(f"point function returned {type(summary).__name__}, expected a dict (summary row)")
        record = {"status": "ok", "error": None, "summary": summary}
    except Exception as exc:  # noqa: BLE001 - every failure of a point is data
        record = {"status": "failed", "error": _error_text(exc), "summary": {}}
    record.update(node_id=_node_id(), wall_s=time.perf_counter() - t0)
    if record["status"] == "ok":
        text = storage.commit_marker(fs, base, point_id, record)
    else:
        text = json.dumps({"point_id": point_id, **record}, default=storage._json_default)
        storage.write_text_atomic(fs, storage.join(base, storage.FAILURES_DIR, f"{point_id}.json"), text)
    return json.loads(text)


def _default_point_fn() -> PointFn:
    from sim.run import run_point

    return run_point


def _default_make_scenario(source: str) -> Callable[[Point], Any]:
    """A point's raw scenario -> its validated Scenario, checked as fully as ``dcsim run``
    checks one (sim.cluster.check), input files parsed once for all points."""
    from sim.cluster.check import CheckCache, check_scenario
    from sim.config import validate

    base_dir = Path(source).parent if source else Path(".")
    shown = source or "<scenario>"
    cache = CheckCache()

    def make(point: Point) -> Any:
        scenario = validate(point.raw, shown, base_dir)
        check_scenario(scenario, shown, cache)
        return scenario

    return make


def check_points(points: list[Point], source: str) -> list[Any]:
    """Every point validated and checked (what a sweep does before its first point runs);
    the first bad one raises ScenarioError naming its swept values."""
    make = _default_make_scenario(source)
    return [_make(make, p) for p in points]


# --------------------------------------------------------------------------- executors
def _run_serial(todo: list[tuple[Point, Any]], out: str, point_fn: PointFn, on_done: Callable[[Point, dict], None]) -> None:
    for point, scenario in todo:
        on_done(point, execute_point(point_fn, scenario, out, point.point_id))


def _cluster_cpus(ray) -> int:
    try:
        return max(1, int(ray.cluster_resources().get("CPU", 1)))
    except Exception:  # pragma: no cover
        return 1


def _run_ray(
    todo: list[tuple[Point, Any]],
    out: str,
    point_fn: PointFn,
    on_done: Callable[[Point, dict], None],
    *,
    max_in_flight: int | None,
    max_retries: int,
    tick: Callable[[], None] = lambda: None,
) -> None:
    import ray
    from ray.exceptions import RayError

    task = ray.remote(execute_point).options(
        num_cpus=1, max_retries=max_retries, retry_exceptions=False, scheduling_strategy="SPREAD", name="dcsim-point"
    )
    fn_ref = ray.put(point_fn)
    pending = deque(todo)
    in_flight: dict[Any, Point] = {}
    limit = max_in_flight or 2 * _cluster_cpus(ray)
    next_check = time.monotonic() + 5.0
    while pending or in_flight:
        while pending and len(in_flight) < limit:
            point, scenario = pending.popleft()
            in_flight[task.remote(fn_ref, scenario, out, point.point_id)] = point
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
        tick()
        for ref in done:
            point = in_flight.pop(ref)
            try:
                record = ray.get(ref)
            except RayError as exc:  # the worker died max_retries + 1 times, or Ray failed
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                record = {
                    "point_id": point.point_id,
                    "status": "failed",
                    "error": f"{type(exc).__name__} after {max_retries} retries: {first}",
                    "summary": {},
                    "node_id": None,
                    "wall_s": None,
                }
            on_done(point, record)
        if max_in_flight is None and time.monotonic() > next_check:  # an autoscaling cluster grows
            limit = 2 * _cluster_cpus(ray)
            next_check = time.monotonic() + 5.0


def init_ray(address: str | None, num_cpus: int | None):
    """Connect to Ray at ``address`` or start an embedded, loopback-only one (sim.embedded_ray)."""
    from sim import embedded_ray

    return embedded_ray.start(address, num_cpus)


def _tick(handle, sigterm: "_SigtermGuard") -> None:
    """Between two waits for Ray: stop on SIGTERM, record workers Ray has started since."""
    if sigterm.received:
        raise SweepTerminated()
    from sim import embedded_ray

    embedded_ray.update_record(handle)


# --------------------------------------------------------------------------- SIGTERM
class SweepTerminated(BaseException):
    """SIGTERM reached the sweep driver. Raised in the main thread, like KeyboardInterrupt (not
    an Exception: a point cut short by it is not a failed point). Finished points stay
    committed; ``--resume`` runs the rest."""


class _SigtermGuard:
    """While a sweep runs, SIGTERM stops it with :class:`SweepTerminated` in the main thread, so
    the driver stops submitting, shuts its Ray down and exits 143, instead of Ray's own
    handler tearing the process down mid-call (a C++ stack dump and orphaned agents). Serial
    points are cut short at once (the exception is raised in the handler); on Ray the handler
    only sets ``received`` and the driver loop raises within a second. A SIGTERM during the
    shutdown is remembered, not raised. The previous handler is restored afterwards. Outside
    the main thread (where Python cannot take signals) it does nothing."""

    def __init__(self):
        self.received = False
        self._armed = False
        self._previous = None
        self._active = threading.current_thread() is threading.main_thread()

    def _handler(self, signum, frame) -> None:
        first = not self.received
        self.received = True
        if self._armed and first:
            self._armed = False
            raise SweepTerminated()

    def install(self, raise_at_once: bool = True) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._handler)
            self._armed = raise_at_once

    def __enter__(self):
        if self._active:
            self._previous = signal.getsignal(signal.SIGTERM)
            self.install()
        return self

    def __exit__(self, *exc) -> None:
        return None

    def disarm(self) -> None:
        self._armed = False

    def restore(self) -> None:
        if self._active and self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


# --------------------------------------------------------------------------- tables
def arrow_column(values: list[Any]) -> pa.Array:
    """An Arrow column from Python values; mixed or nested values become JSON strings."""
    plain = [canonical_json(v) if isinstance(v, (dict, list, tuple)) else v for v in values]
    try:
        return pa.array(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else (v if isinstance(v, str) else canonical_json(v)) for v in plain], pa.string())


def points_table(points: list[Point], records: list[dict], swept: list[str]) -> pa.Table:
    cols: dict[str, pa.Array] = {"point_id": pa.array([p.point_id for p in points], pa.string())}
    for path in swept:
        cols[path] = arrow_column([p.params.get(path) for p in points])
    cols["run"] = pa.array([p.params["run"] for p in points], pa.int64())
    if "seed" not in swept:
        cols["seed"] = arrow_column([p.raw.get("seed") for p in points])
    cols["status"] = pa.array([r["status"] for r in records], pa.string())
    cols["error"] = pa.array([r.get("error") for r in records], pa.string())
    cols["node_id"] = pa.array([r.get("node_id") for r in records], pa.string())
    cols["wall_s"] = pa.array([r.get("wall_s") for r in records], pa.float64())
    return pa.table(cols)


def summary_table(points: list[Point], records: list[dict]) -> pa.Table:
    ok = [(p, r) for p, r in zip(points, records) if r["status"] == "ok"]
    names: list[str] = []
    for _, r in ok:
        for k in r["summary"]:
            if k not in names and k != "point_id":
                names.append(k)
    cols: dict[str, pa.Array] = {"point_id": pa.array([p.point_id for p, _ in ok], pa.string())}
    for k in names:
        cols[k] = arrow_column([r["summary"].get(k) for _, r in ok])
    return pa.table(cols)


# --------------------------------------------------------------------------- driver
def claim_out(fs, base: str, meta: dict, resume: bool, shown: str, kind: str = "sweep",
              meta_name: str = SWEEP_META) -> None:
    """Make ``base`` this ``kind``'s folder (a sweep's, a plan's): a folder that already holds one
    needs ``resume`` and the same scenario; any other non-empty folder or a file is refused; else
    ``meta`` is written to ``meta_name`` there."""
    meta_path = storage.join(base, meta_name)
    if storage.exists(fs, meta_path):
        if not resume:
            raise ScenarioError(meta["source"], "", f"{shown} already holds a {kind}; pass --resume to finish it, or choose a new --out")
        old = json.loads(storage.read_text(fs, meta_path))
        if old.get("scenario_sha256") != meta["scenario_sha256"]:
            raise ScenarioError(
                meta["source"], "", f"{shown} holds a {kind} of a different scenario ({old.get('source')}); cannot resume it with this one"
            )
        return
    info = fs.get_file_info(base)
    if info.type == storage.pafs.FileType.File:
        raise ScenarioError(meta["source"], "", f"--out {shown} is a file")
    if info.type == storage.pafs.FileType.Directory and fs.get_file_info(storage.pafs.FileSelector(base)):
        raise ScenarioError(meta["source"], "", f"--out {shown} exists and is not empty (and is not a {kind} folder)")
    storage.write_text_atomic(fs, meta_path, json.dumps(meta, indent=1, sort_keys=True))


def run_points(
    points: list[Point],
    out: str,
    *,
    swept: list[str],
    source: str = "",
    point_fn: PointFn | None = None,
    make_scenario: Callable[[Point], Any] | None = None,
    executor: str = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    resume: bool = False,
    max_in_flight: int | None = None,
    max_retries: int = 3,
    progress: bool = True,
    console=None,
    meta: dict | None = None,
) -> SweepResult:
    """Run ``points`` into ``out`` and write ``points.parquet`` and ``summary.parquet``.

    ``point_fn(scenario, out, point_id) -> dict`` runs one point (default
    ``sim.run.run_point``); ``make_scenario(point)`` turns a point into its argument
    (default: ``sim.config.scenario.validate(point.raw, source)``). All points are made before any
    runs, so a bad value fails the sweep before it starts.
    """
    check_options(executor, address, num_cpus, max_in_flight, max_retries)
    storage.check_out_target(out)
    t_start = time.perf_counter()
    point_fn = point_fn or _default_point_fn()
    make_scenario = make_scenario or _default_make_scenario(source)
    out = storage.normalize_out(out)
    fs, base = storage.open_output(out)
    meta = meta or {"source": source, "scenario_sha256": _sha([p.point_id for p in points]), "n_points": len(points)}
    committed = storage.committed_point_ids(fs, base) if resume else set()
    todo = [(p, _make(make_scenario, p)) for p in points if p.point_id not in committed]
    claim_out(fs, base, meta, resume, out)  # only now is anything written

    records: dict[str, dict] = {}
    for p in points:
        if p.point_id in committed:
            records[p.point_id] = storage.read_commit(fs, base, p.point_id)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    err_console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]sweep[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not progress,
        transient=False,
    )
    counts = {"ok": sum(1 for r in records.values() if r["status"] == "ok"), "failed": 0}

    def describe() -> str:
        return f"ok {counts['ok']} failed {counts['failed']}"

    ran: list[str] = []
    ray_handle = None
    sigterm = _SigtermGuard()
    try:
        with sigterm, bar:
            tid = bar.add_task(describe(), total=len(points), completed=len(committed))

            def on_done(point: Point, record: dict) -> None:
                records[point.point_id] = record
                ran.append(point.point_id)
                counts["ok" if record["status"] == "ok" else "failed"] += 1
                bar.update(tid, advance=1, description=describe())
                log.info("point %s %s in %.1f s (%d of %d done)", point.point_id, record["status"],
                         record.get("wall_s", float("nan")), len(ran) + len(committed), len(points))

            log.info("%d points to run (%d already committed) into %s, executor %s", len(todo), len(committed), out,
                     executor if todo else "none")
            if executor == "serial" or not todo:
                _run_serial(todo, out, point_fn, on_done)
            else:
                ray_handle = init_ray(address, num_cpus)
                # again (ray.init installs handlers of its own), and as a flag: an exception raised
                # inside ray.wait comes out as a SystemError, so _run_ray checks between waits
                sigterm.install(raise_at_once=False)
                _run_ray(todo, out, point_fn, on_done, max_in_flight=max_in_flight, max_retries=max_retries,
                         tick=lambda: _tick(ray_handle, sigterm))
    finally:
        sigterm.disarm()  # a second SIGTERM must not cut the shutdown short
        if ray_handle is not None:
            ray_handle.stop()
        sigterm.restore()
    if sigterm.received:
        raise SweepTerminated()

    ordered = [records[p.point_id] for p in points]
    points_t = points_table(points, ordered, swept)
    summary_t = summary_table(points, ordered)
    storage.atomic_write_table(fs, storage.join(base, "points.parquet"), points_t)
    storage.atomic_write_table(fs, storage.join(base, "summary.parquet"), summary_t)
    result = SweepResult(out, points, ordered, points_t, summary_t, ran, time.perf_counter() - t_start)
    return result


def _make(make_scenario: Callable[[Point], Any], point: Point) -> Any:
    try:
        return make_scenario(point)
    except ScenarioError as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in point.params.items())
        raise ScenarioError(e.source, e.key_path, f"{e.message} (at sweep point {shown})") from None


def _sha(obj: Any) -> str:
    import hashlib

    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def run_sweep(scenario: str | Path | dict, out: str, *, source: str | None = None, **options: Any) -> SweepResult:
    """Expand a scenario (a file path or a raw dict) and run all its points.

    ``options`` are those of :func:`run_points` (``executor``, ``address``, ``point_fn``,
    ``resume``, ``max_in_flight``, ``max_retries``, ``progress``, ...).
    """
    if isinstance(scenario, (str, Path)):
        from sim.config import load_raw

        source = source or str(scenario)
        raw = load_raw(scenario)
    else:
        raw = scenario
        source = source or "<scenario>"
    spec = parse_spec(raw.get("sweep"), source)
    points = expand(raw, source)
    meta = {
        "source": source,
        "scenario_sha256": _sha(raw),
        "n_points": len(points),
        "point_ids": [p.point_id for p in points],
    }
    return run_points(points, out, swept=[p for p in spec.swept_paths() if p != "run"], source=source, meta=meta, **options)


