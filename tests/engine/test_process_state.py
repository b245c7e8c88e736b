"""An engine shares its process with other libraries (transformers, often): once it is
deleted, nothing global holds its model or KV cache, and torch's process-wide modes and the
environment are as it found them. (Torch's CPU thread count is the one setting a CPU engine
makes on purpose: BASEBOARD_NUM_THREADS.)"""

import gc
import os
import weakref

import torch

from baseboard import LLM, SamplingParams


def process_modes() -> dict:
    return {"grad": torch.is_grad_enabled(), "inference": torch.is_inference_mode_enabled(),
            "dtype": torch.get_default_dtype(), "device": torch.get_default_device(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "matmul precision": torch.get_float32_matmul_precision(),
            "environ": dict(os.environ)}


def test_a_deleted_engine_leaves_no_memory_and_no_modes_behind(tiny_llama):
    before = process_modes()
    llm = LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=4)
    llm.generate(["Paris is the capital", "The quick brown fox"],
                 SamplingParams(temperature=0, max_tokens=4))
    held = [weakref.ref(x) for x in (llm.engine, llm.engine.model,
                                     *llm.engine.runner.kv_caches)]
    del llm
    gc.collect()
    assert [ref() is None for ref in held] == [True] * len(held)
    assert process_modes() == before
