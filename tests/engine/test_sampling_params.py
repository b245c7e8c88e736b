import pytest

from baseboard import SamplingParams
from baseboard.core.errors import RequestError


@pytest.mark.parametrize("kwargs, name", [
    ({"n": 0}, "n"),
    ({"n": True}, "n"),
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
    ({"ignore_eos": "no"}, "ignore_eos"),
    ({"detokenize": 1}, "detokenize"),
    ({"skip_special_tokens": "yes"}, "skip_special_tokens"),
    ({"temperature": True}, "temperature"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -2**63 - 1}, "seed"),
    ({"seed": 1.0}, "seed"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.01}, "frequency_penalty"),
    ({"frequency_penalty": "0.5"}, "frequency_penalty"),
    ({"repetition_penalty": 0.0}, "repetition_penalty"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty"),
    ({"min_p": 1.5}, "min_p"),
    ({"min_p": -0.1}, "min_p"),
    ({"min_tokens": -1}, "min_tokens"),
    ({"min_tokens": 17}, "min_tokens"),  # more than max_tokens=16
    ({"logprobs": -1}, "logprobs"),
    ({"logprobs": 2.0}, "logprobs"),
    ({"prompt_logprobs": "3"}, "prompt_logprobs"),
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


def test_seeds_are_checked_against_the_generators_range():
    message = str(pytest.raises(RequestError, SamplingParams, seed=2**64).value)
    assert "seed=18446744073709551616" in message and "2**64 - 1" in message
    assert SamplingParams(seed=2**64 - 1).seed == 2**64 - 1
    assert SamplingParams(seed=-2**63).seed == -2**63


def test_completion_seeds_count_up_from_the_seed_and_stay_in_range():
    assert SamplingParams(n=3, seed=7).child_seed(2) == 9
    assert SamplingParams(n=2, seed=2**64 - 1).child_seed(1) == 0
    assert SamplingParams(n=2).child_seed(1) is None


def test_numpy_numbers_become_python_numbers():
    np = pytest.importorskip("numpy")
    params = SamplingParams(temperature=np.float32(0.5), top_k=np.int64(4), seed=np.int64(3),
                            logprobs=np.int32(2))
    assert type(params.temperature) is float and params.temperature == 0.5
    assert type(params.top_k) is int and type(params.seed) is int
    assert type(params.logprobs) is int


def test_vllm_defaults():
    params = SamplingParams()
    assert (params.n, params.presence_penalty, params.frequency_penalty,
            params.repetition_penalty, params.min_p, params.min_tokens) == (1, 0, 0, 1, 0, 0)
    assert params.logprobs is None and params.prompt_logprobs is None
    assert params.skip_special_tokens is True and not params.penalised
    assert SamplingParams(repetition_penalty=1.1).penalised
