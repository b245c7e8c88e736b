import pytest
import torch

from baseboard.core.errors import PlatformError, PluginError
from baseboard.frontend.plan import resolve_plan


def test_cpu_is_detected_without_a_gpu():
    res = resolve_plan(environ={})
    assert res.platform.platform.name == "cpu"
    detections = res.platform.detections
    assert detections["cpu"].present
    assert not detections["cuda"].present and "CPU-only" in detections["cuda"].reason
    assert not detections["rocm"].present


def test_builtin_platforms_come_from_entry_points():
    res = resolve_plan(environ={})
    plugins = {p.name: p for p in res.catalog.platforms.values()}
    assert {"cpu", "cuda", "rocm", "xpu"} <= set(plugins)
    assert all(plugins[n].plugin == n for n in ("cpu", "cuda", "rocm", "xpu"))
    report = {r.name: r for r in res.catalog.plugins.report}
    assert report["cuda"].distribution == "baseboard" and report["cuda"].status == "loaded"


def test_unknown_platform_suggests_the_nearest():
    with pytest.raises(PlatformError, match="'cpux'.*Did you mean 'cpu'.*Known platforms"):
        resolve_plan(environ={"BASEBOARD_PLATFORM": "cpux"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_named_but_absent_platform_is_an_error_with_the_reason():
    with pytest.raises(PlatformError, match="'cuda', which is not present here: this torch"):
        resolve_plan(environ={"BASEBOARD_PLATFORM": "cuda"})


def test_argument_beats_env_platform():
    resolution = resolve_plan(platform="cpu", environ={"BASEBOARD_PLATFORM": "cuda"})
    assert resolution.plan.platform == "cpu"


def test_disabled_platform_plugin_is_gone_and_asking_for_it_says_so():
    with pytest.raises(PlatformError, match="'xpu'.*no loaded plugin"):
        resolve_plan(environ={"BASEBOARD_DISABLE_PLUGINS": "xpu", "BASEBOARD_PLATFORM": "xpu"})


def test_allow_list_without_cpu_leaves_no_platform():
    with pytest.raises(PlatformError, match="no platform is present"):
        resolve_plan(environ={"BASEBOARD_PLUGINS": "rocm"})


def test_core_plugin_cannot_be_disabled():
    with pytest.raises(PluginError, match="cannot be disabled"):
        resolve_plan(environ={"BASEBOARD_DISABLE_PLUGINS": "baseboard"})


def test_builtin_platforms_prefer_only_implementations_registered_for_them():
    catalog = resolve_plan(environ={}).catalog
    for name in ("cuda", "rocm", "xpu", "cpu"):
        platform = catalog.platforms[name]
        for op, preferred in platform.preferences.items():
            registered = {i.name for i in catalog.registry.for_op(op) if i.runs_on(name)}
            assert set(preferred) <= registered, (name, op, set(preferred) - registered)
