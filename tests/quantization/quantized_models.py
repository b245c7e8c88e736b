"""Tiny random models written as GPTQ or AWQ checkpoints, including the act-order layouts
``baseboard quantize`` does not write (each layer's groups follow a permutation of its
inputs, as GPTQ's desc_act makes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from baseboard.quantization import awq, gptq
from baseboard.quantization.packing import pack_int32
from baseboard.quantization.quantize import is_quantized_layer
from baseboard.quantization.rtn import quantize_rtn
from tiny_models import save_tiny

# the input a layer reads: q/k/v share one, gate/up another (and so share GPTQ's Hessian)
SHARED_INPUT = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up",
                "up_proj": "gate_up"}


def act_order_perm(name: str, k: int, shared: bool) -> torch.Tensor:
    """A permutation of the K inputs, the same for layers reading the same input when
    ``shared`` (as GPTQ computes it from their common Hessian), else one per layer."""
    module = name.removesuffix(".weight")
    parent, _, leaf = module.rpartition(".")
    key = f"{parent}.{SHARED_INPUT.get(leaf, leaf)}" if shared else module
    generator = torch.Generator().manual_seed(sum(map(ord, key)) * 7919)
    return torch.randperm(k, generator=generator)


def write_quantized(model, path: Path, method: str, bits: int = 4, group_size: int = 32,
                    sym: bool = True, act_order: Optional[str] = None,
                    checkpoint_format: str = "gptq") -> Path:
    """``model`` saved to ``path`` with its decoder layers' weights quantized (RTN) into
    ``method``'s layout. ``act_order``: None, "shared" or "per-layer" permutations."""
    save_tiny(model, path)
    tensors = {}
    for name, weight in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # the embedding itself, which save_pretrained leaves out too
        if not is_quantized_layer(name, tuple(weight.shape)):
            tensors[name] = weight.contiguous()
            continue
        k = weight.shape[1]
        size = k if group_size == -1 else group_size
        perm = act_order_perm(name, k, act_order == "shared") if act_order else None
        q = quantize_rtn(weight, bits, size, sym, perm)
        if method == "awq":
            parts = awq.pack(q.codes, q.scales, q.zeros)
        else:
            parts = gptq.pack(q.codes, q.scales, q.zeros, q.g_idx, bits)
            if checkpoint_format == "gptq_v2":  # zero points stored as they are
                parts["qzeros"] = pack_int32(q.zeros.T, bits, dim=1).contiguous()
        module = name.removesuffix(".weight")
        tensors.update({f"{module}.{part}": t for part, t in parts.items()})
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    if method == "awq":
        config["quantization_config"] = {"quant_method": "awq", "bits": 4,
                                         "group_size": group_size, "zero_point": True,
                                         "version": "gemm"}
    else:
        config["quantization_config"] = {"quant_method": "gptq", "bits": bits,
                                         "group_size": group_size, "sym": sym,
                                         "desc_act": act_order is not None,
                                         "checkpoint_format": checkpoint_format}
    (path / "config.json").write_text(json.dumps(config))
    return path
