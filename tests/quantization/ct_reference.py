"""Tiny compressed-tensors and fp8 checkpoints for the tests, and an independent reader of
their layouts written from the formats' descriptions with plain index arithmetic (no code
shared with baseboard's reader): the dense weights a loaded checkpoint must match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file

from baseboard.quantization import compressed_tensors, fp8
from tiny_models import save_tiny


def is_decoder_linear(name: str, tensor: torch.Tensor) -> bool:
    return name.startswith("model.layers.") and name.endswith(".weight") and tensor.dim() == 2


def write_checkpoint(model, path: Path, quantize: Callable[..., dict],
                     quantization_config: dict) -> Path:
    """``model`` saved to ``path`` with each decoder linear weight replaced by the tensors
    ``quantize(weight)`` (or ``quantize(name, weight)`` if it takes two arguments) returns
    by suffix, and ``quantization_config`` in config.json."""
    takes_name = quantize.__code__.co_argcount == 2
    save_tiny(model, path)
    tensors = {}
    for name, weight in model.state_dict().items():
        if not is_decoder_linear(name, weight):
            tensors[name] = weight.contiguous()
            continue
        module = name.removesuffix(".weight")
        parts = quantize(name, weight) if takes_name else quantize(weight)
        tensors.update({f"{module}.{part}": t for part, t in parts.items()})
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (path / "config.json").write_text(json.dumps(config))
    return path


def write_compressed(model, path: Path, scheme: str, group_size: Optional[int] = 32,
                     symmetric: bool = True) -> Path:
    return write_checkpoint(
        model, path,
        lambda w: compressed_tensors.quantize_weight(w, scheme, group_size, symmetric),
        compressed_tensors.quantization_config(scheme, group_size, symmetric))


def write_compressed_blocks(model, path: Path, block_size: tuple[int, int]) -> Path:
    """llm-compressor's FP8_BLOCK layout with ``block_size`` blocks."""
    return write_checkpoint(
        model, path,
        lambda w: compressed_tensors.quantize_weight(w, "fp8-block", block_size=block_size),
        compressed_tensors.quantization_config("fp8-block", block_size=block_size))


def write_fp8(model, path: Path, block_size: Optional[tuple[int, int]]) -> Path:
    return write_checkpoint(model, path, lambda w: fp8.quantize_weight(w, block_size),
                            fp8.quantization_config(block_size))


def field(words: torch.Tensor, index: torch.Tensor, bits: int) -> torch.Tensor:
    """Field ``index`` (``bits`` wide, counted from the lowest bits) of each int32 word."""
    return (words.to(torch.int64) & 0xFFFFFFFF) >> (index * bits) & (2 ** bits - 1)


