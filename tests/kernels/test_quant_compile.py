"""The quantized Triton kernels compile for Hopper (sm_90a) on a machine without a GPU:
Triton's interpreter (test_quant_triton.py) runs the same code but never lowers it, so a
construct only the GPU compiler rejects would otherwise surface on the GPU first.

The compilation runs in a fresh process: Triton fixes at import whether kernels are
interpreted, and other modules of the session import it under the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ALIGNED = ("N", "K", "stride_xm", "stride_ym", "stride_wn")  # multiples of 16 in real models
# an int argument equal to 1 is compiled as a constant (Triton's specialization): a decode
# step of one row, one K step per program
ONE_ROW = {"M": 1, "STEPS_PER_SPLIT": 1}


def compile_for_hopper(fn, types: dict, constants: dict, num_warps: int, num_stages: int):
    """Compile ``fn`` with pointers and the ALIGNED sizes marked 16-divisible, as the JIT
    specializes them at run time (without it Triton does not pipeline the loads); an
    argument in ``constants`` (ONE_ROW) is compiled as the constant the JIT would make it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(fn.arg_names)
    types = {name: kind for name, kind in types.items() if name not in constants}
    signature = {name: types.get(name, "constexpr") for name in names}
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name, kind in types.items()
             if kind.startswith("*") or name in ALIGNED}
    source = ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def k_loop(ttgir: str) -> str:
    """The first loop of a kernel's TTGIR (the K loop), from its scf.for to its scf.yield."""
    start = ttgir.index("scf.for")
    return ttgir[start:ttgir.index("scf.yield", start)]


def weight_only_types(bits: int, act: str, gemv: bool) -> dict:
    """The run-time arguments of the weight-only kernels (quant_gemm, quant_gemv: codes in
    32-bit words)."""
    return {"x_ptr": act, "stride_xm": "i32", "w_ptr": "*i32" if bits == 4 or gemv else "*i8",
            "stride_wn": "i32", "scale_ptr": act, "offset_ptr": act, "bias_ptr": act,
            "y_ptr": act, "stride_ym": "i32", "partial_ptr": "*fp32", "counter_ptr": "*i32",
            "M": "i32", "N": "i32", "K": "i32", "STEPS_PER_SPLIT": "i32", "split_k": "i32"}


