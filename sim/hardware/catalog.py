"""Hardware and model cards from ``hardware/`` (shipped as package data, or ``$DCSIM_HARDWARE``).

Cards are YAML files whose numbers are ``{value, source}`` mappings (see
hardware/README.md). This module turns them into small frozen dataclasses of
plain numbers and derives what the performance model needs (KV bytes per
token, GEMM shapes, parameter counts). It knows nothing of SimPy or scenarios.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from dataclasses import dataclass

import yaml

from sim.errors import ScenarioError
from sim.resources import hardware_dir  # noqa: F401  (callers find card files through the catalog)


# libyaml's parser where PyYAML was built with it (its wheels are): the same mappings as the
# pure-Python SafeLoader (same resolver and constructor), about 8x faster (all ~40 cards: 0.13 s
# of a process's start with the pure-Python parser, ~0.02 s with libyaml).
_CARD_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_card(path) -> dict:
    """A card file's mapping (``{}`` for an empty file): ``yaml.safe_load`` with libyaml."""
    with open(path) as fh:
        return yaml.load(fh, Loader=_CARD_LOADER) or {}


# Bytes per weight element. ``mxfp4``: the OCP Microscaling format (OCP MX spec v1.0, 2023,
# section 5: MXFP4 = FP4 E2M1 elements in blocks of 32 sharing one 8-bit E8M0 scale), so
# (32 x 4 + 8) / 32 = 4.25 bits = 0.53125 bytes per element (gpt-oss's MoE experts).
DTYPE_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5, "fp4": 0.5, "mxfp4": (32 * 4 + 8) / 32 / 8}


def _plain(card: dict) -> dict:
    """Replace every ``{value, source}`` mapping by its value."""
    out = {}
    for k, v in card.items():
        if isinstance(v, dict) and "value" in v:
            out[k] = v["value"]
        else:
            out[k] = v
    return out


# Card fields every accelerator needs (the rest may be absent: no public figure).
REQUIRED_ACC_FIELDS = ("memory_gib", "memory_bandwidth_tb_s", "interconnect_gb_s")
# How the device holds a model's weights, which selects its performance model:
# ``hbm``: weights in device DRAM, read every step (sim.models.perf.RooflineModel);
# ``sram_pipeline``: weights resident in on-chip SRAM over many chips whose layers form a
# pipeline (sim.models.perf_sram.SramPipelineModel: Groq LPU, Cerebras WSE).
ARCHITECTURES = ("hbm", "sram_pipeline")


