"""GGUF Q4_K and Q6_K (the K-quants of Q4_K_M files) run quantized: their records against
gguf's own dequantization bit for bit, through the cpu platform's quantized GEMMs, and a
tiny Q4_K_M-style model's greedy tokens against the same model stored dequantized."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baseboard.models.loader import load_checkpoint
from baseboard.quantization import GroupQuantized
from baseboard.quantization.gguf.blocks import QUANTIZED_TYPES, SCHEMES, decode_quantized
from tiny_models import gguf_name, llama_cpp_permute, tiny_hf_model, write_gguf

gguf = pytest.importorskip("gguf")  # optional: the gguf extra installs it

SCALE_BYTES = {"Q4_K": (0, 2), "Q6_K": (208,)}  # where each block's float16 scales sit


def kquant_blocks(type_name: str, rows: int, blocks: int, rng) -> np.ndarray:
    """Raw super-blocks with random codes, sub-block scales and mins, and small random
    float16 super-scales (so the weights are of order 0.1): [rows, blocks * bytes]."""
    size = QUANTIZED_TYPES[type_name]
    raw = rng.integers(0, 256, size=(rows, blocks, size), dtype=np.uint8)
    for start in SCALE_BYTES[type_name]:
        d = np.abs(rng.normal(0, 0.002, size=(rows, blocks, 1))).astype(np.float16)
        raw[..., start:start + 2] = d.view(np.uint8)
    return raw.reshape(rows, -1)


def _fp16(values: np.ndarray) -> np.ndarray:
    """[..., 1] float -> [..., 2] the bytes of its float16."""
    return values.astype(np.float16).view(np.uint8)


def quantize_q4_k(weights: np.ndarray) -> np.ndarray:
    """Round-to-nearest Q4_K encoding of [N, K] float32 (gguf cannot quantize K-quants):
    per sub-block of 32 a scale and a min, both 6-bit multiples of the super-block's d and
    dmin. Returns [N, K/256 * 144] bytes."""
    n, k = weights.shape
    w = weights.reshape(n, k // 256, 8, 32)
    low = np.minimum(w.min(-1), 0)
    scale, minimum = (w.max(-1) - low) / 15, -low  # [N, B, 8]
    d = np.maximum(scale.max(-1, keepdims=True), 1e-8) / 63
    dmin = np.maximum(minimum.max(-1, keepdims=True), 1e-8) / 63
    d, dmin = d.astype(np.float16).astype(np.float32), dmin.astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / d), 1, 63).astype(np.uint8)
    m = np.clip(np.round(minimum / dmin), 0, 63).astype(np.uint8)
    q = np.clip(np.round((w + (dmin * m)[..., None]) / (d * sc)[..., None]), 0, 15)
    q = q.astype(np.uint8).reshape(n, k // 256, 4, 2, 32)
    packed = np.concatenate([sc[..., :4] | (sc[..., 4:] >> 4) << 6,
                             m[..., :4] | (m[..., 4:] >> 4) << 6,
                             (sc[..., 4:] & 15) | (m[..., 4:] & 15) << 4], axis=-1)
    codes = (q[..., 0, :] | q[..., 1, :] << 4).reshape(n, k // 256, 128)
    return np.concatenate([_fp16(d), _fp16(dmin), packed, codes], axis=-1).reshape(n, -1)


def quantize_q6_k(weights: np.ndarray) -> np.ndarray:
    """Round-to-nearest Q6_K encoding of [N, K] float32: per sub-block of 16 an int8
    multiple of the super-block's d, codes -32..31. Returns [N, K/256 * 210] bytes."""
    n, k = weights.shape
    w = weights.reshape(n, k // 256, 16, 16)
    scale = np.abs(w).max(-1) / 31  # [N, B, 16]
    d = np.maximum(scale.max(-1, keepdims=True), 1e-8) / 127
    d = d.astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(scale / d), 1, 127).astype(np.int8)
    q = np.clip(np.round(w / (d * sc)[..., None]), -32, 31).astype(np.int16) + 32
    u = q.astype(np.uint8).reshape(n, k // 256, 2, 4, 32)  # [half, run, 32]
    low, high = u & 15, u >> 4
    ql = np.concatenate([low[..., 0, :] | low[..., 2, :] << 4,
                         low[..., 1, :] | low[..., 3, :] << 4], axis=-1)  # [N, B, 2, 64]
    qh = high[..., 0, :] | high[..., 1, :] << 2 | high[..., 2, :] << 4 | high[..., 3, :] << 6
    return np.concatenate([ql.reshape(n, k // 256, 128), qh.reshape(n, k // 256, 64),
                           sc.view(np.uint8), _fp16(d)], axis=-1).reshape(n, -1)


QUANTIZE = {"Q4_K": quantize_q4_k, "Q6_K": quantize_q6_k}


@pytest.mark.parametrize("type_name", ["Q4_K", "Q6_K"])
def test_the_test_encoders_round_trip_through_gguf(type_name):
    weights = np.random.default_rng(5).normal(size=(6, 512)).astype(np.float32)
    data = QUANTIZE[type_name](weights)
    assert data.shape == (6, 2 * QUANTIZED_TYPES[type_name])
    back = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])
    assert np.abs(back - weights).max() < (0.5 if type_name == "Q4_K" else 0.15)
    record = decode_quantized(data, type_name)
    torch.testing.assert_close(record.dequantize(), torch.from_numpy(back), atol=0, rtol=0)


