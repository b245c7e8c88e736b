"""Weight-only quantized models on the CPU against the bf16 model, end to end, in one run.

Models (all baseboard `LLM.generate`, greedy, ignore_eos, token ids in and out):
- qwen bf16: the random Qwen2.5-0.5B-shaped bf16 checkpoint of benchmarks/e2e.py
- qwen W8 / qwen W4: the same weights written as GGUF with every matrix Q8_0 (int8, group
  32) or Q4_0 (4-bit, group 32), run in bf16: gemm_w8a16 / gemm_w4a16
- smollm2 Q4_1: the embedded SmolLM2-135M GGUF (`LLM("smollm2")`, float32), with the
  quantized GEMMs the cpu platform selects, and again with `dequant_f32` (the weights
  dequantized to float32 at load, as before the quantized kernels)

Measured per model, as in benchmarks/e2e.py: batch-1 decode tokens/s ((new - 1) tokens over
the time past the first token), batch-8 throughput (all generated tokens over the call,
prefill included) and the prefill (first-token) times; medians over rounds, the models
taking turns round by round so that drift on a shared machine hits each alike. "resident"
is the bytes of the prepared weights of the linear layers (packed codes, scales, dense
panels), summed over the model's layers.

Kernels (``--kernels``): the gemm_w8a16 / gemm_w4a16 implementations the cpu platform
selects (group 32, float16 scales, as Q8_0 / Q4_0 store them) against its dense GEMM of
the same dtype, on Qwen2.5-0.5B's gate_up and down shapes, per number of rows M; weights
cold as in benchmarks/cpu_ops.py (each call reads another copy, from 256 MiB of copies).

    python benchmarks/cpu_quant.py [--models qwen,smollm2] [--new-tokens 32]
                                   [--prompt-len 32] [--rounds 3] [--kernels]
                                   [--rows 1,2,4,8,16,64,256] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from e2e import (BATCH, QWEN_SHAPE, environment, make_qwen, measure_round, prompts,
                 smollm2_gguf)

# GGUF names of the Hugging Face names in a Qwen2 checkpoint
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight",
          "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
BLOCK = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
         "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down"}


def gguf_name(name: str) -> str:
    if name in GLOBAL:
        return GLOBAL[name]
    _, _, layer, rest = name.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{BLOCK[module]}.{suffix}"


def write_quantized_gguf(directory: Path, path: Path, matrix_type: str) -> Path:
    """The bf16 checkpoint in ``directory`` as a Qwen2 GGUF with every matrix (the tied
    embedding too, as llama.cpp's files have it) in ``matrix_type``, vectors in F32."""
    import gguf
    from safetensors.torch import load_file

    c = QWEN_SHAPE
    writer = gguf.GGUFWriter(path, "qwen2")
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(c["hidden_size"])
    writer.add_feed_forward_length(c["intermediate_size"])
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(c["vocab_size"])
    writer.add_bos_token_id(c["bos_token_id"])
    writer.add_eos_token_id(c["eos_token_id"])
    tensors = load_file(next(directory.glob("*.safetensors")))
    for name, tensor in tensors.items():
        data = tensor.float().numpy()
        qtype = gguf.GGMLQuantizationType[matrix_type if data.ndim == 2 else "F32"]
        writer.add_tensor(gguf_name(name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class Engine:
    """One model under one configuration, driven like benchmarks/e2e.py's Baseboard."""

    def __init__(self, name: str, path: Path, max_len: int, **llm_args):
        from baseboard import LLM, SamplingParams

        self.name, self.params = name, SamplingParams
        self.llm = LLM(str(path), max_num_seqs=BATCH, max_model_len=max_len,
                       kv_cache_memory=256 << 20, skip_tokenizer_init=True, **llm_args)
        selected = self.llm.plan.selected()
        self.gemms = {op: selected[op] for op in ("gemm", "gemm_w4a16", "gemm_w8a16")
                      if op in selected}
        self.resident = resident_bytes(self.llm.engine)

    def generate(self, ids: list[list[int]], new_tokens: int) -> list[list[int]]:
        params = self.params(temperature=0, max_tokens=new_tokens, ignore_eos=True,
                             detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params)
        return [list(o.outputs[0].token_ids) for o in outs]


def _attributes(obj) -> list:
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, (torch.Tensor, str, int, float, type)) or obj is None:
        return []
    values = list(getattr(obj, "__dict__", {}).values())
    for cls in type(obj).__mro__:
        values += [getattr(obj, s) for s in getattr(cls, "__slots__", ()) if hasattr(obj, s)]
    return values


def resident_bytes(engine) -> int:
    """Bytes of the tensors held by the prepared states of the model's linear layers
    (each storage once: a tied lm_head shares nothing with the dense embedding)."""
    from baseboard.models.linear import Linear

    seen: set[int] = set()

    def state_bytes(obj, depth: int) -> int:
        if isinstance(obj, torch.Tensor):  # the tensor's own bytes: a packed weight is a
            if obj.data_ptr() in seen:      # view into a larger huge-page-aligned block
                return 0
            seen.add(obj.data_ptr())
            return obj.numel() * obj.element_size()
        return 0 if depth > 3 else sum(state_bytes(v, depth + 1) for v in _attributes(obj))

    def walk(obj, depth: int) -> int:
        if isinstance(obj, Linear):
            return state_bytes(obj.state, 0)
        return 0 if depth > 3 else sum(walk(v, depth + 1) for v in _attributes(obj))

    return walk(engine.model, 0)


def summarize(rounds: list[dict], new_tokens: int) -> dict:
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    step = (med["full1"] - med["first"]) / (new_tokens - 1)
    return {"copy_gb_s": med["bandwidth"] / 1e9, "decode_tok_s": 1 / step,
            "batch8_tok_s": BATCH * new_tokens / med["full8"],
            "prefill1_ms": med["first"] * 1e3, "prefill8_ms": med["first8"] * 1e3}


def build_engines(models: list[str], work: Path, max_len: int) -> list[Engine]:
    engines = []
    if "qwen" in models:
        qwen = work / "qwen"
        make_qwen(qwen)
        engines.append(Engine("qwen bf16", qwen, max_len, dtype="bfloat16"))
        for label, matrix_type in (("qwen W8 (Q8_0)", "Q8_0"), ("qwen W4 (Q4_0)", "Q4_0")):
            path = write_quantized_gguf(qwen, work / f"qwen-{matrix_type}.gguf", matrix_type)
            engines.append(Engine(label, path, max_len, dtype="bfloat16"))
    if "smollm2" in models:
        path = smollm2_gguf()
        engines.append(Engine("smollm2 Q4_1", path, max_len))
        engines.append(Engine("smollm2 Q4_1 dequant_f32", path, max_len,
                              backends={"gemm_w4a16": "dequant_f32",
                                        "gemm_w8a16": "dequant_f32"}))
    return engines


KERNEL_SHAPES = {"gate_up": (896, 9728), "down": (4864, 896)}  # name: (K in, N out)
COLD_BYTES = 256 << 20


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def kernel_states(dtype: torch.dtype, k: int, n: int) -> dict[str, list]:
    """name -> (apply, prepared copies) for the dense GEMM and the quantized ones."""
    from baseboard.platforms.cpu import gemm, quant_gemm

    w4 = quant_gemm.Avx512W4A16 if dtype == torch.bfloat16 else quant_gemm.Avx512W4A16Float32
    w8 = quant_gemm.Avx512W8A16 if dtype == torch.bfloat16 else quant_gemm.Avx512W8A16Float32
    g = torch.Generator().manual_seed(0)
    scales = (torch.rand(n, k // 32, generator=g) / 64).half()
    codes4 = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)
    codes8 = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
    dense = (torch.randn(n, k, generator=g) / k ** 0.5).to(dtype)
    makers = {"dense": (gemm.Avx512Gemm, lambda: gemm.Avx512Gemm.prepare(dense, None),
                        dense.element_size()),
              "W8": (w8, lambda: w8.prepare(codes8, scales, 32, None), 1.0625),
              "W4": (w4, lambda: w4.prepare(codes4, scales, -8 * scales, 32, None), 0.625)}
    return {name: (impl.apply, [make() for _ in range(max(2, int(COLD_BYTES // (n * k * b))))])
            for name, (impl, make, b) in makers.items()}


def bench_kernels(rows: list[int], repeats: int = 10) -> list[dict]:
    results = []
    for dtype in (torch.bfloat16, torch.float32):
        for shape, (k, n) in KERNEL_SHAPES.items():
            states = kernel_states(dtype, k, n)
            for m in rows:
                if dtype == torch.float32 and m > 16:
                    continue  # float32 models are the small GGUF ones: decode and short prompts
                x = torch.randn(m, k).to(dtype)
                times = {}
                # two rounds, the kernels taking turns, the best of each: the kernel timed
                # right after another ran slow (W8 after dense, down M=8: 290 against
                # 213 us timed alone on the EPYC)
                for _ in range(2):
                    for name, (apply, copies) in states.items():
                        turn = [0]

                        def call():
                            turn[0] = (turn[0] + 1) % len(copies)
                            return apply(copies[turn[0]], x)
                        times[name] = min(times.get(name, math.inf), best_time(call, repeats))
                results.append({"dtype": str(dtype).removeprefix("torch."), "shape": shape,
                                "m": m, **{f"{name}_us": t * 1e6 for name, t in times.items()}})
                r = results[-1]
                print(f"{r['dtype']:<9}{shape:<9}M={m:<5}dense {r['dense_us']:8.0f} us   "
                      f"W8 {r['W8_us']:8.0f} us ({r['dense_us'] / r['W8_us']:.2f}x)   "
                      f"W4 {r['W4_us']:8.0f} us ({r['dense_us'] / r['W4_us']:.2f}x)", flush=True)
            del states
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="qwen,smollm2")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kernels", action="store_true",
                        help="the kernel table instead of the models")
    parser.add_argument("--rows", default="1,2,4,8,16,64,256")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment()
    env["threads"] = torch.get_num_threads()
    print(f"{env['cpu']}, {env['cores']} cores, {env['threads']} threads, torch {env['torch']}, "
          f"commit {env['commit']}, load average {env['load_average'][0]:.2f}")
    if args.kernels:
        kernels = bench_kernels([int(m) for m in args.rows.split(",")])
        if args.json:
            Path(args.json).write_text(json.dumps({"environment": env, "kernels": kernels},
                                                  indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        engines = build_engines(args.models.split(","), Path(tmp),
                                args.prompt_len + args.new_tokens + 8)
        ids1 = prompts(1, args.prompt_len, 49152)
        ids8 = prompts(BATCH, args.prompt_len, 49152)
        for engine in engines:  # warm-up: first-call allocations, lazy inits
            engine.generate(ids1, 4)
            engine.generate(ids8, 4)
        rounds: dict[str, list[dict]] = {e.name: [] for e in engines}
        for _ in range(args.rounds):
            for engine in engines:
                rounds[engine.name].append(measure_round(engine, ids1, ids8, args.new_tokens))
    results = []
    for engine in engines:
        results.append({"model": engine.name, "gemms": engine.gemms,
                        "resident_mb": engine.resident / 1e6,
                        **summarize(rounds[engine.name], args.new_tokens)})
    print_table(results)
    env["load_average_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env, "args": vars(args),
                                               "results": results}, indent=1))


def print_table(results: list[dict]) -> None:
    base = {r["model"].split()[0]: r for r in results if r["model"] in ("qwen bf16",
                                                                        "smollm2 Q4_1 dequant_f32")}
    print(f"{'model':<26}{'resident MB':>12}{'b1 tok/s':>10}{'vs base':>9}{'b8 tok/s':>10}"
          f"{'vs base':>9}{'b1 prefill ms':>15}{'b8 prefill ms':>15}{'copy GB/s':>11}  GEMMs")
    for r in results:
        ref = base.get(r["model"].split()[0], r)
        print(f"{r['model']:<26}{r['resident_mb']:>12.0f}{r['decode_tok_s']:>10.1f}"
              f"{r['decode_tok_s'] / ref['decode_tok_s']:>8.2f}x{r['batch8_tok_s']:>10.1f}"
              f"{r['batch8_tok_s'] / ref['batch8_tok_s']:>8.2f}x{r['prefill1_ms']:>15.0f}"
              f"{r['prefill8_ms']:>15.0f}{r['copy_gb_s']:>11.1f}  "
              f"{', '.join(f'{op}={name}' for op, name in r['gemms'].items())}")


if __name__ == "__main__":
    main()