@dataclass(frozen=True)
class Accelerator:
    """Datasheet facts of one accelerator (one device).

    Figures a card leaves out (no public source) are unknown: ``tdp_w`` is then NaN, so
    power and energy come out NaN rather than invented; a missing dense BF16 figure falls
    back to the published sparse one as an upper bound (see :meth:`peak_flops`).
    For ``sram_pipeline`` devices the memory fields describe the on-chip SRAM.
    """

    name: str
    memory_gib: float
    memory_bandwidth_tb_s: float
    interconnect_gb_s: float
    bf16_dense_tflops: float | None = None
    tdp_w: float = math.nan
    fp8_dense_tflops: float | None = None
    idle_w: float | None = None
    price_usd_per_hour: float = 0.0
    devices_per_node: int = 8
    node_max_power_w: float | None = None
    fp4_dense_tflops: float | None = None
    int8_dense_tops: float | None = None
    interconnect_latency_us: float | None = None
    network_gb_s: float | None = None  # scale-out NIC bandwidth per device, one direction
    bf16_sparse_tflops: float | None = None
    architecture: str = "hbm"
    display_name: str = ""
    vendor: str = ""

    def peak_flops(self, dtype: str) -> float:
        """Dense FLOP/s of the tensor cores for GEMMs whose weights are ``dtype``.

        Weight-only formats (int4) compute in bf16; fp8 / int8 / fp4 weights use that math
        where the device has it (fp4: Blackwell), else bf16. ``mxfp4`` weights (gpt-oss's
        experts) on a device with FP4 tensor cores run at its FP8 rate: vLLM's Blackwell MoE
        kernel (FlashInfer's) multiplies MXFP4 weights by MXFP8-quantized activations (the
        ML.ENERGY v3 gpt-oss runs set VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1), and mixed
        FP4 x FP8 MMAs issue at the FP8 rate; a device without FP4 units (Hopper) dequantizes
        the weights in the kernel (vLLM's Triton matmul_ogs path, vLLM blog "vLLM Now Supports
        gpt-oss", 2025-08-05) and computes in bf16. A card with no dense BF16 figure
        (Cerebras publishes only a sparse one) uses the sparse figure: an upper bound.
        """
        if dtype == "mxfp4" and self.fp4_dense_tflops and self.fp8_dense_tflops:
            return self.fp8_dense_tflops * 1e12
        if dtype == "fp8" and self.fp8_dense_tflops:
            return self.fp8_dense_tflops * 1e12
        if dtype == "int8" and self.int8_dense_tops:
            return self.int8_dense_tops * 1e12
        if dtype == "fp4" and self.fp4_dense_tflops:
            return self.fp4_dense_tflops * 1e12
        return (self.bf16_dense_tflops or self.bf16_sparse_tflops) * 1e12

    @property
    def idle_power_w(self) -> float:
        """Measured idle power with nothing loaded; 10% of TDP where the card has no figure
        (H100: ~70 W of 700 W, A100-40GB: ~50 W of 400 W, see their cards)."""
        return self.idle_w if self.idle_w is not None else 0.1 * self.tdp_w

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30

    @property
    def memory_bandwidth(self) -> float:
        return self.memory_bandwidth_tb_s * 1e12

    @property
    def link_bandwidth(self) -> float:
        """One direction of the scale-up link, bytes/s (datasheets quote both directions)."""
        return self.interconnect_gb_s * 1e9 / 2

    @property
    def network_bandwidth(self) -> float | None:
        """Scale-out network bandwidth of one device's NIC, one direction, bytes/s (None if
        the card does not say)."""
        return self.network_gb_s * 1e9 if self.network_gb_s else None

    @property
    def host_w_per_device_max(self) -> float:
        """Non-accelerator server power per device at the node's max rating."""
        if not self.node_max_power_w:
            return 0.0
        return max(0.0, (self.node_max_power_w - self.devices_per_node * self.tdp_w) / self.devices_per_node)


