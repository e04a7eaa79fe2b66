import pytest

from memarch.models import parse_pattern, ratio_pattern


def test_letters_and_repetition():
    assert parse_pattern("LLLA" * 2) == (["linear_attention"] * 3 + ["attention"]) * 2


def test_names_and_lists():
    assert parse_pattern("swa, attention") == ["swa", "attention"]
    assert parse_pattern(["attention", "linear_attention"]) == ["attention", "linear_attention"]


@pytest.mark.parametrize(
    "placement,expected",
    [
        ("last", "LLLALLLA"),
        ("first", "ALLLALLL"),
        ("middle", "LALLLALL"),
    ],
)
def test_ratio_placement(placement, expected):
    got = ratio_pattern(8, 3, linear="linear_attention", placement=placement)
    assert got == parse_pattern(expected)


def test_ratio_zero_is_all_attention():
    assert ratio_pattern(3, 0, linear="linear_attention") == ["attention"] * 3


@pytest.mark.parametrize(
    "bad,match",
    [
        ("", "empty"),
        ("LLXA", r"unknown letters \['X'\].*accepted letters"),
        ("attention,nope", "unknown mixer 'nope'"),
        ([], "empty"),
    ],
)
def test_malformed_patterns(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_pattern(bad)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"num_layers": 0, "ratio": 1}, "num_layers"),
        ({"num_layers": 4, "ratio": -1}, "ratio"),
        ({"num_layers": 4, "ratio": 1, "placement": "end"}, "placement must be one of"),
    ],
)
def test_bad_ratio_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ratio_pattern(linear="linear_attention", **kw)