@pytest.mark.parametrize("type_name", ["Q4_K", "Q6_K"])
def test_kquant_blocks_decode_exactly_as_gguf_dequantizes(type_name):
    data = kquant_blocks(type_name, rows=12, blocks=3, rng=np.random.default_rng(0))
    record = decode_quantized(data, type_name)
    want = torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name]))
    assert record.shape == (12, 3 * 256)
    assert record.scheme == SCHEMES[type_name] and record.scheme.op == record.op
    if type_name == "Q4_K":
        assert record.op == "gemm_w4a16" and record.group_size == 32
        assert record.qweight.dtype == torch.uint8 and int(record.qweight.max()) <= 15
        assert record.offsets.shape == record.scales.shape == (12, 24)
    else:
        assert record.op == "gemm_w8a16" and record.group_size == 16 and record.offsets is None
        assert record.qweight.dtype == torch.int8
        assert -32 <= int(record.qweight.min()) and int(record.qweight.max()) <= 31
        assert record.scales.shape == (12, 48)
    # float32 products of a float16 and a small integer are exact: bit for bit
    torch.testing.assert_close(record.dequantize(), want, atol=0, rtol=0)


@pytest.mark.parametrize("type_name", ["Q4_K", "Q6_K"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kquant_records_run_through_the_cpu_quantized_gemms(type_name, dtype):
    from baseboard.frontend.plan import resolve_plan
    from baseboard.platforms.cpu import native

    if native.unavailable_reason() is not None:
        pytest.skip(native.unavailable_reason())
    record = decode_quantized(kquant_blocks(type_name, 40, 2, np.random.default_rng(1)),
                              type_name)
    plan = resolve_plan(platform="cpu", dtype=dtype, quant_schemes=(record.scheme,)).plan
    impl = plan.impl(record.op)
    assert plan.selected()[record.op] == ("avx512_f32" if dtype == torch.float32 else "avx512_bf16")
    x = torch.randn(3, 512).to(dtype)
    got = impl.apply(record.prepare(impl, None), x, torch.float32)
    want = x.float() @ record.dequantize().T
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def q4_k_m_types(name: str) -> str:
    """llama.cpp's Q4_K_M mix, roughly: Q6_K for v, down and the output layer."""
    return "Q6_K" if any(p in name for p in ("v_proj", "down_proj", "lm_head")) else "Q4_K"


def write_kquant_pair(tmp_path):
    """A tiny model written twice: its matrices quantized to Q4_K/Q6_K, and as F32 holding
    the gguf package's dequantization of those same blocks."""
    hf = tiny_hf_model("LlamaForCausalLM", hidden_size=256, intermediate_size=512,
                       num_attention_heads=4, num_key_value_heads=2)
    quantized, dense = {}, {}
    for name, tensor in hf.state_dict().items():
        if tensor.dim() != 2:
            continue
        type_name = "Q4_K" if name == "model.embed_tokens.weight" else q4_k_m_types(name)
        data = tensor.float().numpy()
        if ".q_proj." in name or ".k_proj." in name:  # stored as llama.cpp orders the rows
            heads = hf.config.num_attention_heads if ".q_proj." in name else \
                hf.config.num_key_value_heads
            data = llama_cpp_permute(data, heads)
        blocks = QUANTIZE[type_name](data)
        quantized[gguf_name(name)] = (blocks, type_name)
        dense[gguf_name(name)] = (
            gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[type_name]), "F32")
    return (write_gguf(hf, tmp_path / "q4_k_m.gguf", lambda name: "F32", raw_tensors=quantized),
            write_gguf(hf, tmp_path / "dense.gguf", lambda name: "F32", raw_tensors=dense))


def test_q4_k_m_records_and_schemes(tmp_path, resolution):
    path, _ = write_kquant_pair(tmp_path)
    checkpoint = load_checkpoint(path, resolution.catalog)
    assert set(checkpoint.quant_schemes) == {SCHEMES["Q4_K"], SCHEMES["Q6_K"]}
    weights = dict(checkpoint.weights())
    q, v = (weights[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qv")
    assert isinstance(q, GroupQuantized) and q.scheme == SCHEMES["Q4_K"]
    assert isinstance(v, GroupQuantized) and v.scheme == SCHEMES["Q6_K"]
    assert weights["lm_head.weight"].op == "gemm_w8a16"
    assert weights["model.embed_tokens.weight"].dtype == torch.float32  # dense for lookup


@pytest.mark.slow
def test_q4_k_m_greedy_tokens_equal_the_dequantized_model(tmp_path):
    from baseboard import LLM, SamplingParams

    quantized, dense = write_kquant_pair(tmp_path)
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, detokenize=False)
    prompts = [{"prompt_token_ids": [3, 17, 200, 45, 9]}, {"prompt_token_ids": [7, 7, 100]}]
    runs = {}
    for name, path in (("quantized", quantized), ("dense", dense)):
        llm = LLM(str(path), platform="cpu", max_num_seqs=2, max_model_len=64, seed=0,
                  skip_tokenizer_init=True)
        assert llm.config.dtype == torch.float32
        runs[name] = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        if name == "quantized":  # the K-quant layers ran the quantized kernel
            assert llm.plan.selected()["gemm_w4a16"] == "avx512_f32"
            assert llm.plan.selected()["gemm_w8a16"] == "avx512_f32"
    assert runs["quantized"] == runs["dense"]


def test_every_supported_type_is_dense_quantized_or_dequantized():
    from baseboard.quantization.gguf.blocks import DENSE_TYPES, DEQUANTIZED_TYPES, SUPPORTED_TYPES
    assert sorted(SUPPORTED_TYPES) == sorted([*DENSE_TYPES, *QUANTIZED_TYPES, *DEQUANTIZED_TYPES])
