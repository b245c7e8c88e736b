"""Plugin discovery with tiny plugins installed as real distributions in a tmp directory."""

import json
import os
import subprocess
import sys

import pytest

from baseboard.core.errors import PluginError, RegistrationError
from baseboard.frontend.plan import resolve_plan
from baseboard.plugins.catalog import build_catalog

GOOD = """
    from baseboard.core.registry import Impl
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 1


    @hookimpl
    def baseboard_ops():
        return [Impl("rms_norm", "{name}", "baseboard.kernels.torch.norm:rms_norm")]
"""

BROKEN = """
    import vendor_library_that_is_not_installed

    BASEBOARD_CONTRACT = 1
"""

FUTURE_CONTRACT = """
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 2


    @hookimpl
    def baseboard_ops():
        raise AssertionError("a refused plugin's hooks must never run")
"""


def good(name: str) -> str:
    return GOOD.replace("{name}", name)


def test_a_plugin_that_fails_to_import_does_not_break_the_others(site):
    site.install("broken-dist", {"broken": "broken_plugin"}, {"broken_plugin": BROKEN})
    site.install("good-dist", {"good": "good_plugin"}, {"good_plugin": good("goodnorm")})
    res = resolve_plan(environ={"BASEBOARD_BACKEND": "rms_norm=goodnorm"})
    broken = res.catalog.plugins.record("broken")
    assert (broken.status, broken.distribution, broken.version) == ("failed", "broken-dist", "1.0")
    assert "vendor_library_that_is_not_installed" in broken.error
    assert res.catalog.plugins.record("good").status == "loaded"
    assert res.plan.decisions["rms_norm"].selected == "goodnorm"


def test_a_failed_plugin_named_in_the_allow_list_is_an_error(site):
    site.install("broken-dist", {"broken": "broken_plugin"}, {"broken_plugin": BROKEN})
    with pytest.raises(PluginError, match="'broken', named in BASEBOARD_PLUGINS, could not be "
                                          "loaded: .*vendor_library_that_is_not_installed"):
        resolve_plan(environ={"BASEBOARD_PLUGINS": "cpu,broken"})


# registers something through every hook, and raises in the one named RAISE_IN
RAISING = """
    from baseboard.core.registry import Impl
    from baseboard.plugins import hookimpl
    from baseboard.quantization.method import QuantMethod
    from baseboard.testing.null import NullPlatform

    BASEBOARD_CONTRACT = 1
    RAISE_IN = "{hook}"


    def maybe_raise(where):
        if where == RAISE_IN:
            raise RuntimeError(f"vendor runtime missing ({where})")


    class FlakyPlatform(NullPlatform):
        def detect(self):
            maybe_raise("detect")
            return super().detect()


    @hookimpl
    def baseboard_platforms():
        maybe_raise("baseboard_platforms")
        return [FlakyPlatform(name="flaky")]


    @hookimpl
    def baseboard_ops():
        maybe_raise("baseboard_ops")
        return [Impl("rms_norm", "flakynorm", "baseboard.kernels.torch.norm:rms_norm")]


    @hookimpl
    def baseboard_models():
        maybe_raise("baseboard_models")
        return {"FlakyForCausalLM": "baseboard.models.llama:LlamaForCausalLM"}


    @hookimpl
    def baseboard_quantization_methods():
        maybe_raise("baseboard_quantization_methods")
        return [QuantMethod("flakyq", "flaky", ("gemm",), "flaky_plugin:load")]
"""
HOOKS = ("baseboard_platforms", "baseboard_ops", "baseboard_models",
         "baseboard_quantization_methods")


def raising(where: str) -> str:
    return RAISING.replace("{hook}", where)


@pytest.mark.parametrize("where", HOOKS + ("detect",))
def test_a_plugin_whose_hook_or_detection_raises_fails_alone_and_registers_nothing(site, where):
    site.install("flaky-dist", {"flaky": "flaky_plugin"}, {"flaky_plugin": raising(where)})
    site.install("good-dist", {"good": "good_plugin"}, {"good_plugin": good("goodnorm")})
    res = resolve_plan(environ={"BASEBOARD_BACKEND": "rms_norm=goodnorm"})
    record = res.catalog.plugins.record("flaky")
    assert (record.status, record.distribution) == ("failed", "flaky-dist")
    what = "platform 'flaky': detect()" if where == "detect" else f"hook {where}()"
    assert f"{what} raised RuntimeError: vendor runtime missing ({where})" in record.error
    catalog = res.catalog
    assert "flaky" not in catalog.platforms and "flaky" not in catalog.detections
    assert "flakynorm" not in [i.name for i in catalog.registry.for_op("rms_norm")]
    assert "FlakyForCausalLM" not in catalog.models
    assert "flakyq" not in catalog.quant_methods
    assert catalog.plugins.manager.get_plugin("flaky") is None
    assert res.catalog.plugins.record("good").status == "loaded"
    assert res.plan.decisions["rms_norm"].selected == "goodnorm"


