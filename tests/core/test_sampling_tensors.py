"""SamplingTensors: what its host flags promise, and token_counts."""

import pytest
import torch

from baseboard.core.errors import ConfigError
from baseboard.core.sampling import SamplingTensors, token_counts


def _base(**fields) -> SamplingTensors:
    return SamplingTensors(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.ones(2),
                           None, all_greedy=True, **fields)


def _penalties(vocab: int = 5) -> dict:
    return dict(presence_penalty=torch.zeros(2), frequency_penalty=torch.zeros(2),
                repetition_penalty=torch.ones(2),
                output_counts=torch.zeros(2, vocab, dtype=torch.int32),
                prompt_mask=torch.zeros(2, vocab, dtype=torch.bool))


def test_missing_min_p_and_penalties_mean_none():
    params = _base()
    assert params.no_min_p and params.no_penalties
    assert params.output_counts is None and params.prompt_mask is None


def test_given_min_p_and_penalties_promise_nothing():
    params = _base(min_p=torch.zeros(2), **_penalties())
    assert not params.no_min_p and not params.no_penalties


def test_the_new_fields_are_keyword_only():
    with pytest.raises(TypeError):
        SamplingTensors(torch.zeros(2), torch.zeros(2, dtype=torch.long), torch.ones(2),
                        None, True, False, False, torch.zeros(2))


def test_penalties_without_their_counts_are_refused():
    fields = _penalties()
    del fields["output_counts"]
    with pytest.raises(ConfigError, match="not output_counts"):
        _base(**fields)


def test_no_penalties_with_counts_is_refused():
    with pytest.raises(ConfigError, match="no_penalties=True"):
        _base(no_penalties=True, **_penalties())


def test_token_counts_counts_each_row():
    counts = token_counts([[3, 1, 3, 3], [], [0]], 5)
    assert counts.dtype == torch.int32
    assert counts.tolist() == [[0, 1, 0, 3, 0], [0] * 5, [1, 0, 0, 0, 0]]