def compile_all() -> None:
    """Each kernel family in the tile shapes of small and large M; the GEMMs' loads must be
    pipelined (asynchronous copies into shared memory)."""
    from baseboard.kernels.triton import quant_dequant, quant_gemm, quant_gemv, quant_w8a8

    for bits, act, mode, code_bias, per_channel, split, one_row in [
            (4, "*bf16", "magic4_bf16", 128, False, True, True),  # W4A16 g128, decode
            (4, "*bf16", "magic4_bf16", 128, True, True, False),  # per channel, small M
            (4, "*fp16", "magic4_fp16", 1024, True, False, False),  # per channel, large M
            (4, "*bf16", "magic4_bf16", 128, False, False, False),  # g128, large M
            (8, "*bf16", "via_fp32", 0, True, True, True),
            (8, "*fp16", "magic8_fp16", 1152, False, False, False)]:
        block_m, block_n, block_k = (16, 64, 128) if split else (128, 128, 128)
        dequant = not per_channel and block_m >= quant_gemm.DEQUANT_ROWS
        kernel = compile_for_hopper(
            quant_gemm._weight_only_kernel, weight_only_types(bits, act, False),
            dict(BITS=bits, PER_CHANNEL=per_channel, GROUP=128, HAS_OFFSETS=bits == 4,
                 HAS_BIAS=True, MODE=mode, CODE_BIAS=code_bias, DEQUANT=dequant, SPLIT=split,
                 BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, EVEN_K=True,
                 UPCAST=False, PDL=True, **(ONE_ROW if one_row else {})),
            4 if split else 8, 4)
        ttgir = kernel.asm["ttgir"]
        assert "async_copy_global_to_local" in ttgir, (bits, mode)
        # Hopper's warp-group product, the unpacked codes its first operand: the one it takes
        # from registers (the second comes from shared memory, where computed values would
        # have to be stored and read back every step)
        dots = [line for line in ttgir.splitlines() if "ttng.warp_group_dot " in line]
        assert dots and all("dot_op<{opIdx = 0" in line for line in dots), (bits, mode, split)
    # the GEMV: one row and a few, scaled per channel, once a step, a block or a plane. Like
    # the bf16 GEMV it hides latency by occupancy, not by copies into shared memory; its
    # codes must keep the layout they are loaded in (only x, small, may change layout)
    for bits, act, scale_at, block_m, block_k, split in [
            (4, "*bf16", "step", 1, 128, False), (4, "*fp16", "end", 4, 512, True),
            (4, "*bf16", "block", 1, 512, False), (4, "*bf16", "plane", 2, 128, False),
            (8, "*bf16", "end", 1, 512, True), (8, "*fp16", "step", 4, 128, False)]:
        kernel = compile_for_hopper(
            quant_gemv._weight_only_gemv_kernel, weight_only_types(bits, act, True),
            dict(BITS=bits, SCALE_AT=scale_at, GROUP=128, HAS_OFFSETS=bits == 4,
                 HAS_BIAS=True, SPLIT=split, BLOCK_M=block_m, BLOCK_N=32, BLOCK_K=block_k,
                 GROUP_M=8, EVEN_K=True, PDL=True, **(ONE_ROW if block_m == 1 else {})), 4, 4)
        codes_shape = f"32x{16 if bits == 4 else block_k // 4}x"
        moved = [line for line in kernel.asm["ttgir"].splitlines()
                 if "convert_layout" in line and codes_shape in line]
        assert not moved, (bits, scale_at, block_m, moved[:1])
        if bits == 4 and block_m == 1:  # one row's sums keep the codes' layout: no shuffle
            # through shared memory in the K loop
            assert "convert_layout" not in k_loop(kernel.asm["ttgir"]), scale_at
    for bits, act in ((4, "*bf16"), (8, "*fp16")):  # the weight dequantized for torch's GEMM
        types = {name: kind for name, kind in weight_only_types(bits, act, False).items()
                 if name in ("w_ptr", "stride_wn", "scale_ptr", "offset_ptr", "N", "K")}
        compile_for_hopper(quant_dequant._dequantize_kernel, {**types, "out_ptr": act},
                           dict(BITS=bits, GROUP=128, HAS_OFFSETS=bits == 4, BLOCK_N=32,
                                PDL=True), 4, 1)
    for operand in ("*fp8e4nv", "*i8"):
        types = {"a_ptr": operand, "a_scale_ptr": "*fp32", "w_ptr": operand,
                 "stride_wn": "i32", "w_scale_ptr": "*fp32", "bias_ptr": "*bf16",
                 "y_ptr": "*bf16", "stride_ym": "i32", "partial_ptr": "*fp32",
                 "counter_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32",
                 "STEPS_PER_SPLIT": "i32", "split_k": "i32"}
        for split, (block_m, block_n, warps, stages) in ((True, (16, 128, 4, 4)),
                                                         (False, (128, 256, 8, 3))):
            kernel = compile_for_hopper(
                quant_w8a8._w8a8_kernel, types,
                dict(HAS_BIAS=True, SPLIT=split, BLOCK_M=block_m, BLOCK_N=block_n,
                     BLOCK_K=128, GROUP_M=8, EVEN_K=True, INTEGER=operand == "*i8",
                     PDL=True, **(ONE_ROW if split else {})), warps, stages)
            assert "async_copy_global_to_local" in kernel.asm["ttgir"], operand
        compile_for_hopper(
            quant_w8a8._quantize_rows_kernel,
            {"x_ptr": "*bf16", "stride_xm": "i32", "q_ptr": operand, "scale_ptr": "*fp32",
             "K": "i32"},
            dict(QMAX=127.0 if operand == "*i8" else 448.0, TO_INT8=operand == "*i8",
                 BLOCK=1024, PDL=True), 4, 1)


@pytest.mark.slow
def test_quantized_kernels_compile_for_hopper():
    pytest.importorskip("triton")
    environ = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, __file__], env=environ, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


if __name__ == "__main__":
    compile_all()
