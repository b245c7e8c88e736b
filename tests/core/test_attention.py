"""The attention contract's shared check: metadata stay valid until the next build."""

import pytest

from baseboard.core.attention import check_metadata_current
from baseboard.core.errors import BaseboardError


def test_metadata_of_the_latest_build_pass():
    check_metadata_current(3, 3, "overwrote them")


def test_metadata_of_an_earlier_build_are_refused_naming_both_calls_and_the_rule():
    with pytest.raises(BaseboardError) as err:
        check_metadata_current(2, 3, "re-planned the kernels")
    message = str(err.value)
    assert "build_metadata call 2 were passed to forward after call 3" in message
    assert "which re-planned the kernels" in message
    assert "run every layer with them, then build the next step's" in message
