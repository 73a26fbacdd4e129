"""Small scenario dicts for tests (plain dicts so tests can tweak any key)."""

from __future__ import annotations

import copy


def llm_scenario(**top) -> dict:
    """Two H100 replicas of Llama-3.1-8B with chat and long-output traffic, ~20 simulated s."""
    raw = {
        "name": "test-llm",
        "seed": 7,
        "duration_s": 20.0,
        "warmup_s": 2.0,
        "datacenter": {
            "pools": [
                {
                    "name": "main",
                    "accelerator": "h100-sxm",
                    "model": "llama-3.1-8b",
                    "replicas": 2,
                    "batcher": {"kind": "continuous", "max_num_batched_tokens": 2048, "max_num_seqs": 64},
                    "router": {"kind": "round_robin"},
                }
            ]
        },
        "workload": {
            "classes": [
                {
                    "name": "chat",
                    "pool": "main",
                    "arrival": {"kind": "poisson", "rate_per_s": 6.0},
                    "prompt_tokens": {"kind": "lognormal", "median": 700, "sigma": 0.9, "max": 6000},
                    "output_tokens": {"kind": "lognormal", "median": 120, "sigma": 0.8, "max": 1500},
                },
                {
                    "name": "long",
                    "pool": "main",
                    "arrival": {"kind": "gamma", "rate_per_s": 0.8, "cv": 2.0},
                    "prompt_tokens": {"kind": "uniform", "low": 100, "high": 2000},
                    "output_tokens": {"kind": "lognormal", "median": 1500, "sigma": 0.5, "max": 6000},
                },
            ]
        },
    }
    raw.update(copy.deepcopy(top))
    return raw


def single_server(service_tokens: dict, rate_per_s: float, iteration_s: float, duration_s: float, seed: int,
                  warmup_s: float = 0.0) -> dict:
    """An engine configured as one server: batch size 1, one prompt token, a fixed time per
    iteration, so a call's service time is (output tokens) x iteration_s."""
    return {
        "name": "single-server",
        "seed": seed,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "drain_s": 10000.0,
        "datacenter": {
            "pools": [
                {
                    "name": "q",
                    "accelerator": "h100-sxm",
                    "model": "llama-3.1-8b",
                    "replicas": 1,
                    "batcher": {"kind": "continuous", "max_num_batched_tokens": 8192, "max_num_seqs": 1},
                    "performance": {"kind": "fixed", "iteration_s": iteration_s},
                }
            ]
        },
        "workload": {
            "classes": [
                {
                    "name": "jobs",
                    "pool": "q",
                    "arrival": {"kind": "poisson", "rate_per_s": rate_per_s},
                    "prompt_tokens": {"kind": "fixed", "value": 1},
                    "output_tokens": service_tokens,
                }
            ]
        },
        "trace": {"steps": False, "events": False},
    }


# Columns that share an iteration's energy and device time among its calls: a run of k
# iterations adds them once, the per-iteration mode k times, so they agree to float rounding.
ATTRIBUTED = ("energy_j", "device_s")


def same_calls(a, b, attributed=ATTRIBUTED) -> bool:
    """Tables agree: every column to the last bit (NaN == NaN), except the ``attributed`` ones
    (by default the energy and device time shared among calls, which two engine modes group
    differently), which agree to float rounding. ``attributed=()`` compares everything exactly."""
    import numpy as np
    import pyarrow as pa

    if a.num_rows != b.num_rows or a.schema != b.schema:
        return False
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if name in attributed:
            if not np.allclose(x.to_numpy(), y.to_numpy(), rtol=1e-9, atol=1e-12):
                return False
        elif pa.types.is_floating(x.type):
            if not np.array_equal(x.to_numpy(zero_copy_only=False).view(np.int64),
                                  y.to_numpy(zero_copy_only=False).view(np.int64)):
                return False
        elif not x.equals(y):
            return False
    return True


def run_tables(raw: dict, tmp_path, name: str, *tables: str):
    """Run scenario dict ``raw`` into ``tmp_path/name``; (summary, each of ``tables`` sorted by
    its first column, which is its id)."""
    import pyarrow.parquet as pq

    from sim.config import validate
    from sim.run import run_point

    out = tmp_path / name
    summary = run_point(validate(raw), str(out), "p")
    read = lambda t: pq.read_table(out / t / "point_id=p" / "part-0.parquet")
    return (summary, *(read(t).sort_by(read(t).column_names[0]) if t != "steps" else read(t) for t in tables))


def garbage_calls(raw) -> int:
    """Call objects a run of ``raw`` left in reference cycles (with the cyclic collector off:
    what only the collector could have freed)."""
    import gc

    from sim.cluster.world import build
    from sim.config import validate
    from sim.engine.call import Call
    from sim.output.trace import SCHEMAS, Recorder
    from sim.run import SCHEMAS as RUN_SCHEMAS

    world = build(validate(raw), Recorder({}, schemas={**SCHEMAS, **RUN_SCHEMAS}))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        world.run()
        del world
        gc.collect()
        return sum(1 for o in gc.garbage if isinstance(o, Call))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()

