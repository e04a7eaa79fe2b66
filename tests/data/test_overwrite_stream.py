import numpy as np
import pytest

from memarch.data.overwrite_stream import (
    QUERY,
    UNSET,
    OverwriteStreamConfig,
    OverwriteStreamSource,
    chance_accuracy,
)
from memarch.data.source import IGNORE_INDEX
from memarch.eval.forgetting import evaluate_overwrite_stream

CFG = OverwriteStreamConfig(
    vocab_size=256,
    seq_len=96,
    num_keys=6,
    p_update=0.5,
    query_prob=0.3,
    filler_ratio=0.2,
    unset_prob=0.2,
    num_final_queries=3,
)


def replay(inputs: np.ndarray) -> list[dict]:
    """Brute-force reading of a token stream: one dict per query, from the tokens alone."""
    half = CFG.vocab_size // 2
    writes = {}  # key -> list of (value, event)
    order = []  # (key, value) of every write, in order
    write_events = set()
    out = []
    for e in range(len(inputs) // 2):
        a, b = int(inputs[2 * e]), int(inputs[2 * e + 1])
        if a == QUERY:
            hist = writes.get(b, [])
            rec = {"position": 2 * e + 1, "key": b, "label": hist[-1][0] if hist else UNSET}
            if hist:
                last_event = hist[-1][1]
                rec.update(
                    lag_tokens=2 * e + 1 - (2 * last_event + 1),
                    lag_events=e - last_event,
                    prior_updates=len(hist) - 1,
                    writes_since=sum(1 for ev in range(last_event + 1, e) if ev in write_events),
                    stale=[v for v, _ in hist[:-1]],
                )
            rec["others"] = sorted(v for k, v in order if k != b)
            out.append(rec)
        elif a != 0:
            assert 3 <= a < half <= b
            writes.setdefault(a, []).append((b, e))
            order.append((a, b))
            write_events.add(e)
    return out


@pytest.mark.parametrize("index", range(8))
def test_labels_and_metadata_match_a_replay_of_the_tokens(index):
    src = OverwriteStreamSource(CFG, seed=3, num_examples=8)
    item = src[index]
    expected = replay(item["inputs"])
    queries = src.queries(index)
    assert len(queries) == len(expected) and queries
    labelled = np.flatnonzero(item["targets"] != IGNORE_INDEX)
    assert labelled.tolist() == [q.position for q in queries]
    for q, ref in zip(queries, expected, strict=True):
        assert (q.position, q.key, q.label) == (ref["position"], ref["key"], ref["label"])
        assert item["targets"][q.position] == q.label  # exactly one correct answer per query
        assert sorted(q.other_values) == ref["others"]
        if q.unset:
            assert q.lag_tokens == q.prior_updates == -1
            continue
        assert q.lag_tokens == ref["lag_tokens"] and q.lag_events == ref["lag_events"]
        assert q.prior_updates == ref["prior_updates"]
        assert q.writes_since == ref["writes_since"]
        assert list(q.stale_values) == ref["stale"]
    # fresh values: no value token is written twice, so a wrong answer names one write
    values = item["inputs"][1::2][item["inputs"][1::2] >= CFG.vocab_size // 2]
    assert len(set(values.tolist())) == len(values)


def test_final_queries_unset_and_filler():
    src = OverwriteStreamSource(CFG, seed=0, num_examples=200)
    unset = fillers = events = 0
    for i in range(len(src)):
        qs = src.queries(i)
        finals = [q for q in qs if q.final]
        assert len(finals) == 3 and len({q.key for q in finals}) == 3
        assert [q.event for q in finals] == [45, 46, 47]
        unset += sum(q.unset for q in qs)
        x = src[i]["inputs"][: 2 * 45].reshape(-1, 2)
        fillers += int(((x[:, 0] == 0) & (x[:, 1] == 0)).sum())
        events += len(x)
    assert unset > 0
    assert abs(fillers / events - CFG.filler_ratio) < 0.03


def test_update_probability_extremes():
    never = OverwriteStreamConfig(vocab_size=256, seq_len=40, num_keys=64, p_update=0.0)
    src = OverwriteStreamSource(never, seed=0, num_examples=20)
    assert all(q.prior_updates == 0 for i in range(20) for q in src.queries(i))
    always = OverwriteStreamConfig(vocab_size=256, seq_len=40, num_keys=8, p_update=1.0)
    src = OverwriteStreamSource(always, seed=0, num_examples=20)
    for i in range(20):
        x = src[i]["inputs"].reshape(-1, 2)
        written = {int(k) for k, v in x if k not in (0, QUERY)}
        assert len(written) == 1  # every write after the first overwrites the only key


def test_determinism_and_seed_disjointness():
    a = OverwriteStreamSource(CFG, seed=0, num_examples=100)
    b = OverwriteStreamSource(CFG, seed=0, num_examples=100)
    c = OverwriteStreamSource(CFG, seed=1, num_examples=100)
    for i in (0, 17, 99):
        np.testing.assert_array_equal(a[i]["inputs"], b[i]["inputs"])
        np.testing.assert_array_equal(a[i]["targets"], b[i]["targets"])
        assert a.queries(i) == b.queries(i)
    train = {a[i]["inputs"].tobytes() for i in range(100)}
    test = {c[i]["inputs"].tobytes() for i in range(100)}
    assert len(train) == 100 and not train & test


def test_oracle_scores_one_and_uniform_scores_chance():
    src = OverwriteStreamSource(CFG, seed=5, num_examples=150)
    targets = {src[i]["inputs"].tobytes(): src[i]["targets"] for i in range(len(src))}
    oracle = lambda x: np.stack([targets[row.tobytes()] for row in x])
    report = evaluate_overwrite_stream(oracle, src)
    assert report.accuracy == 1.0 and sum(report.errors.values()) == 0

    rng = np.random.default_rng(0)
    half = CFG.vocab_size // 2
    answers = np.concatenate([[UNSET], np.arange(half, CFG.vocab_size)])
    uniform = lambda x: rng.choice(answers, size=x.shape)
    report = evaluate_overwrite_stream(uniform, src)
    p = chance_accuracy(CFG)
    assert p == 1 / (half + 1)
    assert abs(report.accuracy - p) < 4 * np.sqrt(p * (1 - p) / report.num_queries) + 1e-9


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("p_update", 1.5, r"p_update must be a float in \[0, 1\]"),
        ("query_prob", 1.0, r"query_prob must be a float in \[0, 1\)"),
        ("filler_ratio", -0.1, "filler_ratio"),
        ("unset_prob", float("nan"), "unset_prob"),
        ("seq_len", 95, "seq_len must be a positive even int"),
        ("num_keys", 0, "num_keys must be >= 1"),
        ("num_keys", 200, "vocab_size must leave num_keys=200"),
        ("num_final_queries", 7, r"num_final_queries must be in \[0, num_keys=6\]"),
        ("vocab_size", 64, "fresh value to every write"),
        ("vocab_size", 256.0, "vocab_size must be an int"),
    ],
)
def test_bad_parameters_raise_clear_errors(field, value, match):
    import dataclasses

    with pytest.raises(ValueError, match=match):
        OverwriteStreamSource(dataclasses.replace(CFG, **{field: value}), seed=0, num_examples=1)
