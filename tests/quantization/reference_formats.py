"""Independent readers of the GPTQ and AWQ layouts for the tests, written from the formats'
descriptions with plain index arithmetic (no code shared with baseboard), and a
transformers model over the weights they dequantize: the reference a quantized checkpoint
loaded by baseboard must match."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ: code j of a word is column AWQ_ORDER[j]


def field(words: torch.Tensor, index: torch.Tensor, bits: int) -> torch.Tensor:
    """The ``bits``-wide field ``index`` of each (unsigned) int32 word."""
    return (words.to(torch.int64) & 0xFFFFFFFF) >> (index * bits) & (2 ** bits - 1)


def gptq_dense(tensors: dict, module: str, bits: int, zero_offset: int = 1) -> torch.Tensor:
    """[N, K] float32 from a GPTQ layer: qweight packed along K, qzeros along N."""
    per_word = 32 // bits
    qweight, qzeros = tensors[f"{module}.qweight"], tensors[f"{module}.qzeros"]
    scales = tensors[f"{module}.scales"].float()
    k, n = qweight.shape[0] * per_word, qweight.shape[1]
    ks, ns = torch.arange(k), torch.arange(n)
    codes = field(qweight[ks // per_word], (ks % per_word)[:, None], bits)  # [K, N]
    zeros = field(qzeros[:, ns // per_word], ns % per_word, bits)  # [K/G, N]
    zeros = (zeros + zero_offset) % 2 ** bits
    group_size = k // scales.shape[0]
    g_idx = tensors.get(f"{module}.g_idx", ks // group_size).to(torch.int64)
    return ((codes - zeros[g_idx]) * scales[g_idx]).T.contiguous()


def awq_dense(tensors: dict, module: str) -> torch.Tensor:
    """[N, K] float32 from an AWQ GEMM layer: qweight [K, N/8] in AWQ's order."""
    qweight, qzeros = tensors[f"{module}.qweight"], tensors[f"{module}.qzeros"]
    scales = tensors[f"{module}.scales"].float()
    k, n = qweight.shape[0], qweight.shape[1] * 8
    ns = torch.arange(n)
    # column n sits in word n // 8, at the field j with AWQ_ORDER[j] == n % 8
    slot = torch.tensor([AWQ_ORDER.index(i) for i in range(8)])[ns % 8]
    codes = field(qweight[:, ns // 8], slot, 4)  # [K, N]
    zeros = field(qzeros[:, ns // 8], slot, 4)  # [K/G, N]
    group = torch.arange(k) // (k // scales.shape[0])
    return ((codes - zeros[group]) * scales[group]).T.contiguous()


def dense_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights with every quantized layer dequantized by the readers above."""
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    tensors = load_file(path / "model.safetensors")
    modules = {n.removesuffix(".qweight") for n in tensors if n.endswith(".qweight")}
    dense = {n: t for n, t in tensors.items() if n.rpartition(".")[0] not in modules
             or n.endswith(".bias")}
    for module in modules:
        if config["quant_method"] == "gptq":
            offset = 0 if config.get("checkpoint_format") == "gptq_v2" else 1
            dense[f"{module}.weight"] = gptq_dense(tensors, module, config["bits"], offset)
        else:
            dense[f"{module}.weight"] = awq_dense(tensors, module)
    return dense


def write_dense_checkpoint(path: Path, dst: Path) -> Path:
    """The quantized checkpoint ``path`` as a dense float32 one in ``dst``: its weights
    dequantized by the readers above, its config without quantization_config."""
    from safetensors.torch import save_file

    dst.mkdir(parents=True)
    config = json.loads((path / "config.json").read_text())
    config.pop("quantization_config")
    (dst / "config.json").write_text(json.dumps(config))
    tensors = {n: t.float().contiguous() for n, t in dense_state_dict(path).items()}
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def transformers_dense(path: Path):
    """transformers' float32 model of ``path`` with the dequantized weights, loaded from a
    dense checkpoint written beside it."""
    from transformers import AutoModelForCausalLM

    dense = write_dense_checkpoint(path, path.parent / f"{path.name}-dense")
    return AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