@dataclass(frozen=True)
class ModelCard:
    """Architecture numbers of one transformer model.

    ``expert_weight_dtype`` (empty: as ``weight_dtype``) is the storage of the routed experts'
    weights where it differs from the rest (gpt-oss: MXFP4 experts, BF16 attention, router,
    embeddings and LM head). ``sliding_window`` > 0 is the attention window (tokens) of the
    ``sliding_window_layers`` layers that use one (gpt-oss: 128 tokens on half the layers):
    those keep at most a window of KV per sequence and attend to at most that many keys.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    params_billion: float
    max_context_tokens: int = 131072
    attention: str = "gqa"
    weight_dtype: str = "bf16"
    tie_word_embeddings: bool = False
    reasoning: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0
    first_dense_layers: int = 0
    active_params_billion: float | None = None
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    display_name: str = ""
    hf_id: str = ""
    expert_weight_dtype: str = ""
    sliding_window: int = 0
    sliding_window_layers: int = 0

    @property
    def windowed_layers(self) -> int:
        """Layers whose attention is limited to a sliding window (0 without a window)."""
        return self.sliding_window_layers if self.sliding_window > 0 else 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def dense_layers(self) -> int:
        return self.num_layers - self.moe_layers

    def kv_elems_per_token_layer(self) -> int:
        """KV-cache elements one token stores in one layer (K and V, or MLA's latent)."""
        if self.attention == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    def attention_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the attention projections of one layer."""
        h = self.hidden_size
        if self.attention == "mla":
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            n = self.num_attention_heads
            q = [(h, self.q_lora_rank), (self.q_lora_rank, n * qk)] if self.q_lora_rank else [(h, n * qk)]
            return q + [
                (h, self.kv_lora_rank + self.qk_rope_head_dim),
                (self.kv_lora_rank, n * (self.qk_nope_head_dim + self.v_head_dim)),
                (n * self.v_head_dim, h),
            ]
        q = self.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        return [(h, q + 2 * kv), (q, h)]

    def attention_flops_per_pair(self) -> float:
        """FLOPs of one (query token, key token) pair in one layer: QK^T and PV."""
        n = self.num_attention_heads
        if self.attention == "mla":  # absorbed MLA: scores over latent + rope, values in latent
            return 2.0 * n * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        return 4.0 * n * self.head_dim

    def dense_mlp_shapes(self) -> list[tuple[int, int]]:
        h, f = self.hidden_size, self.intermediate_size
        return [(h, 2 * f), (f, h)]  # gated: gate+up fused, then down

    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.moe_intermediate_size

    def layer_params(self) -> tuple[int, int]:
        """(dense-layer params, MoE-layer params) excluding norms."""
        attn = sum(i * o for i, o in self.attention_shapes())
        dense = attn + sum(i * o for i, o in self.dense_mlp_shapes())
        moe = 0
        if self.is_moe:
            moe = attn + (self.num_experts + self.num_shared_experts) * self.expert_params() + self.hidden_size * self.num_experts
        return dense, moe

    def routed_expert_params(self) -> int:
        """Parameters of the routed experts of all MoE layers (what ``expert_weight_dtype`` stores)."""
        return self.num_experts * self.expert_params() * self.moe_layers

    def weight_bytes(self, weight_dtype: str | None = None) -> float:
        """Bytes of all weights: the routed experts at ``expert_weight_dtype`` (if the card has
        one), the rest at ``weight_dtype`` (default: the card's)."""
        rest = DTYPE_BYTES[weight_dtype or self.weight_dtype]
        routed = self.routed_expert_params()
        expert = DTYPE_BYTES[self.expert_weight_dtype] if self.expert_weight_dtype else rest
        return (self.total_params() - routed) * rest + routed * expert

    def total_params(self) -> int:
        """Parameter count from the architecture (embeddings, layers, LM head)."""
        dense, moe = self.layer_params()
        emb = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else emb
        return emb + head + self.dense_layers * dense + self.moe_layers * moe


_ACC_FIELDS = set(Accelerator.__dataclass_fields__)
_MODEL_FIELDS = set(ModelCard.__dataclass_fields__)


def _load_cards(kind: str) -> dict[str, dict]:
    folder = hardware_dir() / kind
    cards = {}
    if folder.is_dir():
        for f in sorted(folder.glob("*.yaml")):
            card = read_card(f)
            if not isinstance(card, dict):
                raise ScenarioError(str(f), "", "a card must be a mapping of keys to values")
            cards[card.get("name", f.stem)] = card
    return cards


@functools.lru_cache(maxsize=None)
def accelerators() -> dict[str, dict]:
    return _load_cards("accelerators")


@functools.lru_cache(maxsize=None)
def models() -> dict[str, dict]:
    return _load_cards("models")


# What a card's own file can be named after (lower case, no path separator): other names are
# looked up in the index of every card only.
_FILE_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]*")


def _card(kind: str, name: str, index) -> dict | None:
    """The card ``name`` of ``kind``: read from its own file ``<kind>/<name>.yaml`` when that file
    names this card (hardware/README.md: the file name equals the card's name), so a run reads
    the two or three cards it uses and not all ~40 of them; otherwise from ``index()``, the cards
    of every file (also once that is loaded)."""
    if index.cache_info().currsize == 0 and _FILE_NAME.fullmatch(name):
        f = hardware_dir() / kind / f"{name}.yaml"
        if f.is_file():
            card = read_card(f)
            if not isinstance(card, dict):
                raise ScenarioError(str(f), "", "a card must be a mapping of keys to values")
            if card.get("name", f.stem) == name:
                return card
    return index().get(name)


def _unknown(what: str, name: str, known: list[str], source: str, key: str) -> ScenarioError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f" (known: {', '.join(sorted(known))})"
    return ScenarioError(source, key, f"unknown {what} '{name}'{hint}")


@functools.lru_cache(maxsize=None)
def _accelerator(name: str) -> Accelerator | None:
    card = _card("accelerators", name, accelerators)
    if card is None:
        return None
    plain = {k: v for k, v in _plain(card).items() if k in _ACC_FIELDS}
    where = f"hardware/accelerators/{name}.yaml"
    for field in REQUIRED_ACC_FIELDS:
        if plain.get(field) is None:
            raise ScenarioError(where, field, "missing: every accelerator card needs " + ", ".join(REQUIRED_ACC_FIELDS))
    if plain.get("bf16_dense_tflops") is None and plain.get("bf16_sparse_tflops") is None:
        raise ScenarioError(where, "bf16_dense_tflops", "missing: a card needs a dense (or at least a sparse) BF16 peak")
    if plain.get("architecture", "hbm") not in ARCHITECTURES:
        raise ScenarioError(where, "architecture", f"{plain['architecture']!r} is not one of {', '.join(ARCHITECTURES)}")
    if plain.get("tdp_w") is None:
        plain.pop("tdp_w", None)  # unknown: NaN
    return Accelerator(**plain)


# Bounds of a model card's numbers: (field, least, most); the dimensions stay within what any
# published model uses by orders of magnitude, so a typo fails here, not as a huge allocation.
_MODEL_INTS = (
    ("num_layers", 1, 10_000), ("hidden_size", 1, 1 << 20), ("num_attention_heads", 1, 1 << 16),
    ("num_kv_heads", 1, 1 << 16), ("head_dim", 1, 1 << 16), ("intermediate_size", 1, 1 << 22),
    ("vocab_size", 1, 1 << 24), ("max_context_tokens", 1, 1 << 30), ("num_experts", 0, 1 << 16),
    ("experts_per_token", 0, 1 << 16), ("moe_intermediate_size", 0, 1 << 22), ("num_shared_experts", 0, 1 << 10),
    ("first_dense_layers", 0, 10_000), ("q_lora_rank", 0, 1 << 20), ("kv_lora_rank", 0, 1 << 20),
    ("qk_nope_head_dim", 0, 1 << 16), ("qk_rope_head_dim", 0, 1 << 16), ("v_head_dim", 0, 1 << 16),
    ("sliding_window", 0, 1 << 30), ("sliding_window_layers", 0, 10_000),
)
ATTENTION_KINDS = ("gqa", "mla")


def _card_file(kind: str, name: str) -> str:
    """The file a card came from, for error messages (its own file, else the folder)."""
    f = hardware_dir() / kind / f"{name}.yaml"
    return str(f) if _FILE_NAME.fullmatch(name) and f.is_file() else f"{hardware_dir() / kind} (card '{name}')"


def _check_model(plain: dict, where: str) -> None:
    """A ScenarioError naming the card file and key for any value the models could not use."""
    def bad(key: str, msg: str) -> ScenarioError:
        return ScenarioError(where, key, msg)

    for key, lo, hi in _MODEL_INTS:
        v = plain.get(key)
        if key in plain and (isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi):
            raise bad(key, f"must be a whole number in [{lo}, {hi}], not {str(v)[:40]!r}")
    for key in ("params_billion", "active_params_billion"):
        v = plain.get(key)
        if key in plain and not (v is None and key != "params_billion") and (
                isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1e6):
            raise bad(key, f"must be a number of billions in (0, 1e6), not {str(v)[:40]!r}")
    for key in ("weight_dtype", "expert_weight_dtype"):
        v = plain.get(key, "bf16")
        if key == "expert_weight_dtype" and v in ("", None):
            continue
        if not isinstance(v, str) or v not in DTYPE_BYTES:
            raise bad(key, f"unknown dtype {str(v)[:40]!r} (known: {', '.join(DTYPE_BYTES)})")
    if plain.get("attention", "gqa") not in ATTENTION_KINDS:
        raise bad("attention", f"{str(plain['attention'])[:40]!r} is not one of {', '.join(ATTENTION_KINDS)}")
    for key in ("tie_word_embeddings", "reasoning"):
        if key in plain and not isinstance(plain[key], bool):
            raise bad(key, "must be true or false")
    for key in ("name", "display_name", "hf_id"):
        if key in plain and not isinstance(plain[key], str):
            raise bad(key, "must be a string")
    g = {k: plain.get(k, 0) for k, _, _ in _MODEL_INTS}
    if g["experts_per_token"] > g["num_experts"]:
        raise bad("experts_per_token", f"{g['experts_per_token']} exceeds num_experts ({g['num_experts']})")
    if g["num_experts"] and not (g["experts_per_token"] and g["moe_intermediate_size"]):
        raise bad("num_experts", "a MoE card needs experts_per_token and moe_intermediate_size too")
    if g["first_dense_layers"] > g["num_layers"]:
        raise bad("first_dense_layers", f"exceeds num_layers ({g['num_layers']})")
    if g["sliding_window_layers"] > g["num_layers"]:
        raise bad("sliding_window_layers", f"exceeds num_layers ({g['num_layers']})")
    if bool(g["sliding_window"]) != bool(g["sliding_window_layers"]):
        raise bad("sliding_window", "sliding_window and sliding_window_layers go together (both > 0, or neither)")
    if plain.get("attention") == "mla" and not g["kv_lora_rank"]:
        raise bad("kv_lora_rank", "MLA attention needs kv_lora_rank > 0")


@functools.lru_cache(maxsize=None)
def _model(name: str) -> ModelCard | None:
    card = _card("models", name, models)
    if card is None:
        return None
    where = _card_file("models", name)
    plain = {k: v for k, v in _plain(card).items() if k in _MODEL_FIELDS}
    _check_model(plain, where)
    missing = [k for k in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
                           "intermediate_size", "vocab_size", "params_billion") if k not in plain]
    if missing:
        raise ScenarioError(where, missing[0], "missing: every model card needs " + ", ".join(missing))
    return ModelCard(**{"name": name, **plain})


