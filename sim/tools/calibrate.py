"""Fit the performance and power models to measurements: ``dcsim calibrate``.

Three independent fits, each from a different kind of measurement, so that no
parameter is tuned to the figure it is later checked against:

1. **Kernels** (:func:`sim.tools.calibrate_kernels.fit_gemm`): per-operator GEMM times of one transformer layer
   against tokens and TP degree (vidur's profiling layout, hardware/profiles/) fix the
   GEMM efficiency, memory efficiency, minimum kernel time and how sharp the roofline
   ridge is.
2. **Collectives** (:func:`sim.tools.calibrate_kernels.fit_allreduce`): NCCL all-reduce times against message size and
   device count fix the link efficiency (and an eager-mode hop latency, which step 3 replaces).
3. **Engine and power** (:func:`fit_serving`, :func:`fit_power_joint`): steady-state serving
   measurements (batch size, median inter-token latency, GPU power) of the points marked
   ``fit`` in hardware/calibration/measurements.csv (and the one configuration
   heldout_serving.csv marks ``fit``) fix, jointly over all of them, the
   engine's per-step and per-sequence CPU overheads, the all-reduce latency inside the engine
   (custom all-reduce in CUDA graphs), the grouped-expert and quantized-expert efficiencies,
   and the power model's active adder, activity weights and the draws during collectives and slow
   expert kernels, by simulating
   each point as the benchmark ran it (sim/tools/burst.py) with the kernel and link parameters already fitted.

The result is written to hardware/calibration/<accelerator>.yaml as ``{value, source}``
pairs saying which data and fit produced each number; :mod:`sim.hardware.catalog` loads it
for every pool on that accelerator. Run with your own tables to refit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from scipy.optimize import least_squares

from sim.errors import ScenarioError
from sim.hardware import catalog
from sim.models.efficiency import DEFAULT_EFFICIENCY
from sim.tools.calibrate_kernels import ceiling_efficiencies, fit_allreduce, fit_gemm, gemm_observations

# --------------------------------------------------------------------------- serving fit (joint)
# What the serving measurements fit, jointly over every 'fit' row of the accelerator: the engine's
# CPU overheads per step and per sequence; the hop latency of the all-reduces as the engine runs
# them (replayed in CUDA graphs, which the eager NCCL calls of the all-reduce table, launch
# overhead included, do not measure; that table keeps its bandwidth term); the grouped-expert and
# quantized-expert
# efficiencies. Each is identified by a different pattern across the rows: the overheads by the
# dense single-GPU rows and their batch sizes, the all-reduce latency by the multi-GPU rows (a
# fixed cost per layer, whatever the batch), the expert efficiencies by how the MoE rows' step
# grows with the experts the batch touches and the weight share each GPU reads (2, 4, 8 GPUs), and
# the fused-MoE weight re-reads by the part of that growth linear in the routed tokens, which the
# dense rows do not have (without it the per-sequence host cost took it up: 54 us per sequence on
# H100's MoE rows alone against 36 us on its dense rows, in a decode-step least-squares fit).
SERVING_FIT = {  # key -> (lower, upper bound, unit of the solver's variable)
    "iteration_overhead_s": (0.0, 0.02, 1e-3),
    "per_seq_overhead_s": (0.0, 5e-4, 1e-6),
    "link_latency_s": (0.0, 5e-5, 1e-6),
    "moe_efficiency": (0.2, 1.0, 1.0),
    "quantized_efficiency": (0.2, 1.0, 1.0),
    "mixed_layer_overhead_s": (0.0, 1e-3, 1e-6),
    "moe_weight_reread": (0.0, 0.25, 1e-2),
}


def decode_step_s(point: dict, perf: dict) -> float:
    """The roofline decode step of a measured point: its measured running batch, each sequence at
    the prompt plus half the mean output (the step the median inter-token latency mostly sees)."""
    from sim.models.perf import Batch, RooflineModel

    model = RooflineModel(catalog.model(point["model"]), catalog.accelerator(point["accelerator"]), point["tp"],
                          point["weight_dtype"], expert_parallel=point["expert_parallel"], **perf)
    b = max(1, int(round(point["measured_batch"])))
    ctx = np.array([b * (point["prompt_tokens"] + point["output_mean"] / 2.0)])
    return float(model.cost(Batch(b, b, b, ctx, ctx)).time_s[0])


def serving_keys(points: list[dict]) -> tuple[str, ...]:
    """The serving parameters the points can identify (no expert efficiency without MoE rows, no
    quantized efficiency without quantized MoE rows, no all-reduce latency without multi-GPU rows)."""
    moe = [p for p in points if catalog.model(p["model"]).is_moe]
    keys = ["iteration_overhead_s", "per_seq_overhead_s", "mixed_layer_overhead_s"]
    if any(p["tp"] > 1 for p in points):
        keys.append("link_latency_s")
    if moe:
        keys.append("moe_weight_reread")
    if any(p["weight_dtype"] == "bf16" for p in moe):
        keys.append("moe_efficiency")
    if any(p["weight_dtype"] != "bf16" for p in moe):
        keys.append("quantized_efficiency")
    return tuple(keys)


def mixed_share(point: dict) -> float:
    """Share of a burst's steady-state steps that admit a new call (and so carry its prefill):
    a call ends, and another takes its place, ``measured_batch / output_mean`` times per step on
    average; as Poisson arrivals, a step sees at least one with probability ``1 - exp(-that)``."""
    return 1.0 - float(np.exp(-point["measured_batch"] / max(point["output_mean"], 1.0)))


def fit_serving(points: list[dict], perf: dict, keys: tuple[str, ...] | None = None, workers: int = 2,
                rounds: int = 3) -> dict:
    """Least squares on log median ITL and log output throughput over ``points`` for the
    ``keys`` of :data:`SERVING_FIT`.

    Each round simulates every point as the validation does (sim/tools/burst.py) at the current values (the anchor) and
    models a change of the parameters as the change it makes to the point's analytic decode
    step (:func:`decode_step_s`): ``ITL(x) = ITL_sim(x0) + step(x) - step(x0)``, exact for the
    overheads and the all-reduce latency (added to every step) and close for the expert
    efficiencies; the mean step (batch / throughput) moves by the same amount plus, for the
    per-layer cost of steps that carry a prefill, that cost times the share of such steps
    (:func:`mixed_share`; the median ITL sees it only where they are the majority). The next
    round re-anchors at the solution. Returns the values, the fit errors of the last
    simulation and that simulation's predictions.
    """
    from sim.tools.validation import predict_all

    keys = tuple(keys or serving_keys(points))
    x = {k: perf.get(k, DEFAULT_EFFICIENCY[k]) for k in keys}
    meas = np.array([p["itl_p50_s"] for p in points])
    meas_t = np.array([p["output_tokens_per_s"] for p in points])
    batch = np.array([max(p["measured_batch"], 1.0) for p in points])
    mix = np.array([mixed_share(p) for p in points])
    layers = np.array([catalog.model(p["model"]).num_layers for p in points], dtype=float)
    lo = [SERVING_FIT[k][0] / SERVING_FIT[k][2] for k in keys]
    hi = [SERVING_FIT[k][1] / SERVING_FIT[k][2] for k in keys]
    preds = []
    for r in range(rounds + 1):
        preds = predict_all(points, {**perf, **x}, workers=workers)
        got = np.array([q.get("itl_p50_s", np.nan) for q in preds])
        got_t = np.array([q.get("output_tokens_per_s", np.nan) for q in preds])
        if r == rounds:
            break
        step0 = np.array([decode_step_s(p, {**perf, **x}) for p in points])
        mixed0 = x.get("mixed_layer_overhead_s", perf.get("mixed_layer_overhead_s", 0.0))

        def residual(v):
            trial = {**perf, **{k: float(val * SERVING_FIT[k][2]) for k, val in zip(keys, v)}}
            step = np.array([decode_step_s(p, trial) for p in points]) - step0
            dmix = (trial.get("mixed_layer_overhead_s", 0.0) - mixed0) * layers
            itl = got + step + np.where(mix > 0.5, dmix, 0.0)
            mean_step = batch / got_t + step + mix * dmix
            return np.concatenate([np.log(np.maximum(itl, 1e-6)) - np.log(meas),
                                   np.log(batch / np.maximum(mean_step, 1e-6)) - np.log(meas_t)])

        x0 = np.clip([x[k] / SERVING_FIT[k][2] for k in keys], lo, hi)
        sol = least_squares(residual, x0=x0, bounds=(lo, hi), x_scale="jac")
        x = {k: float(v * SERVING_FIT[k][2]) for k, v in zip(keys, sol.x)}
    err = np.abs(got / meas - 1.0)
    err_t = np.abs(got_t / meas_t - 1.0)
    return {**x, "keys": keys, "n": len(points), "median_abs_error": float(np.nanmedian(err)),
            "p90_abs_error": float(np.nanquantile(err, 0.9)), "throughput_median_abs_error": float(np.nanmedian(err_t)),
            "throughput_p90_abs_error": float(np.nanquantile(err_t, 0.9)), "predictions": preds}


POWER_KEYS = ("active_w", "compute_weight", "memory_weight", "link_active_w", "stall_w", "seq_w")


def fit_power_joint(points: list[dict], perf: dict, workers: int = 2) -> dict:
    """Active adder, compute and memory activity weights, the draws during collectives, slow
    expert kernels and the per-sequence time, jointly from the measured GPU power of every point
    (single- and multi-GPU; the resident idle ``I`` = card idle + resident adder stays fixed).

    Per device ``P = I + phi r + L c + S s + Q q + (TDP - I - r)(wc uc + wm um)``
    (sim/models/power.py): ``phi`` the busy fraction, ``c`` the time share of collectives between
    the replica's devices, ``s`` that of grouped-expert kernels below their roofline, ``q`` that of
    the per-sequence cost, ``uc`` and ``um`` the time-averaged compute and HBM activity.
    Simulations of each point with no weights, a small compute weight, a small memory weight
    (small, so that no iteration reaches TDP and the response is linear) and a unit draw of each
    of the three phases give ``phi``, ``uc``, ``um``, ``c``, ``s`` and ``q``; bounded least squares
    on relative error gives ``(r, wc, wm, L, S, Q)``. The stall draw is fitted only where some
    MoE fit rows run their experts at the roofline and others below it. Single-GPU dense rows
    alone move compute and memory activity together (both grow with the batch), so their weights
    are ill-determined; the MoE rows on 2-8 GPUs, whose HBM share per GPU changes with the GPU
    count, separate them, and the dense multi-GPU rows tell the collectives' draw from the slow
    expert kernels'.
    """
    from sim.models.power import RESIDENT_ADDER_W
    from sim.tools.validation import predict_all

    acc = catalog.accelerator(points[0]["accelerator"])
    idle, tdp = acc.idle_power_w + RESIDENT_ADDER_W, acc.tdp_w
    base = {"resident_w": RESIDENT_ADDER_W, "active_w": 0.0, "compute_weight": 0.0, "memory_weight": 0.0,
            "link_active_w": 0.0, "stall_w": 0.0, "seq_w": 0.0}
    eps = 0.01

    def run(**pw):
        preds = predict_all(points, perf, {**base, **pw}, workers=workers)
        return (np.array([q["gpu_power_w"] / q["devices"] for q in preds]),
                np.array([q["utilization"] for q in preds]))

    p0, phi = run()
    uc = (run(compute_weight=eps)[0] - p0) / (eps * (tdp - idle))
    um = (run(memory_weight=eps)[0] - p0) / (eps * (tdp - idle))
    has_multi = any(p["tp"] > 1 for p in points)
    has_moe = any(catalog.model(p["model"]).is_moe for p in points)
    comm = run(link_active_w=1.0)[0] - p0 if has_multi else np.zeros_like(p0)
    stall = run(stall_w=1.0)[0] - p0 if has_moe else np.zeros_like(p0)
    # the slow expert kernels' own draw is told from what MoE rows draw anyway only where some MoE
    # rows run their experts at the roofline (H100: bf16 experts) and others below it (fp8); where
    # every MoE row stalls (B200: grouped-expert efficiency below 1), it is not fitted
    moe = np.array([catalog.model(p["model"]).is_moe for p in points])
    has_moe = has_moe and bool((stall[moe] < 1e-3).any() and (stall[moe] >= 1e-3).any())
    seq = run(seq_w=1.0)[0] - p0
    meas = np.array([p["gpu_power_w"] / p["tp"] for p in points])

    def model(v):
        r, wc, wm, link, sw, qw = v
        return p0 + phi * r + link * comm + sw * stall + qw * seq + (tdp - idle - r) * (wc * uc + wm * um)

    span = tdp - idle
    sol = least_squares(lambda v: model(v) / meas - 1.0, x0=[30.0, 1.0, 0.5, 0.0, 0.0, 0.0],
                        bounds=([0.0] * 6, [span / 2, 20.0, 5.0, span if has_multi else 1e-9,
                                            span if has_moe else 1e-9, span]))
    r, wc, wm, link, sw, qw = (float(v) if v > 1e-6 else 0.0 for v in sol.x)  # bounds reached: exactly 0
    err = np.abs(model(sol.x) / meas - 1.0)
    out = {"active_w": r, "compute_weight": wc, "memory_weight": wm, "seq_w": qw, "n": len(points),
           "median_abs_error": float(np.median(err)), "p90_abs_error": float(np.quantile(err, 0.9))}
    if has_multi:
        out["link_active_w"] = link
    if has_moe:
        out["stall_w"] = sw
    return out


# --------------------------------------------------------------------------- output
def write_calibration(path: Path, accelerator: str, perf: dict[str, tuple[float, str]],
                      power: dict[str, tuple[float, str]], notes: list[str], data: list[dict] | None = None) -> None:
    """Write a calibration card: every number as ``{value, source}``; ``data`` (optional) lists
    the figures a fit used and how well it reproduces each (not read by the simulator)."""

    def block(d):
        return {k: {"value": _round(v), "source": s} for k, (v, s) in d.items()}

    card = {"accelerator": accelerator, "fitted_by": "dcsim calibrate (sim/tools/calibrate.py)", "notes": notes}
    if perf:
        card["perf"] = block(perf)
    if power:
        card["power"] = block(power)
    if data:
        card["fit_data"] = data
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        yaml.safe_dump(card, fh, sort_keys=False, width=110)


def _round(v: float) -> float:
    return float(f"{v:.4g}") if v else 0.0


def describe(fit: dict) -> str:
    out = f"n={fit['n']}, median |error| {fit['median_abs_error']:.1%}, p90 {fit['p90_abs_error']:.1%}"
    if "throughput_median_abs_error" in fit:
        out += (f"; throughput median |error| {fit['throughput_median_abs_error']:.1%}, "
                f"p90 {fit['throughput_p90_abs_error']:.1%}")
    return out


# --------------------------------------------------------------------------- SRAM pipelines
def _span(r: np.ndarray) -> str:
    return f"{np.nanmin(r):.2f}-{np.nanmax(r):.2f}"


def calibrate_sram(accelerator: str, log=print) -> tuple[dict, list[str], list[dict]]:
    """The per-layer latency of an SRAM-pipeline card with its source, notes and fit data."""
    from sim.tools.validation_accel import LAYER_LATENCY_KEY, fit_layer_latency

    f = fit_layer_latency(accelerator)
    src = (f"fit to the {len(f.keys)} published per-user decode speeds of {accelerator} in sim/tools/validation_accel.py "
           f"({', '.join(f.keys)}): least squares on log time per token; simulated / published speed "
           f"{_span(f.fitted_ratio)} with the fit, {_span(f.loo_ratio)} for each figure left out of it")
    log(f"{LAYER_LATENCY_KEY}: {f.latency_s * 1e6:.1f} us per layer, {src}")
    from sim.tools.validation_accel import BY_KEY, SRC

    notes = [f"{LAYER_LATENCY_KEY} is the SRAM-pipeline model's fixed time per layer per walk through the pipeline "
             "(sim/models/perf_sram.py): what the vendor's hardware and serving stack add per layer beyond reading the "
             "weights at the SRAM bandwidth and crossing the chip-to-chip links; fit_data lists each figure"]
    notes += [f"published figures: {SRC[k]}" for k in sorted({BY_KEY[key].source for key in f.keys})]
    data = [{"point": k, "published_tok_s": _round(1.0 / pub), "no_latency_tok_s": _round(1.0 / b),
             "fitted_tok_s": _round(1.0 / fit), "leave_one_out_latency_us": _round(ll * 1e6) if ll == ll else None,
             "leave_one_out_tok_s": _round(1.0 / lo) if lo == lo else None}
            for k, pub, b, fit, ll, lo in zip(f.keys, f.published_s, f.base_s, f.fitted_s, f.loo_latency_s, f.loo_s)]
    return {LAYER_LATENCY_KEY: (f.latency_s, src)}, notes, data


KERNEL_KEYS = ("gemm_efficiency", "memory_efficiency", "kernel_latency_s", "gemm_blend")
LINK_KEYS = ("link_efficiency", "link_latency_s")
ENGINE_KEYS = ("iteration_overhead_s", "per_seq_overhead_s", "mixed_layer_overhead_s")
GROUP_KEYS = ("moe_efficiency", "quantized_efficiency", "moe_weight_reread")


def host_costs(host_from: str) -> dict[str, tuple[float, str]]:
    """The engine's host-side costs (:data:`ENGINE_KEYS`) of card ``host_from``'s calibration, with
    their source: the same engine's CPU work on the same class of host, whichever GPU is beside it."""
    other = catalog.calibration(host_from).perf
    why = (f"taken from {host_from}: host-side work of the engine (scheduling, input preparation, launches; "
           f"the same engine on the same class of host CPU), fitted there")
    return {k: (other[k], why) for k in ENGINE_KEYS if k in other}


