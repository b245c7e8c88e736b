"""The core plugin: the torch reference implementation of every op, the Llama-family
models and the quantization methods baseboard ships. Always loaded (it cannot be
disabled), through the same hooks as any plugin."""

from __future__ import annotations

from ..core.ops import OPS
from ..core.registry import REFERENCE_NAME, Impl
from ..plugins import hookimpl
from ..quantization.builtin import baseboard_quantization_methods  # noqa: F401 (hook)

BASEBOARD_CONTRACT = 1

# op -> "module:attribute" of its plain-torch reference (the op's meaning; every other
# implementation is checked against its signature and, in the kit, its results)
REFERENCES = {
    "rms_norm": "norm:rms_norm",
    "fused_add_rms_norm": "norm:fused_add_rms_norm",
    "rotary_embedding": "rotary:rotary_embedding",
    "silu_and_mul": "activation:silu_and_mul",
    "gemm": "gemm:Gemm",
    "gemm_w4a16": "quant_gemm:GemmW4A16",
    "gemm_w8a16": "quant_gemm:GemmW8A16",
    "gemm_w8a8_int8": "quant_gemm:GemmW8A8Int8",
    "gemm_w8a8_fp8": "quant_gemm:GemmW8A8Fp8",
    "gemm_w8a8_fp8_block": "quant_gemm:GemmW8A8Fp8Block",
    "attention": "attention:TorchAttention",
    "all_reduce": "collectives:all_reduce",
    "all_gather": "collectives:all_gather",
    "sample": "sampling:sample",
}


def reference_impls() -> list[Impl]:
    from ..kernels.torch.collectives import supports as collective_supports

    # the collectives need the platform's torch.distributed backend once there are ranks
    supports = {"all_reduce": collective_supports, "all_gather": collective_supports}
    # the attention reference loops over the step's context lengths on the host and makes
    # new index tensors each step: a captured graph would replay the capture's (freed) ones
    return [Impl(op=op, name=REFERENCE_NAME, loader=f"baseboard.kernels.torch.{REFERENCES[op]}",
                 priority=0, supports=supports.get(op), cuda_graph_safe=op != "attention",
                 doc="plain-torch reference implementation") for op in OPS]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return reference_impls()


@hookimpl
def baseboard_models() -> dict[str, str]:
    return {
        "LlamaForCausalLM": "baseboard.models.llama:LlamaForCausalLM",
        "MistralForCausalLM": "baseboard.models.llama:LlamaForCausalLM",
        "Qwen2ForCausalLM": "baseboard.models.llama:LlamaForCausalLM",
    }
