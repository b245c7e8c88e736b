import pytest

from baseboard import SamplingParams
from baseboard.core.errors import RequestError


@pytest.mark.parametrize("kwargs, name", [
    ({"n": 2}, "n"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": -2}, "top_k"),
    ({"top_k": 1.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": "1"}, "seed"),
    ({"stop": ""}, "stop"),
    ({"stop": ["ok", 3]}, "stop"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
])
def test_invalid_values_name_the_parameter_value_and_range(kwargs, name):
    with pytest.raises(RequestError) as info:
        SamplingParams(**kwargs)
    message = str(info.value)
    assert f"{name}=" in message and repr(next(iter(kwargs.values()))) in message
    assert "must be" in message


def test_valid_values_and_derived_fields():
    params = SamplingParams(temperature=0, top_k=-1, top_p=0.5, seed=3, max_tokens=4,
                            stop="END", stop_token_ids=[7, 9])
    assert params.greedy
    assert params.stop_strings == ("END",)
    assert params.stop_ids == frozenset({7, 9})
    assert params.stop_holdback == 2
    assert SamplingParams().stop_holdback == 0
    assert SamplingParams(stop=["a", "abcd"]).stop_strings == ("a", "abcd")