def _fit_serving(points: list[dict], perf: dict, table: str, workers: int, log,
                 host_from: str | None = None) -> tuple[dict, dict]:
    """Engine overheads, the engine's all-reduce latency and the grouped-expert and quantized-expert
    efficiencies jointly from every point's median ITL (:func:`fit_serving`), then the power model
    jointly from every point's GPU power (:func:`fit_power_joint`). With ``host_from`` the engine's
    host-side costs (:data:`ENGINE_KEYS`) are that card's and only the device-side ones are fitted."""
    perf = dict(perf)
    nccl = perf.get("link_latency_s")
    keys = None
    if host_from:
        perf.update(host_costs(host_from))
        keys = tuple(k for k in serving_keys(points) if k not in ENGINE_KEYS)

    def current() -> dict:  # every parameter explicit, so an existing card cannot leak into the fit
        return {**DEFAULT_EFFICIENCY, **{k: v for k, (v, _) in perf.items()}}

    def src(what: str, fit: dict) -> str:
        return f"fit to {what} of {fit['n']} 'fit' rows of {table}, jointly ({describe(fit)})"

    f = fit_serving(points, current(), keys=keys, workers=workers)
    s = src("median ITL and output throughput", f)
    perf.update({k: (f[k], s) for k in f["keys"]})
    if "link_latency_s" in f["keys"]:
        perf["link_latency_s"] = (f["link_latency_s"], "hop latency of the all-reduces inside the engine (2(n-1) hops per "
                                  "all-reduce over n GPUs, replayed in CUDA graphs; not the eager NCCL calls of the "
                                  "all-reduce table"
                                  + (f", {nccl[0] * 1e6:.2f} us per hop" if nccl else "") + "): " + s)
    log(f"serving: {', '.join(f'{k} {f[k]:.4g}' for k in f['keys'])}; {s}")
    pw = fit_power_joint(points, current(), workers)
    s = src("GPU power", pw)
    from sim.models.power import RESIDENT_ADDER_W

    power = {"resident_w": (RESIDENT_ADDER_W, "not fitted: a resident model adds 25-50 W over bare idle on HBM GPUs "
                            "(public measurements); the default adder")}
    power.update({k: (pw[k], s) for k in POWER_KEYS if k in pw})
    log(f"power: {', '.join(f'{k} {pw[k]:.4g}' for k in power if k in pw)}; {s}")
    return perf, power


