"""Training jobs (workload classes with ``training:``) on the replicas a pool's inference leaves
switched off: the workload kind, its checks and its summary columns.

A training class names an LLM pool with ``autoscale:``; its ``arrival: {kind: burst, count: N}``
starts N jobs at ``start_s``, which run until ``duration_s`` (or until they have trained
``tokens``). The class's ``sharing`` policy bounds the replicas the pool's autoscaler may keep
serving: ``static`` and ``schedule`` fix them, ``demand`` leaves them to the autoscaler's own
policy and ``priority`` keeps ``min_training_replicas`` off-limits to it. The jobs themselves are
:class:`~sim.workloads.training_job.TrainingJob` processes; their step and checkpoint costs come
from :mod:`sim.models.training`.
"""

from __future__ import annotations

import numpy as np

from sim.config.base import step_at
from sim.errors import ScenarioError
from sim.hardware import catalog
from sim.models.training import DEFAULT_MFU, TrainingModel
from sim.output.arrow import to_numpy
from sim.output.trace import TRAINING_SCHEMA
from sim.output.training import STATES, device_time, slo_attainment, training_metrics
from sim.workloads.kind import WorkloadKind
from sim.workloads.training_job import Lender, TrainingJob

GRAD_PASSES = 3  # weights read by the forward pass and twice by the backward pass, per micro-batch


def job_model(spec, acc, card) -> TrainingModel:
    """The step and checkpoint model of a training class on accelerator ``acc``."""
    return TrainingModel(
        params=card.params_billion * 1e9, layers=card.num_layers, d_model=card.hidden_size, seq_len=spec.seq_len,
        batch_tokens=spec.batch_tokens, tp=spec.tp, pp=spec.pp, peak_flops=acc.peak_flops("bf16"),
        mfu=spec.mfu if spec.mfu is not None else DEFAULT_MFU, link_bw=acc.link_bandwidth,
        network_bw=acc.network_bandwidth, devices_per_node=acc.devices_per_node,
        micro_batch_seqs=spec.micro_batch_seqs, overlap=spec.overlap, bytes_per_param=spec.checkpoint.bytes_per_param)


