"""The Triton quantized GEMMs against the torch references, on the CPU in Triton's
interpreter (small odd shapes), and what their supports() rejects.

TRITON_INTERPRET is set while this module is collected and while its tests run (see
tests/kernels/test_triton_interpret.py and tests/conftest.py).
"""

from __future__ import annotations

import os

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs the kernels for real: test_quant_gpu.py
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

pytest.importorskip("triton.language")  # optional: the cuda extra installs it

from baseboard.core.quant import PER_CHANNEL, QuantScheme  # noqa: E402
from baseboard.core.selection import SelectionContext  # noqa: E402
from baseboard.kernels.torch import quant_gemm as reference  # noqa: E402
from baseboard.kernels.triton import quant_dequant, quant_gemm  # noqa: E402
from baseboard.kernels.triton import quant_tiles, quant_w8a8  # noqa: E402
from baseboard.kernels.triton.records import triton_impls  # noqa: E402
from baseboard.platforms.cpu.platform import CpuPlatform  # noqa: E402
from baseboard.platforms.cuda.platform import CudaPlatform  # noqa: E402
from baseboard.testing import quantize  # noqa: E402

pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("triton_interpreter")]

# the references round the dequantized weight to x's dtype once; the kernels do not
RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def assert_close(got: torch.Tensor, want: torch.Tensor, rtol: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.isfinite(got.float()).all(), "unwritten or NaN elements"
    error = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert error < rtol, f"relative error {error:.2e} over {rtol:.0e}"


def weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, k), generator=torch.Generator().manual_seed(seed)) / k ** 0.5


def four_bit(n: int, k: int, group: int, form: str, dtype: torch.dtype) -> tuple:
    """(codes, scales, offsets) in ``dtype``: asymmetric, symmetric (-8 s), or no offsets."""
    quantizer = quantize.quantize_4bit_symmetric if form == "sym" else \
        quantize.quantize_4bit_groups
    codes, scales, offsets = quantizer(weight(n, k), group)
    return codes, scales.to(dtype), None if form == "none" else offsets.to(dtype)


@pytest.mark.parametrize("dtype,k,n,group,form,bias", [
    (torch.bfloat16, 96, 80, 32, "asym", True),  # two groups a row, 7 rows: masked tails
    (torch.float16, 257, 129, 257, "asym", False),  # per channel, K odd and N odd
    (torch.bfloat16, 256, 64, 128, "sym", False),  # GPTQ sym / Q4_0
    (torch.float16, 64, 48, 16, "none", True),  # smallest group, w = q * s
    (torch.float32, 96, 80, 32, "asym", True),  # float32: codes converted, no magic
])
def test_w4a16_matches_the_reference(dtype, k, n, group, form, bias):
    codes, scales, offsets = four_bit(n, k, group, form, dtype)
    bias = torch.randn(n).to(dtype) * 0.1 if bias else None
    state = quant_gemm.GemmW4A16.prepare(codes, scales, offsets, group, bias)
    ref_state = reference.GemmW4A16.prepare(codes, scales, offsets, group, bias)
    x = torch.randn(7, k).to(dtype)
    assert_close(quant_gemm.GemmW4A16.apply(state, x),
                 reference.GemmW4A16.apply(ref_state, x), RTOL[dtype])
    got = quant_gemm.GemmW4A16.apply(state, x[:1], torch.float32)
    assert_close(got, reference.GemmW4A16.apply(ref_state, x[:1], torch.float32), RTOL[dtype])


@pytest.mark.parametrize("dtype,group", [(torch.bfloat16, 32), (torch.float16, 96),
                                         (torch.float32, 32)])
def test_w8a16_matches_the_reference(dtype, group):
    k, n = 96, 80
    codes, scales = quantize.quantize_int8_groups(weight(n, k), group)
    scales = scales.to(dtype)
    state = quant_gemm.GemmW8A16.prepare(codes, scales, group, None)
    ref_state = reference.GemmW8A16.prepare(codes, scales, group, None)
    x = torch.randn(7, k).to(dtype)
    # float32 results: the exact code conversions leave only the summation order
    assert_close(quant_gemm.GemmW8A16.apply(state, x, torch.float32),
                 reference.GemmW8A16.apply(ref_state, x, torch.float32), 1e-5)


