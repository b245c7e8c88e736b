import re
from pathlib import Path

import pytest

from baseboard.core.errors import ConfigError
from baseboard.core.settings import SETTINGS, read_settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "env.md"


def test_defaults_when_unset():
    settings = read_settings({})
    assert settings["BASEBOARD_CUDA_GRAPHS"] is True
    assert settings["BASEBOARD_GPU_MEMORY_UTILIZATION"] == 0.9
    assert settings["BASEBOARD_DISABLE_PLUGINS"] == ()
    assert settings.explicit == frozenset()


def test_values_are_parsed_and_marked_explicit():
    settings = read_settings({"BASEBOARD_CUDA_GRAPHS": "off",
                              "BASEBOARD_DISABLE_PLUGINS": "a, b,,",
                              "BASEBOARD_GPU_MEMORY_UTILIZATION": "0.5"})
    assert settings["BASEBOARD_CUDA_GRAPHS"] is False
    assert settings["BASEBOARD_DISABLE_PLUGINS"] == ("a", "b")
    assert settings["BASEBOARD_GPU_MEMORY_UTILIZATION"] == 0.5
    assert "BASEBOARD_CUDA_GRAPHS" in settings.explicit


def test_unknown_variable_names_the_closest_known_one():
    with pytest.raises(ConfigError, match="BASEBOARD_ATENTION_BACKEND.*BASEBOARD_ATTENTION_BACKEND"):
        read_settings({"BASEBOARD_ATENTION_BACKEND": "torch"})


def test_other_prefixes_are_ignored():
    assert read_settings({"CUDA_VISIBLE_DEVICES": "0", "BASEBOARDX": "1"})["BASEBOARD_PLATFORM"] is None


@pytest.mark.parametrize("name,value", [
    ("BASEBOARD_CUDA_GRAPHS", "maybe"),
    ("BASEBOARD_GPU_MEMORY_UTILIZATION", "1.5"),
    ("BASEBOARD_NUM_THREADS", "-2"),
])
def test_bad_values_name_the_variable_and_the_value(name, value):
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        read_settings({name: value})


def test_env_doc_lists_every_setting_with_its_default():
    rows = {}
    for line in DOCS.read_text().splitlines():
        match = re.match(r"\| `(BASEBOARD_\w+)` \| [^|]+ \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    assert set(rows) == {s.name for s in SETTINGS}
    for s in SETTINGS:
        default = s.default
        if default is None or default == ():
            expected = "-"
        elif isinstance(default, bool):
            expected = "1" if default else "0"
        else:
            expected = str(default)
        assert rows[s.name] == expected, s.name
