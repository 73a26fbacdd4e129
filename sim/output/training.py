"""Training goodput and the device-time of pools shared by training and inference, from the
training and steps tables.

Every device-second of a pool that lends replicas to training is one of:

* ``inference``: its replica runs an iteration (busy step rows);
* ``idle``: its replica serves but has nothing to run, or boots; or a training job holds the
  device without using it (a data-parallel replica's devices do not fill whole replicas);
* ``training``, ``checkpoint``, ``restart``: a training job holds it and trains, writes a
  checkpoint, or restarts (start-up and checkpoint read);
* ``off``: switched off and lent to nobody, or failed (down, or under repair while lent).

The steps table tiles every replica's timeline (its rows of a replica follow each other without
gaps), and a job holds only replicas that are switched off, so training's device-seconds come
out of the ``off`` step rows; :func:`device_time` checks that they fit there.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from sim.output.arrow import mask, to_numpy

STATES = ("inference", "idle", "training", "checkpoint", "restart", "off")
DAY_S = 86400.0


def _inside(start: np.ndarray, end: np.ndarray, t0: float, t1: float) -> np.ndarray:
    """Seconds of each interval inside [t0, t1]."""
    return np.clip(np.minimum(end, t1) - np.maximum(start, t0), 0.0, None)


def _pool_arrays(steps: pa.Table, training: pa.Table, pool: str, devices_per_replica: int) -> dict:
    """The columns :func:`device_time` needs of one pool's step and training rows, as arrays."""
    st = steps.filter(mask(to_numpy(steps["pool"]) == pool))
    kind = np.asarray(st["kind"].to_pylist(), dtype=object)
    tr = training.filter(mask(to_numpy(training["pool"]) == pool))
    return {"pool": pool, "d": devices_per_replica, "s0": to_numpy(st["start_s"]), "s1": to_numpy(st["end_s"]),
            "idle": np.isin(kind, ("idle", "booting")), "off": np.isin(kind, ("off", "down")),
            "t0": to_numpy(tr["start_s"]), "t1": to_numpy(tr["end_s"]),
            "state": np.asarray(tr["state"].to_pylist(), dtype=object), "held": to_numpy(tr["devices"]).astype(float),
            "used": (to_numpy(tr["dp"]) * to_numpy(tr["group_devices"])).astype(float)}


def device_time(steps: pa.Table, training: pa.Table, pool: str, devices_per_replica: int,
                t0: float, t1: float, arrays: dict | None = None) -> dict:
    """Device-seconds of ``pool`` in [t0, t1] by state (:data:`STATES`) and their ``total``
    (from the step rows alone), and ``idle_lent``, the part of ``idle`` training holds. Raises
    if the training jobs held more than was switched off. (``arrays``: the pool's columns, from
    :func:`_pool_arrays`, when the same tables are cut into many windows.)"""
    a = arrays or _pool_arrays(steps, training, pool, devices_per_replica)
    secs = _inside(a["s0"], a["s1"], t0, t1) * a["d"]
    out = dict.fromkeys(STATES, 0.0)
    out["inference"] = float(secs[~a["idle"] & ~a["off"]].sum())
    out["idle"] = float(secs[a["idle"]].sum())
    off = float(secs[a["off"]].sum())
    inside = _inside(a["t0"], a["t1"], t0, t1)
    state = a["state"]
    held = a["held"] * inside
    used = a["used"] * inside
    is_train = state == "train"
    out["training"] = float(used[is_train].sum())
    out["idle_lent"] = float((held - used)[is_train].sum())  # (part of idle)
    out["idle"] += out["idle_lent"]
    out["checkpoint"] = float(held[state == "checkpoint"].sum())
    out["restart"] = float(held[state == "restart"].sum())
    lent = float(held.sum())
    if lent > off * (1 + 1e-9) + 1e-6:
        raise RuntimeError(f"pool {pool}: training held {lent:.6g} device-s but only {off:.6g} were switched off")
    out["off"] = max(0.0, off - lent)
    out["total"] = float(secs.sum())
    return out


