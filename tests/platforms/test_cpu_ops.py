"""The cpu platform's native implementations against the torch references, over dtypes
and odd shapes; attention over mixed batches with cached prefixes and GQA."""

from __future__ import annotations

import random

import pytest
import torch

from baseboard.core.attention import AttentionBatch, AttentionSpec
from baseboard.core.sampling import SamplingTensors
from baseboard.kernels.torch import activation, gemm, norm, quant_gemm, rotary, sampling
from baseboard.kernels.torch.attention import TorchAttention
from baseboard.platforms.cpu import native

pytestmark = pytest.mark.skipif(native.unavailable_reason() is not None,
                                reason=str(native.unavailable_reason()))

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
# one unit in the last place of each dtype, relative; results may differ by a rounding
ULP = {torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10, torch.float32: 2 ** -22}


def close(got: torch.Tensor, want: torch.Tensor, ulps: float = 2.0) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = want.float().abs().amax().clamp(min=1e-6)
    err = (got.float() - want.float()).abs().amax()
    assert err <= ulps * ULP[want.dtype] * scale, f"max error {err} vs scale {scale}"


# ---- row-wise ops

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 896), (7, 33), (130, 576), (3, 1)])
def test_rms_norm(dtype, shape):
    from baseboard.platforms.cpu import rowwise
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[1], dtype=dtype)
    close(rowwise.rms_norm(x, w, 1e-6), norm.rms_norm(x, w, 1e-6))


def test_rms_norm_float32_weight_and_strided_rows():
    from baseboard.platforms.cpu import rowwise
    x = torch.randn(5, 200, dtype=torch.bfloat16)[:, 10:150]
    w = torch.randn(140)
    close(rowwise.rms_norm(x, w, 1e-5), norm.rms_norm(x, w, 1e-5))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 896), (9, 47), (64, 2048)])
def test_fused_add_rms_norm(dtype, shape):
    from baseboard.platforms.cpu import rowwise
    x, residual = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[1], dtype=dtype)
    want_normed, want_sum = norm.fused_add_rms_norm(x.clone(), residual.clone(), w, 1e-6)
    got_normed, got_sum = rowwise.fused_add_rms_norm(x, residual, w, 1e-6)
    assert torch.equal(got_sum, want_sum)  # the sum is one rounding, exactly the reference's
    close(got_normed, want_normed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2 * 4864), (5, 2 * 19), (100, 2 * 1536)])
def test_silu_and_mul(dtype, shape):
    from baseboard.platforms.cpu import rowwise
    x = torch.randn(shape, dtype=dtype) * 4
    close(rowwise.silu_and_mul(x), activation.silu_and_mul(x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens,heads,kv_heads,head_dim", [(1, 14, 2, 64), (6, 9, 3, 64),
                                                            (3, 4, 4, 40), (40, 8, 2, 128)])