def test_the_same_plugin_loads_when_nothing_raises(site):
    site.install("flaky-dist", {"flaky": "flaky_plugin"}, {"flaky_plugin": raising("nowhere")})
    catalog = resolve_plan(environ={}).catalog
    assert catalog.plugins.record("flaky").status == "loaded"
    assert catalog.detections["flaky"].present
    assert {"FlakyForCausalLM"} <= set(catalog.models) and "flakyq" in catalog.quant_methods


NEEDS_RUNTIME = """
    from baseboard.plugins import hookimpl
    from baseboard.testing.null import NullPlatform

    BASEBOARD_CONTRACT = 1


    class VendorPlatform(NullPlatform):
        def detect(self):
            import no_such_vendor_runtime  # what requires guards
            return super().detect()


    @hookimpl
    def baseboard_platforms():
        return [VendorPlatform(name="vendor", requires=("no-such-vendor-runtime",),
                               doc="a device behind a vendor runtime")]
"""


def test_a_platform_whose_required_distribution_is_missing_is_absent_saying_why(site):
    site.install("vendor-dist", {"vendor": "vendor_plugin"}, {"vendor_plugin": NEEDS_RUNTIME})
    catalog = build_catalog(None, ())
    assert catalog.plugins.record("vendor").status == "loaded"
    detection = catalog.detections["vendor"]
    assert not detection.present
    assert detection.reason == ("needs no-such-vendor-runtime installed (pip install "
                                "no-such-vendor-runtime)")
    described = catalog.platforms["vendor"].describe(present=False)
    assert (described["requires"], described["doc"]) == (["no-such-vendor-runtime"],
                                                         "a device behind a vendor runtime")


def test_a_plugin_whose_hook_raises_named_in_the_allow_list_is_an_error(site):
    site.install("flaky-dist", {"flaky": "flaky_plugin"},
                 {"flaky_plugin": raising("baseboard_ops")})
    with pytest.raises(PluginError, match=r"'flaky', named in BASEBOARD_PLUGINS, could not be "
                                          r"loaded: hook baseboard_ops\(\) raised RuntimeError"):
        resolve_plan(environ={"BASEBOARD_PLUGINS": "cpu,flaky"})


def test_baseboard_info_lists_a_plugin_whose_hook_raises_as_failed(site):
    site.install("flaky-dist", {"flaky": "flaky_plugin"}, {"flaky_plugin": raising("detect")})
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site.root), env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-m", "baseboard.cli", "info", "--json"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    plugins = {r["name"]: r for r in json.loads(run.stdout)["plugins"]}
    assert plugins["flaky"]["status"] == "failed"
    assert "detect() raised RuntimeError: vendor runtime missing" in plugins["flaky"]["error"]
    assert plugins["cpu"]["status"] == "loaded"


def test_an_incompatible_contract_is_refused_naming_the_supported_versions(site):
    site.install("future-dist", {"future": "future_plugin"}, {"future_plugin": FUTURE_CONTRACT},
                 version="3.0")
    record = resolve_plan(environ={}).catalog.plugins.record("future")
    assert record.status == "refused"
    assert "BASEBOARD_CONTRACT = 2" in record.error
    assert "supports contract version(s) 1" in record.error
    with pytest.raises(PluginError, match="'future', named in BASEBOARD_PLUGINS"):
        resolve_plan(environ={"BASEBOARD_PLUGINS": "cpu,future"})


def test_two_plugins_registering_one_name_for_one_op_is_an_error_naming_both(site):
    site.install("alpha-dist", {"alpha": "alpha_plugin"}, {"alpha_plugin": good("samename")})
    site.install("beta-dist", {"beta": "beta_plugin"}, {"beta_plugin": good("samename")})
    with pytest.raises(RegistrationError, match="rms_norm=samename is registered by both "
                                                "plugin 'alpha' and plugin 'beta'"):
        resolve_plan(environ={})
    # disabling one of them, as the message suggests, resolves the clash
    res = resolve_plan(environ={"BASEBOARD_DISABLE_PLUGINS": "beta"})
    assert res.catalog.plugins.record("beta").status == "disabled"


def test_a_plugin_may_not_take_a_name_of_the_core_plugin(site):
    site.install("clash-dist", {"clash": "clash_plugin"}, {"clash_plugin": good("torch")})
    with pytest.raises(RegistrationError, match="plugin 'baseboard' and plugin 'clash'"):
        resolve_plan(environ={})


@pytest.mark.parametrize("variable", ["BASEBOARD_PLUGINS", "BASEBOARD_DISABLE_PLUGINS"])
def test_unknown_plugin_names_are_errors_suggesting_the_nearest(site, variable):
    site.install("good-dist", {"goodplugin": "good_plugin"}, {"good_plugin": good("goodnorm")})
    with pytest.raises(PluginError, match=f"{variable} names plugin 'godplugin', which is not "
                                          f"installed. Did you mean 'goodplugin'?"):
        resolve_plan(environ={variable: "godplugin"})


def test_the_catalog_is_rebuilt_on_every_resolve(site):
    assert resolve_plan(environ={}).catalog.plugins.record("late") is None
    site.install("late-dist", {"late": "late_plugin"}, {"late_plugin": good("latenorm")})
    assert resolve_plan(environ={}).catalog.plugins.record("late").status == "loaded"