def test_split_k_adds_every_split_and_resets_its_counters(monkeypatch):
    k, n, group = 256, 64, 32
    codes, scales, offsets = four_bit(n, k, group, "asym", torch.float16)
    x = torch.randn(3, k).to(torch.float16)
    results = {}
    for split in (1, 4):
        tile = quant_tiles.Tile(16, 32, 32, split, num_warps=1, num_stages=1)
        monkeypatch.setitem(quant_tiles.TILES[quant_tiles.W4A16],
                            quant_tiles.INTERPRETER, ((16, tile), (quant_tiles.UNBOUNDED, tile)))
        state = quant_gemm.GemmW4A16.prepare(codes, scales, offsets, group, None)
        assert state.counters.numel() == (2 if split > 1 else 1)  # two tiles of 32 columns
        results[split] = quant_gemm.GemmW4A16.apply(state, x, torch.float32)
        # the last program of each tile reset its counter: the next call (or graph
        # replay) starts from zero without a fill
        assert int(state.counters.abs().sum()) == 0
        again = quant_gemm.GemmW4A16.apply(state, x, torch.float32)
        assert torch.equal(again, results[split])
    # only the summation order differs (of sums that carry fp16's 1024 per code)
    assert_close(results[4], results[1], 1e-4)


def test_4bit_packing_puts_16_consecutive_inputs_in_each_plane():
    codes = torch.randint(0, 16, (3, 200), generator=torch.Generator().manual_seed(1),
                          dtype=torch.uint8)
    words = quant_gemm.pack_4bit(codes)
    assert words.dtype == torch.int32 and words.shape == (3, 256 // 8)  # K padded to 256
    blocks = words.reshape(3, 2, 16, 1)  # [N, block, word w, 1]
    nibbles = torch.stack([(blocks >> (4 * j)) & 0xF for j in range(8)], 2)  # [N, b, j, w]
    unpacked = nibbles.reshape(3, 256)[:, :200].to(torch.uint8)  # k = 128 b + 16 j + w
    assert torch.equal(unpacked, codes)
    assert int(nibbles.reshape(3, 256)[:, 200:].abs().sum()) == 0  # zero codes past K


def gemv_and_mma_tables(block_m: int, block_k: int) -> dict:
    """Interpreter tables that run a few rows on the GEMV (``block_m`` rows a program,
    split K) and more on the tensor-core kernel."""
    gemv = quant_tiles.Tile(block_m, 16, block_k, 2, num_warps=1, num_stages=1,
                            kernel=quant_tiles.GEMV)
    mma = quant_tiles.Tile(16, 32, 32, 1, num_warps=1, num_stages=1)
    return ((4, gemv), (quant_tiles.UNBOUNDED, mma))


@pytest.mark.parametrize("bits,dtype,k,group,form,block_m,block_k", [
    (4, torch.bfloat16, 512, 128, "sym", 4, 256),  # two 128-blocks a step, G = step / 2
    (4, torch.float16, 256, 64, "asym", 2, 512),  # planes of one block in two groups
    (4, torch.bfloat16, 160, 32, "none", 1, 128),  # K not a multiple of the step
    (4, torch.float16, 200, 200, "asym", 4, 512),  # per channel, K padded to 256
    (8, torch.bfloat16, 384, 128, None, 4, 256),
    (8, torch.float16, 100, 100, None, 1, 64),  # per channel, K odd to the step
])
def test_gemv_matches_the_reference(monkeypatch, bits, dtype, k, group, form, block_m,
                                    block_k):
    n = 40  # not a multiple of the GEMV's 16 columns
    family = quant_tiles.W4A16 if bits == 4 else quant_tiles.W8A16
    monkeypatch.setitem(quant_tiles.TILES[family], quant_tiles.INTERPRETER,
                        gemv_and_mma_tables(block_m, block_k))
    if bits == 4:
        args = dict(zip(("qweight", "scales", "offsets"), four_bit(n, k, group, form, dtype)))
        impl, ref = quant_gemm.GemmW4A16, reference.GemmW4A16
    else:
        codes, scales = quantize.quantize_int8_groups(weight(n, k), group)
        args = dict(qweight=codes, scales=scales.to(dtype))
        impl, ref = quant_gemm.GemmW8A16, reference.GemmW8A16
    args.update(group_size=group, bias=torch.randn(n).to(dtype))
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    assert quant_tiles.tile_for(state.table, 3).kernel == quant_tiles.GEMV
    for m in (1, 3):  # the GEMV's bucket: rows masked or not
        x = torch.randn(m, k).to(dtype)
        assert_close(impl.apply(state, x, torch.float32),
                     ref.apply(ref_state, x, torch.float32), 1e-4)
        assert int(state.counters.abs().sum()) == 0  # split K: every counter reset


def one_tile_case(monkeypatch, tile, bits: int, dtype, group: int, n: int, k: int):
    """(Triton impl, reference impl, prepare's arguments but the bias) of an asymmetric 4-bit
    or a symmetric int8 weight [n, k] in groups of ``group``, with every row count on
    ``tile`` under the interpreter."""
    family = quant_tiles.W4A16 if bits == 4 else quant_tiles.W8A16
    monkeypatch.setitem(quant_tiles.TILES[family], quant_tiles.INTERPRETER,
                        ((quant_tiles.UNBOUNDED, tile),))
    if bits == 4:
        args = dict(zip(("qweight", "scales", "offsets"), four_bit(n, k, group, "asym", dtype)))
        impl, ref = quant_gemm.GemmW4A16, reference.GemmW4A16
    else:
        codes, scales = quantize.quantize_int8_groups(weight(n, k), group)
        args = dict(qweight=codes, scales=scales.to(dtype))
        impl, ref = quant_gemm.GemmW8A16, reference.GemmW8A16
    return impl, ref, {**args, "group_size": group}


@pytest.mark.parametrize("bits,dtype,group", [(4, torch.bfloat16, 32), (4, torch.float16, 128),
                                              (8, torch.float16, 64)])
def test_large_tiles_scale_codes_in_registers(monkeypatch, bits, dtype, group):
    k, n = 256, 40
    tile = quant_tiles.Tile(quant_gemm.DEQUANT_ROWS, 32, 64, 1, num_warps=1, num_stages=1)
    impl, ref, args = one_tile_case(monkeypatch, tile, bits, dtype, group, n, k)
    args.update(bias=None)
    x = torch.randn(70, k).to(dtype)  # two tiles of rows, the second masked
    # the weights are rounded to x's dtype (the reference rounds q s and o apart)
    assert_close(impl.apply(impl.prepare(**args), x, torch.float32),
                 ref.apply(ref.prepare(**args), x, torch.float32), RTOL[dtype])


@pytest.mark.parametrize("bits,dtype,group,k", [(4, torch.bfloat16, 48, 240),
                                                (4, torch.float16, 200, 200),
                                                (8, torch.bfloat16, 16, 96)])
def test_dequantized_weight_through_torch(monkeypatch, bits, dtype, group, k):
    n = 40
    tile = quant_tiles.Tile(1, 16, 64, 1, num_warps=1, num_stages=1,
                            kernel=quant_tiles.DEQUANT)
    impl, ref, args = one_tile_case(monkeypatch, tile, bits, dtype, group, n, k)
    args.update(bias=torch.randn(n).to(dtype))
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    # the whole weight, every element (K padded, groups, masked columns), as the reference's
    want = ref_state.weight.dequantize(torch.float32)
    assert_close(quant_dequant.dequantize(state, torch.float32, 16), want, 1e-6)
    x = torch.randn(3, k).to(dtype)
    assert_close(impl.apply(state, x), ref.apply(ref_state, x), RTOL[dtype])


def test_prepare_rejects_a_group_no_kernel_step_fits():
    codes, scales, offsets = four_bit(8, 96, 8, "asym", torch.float16)
    with pytest.raises(Exception, match="group size 8 .*multiple of 16"):
        quant_gemm.GemmW4A16.prepare(codes, scales, offsets, 8, None)


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn])
def test_quantize_rows_gives_the_reference_codes(dtype):
    x = torch.randn(5, 1500) * 3
    x[0, :4] = torch.tensor([1.9524, -1.9524, 447.0, 0.004])  # rounding carries, tiny values
    x[1] = 0  # an all-zero row: scale clamped, codes zero
    qmax = 127.0 if dtype == torch.int8 else 448.0
    codes, scale = quant_w8a8.quantize_rows(x, dtype)
    scaled, want_scale = reference.quantize_per_token(x, qmax)
    if dtype == torch.int8:
        want = scaled.round().clamp(-128, 127).to(dtype)
    else:
        want = scaled.clamp(-qmax, qmax).to(dtype)
    assert torch.equal(scale, want_scale.squeeze(1))
    assert torch.equal(codes.float(), want.float())


