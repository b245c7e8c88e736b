"""The measuring half of benchmarks/e2e_gpu.py: each worker runs in a fresh process, which
the driver starts, and writes its result as JSON. One engine per process, as its users run
it, so that nothing one engine leaves behind in a process reaches the other.

    python benchmarks/e2e_gpu_workers.py WORKER --shape NAME --checkpoint DIR --result PATH
        [--device cuda] [--batches 1,32] [--repeats 3] [--prompt-len 128] [--new-tokens 128]
        [--variant default] [--load device|cpu-then-move] [--warmup full|short]

Workers: checkpoint (save a random bf16 model of the shape, measure the copy bandwidth),
baseboard, transformers, one-process (transformers, a baseboard engine, transformers again,
with the process state the engine changed), sdpa-shapes (SDPA's first call at a new key
length against its second).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_state import changed, launch_cost_us, snapshot  # noqa: E402

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
    # --smoke only: checks the script on the CPU in seconds
    "tiny": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64,
                 intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=256),
}
# baseboard configurations to measure: (settings, backend choices, KV block size)
VARIANTS = {
    "default": ({}, None, None),
    "unfused": ({"BASEBOARD_FUSE": "0"}, None, None),  # every op apart (issue 16's fusions off)
    "blocks-16": ({}, None, 16),
    "eager-triton": ({"BASEBOARD_CUDA_GRAPHS": "0"}, {"attention": "triton"}, None),
    "eager-flashinfer": ({"BASEBOARD_CUDA_GRAPHS": "0"}, {"attention": "flashinfer"}, None),
}
SHORT_WARMUP = 8  # new tokens of the warm-up that earlier versions of this script used


def synchronize(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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


def prompts(batch: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab - 100, (batch, length), generator=g).tolist()


def timed_calls(call: Callable[[], None], repeats: int, device: str) -> list[float]:
    """Seconds of each of ``repeats`` calls, each waited for on the device."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def throughput(batch: int, new_tokens: int, times: list[float]) -> dict:
    """tokens/s of the median call, and of the first (what a single timed call reports)."""
    return {"runs_s": times, "tok_s": batch * new_tokens / statistics.median(times),
            "first_tok_s": batch * new_tokens / times[0]}


def load_transformers(args, load: str):
    """``load``: "device" puts each weight on the device as it is read (device_map), as the
    library's users load a model; "cpu-then-move" loads to the CPU and moves the model,
    as earlier versions of this script did."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
    if load == "device":
        if args.device != "cpu":  # on the CPU no map is needed (nor accelerate)
            kwargs["device_map"] = args.device
        return AutoModelForCausalLM.from_pretrained(args.checkpoint, **kwargs)
    return AutoModelForCausalLM.from_pretrained(args.checkpoint, **kwargs).to(args.device)


def transformers_runs(model, args, batch: int, warmup_tokens: int) -> dict:
    """Warm up with other prompts (``warmup_tokens`` new tokens), then time ``generate``."""
    vocab = SHAPES[args.shape]["vocab_size"]

    def generate(ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=0)
        assert out.shape == (ids.shape[0], ids.shape[1] + new_tokens), out.shape
        return out

    measured = torch.tensor(prompts(batch, args.prompt_len, vocab, 0), device=args.device)
    warm = torch.tensor(prompts(batch, args.prompt_len, vocab, 1), device=args.device)
    generate(warm, warmup_tokens)
    times = timed_calls(lambda: generate(measured, args.new_tokens), args.repeats, args.device)
    return throughput(batch, args.new_tokens, times)


def host_profile(model, args, new_tokens: int = 32, top: int = 15) -> list[str]:
    """The functions where one batch-1 ``generate`` spends its host time (cProfile)."""
    ids = torch.tensor(prompts(1, args.prompt_len, model.config.vocab_size, 2),
                       device=args.device)
    profiler = cProfile.Profile()
    profiler.enable()
    model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                   max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    synchronize(args.device)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return [line for line in text.getvalue().splitlines() if line.strip()]


def make_baseboard(args, variant: str):
    from baseboard import LLM

    _, backends, block_size = VARIANTS[variant]
    return LLM(model=args.checkpoint, dtype="bfloat16", max_num_seqs=max(args.batches),
               max_model_len=args.prompt_len + args.new_tokens + 16, skip_tokenizer_init=True,
               backends=backends, block_size=block_size,
               tensor_parallel_size=args.tensor_parallel_size)


def close(llm) -> None:
    """Stop the engine's tensor-parallel workers (if any) before the next engine starts."""
    llm.engine.close()