def training_metrics(training: pa.Table, t0: float, t1: float) -> dict:
    """Goodput of the training jobs over [t0, t1]: tokens trained (kept by a checkpoint, or
    not yet checkpointed when the run ended), tokens lost, and the shares of the jobs'
    device-time lost to re-done work, checkpoints and restarts; seconds waiting for a gang."""
    span = t1 - t0
    start, end = to_numpy(training["start_s"]), to_numpy(training["end_s"])
    dur = end - start
    inside = _inside(start, end, t0, t1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(dur > 0, inside / dur, (start >= t0) & (start < t1))
    state = np.asarray(training["state"].to_pylist(), dtype=object)
    status = np.asarray(training["status"].to_pylist(), dtype=object)
    tokens = to_numpy(training["tokens"]) * f
    steps = to_numpy(training["steps"]) * f
    held = to_numpy(training["devices"]) * inside
    train = state == "train"
    kept_tokens = float(tokens[train & (status == "kept")].sum())
    open_tokens = float(tokens[train & (status == "open")].sum())
    lost = train & (status == "lost")
    active = float(held[state != "wait"].sum())
    share = lambda x: x / active if active > 0 else math.nan
    lost_s = float(held[lost].sum())
    ckpt_s = float(held[state == "checkpoint"].sum())
    restart_s = float(held[state == "restart"].sum())
    return {
        "training_tokens": kept_tokens + open_tokens,
        "training_tokens_per_day": (kept_tokens + open_tokens) / span * DAY_S,
        "training_tokens_checkpointed": kept_tokens,
        "training_tokens_lost": float(tokens[lost].sum()),
        "training_steps": float(steps[train & (status != "lost")].sum()),
        "training_device_s": active,
        "training_lost_work_share": share(lost_s),
        "training_checkpoint_share": share(ckpt_s),
        "training_restart_share": share(restart_s),
        # what Young/Daly call the waste: checkpoints, work done again, restarts
        "training_waste_share": share(lost_s + ckpt_s + restart_s),
        "training_gang_wait_s": float(inside[state == "wait"].sum()),
        "training_device_energy_j": float((to_numpy(training["energy_j"]) * f).sum()),
    }


def slo_attainment(calls, slos: dict, t0: float, t1: float) -> float:
    """Share of the calls of the classes in ``slos`` (name -> Slo) arriving in [t0, t1) that
    finished within their TTFT, TPOT and end-to-end targets (dropped, failed and unfinished
    calls miss; the TPOT target is not checked for calls of one token): the definition of the
    report's goodput table, for the summary row of a shared pool."""
    cols = ["class", "status", "arrival_s", "first_token_s", "finish_s", "generated_tokens"]
    met = n = 0
    for part in (calls.read_row_group(i, columns=cols) for i in range(calls.num_row_groups)):
        cls = np.asarray(part["class"].to_pylist(), dtype=object)
        a, first, fin = (to_numpy(part[c]) for c in ("arrival_s", "first_token_s", "finish_s"))
        gen = to_numpy(part["generated_tokens"]).astype(float)
        done = np.asarray(part["status"].to_pylist(), dtype=object) == "finished"
        keep = np.isin(cls, list(slos)) & (a >= t0) & (a < t1)
        ok = done.copy()
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(done & (gen > 1), (fin - first) / (gen - 1), np.nan)
        for name, slo in slos.items():
            m = cls == name
            for target, x in ((slo.ttft_s, first - a), (slo.tpot_s, tpot), (slo.e2e_s, fin - a)):
                if target is not None:
                    ok &= ~(m & (x > target) & ~np.isnan(x))
        n += int(keep.sum())
        met += int((keep & ok).sum())
    return met / n if n else math.nan


def share_over_time(steps: pa.Table, training: pa.Table, pool: str, devices_per_replica: int,
                    t0: float, t1: float, bins: int = 96) -> dict:
    """Device-seconds by state in ``bins`` equal windows of [t0, t1]: ``{"t": bin starts, state:
    array}``, for the figure of the inference share of the fleet over time."""
    edges = np.linspace(t0, t1, bins + 1)
    out = {"t": edges[:-1]}
    arrays = _pool_arrays(steps, training, pool, devices_per_replica)
    parts = [device_time(steps, training, pool, devices_per_replica, a, b, arrays) for a, b in zip(edges[:-1], edges[1:])]
    for s in STATES + ("idle_lent",):
        out[s] = np.array([p[s] for p in parts])
    return out
