"""Efficiency factors of the performance models: their defaults and how overrides apply.

An efficiency factor is the fraction of a datasheet peak that real kernels reach, or a fixed cost
the roofline does not see (host overheads per step and per sequence, kernel and link latencies).
The defaults below apply where hardware/calibration/ has no fitted value for an accelerator; the
calibration tool refits them from measurements, and a scenario's ``performance`` block overrides
them per pool. Kept apart from the models so that every model (roofline, SRAM pipeline,
diffusion, speculative decoding) and the calibration read one list.
"""

from __future__ import annotations

# Default efficiency factors: fraction of datasheet peak real kernels reach, used where
# hardware/calibration/ has no fitted value for the accelerator. Dense bf16 GEMMs on
# H100 reach 600-750 of 989 TFLOP/s in cuBLAS benchmarks; FlashAttention-2/3 forward
# reaches 35-75% of peak; STREAM-like copies ~80-90% of HBM bandwidth; NCCL all-reduce
# bus bandwidth on NVLink4 ~80% of one direction. A kernel takes at least a few
# microseconds however small (launch ramp, wave quantization). Overheads: vLLM's CPU
# scheduling + launch with CUDA graphs is 1-3 ms per step at small batches (vLLM v1
# blog, 2025). The calibration tool refits all of these from measurements.
DEFAULT_EFFICIENCY = {
    "gemm_efficiency": 0.7,
    "attention_efficiency": 0.5,
    "memory_efficiency": 0.8,
    "link_efficiency": 0.8,
    "iteration_overhead_s": 0.002,
    "per_seq_overhead_s": 0.000015,
    # latency of one hop of a collective (ring step, pipeline hand-off): nccl-tests' ~10 us for a
    # small all-reduce over 8 NVLink GPUs is 14 ring steps of ~0.7 us
    "link_latency_s": 0.7e-6,
    # minimum duration of one GEMM / elementwise kernel
    "kernel_latency_s": 0.0,
    # GEMM time = latency + (t_compute^p + t_memory^p)^(1/p): p -> infinity is the
    # sharp roofline max(); a finite p rounds the ridge where neither bound is reached.
    "gemm_blend": 8.0,
    # Fraction of the dense-GEMM efficiency that routed-expert grouped GEMMs reach (many
    # small per-expert problems in one fused kernel).
    "moe_efficiency": 1.0,
    # Fraction of the bf16 efficiency that routed-expert GEMMs with quantized weights (fp8,
    # int8, int4, fp4) reach: block-scaled fused-MoE kernels dequantize as they go.
    "quantized_efficiency": 1.0,
    # Fraction of the bf16 efficiency that dense GEMMs with quantized weights reach against
    # their own (2-4x higher) tensor-core peak. The vLLM fits have no dense quantized rows and
    # keep 1.0; the TensorRT-LLM profile fits it to its fp8 / fp4 rows.
    "quantized_dense_efficiency": 1.0,
    # Fraction of the dense-GEMM efficiency that routed experts stored in a microscaling format
    # (a card's expert_weight_dtype mxfp4: gpt-oss) reach. They run their own kernels (vLLM:
    # FlashInfer's MoE on Blackwell, OpenAI's triton_kernels matmul_ogs on Hopper; vLLM blog
    # "vLLM Now Supports gpt-oss", 2025-08-05), not the fused_moe kernels that moe_efficiency and
    # quantized_efficiency are fitted on, so those do not apply; no fitting row runs them: 1.0.
    # (A calibration file's perf section may set it; no scenario key, which would change every
    # scenario's point id, a hash of its resolved configuration.)
    "mx_moe_efficiency": 1.0,
    # Expert weights read again per routed token (token x top-k pair), as a share of one expert's
    # weights: a fused-MoE kernel (vLLM fused_moe) tiles each expert's tokens into blocks of
    # BLOCK_SIZE_M rows and streams the expert's weight tiles once per block, so an expert with n
    # tokens reads its weights ceil(n / BLOCK_SIZE_M) times, ~1 + n / BLOCK_SIZE_M (less what L2
    # keeps): 1 / (rows sharing one read). 0 (uncalibrated cards): one read per touched expert.
    # Fitted on the MoE serving rows; the MXFP4 experts' own kernels keep 0, as mx_moe_efficiency.
    "moe_weight_reread": 0.0,
    # Extra time per layer of a step that carries prefill chunks (a non-uniform batch). vLLM v1
    # replays a whole captured CUDA graph only for uniform decode batches; a prefill or mixed
    # prefill-decode batch runs piecewise, with attention (and its metadata for the varlen
    # kernel) launched eagerly between the graph pieces of every layer (vLLM docs, design/
    # "CUDA Graphs", cudagraph_mode FULL_AND_PIECEWISE), and the scheduler and workers take on
    # the new requests (block allocation, prefix hashing, prompt ids sent to every worker).
    # Uncalibrated cards keep 0; the calibration fits it to the serving rows' throughput.
    "mixed_layer_overhead_s": 0.0,
}


def merge_efficiency(base: dict, overrides: dict) -> dict:
    """``base`` efficiency parameters with the non-None ``overrides``; unknown names are an error."""
    unknown = set(overrides) - set(base)
    if unknown:
        raise TypeError(f"unknown efficiency parameter(s): {sorted(unknown)}")
    return {**base, **{k: v for k, v in overrides.items() if v is not None}}
