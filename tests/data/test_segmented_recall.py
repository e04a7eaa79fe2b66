import dataclasses

import numpy as np
import pytest

from memarch.data.segmented_recall import (
    SegmentedRecallConfig,
    SegmentedRecallSource,
    chance_accuracy,
)
from memarch.data.source import IGNORE_INDEX

CFG = SegmentedRecallConfig(
    vocab_size=128,
    num_segments=6,
    segment_len=32,
    facts_per_segment=4,
    distances=(0, 1, 3),
    queries_per_distance=2,
)


@pytest.mark.parametrize("index", range(5))
def test_queries_ask_facts_written_d_segments_earlier(index):
    src = SegmentedRecallSource(CFG, seed=0, num_examples=5)
    x, y = src[index]["inputs"], src[index]["targets"]
    c, f = CFG.segment_len, CFG.facts_per_segment
    written = {}  # key -> (value, segment): brute-force reading of the write blocks
    for s in range(CFG.num_segments):
        block = x[s * c : s * c + 2 * f]
        for k, v in zip(block[0::2], block[1::2], strict=True):
            assert int(k) not in written  # keys distinct across the sequence: one answer
            written[int(k)] = (int(v), s)
    q = src.queries(index)
    assert q["position"].tolist() == np.flatnonzero(y != IGNORE_INDEX).tolist()
    for pos, w, s in zip(q["position"], q["write_segment"], q["query_segment"], strict=True):
        assert pos // c == s and s - w in CFG.distances
        assert written[int(x[pos])] == (int(y[pos]), w)
    # each segment asks Q facts per reachable distance
    for s in range(CFG.num_segments):
        reach = sum(s - d >= 0 for d in CFG.distances)
        assert (q["query_segment"] == s).sum() == reach * CFG.queries_per_distance


def test_determinism_seed_disjointness_and_chance():
    a = SegmentedRecallSource(CFG, seed=0, num_examples=50)
    b = SegmentedRecallSource(CFG, seed=0, num_examples=50)
    c = SegmentedRecallSource(CFG, seed=1, num_examples=50)
    np.testing.assert_array_equal(a[7]["inputs"], b[7]["inputs"])
    assert not {a[i]["inputs"].tobytes() for i in range(50)} & {
        c[i]["inputs"].tobytes() for i in range(50)
    }
    assert chance_accuracy(CFG) == 1 / 64


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"num_segments": 0}, "num_segments must be an int >= 1"),
        ({"distances": (0, 6)}, r"distances must be .* \[0, num_segments=6\)"),
        ({"distances": (1, 1)}, "distinct"),
        ({"distances": ()}, "non-empty"),
        ({"queries_per_distance": 5}, r"queries_per_distance must be in \[1, facts_per_segment"),
        ({"vocab_size": 40}, "distinct keys"),
        ({"segment_len": 16}, "segment_len must be >="),
    ],
)
def test_bad_parameters_raise_clear_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        SegmentedRecallSource(dataclasses.replace(CFG, **changes), seed=0, num_examples=1)
