"""Kernel and collective fits of ``dcsim calibrate`` (steps 1 and 2 of :mod:`sim.tools.calibrate`).

From per-operator tables, apart from any serving measurement: GEMM times of one transformer layer
(vidur's profiling layout) fix the GEMM and memory efficiencies, the minimum kernel time and the
roofline ridge's sharpness; NCCL all-reduce times fix the link efficiency. A card without such
tables may have its vendor's own dense-GEMM ceilings (max_achievable_flops.csv): those fix its GEMM
efficiencies (:func:`ceiling_efficiencies`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from sim.errors import ScenarioError
from sim.hardware import catalog
from sim.models.perf import blend

GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
BF16 = 2.0
# Best sustained fraction of peak HBM bandwidth that streaming kernels reach (STREAM-like
# copies on H100/A100 measure 90-93% of datasheet); bounds the memory-efficiency fit.
MAX_MEMORY_EFFICIENCY = 0.92


# --------------------------------------------------------------------------- kernels
@dataclass(frozen=True)
class GemmObservations:
    """Measured GEMMs: FLOPs and bytes per device, and the median time (s)."""

    flops: np.ndarray
    nbytes: np.ndarray
    time_s: np.ndarray
    sources: tuple[str, ...]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def gemm_observations(paths: list[Path]) -> GemmObservations:
    """GEMM shapes and times from vidur-layout per-layer tables (times in ms per layer).

    Shapes come from each row's model-dimension columns: QKV projection h x (h + 2 kv
    heads x head dim), output projection h x h, gated MLP up h x 2I, down I x h; every
    GEMM is sharded over ``num_tensor_parallel_workers``.
    """
    flops, nbytes, times = [], [], []
    for path in paths:
        for row in read_csv(path):
            n, tp = float(row["num_tokens"]), int(row["num_tensor_parallel_workers"])
            h, inter = int(row["n_embd"]), int(row["n_expanded_embd"])
            heads, kv_heads = int(row["n_head"]), int(row["n_kv_head"])
            head_dim = h // heads
            gated = str(row.get("use_gated_mlp", "True")).lower() == "true"
            shapes = {
                "attn_pre_proj": (h, h + 2 * kv_heads * head_dim),
                "attn_post_proj": (h, h),
                "mlp_up_proj": (h, (2 if gated else 1) * inter),
                "mlp_down_proj": (inter, h),
            }
            for op, (i, o) in shapes.items():
                t = float(row[f"time_stats.{op}.median"]) * 1e-3
                flops.append(2.0 * n * i * o / tp)
                nbytes.append((i * o + n * (i + o)) * BF16 / tp)
                times.append(t)
    return GemmObservations(np.array(flops), np.array(nbytes), np.array(times), tuple(str(p) for p in paths))


def gemm_time(obs: GemmObservations, peak: float, bandwidth: float, eff_c: float, eff_m: float, latency: float,
              p: float) -> np.ndarray:
    """Model GEMM time, as RooflineModel prices one: latency + p-norm of compute and memory times."""
    return latency + blend(obs.flops / (peak * eff_c), obs.nbytes / (bandwidth * eff_m), p)


def fit_gemm(obs: GemmObservations, acc: catalog.Accelerator) -> dict:
    """Least squares on log time: gemm_efficiency, memory_efficiency, kernel_latency_s, gemm_blend."""
    peak, bw = acc.peak_flops("bf16"), acc.memory_bandwidth

    def residual(x):
        ec, em, lat_us, p = x
        return np.log(gemm_time(obs, peak, bw, ec, em, lat_us * 1e-6, p)) - np.log(obs.time_s)

    fit = least_squares(residual, x0=[0.7, 0.8, 2.0, 4.0],
                        bounds=([0.2, 0.2, 0.0, 1.0], [1.0, MAX_MEMORY_EFFICIENCY, 50.0, 30.0]))
    ec, em, lat_us, p = fit.x
    err = np.exp(np.abs(fit.fun)) - 1.0
    return {
        "gemm_efficiency": float(ec),
        "memory_efficiency": float(em),
        "kernel_latency_s": float(lat_us * 1e-6),
        "gemm_blend": float(p),
        "n": int(len(obs.time_s)),
        "median_abs_error": float(np.median(err)),
        "p90_abs_error": float(np.quantile(err, 0.9)),
    }


def ceilings_path() -> Path:
    return catalog.hardware_dir() / "calibration" / "max_achievable_flops.csv"


def ceiling_efficiencies(acc: catalog.Accelerator) -> dict[str, tuple[float, str]]:
    """GEMM efficiencies of a card from its vendor's max-achievable GEMM rates (``{key: (value,
    source)}``; empty where the table has no bf16 row for it).

    A datasheet peak assumes the boost clock, which dense tensor-core work does not hold: AMD's own
    hipBLASLt measurements on an ideal shape (max_achievable_flops.csv) reach 54% of MI300X's BF16
    peak and 49% of its FP8 peak, at ~1.2 GHz of its 2.1 GHz boost (MI325X, at 1000 W: 64% and 58%).
    ``gemm_efficiency`` is the BF16 rate over the BF16 peak; ``quantized_dense_efficiency``, the
    share of that efficiency dense GEMMs with quantized weights reach against their own peak, is the
    FP8 rate's efficiency over the BF16 one. An ideal shape is an upper bound for a model's GEMMs
    (the per-operator fits of NVIDIA cards measure real shapes), so these prices are optimistic."""
    path = ceilings_path()
    if not path.is_file():  # (a DCSIM_HARDWARE folder of one's own may have no such table)
        return {}
    rows = {r.get("dtype"): r for r in read_csv(path) if r.get("accelerator") == acc.name}
    if "bf16" not in rows:
        return {}

    def efficiency(dtype: str) -> float:
        try:
            rate = float(rows[dtype].get("tflops") or "nan")
        except ValueError:
            rate = float("nan")
        if not 0.0 < rate <= acc.peak_flops(dtype) / 1e12:
            raise ScenarioError(str(path), f"{acc.name}.{dtype}.tflops",
                                f"must be a rate in (0, the card's {dtype} peak {acc.peak_flops(dtype) / 1e12:,.1f}] TFLOP/s")
        return rate * 1e12 / acc.peak_flops(dtype)

    bf16 = efficiency("bf16")
    src = (f"vendor max-achievable BF16 GEMM rate {bf16 * acc.peak_flops('bf16') / 1e12:,.0f} TFLOP/s at "
           f"{rows['bf16'].get('median_clock_mhz')} MHz / datasheet peak {acc.peak_flops('bf16') / 1e12:,.1f} "
           f"(max_achievable_flops.csv: {rows['bf16'].get('source')})")
    out = {"gemm_efficiency": (bf16, src)}
    if "fp8" in rows:
        fp8 = efficiency("fp8")
        out["quantized_dense_efficiency"] = (fp8 / bf16, (
            f"vendor max-achievable FP8 GEMM rate {fp8 * acc.peak_flops('fp8') / 1e12:,.0f} TFLOP/s / datasheet peak "
            f"{acc.peak_flops('fp8') / 1e12:,.1f}, over the BF16 efficiency (max_achievable_flops.csv: "
            f"{rows['fp8'].get('source')})"))
    return out


# --------------------------------------------------------------------------- collectives
def fit_allreduce(path: Path, acc: catalog.Accelerator) -> dict:
    """Ring all-reduce ``c + 2(n-1) * hop latency + 2(n-1)/n * bytes / (link_bw * eff)`` (the
    alpha-beta model of :func:`sim.models.parallel.ring_allreduce_s`, plus the eager call's launch overhead
    ``c``, which CUDA graphs remove and the simulator does not charge) fitted to intra-node NCCL
    times (rows with num_workers == devices_per_node), relative error weighting."""
    rows = [r for r in read_csv(path) if r.get("collective", "all_reduce") == "all_reduce"
            and int(r["num_workers"]) == int(r.get("devices_per_node", r["num_workers"])) and int(r["num_workers"]) > 1]
    n = np.array([int(r["num_workers"]) for r in rows], dtype=float)
    size = np.array([float(r["size"]) for r in rows])
    t = np.array([float(r["time_stats.all_reduce.median"]) for r in rows]) * 1e-3
    steps = 2.0 * (n - 1)
    ring = 2.0 * (n - 1) / n * size / acc.link_bandwidth
    # t = c + a * steps + b * ring with b = 1/eff; weighted by 1/t so every size counts alike
    A = np.stack([np.ones_like(t), steps, ring], axis=1) / t[:, None]
    (c, a, b), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    pred = c + a * steps + b * ring
    err = np.abs(pred / t - 1.0)
    return {
        "link_latency_s": float(max(a, 0.0)),
        "link_efficiency": float(min(1.0, 1.0 / b)),
        "launch_s": float(max(c, 0.0)),
        "n": int(len(t)),
        "median_abs_error": float(np.median(err)),
        "p90_abs_error": float(np.quantile(err, 0.9)),
    }