def baseboard_runs(llm, args, batch: int) -> dict:
    """Warm up at full length with other prompts (the measured prefill then finds nothing
    in the prefix cache), then time ``generate``."""
    from baseboard import SamplingParams

    vocab = SHAPES[args.shape]["vocab_size"]
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True,
                            detokenize=False)

    def generate(seed: int) -> None:
        outs = llm.generate([{"prompt_token_ids": p}
                             for p in prompts(batch, args.prompt_len, vocab, seed)], params)
        assert all(len(o.outputs[0].token_ids) == args.new_tokens for o in outs)

    generate(1)
    return throughput(batch, args.new_tokens,
                      timed_calls(lambda: generate(0), args.repeats, args.device))


# ---- workers: each returns a JSON-able dict ----

def make_checkpoint(shape: str, directory: str, device: str = "cuda") -> int:
    """Save a random bf16 model of ``shape`` to ``directory``; its weight bytes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for p in model.parameters():  # std 0.02 keeps activations finite through the layers
        p.data.normal_(0, 0.02)
    model.save_pretrained(directory, safe_serialization=True)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    free_device_memory()
    return nbytes


def worker_checkpoint(args) -> dict:
    """Save the checkpoint; its weight bytes, the copy bandwidth and the software here."""
    import transformers

    info = {"weight_bytes": make_checkpoint(args.shape, args.checkpoint, args.device),
            "torch": torch.__version__, "transformers": transformers.__version__}
    if args.device != "cpu":
        import triton

        info.update(copy_bandwidth=copy_bandwidth(), device=torch.cuda.get_device_name(),
                    triton=triton.__version__)
    return info


def timed_load(args, tune: str):
    """(LLM, seconds to build it) with BASEBOARD_TUNE=tune."""
    os.environ["BASEBOARD_TUNE"] = tune
    start = time.perf_counter()
    llm = make_baseboard(args, args.variant)
    return llm, time.perf_counter() - start


def worker_baseboard(args) -> dict:
    """The runs, and the load times: the first with measured selection (an empty timing
    cache when the driver gives a fresh one), then again with the cache filled, and with
    tuning off (the three differ by what tuning costs)."""
    llm, first = timed_load(args, "auto")
    batches = {str(b): baseboard_runs(llm, args, b) for b in args.batches}
    decisions = {op: d.why for op, d in llm.plan.decisions.items() if d.measured}
    plan = llm.plan.selected()
    close(llm)
    del llm
    free_device_memory()
    loads = {"tune_first_s": first}
    for label, tune in (("tune_cached_s", "auto"), ("tune_off_s", "off")):
        llm, loads[label] = timed_load(args, tune)
        close(llm)
        del llm
        free_device_memory()
    return {"plan": plan, "batches": batches, "measured": decisions, "loads": loads}


def worker_transformers(args) -> dict:
    model = load_transformers(args, args.load)
    warmup = args.new_tokens if args.warmup == "full" else SHORT_WARMUP
    return {"batches": {str(b): transformers_runs(model, args, b, warmup)
                        for b in args.batches}}


def worker_one_process(args) -> dict:
    """transformers, then a baseboard engine (default variant), then transformers again, in
    this one process: what the engine left behind and what it cost transformers."""
    result: dict[str, Any] = {}
    if args.device != "cpu":
        torch.zeros(1, device=args.device)  # CUDA initialised before the first snapshot

    def transformers_pass(name: str, load: str, warmup: int, profile: bool) -> None:
        model = load_transformers(args, load)
        result[name] = {str(b): transformers_runs(model, args, b, warmup) for b in args.batches}
        if profile:
            result[f"{name} host profile"] = host_profile(model, args)
        del model
        free_device_memory()

    transformers_pass("transformers before", "device", args.new_tokens, profile=True)
    before, launch_before = snapshot(), launch_cost_us(args.device)
    llm = make_baseboard(args, "default")
    result["baseboard"] = {str(b): baseboard_runs(llm, args, b) for b in args.batches}
    del llm
    free_device_memory()
    after, launch_after = snapshot(), launch_cost_us(args.device)
    result["state changed by the engine"] = changed(before, after)
    result["launch cost us before, after"] = [launch_before, launch_after]
    # first as the earlier script did (load to the CPU, move, 8-token warm-up), then as users do
    transformers_pass("transformers after, earlier protocol", "cpu-then-move", SHORT_WARMUP,
                      profile=False)
    transformers_pass("transformers after", "device", args.new_tokens, profile=True)
    return result


def worker_sdpa_shapes(args, lengths: range = range(200, 232)) -> dict:
    """The cost of SDPA's first call at each new key length, as a decode step of
    transformers' dynamic cache makes it (one query, keys repeated to every head, no mask),
    against a second call at the same length; per SDPA backend, in milliseconds."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    shape = SHAPES[args.shape]
    heads = shape["num_attention_heads"]
    head_dim = shape["hidden_size"] // heads
    batch = max(args.batches)
    q = torch.randn(batch, heads, 1, head_dim, dtype=torch.bfloat16, device=args.device)
    backends = {"default": None}
    if args.device != "cpu":
        backends.update(cudnn=SDPBackend.CUDNN_ATTENTION, flash=SDPBackend.FLASH_ATTENTION,
                        efficient=SDPBackend.EFFICIENT_ATTENTION)
    result: dict[str, Any] = {"batch": batch, "heads": heads, "head_dim": head_dim,
                              "key lengths": [lengths.start, lengths.stop - 1]}
    for offset, (name, backend) in enumerate(backends.items()):
        # each backend meets key lengths it has not seen: a fresh range per backend
        shifted = range(lengths.start + 64 * offset, lengths.stop + 64 * offset)
        # contiguous, as the dynamic cache's concatenations leave them
        kvs = [torch.randn(2, batch, heads, length, head_dim, dtype=torch.bfloat16,
                           device=args.device) for length in shifted]
        calls: dict[str, list[float]] = {"first": [], "second": []}
        try:
            with sdpa_kernel(backend) if backend is not None else nullcontext():
                for which in ("first", "second"):
                    for k, v in kvs:
                        synchronize(args.device)
                        start = time.perf_counter()
                        scaled_dot_product_attention(q, k, v)
                        synchronize(args.device)
                        calls[which].append((time.perf_counter() - start) * 1e3)
        except RuntimeError as exc:  # a backend that does not take these inputs
            result[name] = {"error": str(exc).splitlines()[0]}
            continue
        result[name] = {f"{which} call ms (median)": statistics.median(times)
                        for which, times in calls.items()}
    return result


WORKERS = {"checkpoint": worker_checkpoint, "baseboard": worker_baseboard,
           "transformers": worker_transformers, "one-process": worker_one_process,
           "sdpa-shapes": worker_sdpa_shapes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("worker", choices=sorted(WORKERS))
    parser.add_argument("--shape", required=True, choices=sorted(SHAPES))
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batches", type=lambda t: [int(x) for x in t.split(",") if x],
                        default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--variant", default="default", choices=sorted(VARIANTS))
    parser.add_argument("--load", choices=("device", "cpu-then-move"), default="device")
    parser.add_argument("--warmup", choices=("full", "short"), default="full")
    parser.add_argument("--tensor-parallel-size", type=int, default=1,
                        help="baseboard's ranks (one GPU each)")
    args = parser.parse_args()
    result = WORKERS[args.worker](args)
    with open(args.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
