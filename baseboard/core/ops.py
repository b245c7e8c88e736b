"""The op interfaces of contract 1.

Each op has a name, a kind and a plain-torch reference implementation (``torch``)
that is always available. Implementations are checked against the reference's
signature when they are loaded, so a wrong plugin fails at plan resolution, not
mid-generation.

Kinds:

``function``
    The implementation is a callable with the reference's parameters.
``weight``
    The implementation owns a weight layout: an object with ``prepare(...)``
    (once, at load: repack, prepack; returns an opaque state) and
    ``apply(state, x, out_dtype=None)`` (per call). The result is in ``out_dtype``,
    default x's dtype; ``torch.float32`` asks for the float32 accumulation itself, not
    a float32 copy of a rounded result (the lm_head asks this, so that close logits
    are not tied by bf16 rounding).
``attention``
    The implementation is a class built from an ``AttentionSpec``. It owns its
    KV-cache layout (``kv_cache_shape``), builds per-step metadata once per step
    (``build_metadata``) and runs per layer (``forward``). See
    ``baseboard.core.attention``.

Shapes use T = tokens in the step, B = sequences, H = heads, D = head dim,
K = input features, N = output features, G = quantization group size.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from .errors import RegistrationError

CONTRACT_VERSION = 1
SUPPORTED_CONTRACTS = (1,)


@dataclass(frozen=True)
class OpSpec:
    name: str
    kind: str  # "function" | "weight" | "attention"
    doc: str


OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("rms_norm", "function",
           "rms_norm(x [T, K], weight [K], eps: float) -> [T, K], same dtype as x; "
           "computed in float32: x * rsqrt(mean(x^2) + eps) * weight."),
    OpSpec("fused_add_rms_norm", "function",
           "fused_add_rms_norm(x [T, K], residual [T, K], weight [K], eps: float) -> "
           "(rms_norm(x + residual), x + residual). May reuse the storage of x and residual."),
    OpSpec("rotary_embedding", "function",
           "rotary_embedding(positions [T] int64, q [T, Hq, D], k [T, Hk, D], "
           "cos_sin_cache [max_position, D] float32 (cos in the first D/2 columns, sin in the "
           "last D/2)) -> (q, k) rotated in the rotate-half (GPT-NeoX / Hugging Face Llama) "
           "style. q and k are views of one qkv projection output [T, (Hq + 2 Hk) * D]: heads "
           "and values contiguous, tokens (Hq + 2 Hk) * D apart. May rotate q and k in place "
           "or return rotated copies."),
    OpSpec("silu_and_mul", "function",
           "silu_and_mul(x [T, 2I]) -> [T, I] = silu(x[:, :I]) * x[:, I:]."),
    OpSpec("gemm", "weight",
           "prepare(weight [N, K], bias [N] | None) -> state; apply(state, x [T, K], out_dtype) -> [T, N] "
           "= x @ weight.T + bias, in x's dtype."),
    OpSpec("gemm_w4a16", "weight",
           "prepare(qweight [N, K] uint8 holding 0..15, scales [N, K/G], offsets [N, K/G], "
           "group_size: int, bias [N] | None) -> state; apply(state, x [T, K], out_dtype) -> [T, N]. "
           "The weight is w[n, k] = qweight[n, k] * scales[n, k/G] + offsets[n, k/G] "
           "(GPTQ/AWQ: offset = -zero * scale; GGUF Q4_0: -8 * d; Q4_1: m)."),
    OpSpec("gemm_w8a16", "weight",
           "prepare(qweight [N, K] int8, scales [N, K/G], group_size: int, bias [N] | None) -> "
           "state; apply(state, x [T, K], out_dtype) -> [T, N] with w[n, k] = qweight[n, k] * scales[n, k/G]. "
           "G = K is per-channel."),
    OpSpec("gemm_w8a8_int8", "weight",
           "prepare(qweight [N, K] int8, scales [N] float32, bias [N] | None) -> state; "
           "apply(state, x [T, K], out_dtype) -> [T, N]: x is quantized per token to int8 "
           "(scale = amax/127), multiplied in integers and rescaled."),
    OpSpec("gemm_w8a8_fp8", "weight",
           "prepare(qweight [N, K] float8_e4m3fn, scales [N] float32, bias [N] | None) -> state; "
           "apply(state, x [T, K], out_dtype) -> [T, N]: x is quantized per token to float8_e4m3fn "
           "(scale = amax/448) and multiplied with float32 accumulation."),
    OpSpec("gemm_w8a8_fp8_block", "weight",
           "prepare(qweight [N, K] float8_e4m3fn, scales [ceil(N/BN), ceil(K/BK)] float32, "
           "block_size: (BN, BK), bias [N] | None) -> state; apply(state, x [T, K], out_dtype) "
           "-> [T, N] with w[n, k] = qweight[n, k] * scales[n/BN, k/BK] (DeepSeek-V3 / Qwen3 "
           "FP8, 128x128): x is quantized per token in groups of BK inputs to float8_e4m3fn "
           "(scale = group amax/448) and multiplied with float32 accumulation."),
    OpSpec("attention", "attention",
           "A class: __init__(spec: AttentionSpec); kv_cache_shape(num_blocks) -> shape of one "
           "layer's cache; build_metadata(batch: AttentionBatch) -> metadata (once per step); "
           "forward(q [T, Hq, D], k [T, Hk, D], v [T, Hk, D], kv_cache, metadata) -> [T, Hq, D]: "
           "writes k and v to the cache at batch.slot_mapping, then each new token attends "
           "causally to its sequence's whole context (cached prefix included)."),
    OpSpec("all_reduce", "function",
           "all_reduce(x [T, N], group: torch.distributed.ProcessGroup) -> [T, N]: the sum of "
           "x over the group's ranks, on every rank, in x's dtype. May reduce in place. Called "
           "only when tensor_parallel_size > 1; must be capturable in a CUDA graph where the "
           "implementation is cuda_graph_safe (no host synchronisation)."),
    OpSpec("all_gather", "function",
           "all_gather(x [T, N], group: torch.distributed.ProcessGroup) -> [T, W * N]: every "
           "rank's x side by side along the last dimension, rank r's in columns "
           "[r * N, (r + 1) * N), on every rank (W = the group's size)."),
    OpSpec("sample", "function",
           "sample(logits [B, V] float32, params: SamplingTensors) -> [B] int64. First, on every "
           "row (greedy ones too), the penalties: repetition_penalty r on each token id in the "
           "prompt or the output (a negative logit times r, any other divided by r), then over "
           "the output tokens logit -= frequency_penalty * count and logit -= presence_penalty "
           "where count > 0. Rows with temperature 0 then take the argmax (first index on "
           "ties); the others divide by the temperature, drop tokens whose probability is below "
           "min_p times the top one, keep the top-k tokens (ties kept), then the smallest top-p "
           "nucleus of the softmax (top_p 1 keeps all), and take argmax(probs / noise) where "
           "noise ~ Exp(1) is given, so every implementation draws the same token."),
)}


@dataclass(frozen=True)
class FusionSpec:
    """One op's work done inside another op's implementation, saving a kernel per layer.

    An implementation of ``op`` that declares the fusion (``Impl.fuses``, by the name of
    the op it takes over, ``replaces``) offers ``method`` besides its op's own methods; the
    op's reference defines the method as the composition of the two ops, which is what the
    model runs wherever the fused form is not used.
    """

    replaces: str
    op: str
    method: str
    doc: str


FUSIONS: dict[str, FusionSpec] = {spec.replaces: spec for spec in (
    FusionSpec("rotary_embedding", "attention", "forward_rotary",
               "forward_rotary(positions [T] int64, q [T, Hq, D], k [T, Hk, D], v [T, Hk, D], "
               "cos_sin_cache [max_position, D] float32, kv_cache, metadata) -> [T, Hq, D] = "
               "forward(*rotary_embedding(positions, q, k, cos_sin_cache), v, kv_cache, "
               "metadata): the rotation joins the KV-cache write."),
    FusionSpec("silu_and_mul", "gemm", "apply_silu_and_mul",
               "apply_silu_and_mul(state, x [T, 2I], out_dtype) -> [T, N] = "
               "apply(state, silu_and_mul(x), out_dtype) for a weight prepared as [N, I]: the "
               "activation is computed as the GEMM loads its input (the down projection)."),
    FusionSpec("fused_add_rms_norm", "gemm", "apply_add_rms_norm",
               "apply_add_rms_norm(state, x [T, K], residual [T, K], weight [K], eps: float, "
               "out_dtype) -> ([T, N], x + residual [T, K]) = (apply(state, normed, out_dtype), "
               "summed) where normed, summed = fused_add_rms_norm(x, residual, weight, eps): "
               "the norm is computed as the GEMM loads its input (q/k/v, gate/up). May reuse "
               "the storage of x and residual."),
)}

WEIGHT_OP_METHODS = ("prepare", "apply")
ATTENTION_METHODS = ("kv_cache_shape", "build_metadata", "forward")


def _parameters(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def check_signature(spec: OpSpec, impl: object, reference: object, where: str,
                    fuses: tuple[str, ...] = ()) -> None:
    """Raise RegistrationError when ``impl`` does not have the shape of ``reference``,
    including the methods of the fusions it declares (``fuses``, FUSIONS keys).

    ``where`` names the implementation in the message (op, name and plugin).
    """
    if spec.kind == "function":
        pairs = [("", impl, reference)]
    elif spec.kind == "weight":
        pairs = [(m, getattr(impl, m, None), getattr(reference, m)) for m in WEIGHT_OP_METHODS]
    else:
        pairs = [(m, getattr(impl, m, None), getattr(reference, m)) for m in ATTENTION_METHODS]
    pairs += [(FUSIONS[f].method, getattr(impl, FUSIONS[f].method, None),
               getattr(reference, FUSIONS[f].method)) for f in fuses]
    for method, got, want in pairs:
        label = f"{where}{'.' + method if method else ''}"
        if not callable(got):
            raise RegistrationError(f"{label} is missing or not callable; op {spec.name!r} "
                                    f"needs: {spec.doc}")
        if _parameters(got) != _parameters(want):
            raise RegistrationError(
                f"{label} has parameters {_parameters(got)}, but op {spec.name!r} takes "
                f"{_parameters(want)}. Fix the implementation's signature to match: {spec.doc}")
