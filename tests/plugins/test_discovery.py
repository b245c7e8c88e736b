"""Plugin discovery with tiny plugins installed as real distributions in a tmp directory."""

import pytest

from baseboard.core.errors import PluginError, RegistrationError
from baseboard.frontend.resolve import resolve_plan

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