def accelerator(name: str, source: str = "", key: str = "accelerator") -> Accelerator:
    """The accelerator card ``name``; ScenarioError naming ``source``/``key`` if unknown."""
    acc = _accelerator(name)
    if acc is None:
        raise _unknown("accelerator", name, list(accelerators()), source, key)
    return acc


def model(name: str, source: str = "", key: str = "model") -> ModelCard:
    """The model card ``name``; ScenarioError naming ``source``/``key`` if unknown."""
    m = _model(name)
    if m is None:
        raise _unknown("model", name, list(models()), source, key)
    return m


@dataclass(frozen=True)
class Calibration:
    """Fitted performance and power parameters of one accelerator (hardware/calibration/<name>.yaml).

    ``perf`` holds RooflineModel efficiency parameters, ``power`` PowerModel parameters
    (resident_w, compute_weight, memory_weight); either may be empty, and the models'
    defaults fill what is missing.
    """

    accelerator: str
    perf: dict
    power: dict
    path: str = ""


@functools.lru_cache(maxsize=None)
def calibration(name: str) -> Calibration:
    """Calibration of accelerator ``name``; empty if none was fitted for it."""
    f = hardware_dir() / "calibration" / f"{name}.yaml"
    if not f.is_file():
        return Calibration(name, {}, {})
    card = read_card(f)
    return Calibration(name, _plain(card.get("perf") or {}), _plain(card.get("power") or {}), str(f))
