import pytest

from baseboard.testing.sandbox import PluginSite


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Distributions installed for one test: a directory on sys.path."""
    plugins = PluginSite(tmp_path / "site")
    monkeypatch.syspath_prepend(str(plugins.root))
    yield plugins
    plugins.forget_modules()
