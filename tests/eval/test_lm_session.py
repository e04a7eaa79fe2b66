"""LMSession: log-likelihoods equal the sums of the model's own token log-probabilities (batches
mixing lengths, batch sizes 1 and 8, padding on either side, attention and recurrent layers);
rolling log-likelihood equals the held-out loss computation; greedy generation through the
caches equals ``memarch.models.generate``; bad input is one clear error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from memarch.data.tokenizers import ByteTokenizer
from memarch.eval.lm_session import LMSession, rolling_windows, training_length
from memarch.models.generate import generate
from memarch.models.lm import LM, LMConfig
from memarch.train.step import masked_ce_sums

CLASSES = 258  # the byte tokenizer's ids; the model's 384-row embedding pads past them
REQUESTS = [  # lengths 5 to 40 tokens: rows of one and of two 32-token buckets in a batch
    ("The cat sat on the", " mat"),
    ("Ends with spaces  ", "x"),  # the trailing spaces move to the continuation
    ("", "an empty context starts from BOS"),
    ("multi\nline Ünïcödé", "\ncontinuation ✓"),
]


@pytest.fixture(scope="module")
def model() -> LM:
    """A random model with a recurrent layer (Gated DeltaNet) under an attention layer: padding
    or batching that leaked into either would change the scores (the properties hold for any
    weights)."""
    cfg = LMConfig(vocab_size=384, d_model=32, num_heads=2, pattern=("gated_deltanet", "attention"))
    return LM(cfg, rngs=nnx.Rngs(3))


def session(model, **kw) -> LMSession:
    options = {"max_length": 128, "num_classes": CLASSES, "bucket": 32, "batch_size": 8, **kw}
    return LMSession(model, ByteTokenizer(), **options)


def direct_logprob(model, ctx: list[int], cont: list[int]) -> tuple[float, bool]:
    """``Σ log softmax(logits)[cont_i]`` from one unpadded forward pass of ``ctx + cont``."""
    logits, _ = model(jnp.asarray([ctx + cont]))
    logp = np.asarray(jax.nn.log_softmax(logits[0, :, :CLASSES]), np.float64)
    rows = np.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
    return float(logp[rows, cont].sum()), bool((logp[rows].argmax(-1) == cont).all())


def test_loglikelihood_is_the_sum_of_token_logprobs(model):
    s = session(model)
    scores = s.loglikelihood(REQUESTS)
    for (context, continuation), (logp, greedy) in zip(REQUESTS, scores, strict=True):
        ctx, cont = s.encode_pair(context, continuation)
        want, want_greedy = direct_logprob(model, ctx, cont)
        assert abs(logp - want) <= 1e-5 * max(1.0, abs(want)), (context, logp, want)
        assert greedy == want_greedy


def test_scores_do_not_depend_on_batching_or_padding_side(model):
    base = [x for x, _ in session(model).loglikelihood(REQUESTS)]
    for kw in ({"batch_size": 1}, {"padding_side": "left"}):
        got = [x for x, _ in session(model, **kw).loglikelihood(REQUESTS)]
        np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-5, err_msg=str(kw))
    # a request scored alone, or among others in a different order, is the same
    alone = session(model).loglikelihood([REQUESTS[3]])[0][0]
    shuffled = session(model).loglikelihood(REQUESTS[::-1])[::-1]
    assert abs(alone - base[3]) <= 1e-5 * abs(base[3])
    np.testing.assert_allclose([x for x, _ in shuffled], base, rtol=1e-5, atol=1e-5)


def test_encode_pair_follows_the_harness_rule(model):
    s = session(model)
    ctx, cont = s.encode_pair("Hello  ", "world")
    tok = ByteTokenizer()
    assert ctx == [tok.bos_id, *tok.encode("Hello")] and cont == tok.encode("  world")
    assert s.encode_pair("", "x")[0] == [tok.bos_id]
    assert session(model, add_bos=False).encode_pair("ab", "c") == (
        tok.encode("ab"),
        tok.encode("c"),
    )


def test_rolling_loglikelihood_equals_the_held_out_loss(model):
    s = session(model)
    text = "It was the best of times, it was the worst of times."
    ids = ByteTokenizer().encode(text)
    inputs = jnp.asarray([[ByteTokenizer().bos_id, *ids[:-1]]])
    logits, _ = model(inputs)
    ce, _, n = masked_ce_sums(logits, jnp.asarray([ids]), CLASSES)
    assert int(n) == len(ids)
    (rolling,) = s.loglikelihood_rolling([text])
    assert abs(rolling + float(ce)) <= 1e-5 * float(ce)


def test_rolling_windows_predict_every_token_once():
    ids = list(range(10, 33))
    windows = rolling_windows(ids, 1, max_length=8)
    predicted = [t for _, cont in windows for t in cont]
    assert predicted == ids
    assert windows[0][0] == [1]
    full = [1, *ids]  # ids are distinct, so each window's place in the text is known
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= 8
        end = full.index(cont[-1]) + 1
        assert full[end - len(ctx) - len(cont) : end] == ctx + cont  # contiguous, no gap


def test_rolling_loglikelihood_of_a_long_text_sums_its_windows(model):
    s = session(model, max_length=24)
    text = "abcdefghij" * 7
    ids = ByteTokenizer().encode(text)
    want = sum(direct_logprob(model, ctx, cont)[0] for ctx, cont in rolling_windows(ids, 1, 24))
    (got,) = s.loglikelihood_rolling([text])
    assert len(rolling_windows(ids, 1, 24)) == 3
    assert abs(got - want) <= 1e-5 * abs(want)


def test_generation_through_the_caches_equals_generate(model):
    s = session(model, num_classes=384, bucket=8, batch_size=4)
    prompts = ["hello a", "the quick brown", "a"]  # one prefilled 8-token prefix, one none
    ids = [[1, *ByteTokenizer().encode(p)] for p in prompts]
    got = s.generate_ids(ids, 6)
    for p, g in zip(ids, got, strict=True):
        ref = np.asarray(generate(model, jnp.asarray([p]), max_new_tokens=6))[0, len(p) :]
        assert g == ref.tolist()


def test_generate_until_cuts_at_the_stop_string_and_length(model):
    s = session(model, max_length=12)
    prompt = [1, *ByteTokenizer().encode("abcdef")]
    assert [len(g) for g in s.generate_ids([prompt], 20)] == [12 - 7]  # stops at max_length
    (full,) = s.generate_until(["abcdef"], max_new_tokens=20)
    first = full[:1]
    assert s.generate_until(["abcdef"], max_new_tokens=20, until=[first]) == [""]


def test_bad_input_is_one_clear_error(model):
    s = session(model, max_length=16)
    with pytest.raises(ValueError, match="longer than the model supports: max_length=16"):
        s.loglikelihood([("x" * 30, "y")])
    with pytest.raises(ValueError, match="longer than the model supports"):
        s.generate_until(["y" * 40], max_new_tokens=2)
    with pytest.raises(ValueError, match="padding_side must be one of"):
        session(model, padding_side="middle")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        s.generate_until(["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match="continuation is empty"):
        s.loglikelihood([("abc", "")])


def test_training_length_is_the_runs_row_length():
    from memarch.data.config import DataConfig
    from memarch.train.config import TrainConfig

    assert training_length(TrainConfig(data=DataConfig(task="text", seq_len=96))) == 96
    cfg = TrainConfig(data=DataConfig(train_slices=((64, 4),), eval_slices=((256, 8),)))
    assert training_length(cfg) == 256
