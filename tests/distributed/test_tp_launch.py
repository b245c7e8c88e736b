"""The other ways in: `baseboard generate --tensor-parallel-size 2`, and a torchrun launch
whose every process calls LLM(...) (rank 0 gets the engine, the others serve it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tp_models import PROMPTS, greedy, widened
from tiny_models import tiny_hf_model, tiny_vocabulary, write_gguf


def _environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}


@pytest.mark.slow
def test_generate_command_with_two_ranks_prints_the_text_of_one(tmp_path):
    model = widened(tiny_hf_model(vocab_size=len(tiny_vocabulary())))
    path = write_gguf(model, tmp_path / "tiny.gguf", lambda name: "F32", tokenizer=True)

    def generate(size: int) -> str:
        run = subprocess.run([sys.executable, "-m", "baseboard.cli", "generate", "--model",
                              str(path), "--platform", "cpu", "--max-tokens", "12",
                              "--tensor-parallel-size", str(size), "the quick brown fox"],
                             capture_output=True, text=True, timeout=300, env=_environment())
        assert run.returncode == 0, run.stderr
        return run.stdout

    one = generate(1)
    assert one.strip() and generate(2) == one


TORCHRUN_SCRIPT = """
    import json, sys
    from baseboard import LLM
    from baseboard.engine.sampling_params import SamplingParams

    llm = LLM(sys.argv[1], platform="cpu", kv_cache_memory=1 << 22, skip_tokenizer_init=True,
              tensor_parallel_size=2)
    # only rank 0 gets here: the other rank served it inside LLM(...) and exited
    outputs = llm.generate([{"prompt_token_ids": p} for p in json.loads(sys.argv[2])],
                           SamplingParams(max_tokens=12, temperature=0, ignore_eos=True,
                                          detokenize=False))
    print("TOKENS", json.dumps([o.outputs[0].token_ids for o in outputs]))
    llm.engine.close()
"""


@pytest.mark.slow
def test_a_torchrun_launch_gives_the_tokens_of_one_rank(tiny_llama_dir, tmp_path):
    import json

    script = tmp_path / "tp_script.py"
    script.write_text(textwrap.dedent(TORCHRUN_SCRIPT))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                          "2", "--standalone", str(script), str(tiny_llama_dir),
                          json.dumps(PROMPTS)], capture_output=True, text=True, timeout=300,
                         env=_environment(), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("TOKENS ")]
    assert len(lines) == 1  # rank 0 alone returned from LLM(...)
    assert json.loads(lines[0][len("TOKENS "):]) == greedy(tiny_llama_dir, 1)
