"""The shared random-access source base: validation, padding, index errors."""

import dataclasses

import numpy as np
import pytest

from memarch.data.source import IGNORE_INDEX, SyntheticSource, check_seed


@dataclasses.dataclass(frozen=True)
class Ramp:
    seq_len: int = 4

    def validate(self):
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1; got {self.seq_len}")


class RampSource(SyntheticSource):
    task = "ramp"

    def example(self, index):
        x = np.arange(self.config.seq_len, dtype=np.int32) + index + self.seed
        return x, x + 1


def test_examples_are_pure_and_padded_on_the_right():
    src = RampSource(Ramp(), seed=2, num_examples=3, pad_to=6)
    row = src[1]
    np.testing.assert_array_equal(row["inputs"], [3, 4, 5, 6, 0, 0])
    np.testing.assert_array_equal(row["targets"], [4, 5, 6, 7, IGNORE_INDEX, IGNORE_INDEX])
    np.testing.assert_array_equal(
        RampSource(Ramp(), seed=2, num_examples=3)[1]["inputs"], [3, 4, 5, 6]
    )
    assert len(src) == 3 and repr(src).startswith("RampSource(")


@pytest.mark.parametrize("index", [-1, 3])
def test_index_out_of_range(index):
    with pytest.raises(IndexError, match="ramp index"):
        RampSource(Ramp(), seed=0, num_examples=3)[index]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"seed": -1}, "seed"),
        ({"num_examples": 0}, "num_examples"),
        ({"num_examples": 2.0}, "num_examples"),
        ({"pad_to": 3}, "pad_to"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    args = {"seed": 0, "num_examples": 2} | kwargs
    with pytest.raises(ValueError, match=field):
        RampSource(Ramp(), **args)
    with pytest.raises(ValueError, match="seq_len"):
        RampSource(Ramp(seq_len=0), seed=0, num_examples=1)
    check_seed(0)
