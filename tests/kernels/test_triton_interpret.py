"""Every Triton kernel against the torch reference, on the CPU in Triton's interpreter.

TRITON_INTERPRET must be set before triton is imported (triton.language's own helpers are
decorated then) and before each kernel module is: this module sets it while it is collected,
and the triton_interpreter fixture (tests/conftest.py) sets it while its tests run.
Shapes are small and odd.
"""

from __future__ import annotations

import os

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs the kernels for real: tests/*/test_*_gpu.py
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

import dataclasses  # noqa: E402
import random  # noqa: E402

tl = pytest.importorskip("triton.language")  # optional: the cuda extra installs it

from baseboard.builtin import plugin as core_plugin  # noqa: E402
from baseboard.core.attention import AttentionBatch, AttentionSpec  # noqa: E402
from paged_batches import make_batch  # noqa: E402
from baseboard.core.errors import BaseboardError, SelectionError  # noqa: E402
from baseboard.core.registry import Registry  # noqa: E402
from baseboard.core.sampling import SamplingTensors, token_counts  # noqa: E402
from baseboard.core.selection import Choice, SelectionContext, select_plan  # noqa: E402
from baseboard.kernels.torch import activation, gemm, norm, rotary, sampling  # noqa: E402
from baseboard.kernels.torch.attention import TorchAttention  # noqa: E402
from baseboard.kernels.torch.attention import write_kv as reference_write_kv  # noqa: E402
from baseboard.kernels.triton import activation as triton_activation  # noqa: E402
from baseboard.kernels.triton import attention as triton_attention  # noqa: E402
from baseboard.kernels.triton import gemm as triton_gemm  # noqa: E402
from baseboard.kernels.triton import kv_cache as triton_kv_cache  # noqa: E402
from baseboard.kernels.triton import norm as triton_norm  # noqa: E402
from baseboard.kernels.triton import prefill_tiled  # noqa: E402
from baseboard.kernels.triton import rotary as triton_rotary  # noqa: E402
from baseboard.kernels.triton import sampling as triton_sampling  # noqa: E402
from baseboard.kernels.triton.records import triton_impls  # noqa: E402
from baseboard.platforms.cpu.platform import CpuPlatform  # noqa: E402
from baseboard.frontend.plan import resolve_plan  # noqa: E402

if type(tl.sum).__name__ != "InterpretedFunction":
    pytest.fail("triton was imported (by a module collected earlier) before this module set "
                "TRITON_INTERPRET=1, so its kernels cannot run in the interpreter. Set "
                "TRITON_INTERPRET=1 in the environment, or before that import.", pytrace=False)

pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("triton_interpreter")]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# the interpreter rounds float32 -> bfloat16 by truncation (the GPU rounds to nearest)
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.isfinite(got.float()).all(), "unwritten or NaN elements"
    error = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert error < RTOL[dtype], f"relative error {error:.2e} over {RTOL[dtype]:.0e}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_matches_reference_on_strided_rows(dtype):
    wide = torch.randn(7, 130, dtype=dtype)
    x, weight = wide[:, :96], torch.randn(96, dtype=dtype)  # rows 130 apart, K = 96
    assert_close(triton_norm.rms_norm(x, weight, 1e-6), norm.rms_norm(x, weight, 1e-6),
                 dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rms_norm_writes_sum_and_norm_in_place(dtype):
    x, residual = torch.randn(7, 96, dtype=dtype), torch.randn(7, 96, dtype=dtype)
    weight = torch.randn(96, dtype=dtype)
    want_normed, want_sum = norm.fused_add_rms_norm(x, residual, weight, 1e-5)
    normed, summed = triton_norm.fused_add_rms_norm(x, residual, weight, 1e-5)
    assert normed.data_ptr() == x.data_ptr() and summed.data_ptr() == residual.data_ptr()
    assert_close(summed, want_sum, dtype)
    assert_close(normed, want_normed, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 80])
def test_rotary_rotates_strided_q_and_k_in_place(dtype, head_dim):
    tokens, q_heads, k_heads = 7, 3, 1
    qkv = torch.randn(tokens, (q_heads + 2 * k_heads) * head_dim, dtype=dtype)
    untouched_v = qkv[:, (q_heads + k_heads) * head_dim:].clone()
    q = qkv[:, :q_heads * head_dim].view(tokens, q_heads, head_dim)
    k = qkv[:, q_heads * head_dim:(q_heads + k_heads) * head_dim].view(tokens, k_heads, head_dim)
    positions = torch.randint(0, 40, (tokens,))
    cache = torch.randn(40, head_dim)
    want_q, want_k = rotary.rotary_embedding(positions, q, k, cache)
    got_q, got_k = triton_rotary.rotary_embedding(positions, q, k, cache)
    assert got_q.data_ptr() == q.data_ptr()
    assert_close(q, want_q, dtype)
    assert_close(k, want_k, dtype)
    assert torch.equal(qkv[:, (q_heads + k_heads) * head_dim:], untouched_v)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inner", [80, 1100])  # one column program, and two
def test_silu_and_mul(dtype, inner):
    x = torch.randn(3, 2 * inner, dtype=dtype)
    assert_close(triton_activation.silu_and_mul(x), activation.silu_and_mul(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,bias", [(7, 1024, False), (9, 1500, True), (4, 2048, True)])
def test_gemv_matches_reference(dtype, n, k, bias):
    """One row through the GEMV: N not a multiple of the tile's rows, K a multiple of its
    columns or not (the unmasked and the masked loop)."""
    gen = torch.Generator().manual_seed(n * k)
    weight = torch.randn(n, k, generator=gen).to(dtype)
    state = gemm.Gemm.prepare(weight, torch.randn(n, generator=gen).to(dtype) if bias else None)
    x = torch.randn(1, k, generator=gen).to(dtype)
    assert_close(triton_gemm.Gemm.apply(state, x), gemm.Gemm.apply(state, x), dtype)


def test_write_kv_scatters_and_skips_negative_slots():
    k, v = torch.randn(5, 3, 80), torch.randn(5, 3, 80)
    cache = torch.full((2, 4, 16, 3, 80), float("nan"))
    slots = torch.tensor([17, 3, -1, 63, 40])
    triton_kv_cache.write_kv(k, v, cache, slots)
    want = torch.full_like(cache, float("nan"))
    keep = slots >= 0
    reference_write_kv(k[keep], v[keep], want, slots[keep])
    assert torch.equal(cache.nan_to_num(-7.0), want.nan_to_num(-7.0))


def poisoned_cache(shape, batch: AttentionBatch, block_size: int, dtype) -> torch.Tensor:
    """NaN everywhere but the cached prefix of each sequence (random there)."""
    cache = torch.full(shape, float("nan"), dtype=dtype)
    for query_len, context, table in zip(batch.query_lens, batch.context_lens,
                                         batch.block_tables):
        for p in range(context - query_len):
            cache[:, table[p // block_size], p % block_size] = torch.randn(shape[3:], dtype=dtype)
    return cache


def run_step(spec, triton_attention, batch, cache, dtype):
    tokens = len(batch.slot_mapping)
    # q, k, v as strided views of one projection, as a model produces them
    qkv = torch.randn(tokens, spec.num_heads + 2 * spec.num_kv_heads, spec.head_dim,
                      dtype=dtype)
    q, k, v = qkv.split([spec.num_heads, spec.num_kv_heads, spec.num_kv_heads], dim=1)
    reference = TorchAttention(spec)
    want_cache = cache.clone()
    want = reference.forward(q, k, v, want_cache, reference.build_metadata(batch))
    got = triton_attention.forward(q, k, v, cache, triton_attention.build_metadata(batch))
    assert_close(got, want, dtype)
    assert torch.equal(cache.nan_to_num(-7.0), want_cache.nan_to_num(-7.0))


ATTENTION_CASES = [
    # dtype, q heads, kv heads, head_dim, block_size, query_lens, context_lens
    (torch.float32, 4, 2, 64, 16, [1, 1, 7, 20], [50, 130, 7, 90]),  # GQA, cached prefixes
    (torch.float16, 4, 1, 128, 32, [1, 1, 9], [200, 33, 75]),  # MQA
    (torch.bfloat16, 2, 2, 80, 16, [1, 13, 150], [40, 13, 170]),  # padded D, 2 query tiles
    (torch.float16, 6, 2, 64, 32, [5, 1], [5, 1]),  # group of 3 (padded), prefills only
    (torch.bfloat16, 8, 2, 128, 16, [1, 1, 1], [1, 65, 300]),  # decodes only
    (torch.bfloat16, 4, 2, 80, 16, [1, 150, 9], [33, 150, 9]),  # prefills from 0: dense
    # blocks of 64: cached prefixes read a whole key tile per block lookup
    (torch.float16, 6, 2, 80, 64, [1, 70, 3, 40], [90, 200, 67, 40]),
]


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: f"{c[0]}-{c[1]}x{c[2]}-d{c[3]}"
                         f"-bs{c[4]}".replace("torch.", ""))
@pytest.mark.parametrize("decode_programs", [1, 1024], ids=["one-partition", "split"])
def test_attention_matches_reference(case, decode_programs):
    check_attention_case(case, decode_programs)


@pytest.mark.parametrize("tma", [True, False], ids=["tensor-descriptors", "pointers"])
def test_dense_prefill_reads_tiles_by_descriptor_or_by_pointer(tma, monkeypatch):
    """The dense kernel reads tiles through tensor descriptors on Hopper and later, by
    pointer elsewhere: both agree with the reference, over a padded head size and a
    sequence whose last key tile runs into the next sequence's tokens."""
    monkeypatch.setattr(prefill_tiled, "_copy_engine", lambda device: tma)
    check_attention_case((torch.bfloat16, 6, 2, 80, 16, [150, 9, 40], [150, 9, 40]), 1)


@pytest.mark.parametrize("tma", [True, False], ids=["tensor-descriptors", "pointers"])
def test_prefill_over_whole_tile_pages_by_descriptor_or_by_pointer(tma, monkeypatch):
    """Blocks of 64 tokens are read a tile at a time, through tensor descriptors or by
    pointer: both agree with the reference where queries start mid-block, a last block is
    partly written (NaN past the context) and the head size is padded."""
    monkeypatch.setattr(prefill_tiled, "_copy_engine", lambda device: tma)
    check_attention_case((torch.bfloat16, 4, 4, 80, 64, [100, 5, 64], [230, 69, 130]), 1)


def test_dense_prefill_takes_heads_in_any_layout():
    """Keys whose heads are not adjacent within a token (here head-major) give the output
    of the same keys laid out as a model's projection does."""
    tokens, q_heads, kv_heads, head_dim = 40, 4, 2, 32
    q = torch.randn(tokens, q_heads, head_dim)
    k, v = (torch.randn(kv_heads, tokens, head_dim).transpose(0, 1) for _ in range(2))
    starts = torch.tensor([0, 25, 40], dtype=torch.int32)
    outs = []
    for keys, values in ((k, v), (k.contiguous(), v.contiguous())):
        out = torch.zeros_like(q)
        prefill_tiled.dense_prefill_attention(q, keys, values, out, starts, 2, tokens, 0,
                                              0.25, False)
        outs.append(out)
    assert outs[1].abs().sum() > 0 and torch.equal(outs[0], outs[1])


def check_attention_case(case, decode_programs):
    dtype, num_heads, num_kv_heads, head_dim, block_size, query_lens, context_lens = case
    spec = AttentionSpec(num_heads, num_kv_heads, head_dim, head_dim ** -0.5, block_size,
                         dtype, torch.device("cpu"), max_num_seqs=4, max_model_len=320)
    attention = triton_attention.TritonAttention(spec)
    attention.decode_programs = decode_programs
    batch = make_batch(query_lens, context_lens, block_size, 40, random.Random(0))
    cache = poisoned_cache(attention.kv_cache_shape(40), batch, block_size, dtype)
    run_step(spec, attention, batch, cache, dtype)


def test_prefills_with_nothing_cached_read_the_steps_own_keys():
    """The dense prefill kernel serves steps whose prefills all start at position 0, unless
    the step may replay a CUDA graph (whose kernels were fixed at capture)."""
    def dense(query_lens, context_lens, **graphs):
        spec = AttentionSpec(4, 2, 64, 0.125, 16, torch.float32, torch.device("cpu"),
                             max_num_seqs=4, max_model_len=320, **graphs)
        batch = make_batch(query_lens, context_lens, 16, 40, random.Random(0))
        return triton_attention.TritonAttention(spec).build_metadata(batch).dense_prefill
    assert dense([1, 20, 7], [50, 20, 7])
    assert not dense([1, 20, 7], [50, 90, 7])  # a cached prefix: through the block table
    assert not dense([20], [20], cuda_graphs=True, max_graph_tokens=32)
    assert dense([40], [40], cuda_graphs=True, max_graph_tokens=32)


def test_attention_reuses_its_buffers_across_steps():
    """A prefill step then decode steps of other sequences: stale block-table entries and
    slots from the earlier step must not leak into the later ones."""
    spec = AttentionSpec(4, 2, 64, 0.125, 16, torch.float32, torch.device("cpu"),
                         max_num_seqs=4, max_model_len=256)
    attention = triton_attention.TritonAttention(spec)
    rng = random.Random(1)
    for query_lens, context_lens in ([[30, 70, 9], [30, 200, 9]], [[1, 1], [17, 3]],
                                     [[1, 1, 1, 1], [250, 4, 99, 33]]):
        batch = make_batch(query_lens, context_lens, 16, 48, rng)
        cache = poisoned_cache(attention.kv_cache_shape(48), batch, 16, torch.float32)
        run_step(spec, attention, batch, cache, torch.float32)


def test_decode_steps_of_one_size_share_launches_and_buffers():
    """What CUDA-graph replay needs: the same split count and the same buffer addresses for
    every decode step of a batch size, whatever the contexts (short ones leave empty
    partitions, which must weigh nothing)."""
    spec = AttentionSpec(4, 2, 64, 0.125, 16, torch.float32, torch.device("cpu"),
                         max_num_seqs=4, max_model_len=320)
    attention = triton_attention.TritonAttention(spec)
    attention.decode_programs = 64
    rng, seen = random.Random(2), []
    for context_lens in ([5, 9], [300, 170]):
        batch = make_batch([1, 1], context_lens, 16, 40, rng)
        metadata = attention.build_metadata(batch)
        seen.append((metadata.decode_splits, metadata.slot_mapping.data_ptr(),
                     metadata.block_tables.data_ptr(), metadata.seq_lens.data_ptr()))
        cache = poisoned_cache(attention.kv_cache_shape(40), batch, 16, torch.float32)
        run_step(spec, attention, batch, cache, torch.float32)
    assert seen[0] == seen[1] and seen[0][0] > 1


def test_attention_refuses_metadata_of_an_earlier_build():
    spec = AttentionSpec(4, 2, 64, 0.125, 16, torch.float32, torch.device("cpu"),
                         max_num_seqs=4, max_model_len=64)
    attention = triton_attention.TritonAttention(spec)
    batch = make_batch([1, 1], [5, 9], 16, 8, random.Random(3))
    stale = attention.build_metadata(batch)
    attention.build_metadata(batch)
    q, k, v = torch.randn(2, 4, 64), torch.randn(2, 2, 64), torch.randn(2, 2, 64)
    cache = torch.zeros(attention.kv_cache_shape(8))
    with pytest.raises(BaseboardError, match="build_metadata call 1 were passed to forward "
                                             "after call 2, which overwrote the buffers"):
        attention.forward(q, k, v, cache, stale)


def sampling_params(rows: int, vocab: int, **flags) -> SamplingTensors:
    return SamplingTensors(
        temperature=torch.tensor([0.0, 0.7, 1.0, 1.5, 1e-8, 0.0, 2.0][:rows]),
        top_k=torch.tensor([0, 0, 50, 0, 3, 0, 1000][:rows]),
        top_p=torch.tensor([1.0, 0.9, 1.0, 0.5, 1.0, 1.0, 0.95][:rows]),
        noise=torch.empty(rows, vocab).exponential_(), **flags)


@pytest.mark.parametrize("flags", [dict(all_greedy=True),
                                   dict(all_greedy=False, no_top_k=True, no_top_p=True),
                                   dict(all_greedy=False)],
                         ids=["greedy", "temperature", "top-k-top-p"])
def test_sample_picks_the_reference_token(flags):
    logits = torch.randn(7, 3001) * 4  # three chunks of 1024
    logits[0, 7] = logits[0, 2900] = 50.0  # a tie across chunks: the first index wins
    params = sampling_params(7, 3001, **flags)
    if flags.get("no_top_k"):
        params.top_k.zero_()
        params.top_p.fill_(1.0)
    got = triton_sampling.sample(logits, params)
    assert got.dtype == torch.int64
    assert got.tolist() == sampling.sample(logits, params).tolist()
    assert got[0] == 7


def with_penalties(params: SamplingTensors, logits: torch.Tensor) -> SamplingTensors:
    """``params`` with min_p and all three penalties, over histories that hold each row's
    likeliest tokens (so the penalties change the winner) and random ones."""
    rows, vocab = logits.shape
    gen = torch.Generator().manual_seed(7)
    top = logits.topk(6, dim=-1).indices
    generated = [top[r, :3].tolist() * 2 + torch.randint(0, vocab, (9,), generator=gen).tolist()
                 for r in range(rows)]
    prompt = [top[r, 3:].tolist() + torch.randint(0, vocab, (9,), generator=gen).tolist()
              for r in range(rows)]
    return dataclasses.replace(
        params, no_min_p=False, no_penalties=False,
        min_p=torch.tensor([0.2, 0.05, 0.0, 0.3, 0.1, 0.5, 0.02][:rows]),
        presence_penalty=torch.tensor([0.5, 1.0, 0.0, -0.5, 2.0, 0.3, 0.8][:rows]),
        frequency_penalty=torch.tensor([0.3, 0.0, 1.0, 0.2, -0.4, 0.6, 0.1][:rows]),
        repetition_penalty=torch.tensor([1.3, 2.0, 1.0, 0.8, 1.5, 1.1, 3.0][:rows]),
        output_counts=token_counts(generated, vocab), prompt_mask=token_counts(prompt, vocab) > 0)


@pytest.mark.parametrize("flags", [dict(all_greedy=True),
                                   dict(all_greedy=False, no_top_k=True, no_top_p=True),
                                   dict(all_greedy=False)],
                         ids=["greedy", "temperature", "top-k-top-p"])
def test_sample_with_penalties_and_min_p_picks_the_reference_token(flags):
    torch.manual_seed(5)  # the penalties must change some row's token, and do for this draw
    logits = torch.randn(7, 3001) * 4  # three chunks of 1024
    params = sampling_params(7, 3001, **flags)
    if flags.get("no_top_k"):
        params.top_k.zero_()
        params.top_p.fill_(1.0)
    params = with_penalties(params, logits)
    got = triton_sampling.sample(logits, params)
    assert got.tolist() == sampling.sample(logits, params).tolist()
    assert got.tolist() != sampling.select_tokens(logits, params).tolist()


def test_sample_min_p_compares_with_the_row_maximum_across_chunks():
    """Token 5 is its chunk's largest and the noise favours it, but min_p = 0.5 of the row's
    top (token 2900, two chunks on) drops it; a chunk-local threshold would keep it."""
    logits = torch.full((1, 3001), -5.0)
    logits[0, 5], logits[0, 2900] = 8.0, 10.0
    noise = torch.ones(1, 3001)
    noise[0, 5] = 1e-9
    params = SamplingTensors(torch.ones(1), torch.zeros(1, dtype=torch.long), torch.ones(1),
                             noise, all_greedy=False, no_top_k=True, no_top_p=True)
    assert triton_sampling.sample(logits, params).tolist() == [5]
    params = dataclasses.replace(params, min_p=torch.tensor([0.5]), no_min_p=False)
    assert triton_sampling.sample(logits, params).tolist() == [2900]
    assert sampling.sample(logits, params).tolist() == [2900]


def cpu_registry() -> Registry:
    """The references, and the Triton records as the cuda and the cpu plugins register them."""
    registry = Registry()
    for impl in core_plugin.baseboard_ops():
        registry.add(impl, "baseboard")
    for plugin in ("cuda", "cpu"):
        for impl in triton_impls((plugin,), priority=-10):
            registry.add(impl, plugin)
    return registry


TRITON_CHOICES = {op: Choice("triton", "argument") for op in
                  ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul",
                   "attention", "sample")}


def test_cpu_selects_and_binds_the_triton_kernels_under_the_interpreter():
    ctx = SelectionContext(CpuPlatform(), dtype=torch.float32, head_dim=32, block_size=16,
                           num_heads=4, num_kv_heads=2)
    plan = select_plan(cpu_registry(), ctx, TRITON_CHOICES)
    for op in TRITON_CHOICES:
        assert plan.decisions[op].selected == "triton" and plan.decisions[op].plugin == "cpu"
    assert plan.attention is triton_attention.TritonAttention


def test_cpu_rejects_the_triton_kernels_without_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    ctx = SelectionContext(CpuPlatform(), dtype=torch.float32)
    with pytest.raises(SelectionError, match="rms_norm=.triton.*TRITON_INTERPRET=1"):
        select_plan(cpu_registry(), ctx, TRITON_CHOICES)


def test_resolve_on_cpu_honours_the_triton_choice(monkeypatch):
    backends = {op: "triton" for op in TRITON_CHOICES}
    resolution = resolve_plan(platform="cpu", backends=backends, dtype=torch.float32, head_dim=32,
                         block_size=16, num_heads=4, num_kv_heads=2)
    assert {op: resolution.plan.selected()[op] for op in backends} == backends
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(SelectionError, match="TRITON_INTERPRET"):
        resolve_plan(platform="cpu", backends=backends, dtype=torch.float32)
