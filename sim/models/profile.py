"""Profile-table performance model: measured per-operator GPU times instead of the GEMM roofline.

:class:`ProfileModel` is a :class:`~sim.models.perf.RooflineModel` whose token-count-dependent
part (``_gemms``) comes from a table of measured kernel times in vidur's profiling
layout (Agrawal et al., MLSys 2024; see hardware/profiles/README.md): one row per
``num_tokens`` x ``num_tensor_parallel_workers`` with ``time_stats.<op>.median`` in
milliseconds for ONE transformer layer. Per iteration of ``T`` tokens:

* linear layers, norms, rotary, activation and residual add: the sum of the per-layer
  medians at the pool's TP degree, piecewise-linear in ``T`` between measured token
  counts (above the largest, linear extrapolation along the secant from half of it), times
  ``num_layers``;
* the embedding lookup once;
* the LM head from the roofline ``linear`` formula (the tables do not measure it);
* tensor-parallel all-reduces: two per layer of ``T x hidden x 2`` bytes, interpolated
  from an optional network table (median ms vs message bytes for ``num_workers == tp``),
  else the roofline ring formula.

FLOPs and HBM bytes, which drive the power model, stay the roofline's, so energy is
comparable between the two models. Attention and the CPU-side overheads are added by
the parent's ``cost()``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import os
import re
import stat

import numpy as np
import pyarrow as pa

from sim.config.files import max_file_bytes

from sim.hardware.catalog import hardware_dir
from sim.errors import ScenarioError
from sim.models.parallel import ring_allreduce_s
from sim.models.perf import ACT_BYTES, RooflineModel

# vidur's per-layer operators, summed per layer (vidur's ExecutionTime block time without attention kernels)
LAYER_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
EMB_OP = "emb"
# table column -> model-card attribute it must equal
MODEL_DIMS = {"n_embd": "hidden_size", "n_expanded_embd": "intermediate_size", "n_head": "num_attention_heads",
              "n_kv_head": "num_kv_heads"}
MS = 1e-3


def _median(op: str) -> str:
    return f"time_stats.{op}.median"


def interp_extrap(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear ``ys(x)`` through sorted ``xs``: clamped below the first point;
    above the last, the line through the last point and the measured point nearest half
    of it. (Adjacent measurements are 32 tokens apart and carry ~1% noise, so the secant
    of the last two can even slope downwards; the long baseline gives the throughput slope.)"""
    if x <= xs[-1] or len(xs) < 2:
        return float(np.interp(x, xs, ys))
    j = min(int(np.searchsorted(xs, xs[-1] / 2)), len(xs) - 2)
    slope = (ys[-1] - ys[j]) / (xs[-1] - xs[j])
    return float(ys[-1] + slope * (x - xs[-1]))