def calibrate(accelerator: str, profiles: list[Path], network: Path | None, measurements: Path,
              kernels_from: str | None = None, workers: int = 2, log=print,
              max_concurrency: int = 512, host_from: str | None = None) -> tuple[dict, dict, list[str]]:
    """Run the three fits for one accelerator; returns (perf, power, notes) with sources. ``host_from``:
    take the engine's host-side overheads from that card's calibration instead of fitting them."""
    acc = catalog.accelerator(accelerator, "dcsim calibrate", "--accelerator")
    if host_from:
        catalog.accelerator(host_from, "dcsim calibrate", "--host-from")
        if not all(k in catalog.calibration(host_from).perf for k in ENGINE_KEYS):
            raise ScenarioError("dcsim calibrate", "--host-from", f"{host_from} has no fitted engine overheads to take")
    perf: dict[str, tuple[float, str]] = {}
    notes = []
    if profiles:
        g = fit_gemm(gemm_observations(profiles), acc)
        src = f"fit to per-operator GEMM times {', '.join(p.name for p in profiles)} ({describe(g)})"
        perf.update({k: (g[k], src) for k in KERNEL_KEYS})
        log(f"kernels: {src}")
    else:  # no per-operator tables: the vendor's dense-GEMM ceilings, where published
        ceilings = ceiling_efficiencies(acc)
        for k, (v, src) in ceilings.items():
            perf[k] = (v, src)
            log(f"kernels: {k} {v:.4g}: {src}")
        if ceilings:
            notes.append("GEMM efficiencies from the vendor's max-achievable GEMM rates (no per-operator tables "
                         "for this card); parameters not listed keep the model's defaults")
    if network is not None:
        a = fit_allreduce(network, acc)
        src = (f"fit to NCCL all-reduce times {network.name} ({describe(a)}; eager launch overhead "
               f"{a['launch_s'] * 1e6:.1f} us per call, not charged: CUDA graphs remove it)")
        perf.update({k: (a[k], src) for k in LINK_KEYS})
        log(f"links: {src}")
    if kernels_from:
        other = catalog.calibration(kernels_from)
        for k in KERNEL_KEYS + LINK_KEYS:
            if k not in perf and k in other.perf:
                perf[k] = (other.perf[k], f"taken from {kernels_from} (no {k.split('_')[0]} measurements for {accelerator})")
        notes.append(f"kernel and link parameters without own measurements are taken from {kernels_from}")
    points = [p for p in fit_points(measurements)
              if p["accelerator"] == accelerator and p["concurrency"] <= max_concurrency]
    power: dict[str, tuple[float, str]] = {}
    if not points and kernels_from:
        other = catalog.calibration(kernels_from)
        why = f"taken from {kernels_from} (no serving measurements for {accelerator})"
        perf.update({k: (other.perf[k], why) for k in ENGINE_KEYS + GROUP_KEYS if k in other.perf})
        power = {k: (v, why) for k, v in other.power.items()}
        notes.append(f"engine overheads, kernel-group efficiencies and power weights taken from {kernels_from}")
    if host_from:
        notes.append(f"engine host overheads ({', '.join(ENGINE_KEYS)}) are taken from {host_from}: host CPU "
                     "work of the same engine, not of the GPU beside it")
        if not points:  # nothing to fit here: those costs alone, as they are
            perf.update(host_costs(host_from))
    if points:
        perf, power = _fit_serving(points, perf, fit_tables(measurements, points), workers, log, host_from)
        models = sorted({f"{p['model']} ({p['weight_dtype']}, {p['tp']} GPU)" for p in points})
        notes.append(f"serving fits use {', '.join(models)} on lm-arena-chat only; every other measured model "
                     "and task is held out (docs/validation.md)")
    return perf, power, notes


