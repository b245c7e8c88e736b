"""End-to-end generation on a GPU: baseboard vs transformers `generate` in the same run.

Random bf16 weights (Llama-3-8B and Qwen2.5-0.5B shapes), prompt 128 tokens, 128 new
tokens, greedy, ignore_eos. Also the bandwidth floor: weight bytes / measured copy bandwidth.

    python benchmarks/e2e_gpu.py [--models llama3-8b,qwen2.5-0.5b] [--variants default,...]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import time
from unittest import mock

import torch

SHAPES = {
    "llama3-8b": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096,
                      intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
                      max_position_embeddings=8192, tie_word_embeddings=False),
    "qwen2.5-0.5b": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                         hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         rope_theta=1000000.0, max_position_embeddings=32768,
                         tie_word_embeddings=True),
}
PROMPT_LEN, NEW_TOKENS = 128, 128
# baseboard configurations to measure: (settings, backend choices, KV block size)
VARIANTS = {
    "default": ({}, None, None),
    "blocks-16": ({}, None, 16),
    "eager-triton": ({"BASEBOARD_CUDA_GRAPHS": "0"}, {"attention": "triton"}, None),
    "eager-flashinfer": ({"BASEBOARD_CUDA_GRAPHS": "0"}, {"attention": "flashinfer"}, None),
}


def copy_bandwidth() -> float:
    """Bytes/s of a device-to-device copy, counting bytes read plus bytes written."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * src.numel() * 20 / (time.perf_counter() - start)


def make_checkpoint(shape: str, directory: str) -> int:
    """Save a random bf16 model of the given shape; return its weight bytes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**SHAPES[shape])
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for p in model.parameters():  # std 0.02 keeps activations finite through the layers
        p.data.normal_(0, 0.02)
    model.save_pretrained(directory, safe_serialization=True)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return nbytes


def prompts(batch: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab - 100, (batch, PROMPT_LEN), generator=g).tolist()


def bench_transformers(directory: str, batch: int, vocab: int) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa").cuda()
    ids = torch.tensor(prompts(batch, vocab), device="cuda")
    kwargs = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                  attention_mask=torch.ones_like(ids), pad_token_id=0)
    model.generate(ids, **{**kwargs, "max_new_tokens": 8, "min_new_tokens": 8})
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return batch * NEW_TOKENS / elapsed


def bench_baseboard(llm, batch: int, vocab: int) -> float:
    from baseboard import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True,
                            detokenize=False)
    batch_prompts = [{"prompt_token_ids": p} for p in prompts(batch, vocab)]
    # warm-up at the measured batch size, so that kernels compile for its prefill shapes,
    # with other prompts, so that the measured prefill finds nothing in the prefix cache
    llm.generate([{"prompt_token_ids": p} for p in prompts(batch, vocab, seed=1)],
                 SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True,
                                detokenize=False))
    torch.cuda.synchronize()
    start = time.perf_counter()
    outs = llm.generate(batch_prompts, params)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert all(len(o.outputs[0].token_ids) == NEW_TOKENS for o in outs)
    return batch * NEW_TOKENS / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="qwen2.5-0.5b,llama3-8b")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--peer-batches", default="1,32")
    parser.add_argument("--variants", default="default", help=", ".join(VARIANTS))
    parser.add_argument("--json")
    args = parser.parse_args()
    from baseboard import LLM

    bandwidth = copy_bandwidth()
    rows = []
    for shape in args.models.split(","):
        vocab = SHAPES[shape]["vocab_size"]
        with tempfile.TemporaryDirectory() as directory:
            nbytes = make_checkpoint(shape, directory)
            floor = bandwidth / nbytes
            ours, plans = {}, {}
            for variant in args.variants.split(","):
                settings, backends, block_size = VARIANTS[variant]
                with mock.patch.dict(os.environ, settings):
                    llm = LLM(model=directory, dtype="bfloat16", max_num_seqs=128,
                              max_model_len=PROMPT_LEN + NEW_TOKENS + 16,
                              skip_tokenizer_init=True, backends=backends,
                              block_size=block_size)
                    for b in args.batches.split(","):
                        ours[variant, b] = bench_baseboard(llm, int(b), vocab)
                plans[variant] = llm.plan.selected()
                del llm
                gc.collect()
                torch.cuda.empty_cache()
            peer = {b: bench_transformers(directory, int(b), vocab)
                    for b in args.peer_batches.split(",") if b}
        for (variant, b), tps in ours.items():
            row = {"model": shape, "variant": variant, "batch": int(b), "baseboard_tok_s": tps,
                   "transformers_tok_s": peer.get(b), "floor_tok_s": floor * int(b),
                   "weight_bytes": nbytes, "plan": plans[variant]}
            rows.append(row)
    print(f"copy bandwidth: {bandwidth / 1e12:.2f} TB/s")
    print(f"{'model':<14}{'variant':<18}{'batch':>6}{'baseboard':>12}{'transformers':>14}"
          f"{'ratio':>8}{'floor (b=1)':>12}{'% floor':>9}")
    for r in rows:
        peer = r["transformers_tok_s"]
        ratio = f"{r['baseboard_tok_s'] / peer:.2f}" if peer else "-"
        pct = f"{100 * r['baseboard_tok_s'] / r['floor_tok_s']:.0f}%" if r["batch"] == 1 else "-"
        print(f"{r['model']:<14}{r['variant']:<18}{r['batch']:>6}{r['baseboard_tok_s']:>12.1f}"
              f"{(f'{peer:.1f}' if peer else '-'):>14}{ratio:>8}"
              f"{r['floor_tok_s'] / r['batch']:>12.1f}{pct:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy_bandwidth": bandwidth, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