@pytest.mark.parametrize("op,dtype,k,n,bias", [
    ("gemm_w8a8_fp8", torch.bfloat16, 257, 129, True),
    ("gemm_w8a8_int8", torch.float16, 96, 80, False),
    ("gemm_w8a8_int8", torch.float32, 64, 48, True),
])
def test_w8a8_matches_the_reference(op, dtype, k, n, bias):
    if op == "gemm_w8a8_fp8":
        impl, ref = quant_w8a8.GemmW8A8Fp8, reference.GemmW8A8Fp8
        qweight, scales = quantize.quantize_fp8_per_channel(weight(n, k))
    else:
        impl, ref = quant_w8a8.GemmW8A8Int8, reference.GemmW8A8Int8
        qweight, scales = quantize.quantize_int8_per_channel(weight(n, k))
    bias = torch.randn(n).to(dtype) * 0.1 if bias else None
    state, ref_state = impl.prepare(qweight, scales, bias), ref.prepare(qweight, scales, bias)
    x = torch.randn(7, k).to(dtype)
    # same codes and scales on both sides: only the summation order differs
    assert_close(impl.apply(state, x, torch.float32), ref.apply(ref_state, x, torch.float32),
                 1e-5)
    assert_close(impl.apply(state, x), ref.apply(ref_state, x), RTOL[dtype])