def _curves(keys: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per key, sorted unique ``xs`` and the mean of ``ys`` over rows repeating an ``x``."""
    out = {}
    for k in np.unique(keys):
        sel = keys == k
        ux, inv = np.unique(xs[sel], return_inverse=True)
        uy = np.bincount(inv, weights=ys[sel]) / np.bincount(inv)
        out[int(k)] = (ux.astype(float), uy)
    return out


@dataclass(frozen=True)
class ComputeTable:
    """Per TP degree: measured token counts, per-layer time (ms) and embedding time (ms)."""

    path: str
    dims: dict[str, int]
    layer: dict[int, tuple[np.ndarray, np.ndarray]]
    emb: dict[int, tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class NetworkTable:
    """Per number of workers: message sizes (bytes) and all-reduce time (ms)."""

    path: str
    curves: dict[int, tuple[np.ndarray, np.ndarray]]


class TableError(ValueError):
    """A profile table that cannot be used; the caller adds the file and key path."""


def _parse_problem(e: Exception) -> str:
    """What is wrong with a CSV pyarrow could not read, without the row it quotes: pyarrow's
    messages end in the offending line or value, which must not reach an error message."""
    text = str(e)
    row = re.search(r"[Rr]ow #(\d+)", text)
    where = f" (row {row.group(1)})" if row else ""
    if "Expected" in text and "columns" in text:
        return "rows with differing numbers of columns" + where
    if "conversion error" in text or "invalid value" in text:
        return "a value that is not a number" + where
    return "not a well-formed CSV table" + where


def _read(path: str, required: list[str]) -> dict[str, np.ndarray]:
    try:
        st = os.stat(path)
    except OSError as e:
        raise TableError(f"cannot read profile table {path} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):  # a device or FIFO would be read forever
        raise TableError(f"profile table {path} is not a regular file")
    if st.st_size > max_file_bytes():
        raise TableError(f"profile table {path} is larger than the limit of {max_file_bytes() >> 20} MiB "
                         "(set DCSIM_MAX_FILE_MB to raise it)")
    import pyarrow.csv as pacsv  # (here: only profile-based pools read CSV; ~8 ms of other runs' start)

    try:
        t = pacsv.read_csv(path)
    except Exception as e:  # pyarrow raises several types for malformed files
        raise TableError(f"cannot read profile table {path}: {_parse_problem(e)}") from None
    missing = [c for c in required if c not in t.column_names]
    if missing:
        raise TableError(f"profile table {path} lacks column(s) {', '.join(missing)}")
    try:
        cols = {c: t[c].to_numpy(zero_copy_only=False).astype(float) for c in required}
    except (TypeError, ValueError, pa.ArrowException):
        raise TableError(f"profile table {path}: a value of a required column is not a number") from None
    if not all(np.isfinite(v).all() for v in cols.values()):
        raise TableError(f"profile table {path}: a required column holds an empty, infinite or NaN value")
    return cols


@functools.lru_cache(maxsize=None)
def load_compute_table(path: str) -> ComputeTable:
    """Read (once per path) a per-operator table; raises :class:`TableError`."""
    ops = [_median(o) for o in (EMB_OP, *LAYER_OPS)]
    cols = _read(path, ops + list(MODEL_DIMS) + ["num_tokens", "num_tensor_parallel_workers"])
    dims = {}
    for c in MODEL_DIMS:
        vals = np.unique(cols[c])
        if len(vals) != 1:
            raise TableError(f"profile table {path} mixes models: {c} takes {len(vals)} different values")
        dims[c] = int(vals[0])
    tp = cols["num_tensor_parallel_workers"].astype(int)
    tokens = cols["num_tokens"].astype(float)
    layer = sum(cols[_median(o)].astype(float) for o in LAYER_OPS)
    return ComputeTable(path, dims, _curves(tp, tokens, layer), _curves(tp, tokens, cols[_median(EMB_OP)].astype(float)))


@functools.lru_cache(maxsize=None)
def load_network_table(path: str) -> NetworkTable:
    """Read (once per path) an all-reduce table; raises :class:`TableError`."""
    cols = _read(path, [_median("all_reduce"), "num_workers", "size"])
    return NetworkTable(path, _curves(cols["num_workers"].astype(int), cols["size"].astype(float),
                                      cols[_median("all_reduce")].astype(float)))


def _load(loader, path: str, base_dir: Path | str, source: str, key: str):
    try:
        return loader(resolve_profile_path(path, base_dir, source, key))
    except TableError as e:
        raise ScenarioError(source, key, str(e)) from None


def profiles_dir() -> Path:
    return hardware_dir() / "profiles"


def available_profiles() -> list[str]:
    root = profiles_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.csv"))


def resolve_profile_path(path: str, base_dir: Path | str, source: str, key: str) -> str:
    """``path`` relative to the scenario's folder if that file exists, else under
    hardware/profiles/ (as given, or a file name found in one of its sub-folders)."""
    local = Path(base_dir) / path
    if local.is_file():
        return str(local.resolve())
    root = profiles_dir()
    if (root / path).is_file():
        return str((root / path).resolve())
    found = sorted(root.rglob(path)) if Path(path).name == path else []
    if len(found) == 1:
        return str(found[0].resolve())
    if found:
        names = ", ".join(str(p.relative_to(root)) for p in found)
        raise ScenarioError(source, key, f"profile table {path!r} is ambiguous: hardware/profiles/ has {names}")
    raise ScenarioError(source, key, f"profile table {path!r} not found: neither {local} nor hardware/profiles/{path} "
                                     f"exists; available tables: {', '.join(available_profiles()) or 'none'}")


class ProfileModel(RooflineModel):
    """Roofline model whose linear layers and elementwise ops come from a measured table."""

    def __init__(self, model, acc, tp: int = 1, weight_dtype: str | None = None, kv_dtype: str = "bf16", *,
                 path: str, network_path: str | None = None, base_dir: Path | str = ".",
                 source: str = "<scenario>", key: str = "performance", **kwargs):
        """``key`` is the pool's key path; errors name ``<key>.performance.path``,
        ``<key>.performance.network_path`` or ``<key>.tp``. Other keyword arguments
        (efficiency overrides, parallelism options) go to :class:`RooflineModel`."""
        super().__init__(model, acc, tp, weight_dtype, kv_dtype, **kwargs)
        pkey = f"{key}.performance.path"
        self.table = _load(load_compute_table, path, base_dir, source, pkey)
        self._check_model(source, pkey)
        if tp not in self.table.layer:
            raise ScenarioError(source, f"{key}.tp", f"profile table {self.table.path} has no rows for tp={tp} "
                                                     f"(num_tensor_parallel_workers: {sorted(self.table.layer)})")
        self.network = None
        if network_path is not None:
            nkey = f"{key}.performance.network_path"
            self.network = _load(load_network_table, network_path, base_dir, source, nkey)
            if tp > 1 and tp not in self.network.curves:
                raise ScenarioError(source, nkey, f"network table {self.network.path} has no all-reduce rows for "
                                                  f"num_workers={tp} (has {sorted(self.network.curves)})")
        self._profile_cache: dict[tuple[int, int], tuple[float, float, float]] = {}

    def _check_model(self, source: str, key: str) -> None:
        m = self.model
        if m.is_moe:
            raise ScenarioError(source, key, f"profile tables describe dense models; {m.name} is a mixture of experts")
        dims = self.table.dims
        bad = [f"{col}={dims[col]} but {m.name} has {attr}={getattr(m, attr)}"
               for col, attr in MODEL_DIMS.items() if dims[col] != getattr(m, attr)]
        if bad:
            raise ScenarioError(source, key, f"profile table {self.table.path} was measured for another model: "
                                             + "; ".join(bad))

    # ----------------------------------------------------------------- pieces (seconds)
    def layers_s(self, tokens: int) -> float:
        """Linear layers + elementwise ops of all layers, from the table."""
        xs, ys = self.table.layer[self.tp]
        return interp_extrap(tokens, xs, ys) * MS * self.model.num_layers if tokens > 0 else 0.0

    def embedding_s(self, tokens: int) -> float:
        xs, ys = self.table.emb[self.tp]
        return interp_extrap(tokens, xs, ys) * MS if tokens > 0 else 0.0

    def lm_head_s(self, sampled: int) -> float:
        """The roofline ``linear`` term of the LM head on the sampled rows (vocab-parallel)."""
        m, tp = self.model, self.tp
        if sampled <= 0:
            return 0.0
        i, o = m.hidden_size, m.vocab_size
        f = 2.0 * sampled * i * o / tp
        b = (i * o * self.wbytes + sampled * (i + o) * ACT_BYTES) / tp
        return max(f / self.peak, b / self.bw)

    def all_reduce_s(self, tokens: int) -> float:
        """Two all-reduces per layer of ``tokens x hidden`` activations."""
        m, tp = self.model, self.tp
        if tp <= 1 or tokens <= 0:
            return 0.0
        msg = tokens * m.hidden_size * ACT_BYTES
        if self.network is not None:
            xs, ys = self.network.curves[tp]
            one = interp_extrap(msg, xs, ys) * MS
        else:
            one = ring_allreduce_s(msg, tp, self.link_bw, self.eff["link_latency_s"])
        return 2 * m.num_layers * one

    def _gemms(self, tokens: int, sampled: int) -> tuple[float, float, float]:
        key = (tokens, sampled)
        hit = self._profile_cache.get(key)
        if hit is not None:
            return hit
        _, flops, nbytes = super()._gemms(tokens, sampled)
        t = self.layers_s(tokens) + self.embedding_s(tokens) + self.lm_head_s(sampled) + self.all_reduce_s(tokens)
        result = (t, flops, nbytes)
        self._profile_cache[key] = result
        return result