def packed_dense(parts: dict[str, torch.Tensor], bits: int, group_size: Optional[int]
                 ) -> torch.Tensor:
    """[N, K] float32 of a pack-quantized layer: code k of row n is field k % (32/b) of word
    k // (32/b), stored as q + 2**(b-1); zero points likewise, packed down the rows."""
    per_word, middle = 32 // bits, 2 ** (bits - 1)
    n, k = parts["weight_shape"].tolist()
    ks, ns = torch.arange(k), torch.arange(n)
    q = field(parts["weight_packed"][:, ks // per_word], ks % per_word, bits) - middle
    scale = parts["weight_scale"].float()
    group = parts["weight_g_idx"].long() if "weight_g_idx" in parts else ks // (group_size or k)
    zp = parts.get("weight_zero_point")
    if zp is not None and zp.dtype == torch.int8:  # older versions: signed, unpacked
        zero = zp.long()
    elif zp is not None:
        zero = field(zp[ns // per_word], (ns % per_word)[:, None], bits) - middle  # [N, S]
    else:
        zero = torch.zeros_like(scale)
    return (q - zero[:, group]) * scale[:, group]


def write_compressed_act_order(model, path: Path, group_size: int, symmetric: bool) -> Path:
    """W4A16 as GPTQ with actorder "group" stores it: each layer's groups are runs of a
    permutation of its inputs (the same for layers reading the same input), and
    weight_g_idx gives each input's group."""
    from baseboard.quantization.rtn import quantize_rtn
    from quantized_models import act_order_perm

    def quantize(name: str, weight: torch.Tensor) -> dict:
        q = quantize_rtn(weight, 4, group_size, symmetric,
                         act_order_perm(name, weight.shape[1], shared=True))
        tensors = compressed_tensors.pack_quantized(q.codes, q.scales, 4,
                                                    None if symmetric else q.zeros)
        return {**tensors, "weight_g_idx": q.g_idx.to(torch.int32)}

    config = compressed_tensors.quantization_config("w4a16", group_size, symmetric)
    config["config_groups"]["group_0"]["weights"]["actorder"] = "group"
    return write_checkpoint(model, path, quantize, config)


def unpacked_dense(parts: dict[str, torch.Tensor], block: Optional[list[int]] = None,
                   scale_part: str = "weight_scale") -> torch.Tensor:
    """[N, K] float32 of a layer stored as int8 or float8 codes: scale per tensor, per row,
    per group of columns, or per [BN, BK] block."""
    codes, scale = parts["weight"].float(), parts[scale_part].float()
    n, k = codes.shape
    if block:
        rows = torch.arange(n) // block[0]
        cols = torch.arange(k) // block[1]
        return codes * scale[rows[:, None], cols[None, :]]
    if scale.numel() == 1:
        return codes * scale.reshape(())
    scale = scale.reshape(n, -1)
    return codes * scale[:, torch.arange(k) // (k // scale.shape[1])]


def dense_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights with every quantized layer dequantized by the readers above
    (compressed-tensors with one config group, or the fp8 method)."""
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    tensors = load_file(path / "model.safetensors")
    modules = {n.rpartition(".")[0] for n in tensors
               if n.endswith((".weight_scale", ".weight_scale_inv"))}
    dense = {n: t for n, t in tensors.items() if n.rpartition(".")[0] not in modules}
    for module in modules:
        parts = {n.rpartition(".")[2]: t for n, t in tensors.items()
                 if n.rpartition(".")[0] == module}
        if config["quant_method"] == "fp8":
            block = config.get("weight_block_size")
            weight = unpacked_dense(parts, block, "weight_scale_inv" if block else "weight_scale")
        else:
            (group,) = config["config_groups"].values()
            args = group["weights"]
            if "weight_packed" in parts:
                size = args["group_size"] if args["strategy"] == "group" else None
                weight = packed_dense(parts, args["num_bits"], size)
            else:
                weight = unpacked_dense(parts, args.get("block_structure"))
        dense[f"{module}.weight"] = weight
    return dense


def fake_quantize_per_token(x: torch.Tensor, codes: str) -> torch.Tensor:
    """x with each row rounded to int8 (scale amax/127) or float8_e4m3fn (amax/448) codes
    and scaled back: what a W8A8 layer multiplies. "fp8/G": each run of G inputs of a row
    has its own scale (block-scaled FP8)."""
    if codes.startswith("fp8/"):
        size = int(codes[4:])
        groups = x.unflatten(-1, (x.shape[-1] // size, size))
        return fake_quantize_per_token(groups, "fp8").flatten(-2)
    if codes == "int8":
        scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 127
        return torch.round(x / scale).clamp(-128, 127) * scale
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / 448
    return (x / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale


def transformers_dense(path: Path, activations: Optional[str] = None):
    """A float32 transformers model of ``path`` with the dequantized weights; with
    ``activations`` ("int8", "fp8" or "fp8/G") the decoder layers' linear inputs are
    quantized per token as well, as the checkpoint's W8A8 layers run."""
    import transformers

    config = json.loads((path / "config.json").read_text())
    config.pop("quantization_config")
    hf_config = transformers.AutoConfig.for_model(**config)
    model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    state = {n: t.float() for n, t in dense_state_dict(path).items()}
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}, result
    model.tie_weights()
    if activations:
        for name, module in model.named_modules():
            if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear):
                module.register_forward_pre_hook(
                    lambda _, args: (fake_quantize_per_token(args[0], activations),))
    return model.eval()