def records() -> dict:
    return {impl.op: impl for impl in triton_impls(("cpu",), priority=-10)}


def cpu_context(*schemes: QuantScheme) -> SelectionContext:
    return SelectionContext(CpuPlatform(), dtype=torch.bfloat16, quant_schemes=schemes)


@pytest.mark.parametrize("scheme,reason", [
    (QuantScheme("gemm_w4a16", "uint4", 8), "group size 8"),
    (QuantScheme("gemm_w4a16", "uint4", 128, activation="int8"), "activations int8"),
    (QuantScheme("gemm_w8a16", "uint4", 128), "weights of type uint4"),
    (QuantScheme("gemm_w8a8_fp8", "float8_e4m3fn", activation="float8_e4m3fn",
                 block=(128, 128)), "2-D block scales"),
    (QuantScheme("gemm_w8a8_fp8", "float8_e4m3fnuz", activation="float8_e4m3fn"),
     "float8_e4m3fnuz"),
    (QuantScheme("gemm_w8a8_int8", "int8", 128, activation="int8"), "group size 128"),
])
def test_supports_names_the_layout_it_rejects(scheme, reason):
    verdict = records()[scheme.op].supports(cpu_context(scheme))
    assert verdict and reason in verdict and scheme.describe() in verdict


@pytest.mark.parametrize("scheme", [
    QuantScheme("gemm_w4a16", "uint4", 128, symmetric=False, act_order=True),
    QuantScheme("gemm_w4a16", "int4", PER_CHANNEL),
    QuantScheme("gemm_w8a16", "int8", 32),
    QuantScheme("gemm_w8a8_int8", "int8", activation="int8"),
    QuantScheme("gemm_w8a8_fp8", "float8_e4m3fn", activation="float8_e4m3fn"),
])
def test_supports_accepts_the_layouts_the_kernels_take(scheme):
    # another op's scheme in the model is not this op's concern
    other = QuantScheme("gemm_w4a16", "uint4", 8) if scheme.op == "gemm_w8a16" else \
        QuantScheme("gemm_w8a16", "int8", 8)
    assert records()[scheme.op].supports(cpu_context(scheme, other)) is None


def test_fp8_is_rejected_off_nvidia(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    from baseboard.platforms.rocm.platform import RocmPlatform

    def fp8(platform: str):
        return next(i for i in triton_impls((platform,), 50) if i.op == "gemm_w8a8_fp8")

    rocm = SelectionContext(RocmPlatform(), dtype=torch.bfloat16)
    assert "NVIDIA GPU" in fp8("rocm").supports(rocm)
    assert fp8("cuda").supports(SelectionContext(CudaPlatform(), dtype=torch.bfloat16)) is None