def fit_points(measurements: Path) -> list[dict]:
    """The ``fit`` rows of ``measurements``; for the shipped table, also those of heldout_serving.csv
    (the one dense multi-GPU H100 configuration derive_heldout.py marks ``fit``; every other row of
    that file is held out)."""
    from sim.tools.validation import heldout_path, load_points, measurements_path

    points = load_points(measurements, roles=("fit",))
    if Path(measurements).resolve() == measurements_path().resolve() and heldout_path().is_file():
        points += load_points(heldout_path(), roles=("fit",))
    return points


def fit_tables(measurements: Path, points: list[dict]) -> str:
    """The tables the ``points`` come from, for the cards' sources."""
    extra = any("assumptions" in p for p in points)
    return Path(measurements).name + (" and heldout_serving.csv" if extra else "")


def default_tables(accelerator: str) -> tuple[list[Path], Path | None]:
    """Shipped per-operator and all-reduce tables for an accelerator, if any: Vidur's profiles, and
    for a card Vidur did not profile a vendor's own collective measurements (profiles/rccl/)."""
    root = catalog.hardware_dir() / "profiles"
    prefix = {"h100-sxm": "h100"}.get(accelerator, accelerator)
    tables = sorted(p for p in (root / "vidur").glob(f"{prefix}_*.csv") if "all_reduce" not in p.name)
    nets = [root / folder / f"{prefix}_all_reduce.csv" for folder in ("vidur", "rccl")]
    return tables, next((n for n in nets if n.is_file()), None)