class TrainingKind(WorkloadKind):
    """Gang-scheduled training jobs harvesting a pool's switched-off replicas."""

    key, table, schema = "training", "training", TRAINING_SCHEMA
    order = 50
    written_when_unused = False  # runs without training classes write no training table

    def __init__(self, world, classes: list):
        super().__init__(world, classes)
        self.running = 0
        self.jobs: list = []
        self.models: dict = {}
        self._train_w: dict = {}
        for c in classes:
            self._wire(c, world._source)

    def _wire(self, c, source: str) -> None:
        """Check class ``c`` against its pool and hand the pool's switched-off replicas to it."""
        world, key = self.world, f"workload.classes.{c.name}"
        spec, sp = c.training, world.spec_by_name[c.pool]
        scaler = world.autoscalers.get(c.pool)
        if scaler is None:
            raise ScenarioError(source, f"{key}.pool", f"pool '{c.pool}' has no 'autoscale': training runs on the "
                                                       "replicas its autoscaler switches off")
        if c.pool in world.lenders:
            raise ScenarioError(source, f"{key}.pool", f"pool '{c.pool}' already lends its replicas to another "
                                                       "training class (one a pool; use arrival.count for more jobs)")
        card = catalog.model(spec.model, source, f"{key}.training.model")
        model = job_model(spec, sp.acc, card)
        n = sp.replicas
        if spec.tp * spec.pp * (spec.min_dp or spec.dp) > n * sp.devices_per_replica:
            raise ScenarioError(source, f"{key}.training.min_dp" if spec.min_dp else f"{key}.training.dp",
                                f"its gang needs {spec.tp * spec.pp * (spec.min_dp or spec.dp)} devices; pool "
                                f"'{c.pool}' has {n * sp.devices_per_replica}")
        self.models[c.name] = model
        world.lenders[c.pool] = lender = Lender(world.env, world._pool_replicas[c.pool], sp.devices_per_replica)
        scaler.lender = lender
        scaler.bounds = self._bounds(spec.sharing, n, f"{key}.training.sharing", source)

    @staticmethod
    def _bounds(sharing, n: int, key: str, source: str):
        """(low, high) replicas inference may keep serving, as a function of time (None: the
        autoscaler alone decides)."""
        if sharing.kind == "static":
            if sharing.inference_replicas > n:
                raise ScenarioError(source, f"{key}.inference_replicas", f"{sharing.inference_replicas} is more "
                                                                         f"than the pool's {n} replicas")
            k = sharing.inference_replicas
            return lambda now: (k, k)
        if sharing.kind == "schedule":
            if max(sharing.inference_replicas) > n:
                raise ScenarioError(source, f"{key}.inference_replicas", f"{max(sharing.inference_replicas)} is "
                                                                         f"more than the pool's {n} replicas")
            times, values, period = sharing.times_s, sharing.inference_replicas, sharing.period_s
            return lambda now: (int(step_at(times, values, period, now)),) * 2
        if sharing.kind == "priority":
            if sharing.min_training_replicas >= n:
                raise ScenarioError(source, f"{key}.min_training_replicas", f"must be less than the pool's {n} "
                                                                            "replicas (inference keeps one)")
            hi = n - sharing.min_training_replicas
            return lambda now: (0, hi)
        return None

    # ------------------------------------------------------------------ units
    def start(self, cls, t: float, prompt: int, on_done=None) -> TrainingJob:
        world = self.world
        sp = world.spec_by_name[cls.pool]
        stop = min(world.scenario.duration_s, cls.stop_s) if cls.stop_s is not None else world.scenario.duration_s
        lender = world.lenders[cls.pool]
        job = TrainingJob(self, lender, self.new_id(), cls, self.models[cls.name], sp.power, stop)
        lender.jobs.append(job)
        self.jobs.append(job)
        self.running += 1
        return job

    @property
    def busy(self) -> bool:
        return self.running > 0

    def job_ended(self) -> None:
        self.running -= 1
        self.world.check_done()

    def record(self, row: list) -> None:
        self.world.recorder.row(self.table, tuple(row))

    def close(self) -> None:
        """Jobs end at ``duration_s`` by themselves; a run stopped earlier ends them at its end."""
        for job in self.jobs:
            if not job.done:
                job._interrupted("end", None)

    def train_w(self, model: TrainingModel, dp: int, power) -> float:
        """Draw of one device while it trains: its achieved model FLOPs and its share of the
        weights read three times a micro-batch, in the pool's power model."""
        key = (id(model), id(power), dp)
        if key not in self._train_w:
            step = model.step_s(dp)
            flops = model.achieved_flops_per_device(dp) * step
            nbytes = model.params / model.group_devices * 2 * GRAD_PASSES * model.micro_batches(dp)
            self._train_w[key] = float(power.busy_w(np.float64(step), np.float64(flops), np.float64(nbytes)))
        return self._train_w[key]

    # ------------------------------------------------------------------ summary
    def summarize(self, tables, calls, t0: float, t1: float, summary: dict) -> dict:
        world = self.world
        table = tables.table(self.table)
        steps = tables.table("steps")
        out = {"training_jobs": self.created}
        out.update(training_metrics(table, t0, t1))
        out.update({f"training_{k}": sum(j.counts[k] for j in self.jobs) for k in ("failures", "preemptions", "restarts")})
        held_host_j = 0.0
        parts = dict.fromkeys(STATES + ("total", "idle_lent"), 0.0)
        for pool in sorted({c.pool for c in self.classes}):
            sp = world.spec_by_name[pool]
            dt = device_time(steps, table, pool, sp.devices_per_replica, t0, t1)
            for k, v in dt.items():
                parts[k] += v
            held_host_j += sp.host_w_per_device * (dt["training"] + dt["checkpoint"] + dt["restart"])
        for k in STATES + ("total",):
            out[f"shared_device_s_{k}"] = parts[k]
        # of the devices switched on, the share inference has (serving, idle or booting)
        on = parts["total"] - parts["off"]
        out["shared_inference_share"] = (parts["inference"] + parts["idle"] - parts["idle_lent"]) / on if on > 0 else float("nan")
        it_j = out["training_device_energy_j"] + held_host_j
        tariff = world.tariff
        out["training_facility_energy_j"] = facility = tariff.facility_j(it_j)
        out["fleet_facility_energy_j"] = summary.get("facility_energy_j", 0.0) + facility
        # energy and carbon of the training devices (the inference columns count devices not lent)
        out["training_energy_cost_usd"] = tariff.energy_usd(facility)
        out["fleet_cost_usd"] = summary.get("cost_usd", 0.0) + out["training_energy_cost_usd"]
        a, b = np.maximum(to_numpy(table["start_s"]), t0), np.minimum(to_numpy(table["end_s"]), t1)
        dur = to_numpy(table["end_s"]) - to_numpy(table["start_s"])
        with np.errstate(invalid="ignore", divide="ignore"):
            e = np.where((b > a) & (dur > 0), to_numpy(table["energy_j"]) * (b - a) / dur, 0.0)
        share = e / e.sum() if e.sum() > 0 else e  # each row's part of the window's training energy
        out["training_carbon_g"] = tariff.carbon_g_over(facility * share, (a + b) / 2) if len(e) else 0.0
        out["fleet_carbon_g"] = summary.get("carbon_g", 0.0) + out["training_carbon_g"]
        shared_pools = {c.pool for c in self.classes}
        slos = {c.name: c.slo for c in world.scenario.workload.classes
                if c.training is None and c.pool in shared_pools and any(v is not None for v in c.slo.model_dump().values())}
        out["inference_slo_attainment"] = slo_attainment(calls, slos, t0, t1) if slos else float("nan")
        return out