def test_rotary_embedding_on_qkv_views(dtype, tokens, heads, kv_heads, head_dim):
    from baseboard.platforms.cpu import rowwise
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * head_dim, dtype=dtype)
    q = qkv[:, :heads * head_dim].view(tokens, heads, head_dim)
    k = qkv[:, heads * head_dim:(heads + kv_heads) * head_dim].view(tokens, kv_heads, head_dim)
    positions = torch.randint(0, 100, (tokens,))
    angles = torch.rand(100, head_dim // 2) * 6
    cache = torch.cat((angles.cos(), angles.sin()), dim=-1)
    want_q, want_k = rotary.rotary_embedding(positions, q.clone(), k.clone(), cache)
    got_q, got_k = rowwise.rotary_embedding(positions, q, k, cache)
    close(got_q, want_q)
    close(got_k, want_k)


# ---- GEMMs

@pytest.mark.parametrize("m,n,k", [(1, 1152, 896), (3, 70, 33), (8, 130, 64), (9, 64, 895),
                                   (1, 1, 1), (37, 200, 130)])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_float32(m, n, k, bias):
    from baseboard.platforms.cpu.gemm import Avx512Gemm
    w, x = torch.randn(n, k), torch.randn(m, k)
    b = torch.randn(n) if bias else None
    state = Avx512Gemm.prepare(w, b)
    close(Avx512Gemm.apply(state, x), gemm.Gemm.apply(gemm.Gemm.prepare(w, b), x), ulps=64)
    assert torch.equal(state.unpacked(), w)
    strided = torch.randn(m, k + 9)[:, 4:4 + k]
    close(Avx512Gemm.apply(state, strided),
          gemm.Gemm.apply(gemm.Gemm.prepare(w, b), strided), ulps=64)


@pytest.mark.parametrize("m,n,k", [(1, 1152, 896), (3, 70, 33), (8, 130, 64), (9, 64, 895),
                                   (1, 1, 1), (37, 200, 130)])
@pytest.mark.parametrize("bias", [False, True])
def test_gemm_bf16(m, n, k, bias):
    from baseboard.platforms.cpu.gemm import Avx512Gemm
    w = torch.randn(n, k, dtype=torch.bfloat16)
    b = torch.randn(n, dtype=torch.bfloat16) if bias else None
    x = torch.randn(m, k, dtype=torch.bfloat16)
    state = Avx512Gemm.prepare(w, b)
    ref = gemm.Gemm.prepare(w, b)
    # float32 sums in another order: a few bf16 roundings of the largest output
    close(Avx512Gemm.apply(state, x), gemm.Gemm.apply(ref, x), ulps=4)
    # out_dtype=float32 returns the float32 sums themselves, not rounded to bf16
    close(Avx512Gemm.apply(state, x, torch.float32),
          gemm.Gemm.apply(ref, x, torch.float32), ulps=64)
    assert torch.equal(state.unpacked(), w)


def test_gemm_strided_input_and_other_dtypes():
    from baseboard.platforms.cpu.gemm import Avx512Gemm
    w = torch.randn(96, 80, dtype=torch.bfloat16)
    state = Avx512Gemm.prepare(w, None)
    x = torch.randn(5, 200, dtype=torch.bfloat16)[:, 7:87]
    close(Avx512Gemm.apply(state, x), gemm.Gemm.apply(gemm.Gemm.prepare(w, None), x), 4)
    x32 = torch.randn(4, 80)  # bf16 weight met by float32 activations: the slow exact path
    close(Avx512Gemm.apply(state, x32), x32 @ w.float().T, 4)
    x3 = torch.randn(2, 3, 80, dtype=torch.bfloat16)  # leading dims, and a float16 result
    close(Avx512Gemm.apply(state, x3, torch.float16), (x3.float() @ w.float().T).half(), 4)
    w16 = torch.randn(96, 80, dtype=torch.float16)  # float16 weights: the reference path
    x16 = torch.randn(4, 80, dtype=torch.float16)
    state16 = Avx512Gemm.prepare(w16, None)
    close(Avx512Gemm.apply(state16, x16), (x16.float() @ w16.float().T).half(), 4)
    close(Avx512Gemm.apply(state16, x16, torch.float32), x16.float() @ w16.float().T, 64)


@pytest.mark.parametrize("group_size", [32, 64])
def test_gemm_w4a16(group_size):
    from baseboard.platforms.cpu.quant_gemm import DequantW4A16
    n, k = 136, 256
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    scales = torch.rand(n, k // group_size, dtype=torch.bfloat16) / 8
    offsets = -8 * scales
    bias = torch.randn(n, dtype=torch.bfloat16)
    x = torch.randn(3, k, dtype=torch.bfloat16)
    ref = quant_gemm.GemmW4A16
    want = ref.apply(ref.prepare(q, scales, offsets, group_size, bias), x)
    state = DequantW4A16.prepare(q, scales, offsets, group_size, bias)
    close(DequantW4A16.apply(state, x), want, ulps=4)
    want32 = ref.apply(ref.prepare(q, scales, offsets, group_size, bias), x, torch.float32)
    got32 = DequantW4A16.apply(state, x, torch.float32)
    assert got32.dtype == torch.float32
    # the weight was dequantized to bf16 (the reference keeps float32): bf16 precision
    close(got32.bfloat16(), want32.bfloat16(), ulps=4)


def test_gemm_w4a16_and_w8a16_float32_models_match_the_reference():
    """Float32 models (GGUF's default dtype) dequantize to float32 once: exact weights."""
    from baseboard.platforms.cpu.quant_gemm import DequantW4A16Float32, DequantW8A16Float32
    n, k, g = 40, 128, 32
    x = torch.randn(6, k)
    q4 = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    scales, offsets = torch.rand(n, k // g) / 8, torch.randn(n, k // g)
    ref4 = quant_gemm.GemmW4A16
    close(DequantW4A16Float32.apply(DequantW4A16Float32.prepare(q4, scales, offsets, g, None), x),
          ref4.apply(ref4.prepare(q4, scales, offsets, g, None), x), ulps=64)
    q8 = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    bias = torch.randn(n)
    ref8 = quant_gemm.GemmW8A16
    close(DequantW8A16Float32.apply(DequantW8A16Float32.prepare(q8, scales, g, bias), x),
          ref8.apply(ref8.prepare(q8, scales, g, bias), x), ulps=64)


@pytest.mark.parametrize("group_size", [32, 96])
def test_gemm_w8a16(group_size):
    from baseboard.platforms.cpu.quant_gemm import DequantW8A16
    n, k = 70, 96
    q = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    scales = torch.rand(n, k // group_size, dtype=torch.bfloat16) / 64
    x = torch.randn(9, k, dtype=torch.bfloat16)
    ref = quant_gemm.GemmW8A16
    want = ref.apply(ref.prepare(q, scales, group_size, None), x)
    got = DequantW8A16.apply(DequantW8A16.prepare(q, scales, group_size, None), x)
    close(got, want, ulps=4)


# ---- attention

def _spec(heads, kv_heads, head_dim, block_size, dtype):
    return AttentionSpec(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                         scale=head_dim ** -0.5, block_size=block_size, dtype=dtype,
                         device=torch.device("cpu"), max_num_seqs=16, max_model_len=512)


def _mixed_batch(query_lens, cached, block_size, num_blocks, rng):
    """Sequences with given new tokens over given cached prefixes, on shuffled blocks."""
    free = list(range(num_blocks))
    rng.shuffle(free)
    tables, slots, contexts = [], [], []
    for num_q, prefix in zip(query_lens, cached):
        context = prefix + num_q
        blocks = [free.pop() for _ in range(-(-context // block_size))]
        tables.append(blocks)
        contexts.append(context)
        slots += [blocks[p // block_size] * block_size + p % block_size
                  for p in range(prefix, context)]
    return AttentionBatch(query_lens=list(query_lens), context_lens=contexts,
                          block_tables=tables, slot_mapping=slots)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads,kv_heads,head_dim,block_size", [(14, 2, 64, 16), (9, 3, 64, 8),
                                                                (4, 4, 40, 5), (8, 1, 128, 32),
                                                                (12, 1, 256, 16)])
def test_attention_mixed_batch(dtype, heads, kv_heads, head_dim, block_size):
    from baseboard.platforms.cpu.attention import CpuPagedAttention
    rng = random.Random(0)
    # decodes first, then a prefill over a cached prefix, then fresh prefills
    query_lens, cached = [1, 1, 1, 13, 2, 17, 3], [0, 40, 9, 20, 5, 0, 0]
    spec = _spec(heads, kv_heads, head_dim, block_size, dtype)
    num_blocks = 64
    batch = _mixed_batch(query_lens, cached, block_size, num_blocks, rng)
    tokens = sum(query_lens)
    q = torch.randn(tokens, heads, head_dim, dtype=dtype)
    k = torch.randn(tokens, kv_heads, head_dim, dtype=dtype)
    v = torch.randn(tokens, kv_heads, head_dim, dtype=dtype)
    cache_ref = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, dtype=dtype)
    cache = cache_ref.clone()
    ref = TorchAttention(spec)
    want = ref.forward(q, k, v, cache_ref, ref.build_metadata(batch))
    impl = CpuPagedAttention(spec)
    assert impl.kv_cache_shape(num_blocks) == tuple(cache.shape)
    got = impl.forward(q, k, v, cache, impl.build_metadata(batch))
    assert torch.equal(cache, cache_ref)
    close(got, want, ulps=4)


def test_attention_decode_on_qkv_views_over_steps():
    """Decode steps on views of a fused qkv row, the cache carried from step to step."""
    from baseboard.platforms.cpu.attention import CpuPagedAttention
    heads, kv_heads, dim, bs = 6, 2, 64, 4
    spec = _spec(heads, kv_heads, dim, bs, torch.bfloat16)
    impl, ref = CpuPagedAttention(spec), TorchAttention(spec)
    cache = torch.zeros(impl.kv_cache_shape(8), dtype=torch.bfloat16)
    cache_ref = cache.clone()
    tables = [[5, 2, 7], [0, 3, 6]]
    for step in range(9):
        batch = AttentionBatch(query_lens=[1, 1], context_lens=[step + 1, step + 1],
                               block_tables=tables,
                               slot_mapping=[t[step // bs] * bs + step % bs for t in tables])
        qkv = torch.randn(2, (heads + 2 * kv_heads) * dim, dtype=torch.bfloat16)
        q = qkv[:, :heads * dim].view(2, heads, dim)
        k = qkv[:, heads * dim:(heads + kv_heads) * dim].view(2, kv_heads, dim)
        v = qkv[:, (heads + kv_heads) * dim:].view(2, kv_heads, dim)
        got = impl.forward(q, k, v, cache, impl.build_metadata(batch))
        want = ref.forward(q, k, v, cache_ref, ref.build_metadata(batch))
        close(got, want, ulps=4)
    assert torch.equal(cache, cache_ref)


# ---- sampling

def _greedy(rows: int) -> SamplingTensors:
    return SamplingTensors(torch.zeros(rows), torch.zeros(rows, dtype=torch.long),
                           torch.ones(rows), None, all_greedy=True)


@pytest.mark.parametrize("rows,vocab", [(1, 151936), (8, 49152), (3, 17), (2, 1)])
def test_sample_greedy_is_torch_argmax(rows, vocab):
    from baseboard.platforms.cpu.sampling import sample
    logits = torch.randn(rows, vocab)
    logits[0, vocab // 3] = logits[0, vocab // 2] = 50.0  # a tie: the first index wins
    logits[-1] = -logits[-1].abs() - 1  # all negative, past a whole vector
    assert torch.equal(sample(logits, _greedy(rows)), sampling.sample(logits, _greedy(rows)))


def test_sample_greedy_nan_and_infinities_like_torch():
    from baseboard.platforms.cpu.sampling import sample
    logits = torch.full((3, 40), float("-inf"))
    logits[1, 30], logits[1, 7] = float("nan"), 3.0
    logits[2, 5] = float("inf")
    assert torch.equal(sample(logits, _greedy(3)), logits.argmax(dim=-1))


def test_sample_non_greedy_rows_follow_the_reference():
    from baseboard.platforms.cpu.sampling import sample
    logits = torch.randn(4, 100)
    noise = torch.empty(4, 100).exponential_(generator=torch.Generator().manual_seed(0))
    params = SamplingTensors(torch.tensor([0.0, 0.7, 1.0, 0.0]), torch.tensor([0, 5, 0, 0]),
                             torch.tensor([1.0, 1.0, 0.9, 1.0]), noise, all_greedy=False)
    assert torch.equal(sample(logits, params), sampling.sample(logits, params))


def _penalised(rows: int, vocab: int, all_greedy: bool, noise=None) -> SamplingTensors:
    """Every row has its argmax in the prompt under a repetition penalty of 100, and a
    second token generated twice with a frequency penalty of -50."""
    return SamplingTensors(
        torch.zeros(rows) if all_greedy else torch.full((rows,), 0.8),
        torch.zeros(rows, dtype=torch.long), torch.ones(rows), noise, all_greedy=all_greedy,
        min_p=None if all_greedy else torch.full((rows,), 0.1),
        presence_penalty=torch.full((rows,), 0.5), frequency_penalty=torch.full((rows,), -50.0),
        repetition_penalty=torch.full((rows,), 100.0),
        output_counts=torch.zeros(rows, vocab, dtype=torch.int32),
        prompt_mask=torch.zeros(rows, vocab, dtype=torch.bool))


@pytest.mark.parametrize("all_greedy", [True, False], ids=["greedy", "sampled"])
def test_sample_applies_penalties(all_greedy):
    """A greedy step with penalties must not take the native argmax of the raw logits."""
    from baseboard.platforms.cpu.sampling import sample
    rows, vocab = 5, 4099
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(rows, vocab, generator=gen) * 2
    noise = torch.empty(rows, vocab).exponential_(generator=gen)
    params = _penalised(rows, vocab, all_greedy, noise)
    top = logits.argmax(dim=-1)
    params.prompt_mask[torch.arange(rows), top] = True
    # positive, so the repetition penalty divides it: 1 / 100 + 2 * 50 - 0.5 beats every logit
    logits[torch.arange(rows), (top + 1) % vocab] = 1.0
    params.output_counts[torch.arange(rows), (top + 1) % vocab] = 2
    got = sample(logits, params)
    assert torch.equal(got, sampling.sample(logits, params))
    if all_greedy:  # the penalised argmax is known: the generated token
        assert torch.equal(got, (top + 1) % vocab)
    assert not torch.equal(got, top)


# ---- the two bindings

def test_ctypes_binding_matches_the_extension_module():
    """Without the Python headers the kernels load through ctypes: same functions, same
    arguments, same results."""
    lib = native.library()
    if not hasattr(lib, "__file__"):
        pytest.skip("the extension module is not built here (no Python headers)")
    fallback = native.ctypes_library()
    x = torch.randn(5, 300, dtype=torch.bfloat16)
    w = torch.randn(300, dtype=torch.bfloat16)
    outs = []
    for binding in (lib, fallback):
        out = torch.empty_like(x)
        binding.bb_rms_norm(x.data_ptr(), 300, out.data_ptr(), 300, w.data_ptr(), 5, 300, 1e-6,
                            0, 0, 1)
        packed = torch.empty(10 * 150 * 64, dtype=torch.bfloat16)
        weight = torch.randn(300, 300, dtype=torch.bfloat16)
        binding.bb_gemm_pack(weight.data_ptr(), 300, 300, 300, packed.data_ptr(), 1)
        y = torch.empty(5, 300, dtype=torch.float32)
        binding.bb_gemm(x.data_ptr(), 300, packed.data_ptr(), None, y.data_ptr(), 300, 5, 300,
                        300, 1, 1)
        outs.append((out, y, weight))
    assert torch.equal(outs[0][0], outs[1][0])
    for out, y, weight in outs:
        close(y, x.float() @ weight.float().T, ulps=64)


def test_extension_module_rejects_bad_arguments_before_running():
    lib = native.library()
    if not hasattr(lib, "__file__"):
        pytest.skip("the extension module is not built here (no Python headers)")
    with pytest.raises(TypeError, match="takes 6 arguments"):
        lib.bb_argmax(0, 1, 1)
    with pytest.raises(TypeError):
        lib.bb_argmax("not a pointer", 1, 1, 1, 0, 1)
