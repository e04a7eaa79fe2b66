"""Config validation before compilation: every bad input of issue 19 is a ``ConfigError``
naming the field (and what is accepted) before a model is built or a step is run."""

import pytest

from memarch.errors import ConfigError
from memarch.models import LMConfig
from memarch.train.config import DataConfig, TrainConfig, apply_overrides
from memarch.train.validation import validate, validate_data, validate_model

TINY = TrainConfig(
    model=LMConfig(vocab_size=32, d_model=16, num_heads=2, pattern="LA", mlp_hidden=0),
    data=DataConfig(vocab_size=32, train_slices=((16, 2),), eval_slices=((16, 2),)),
    batch_size=4,
    num_steps=2,
)


@pytest.mark.parametrize(
    "item,match",
    [
        ("model.d_model=-8", r"model\.d_model must be an int >= 1; got -8"),
        ("model.d_model=0", r"model\.d_model must be an int >= 1"),
        ("model.num_heads=0", r"model\.num_heads must be an int >= 1"),
        ("model.mlp_hidden=-1", r"model\.mlp_hidden must be an int >= 0 or None"),
        ("model.vocab_size=1", r"model\.vocab_size must be an int >= 2"),
        ("model.norm_eps=0", r"model\.norm_eps must be a float > 0"),
        ("data.vocab_size=0", r"data\.vocab_size must be an int >= 2"),
        ("data.num_eval_examples=0", r"data\.num_eval_examples must be an int >= 1"),
        ("batch_size=-4", r"batch_size must be an int >= 1"),
    ],
)
def test_sizes_must_be_positive(item, match):
    """d_model=-8 used to end in a 54-line TypeError about complex numbers."""
    with pytest.raises(ConfigError, match=match):
        validate(apply_overrides(TINY, [item]), 1)


def test_num_layers_must_agree_with_the_pattern():
    """A disagreeing model.num_layers used to be ignored; None (derived) or equal is fine."""
    with pytest.raises(ConfigError, match=r"model\.num_layers \(4\) disagrees.*2 layers"):
        validate(apply_overrides(TINY, ["model.num_layers=4"]), 1)
    for n in ("None", "2"):
        validate(apply_overrides(TINY, [f"model.num_layers={n}"]), 1)


@pytest.mark.parametrize(
    "item,match",
    [
        ("data.eval_slices=((16, 200),)", r"data\.eval_slices: task 'mqar' slice"),
        ("data.eval_slices=()", r"data\.eval_slices must list at least one"),
        ("data.train_slices=((16, 200),)", r"data\.train_slices: task 'mqar' slice"),
        ("data.task=mqr", r"data\.task must be one of"),
    ],
)
def test_train_and_eval_slices_are_checked_together(item, match):
    """A bad data.eval_slices used to be reported only after every training step."""
    with pytest.raises(ConfigError, match=match):
        validate(apply_overrides(TINY, [item]), 1)


def test_text_task_needs_an_existing_file(tmp_path):
    cfg = apply_overrides(
        TINY,
        [
            "data.task='text'",
            "data.vocab_size=258",
            "model.vocab_size=384",
            "data.seq_len=16",
            f"data.text_file='{tmp_path / 'none.txt'}'",
            f"data.data_dir='{tmp_path / 'cache'}'",
            "data.text_val_every=4",
        ],
    )
    validate_data(cfg.data)  # sizes only: the file is checked with the whole config
    with pytest.raises(ConfigError, match=r"corpus pattern .*none\.txt.* matches no file"):
        validate(cfg, 1)
    (tmp_path / "none.txt").write_text("\n\n".join(f"paragraph {i}: some text" for i in range(40)))
    validate(cfg, 1)


@pytest.mark.parametrize(
    "item,match",
    [
        ("model.mixers.monet.p=3", r"unknown mixer 'monet' \(did you mean 'moneta'\?\)"),
        ("model.mixers.moneta.p=three", r"model\.mixers\.moneta\.p expects float"),
        ("model.mixers.moneta.pp=3", r"unknown option 'pp'.*\(did you mean 'p'\?\)"),
        ("model.mixer_options.moneta.p=3", r"unknown config key 'model\.mixer_options"),
    ],
)
def test_mixer_options_are_named_and_typed(item, match):
    """moneta p=three used to end in a 60-line TypeError; a misspelled mixer was ignored."""
    with pytest.raises(ValueError, match=match):
        apply_overrides(TINY, [item])


def test_model_construction_is_checked_abstractly():
    """Options each of which is valid but that the mixer refuses together with the model's
    sizes fail in ``validate_model``, which allocates no array."""
    validate_model(TINY)
    bad = apply_overrides(TINY, ["model.mixers.attention.num_kv_heads=3"])
    validate(bad, 1)  # the per-field checks pass ...
    with pytest.raises(ConfigError, match=r"model: ValueError: num_kv_heads \(3\) must divide"):
        validate_model(bad)  # ... the construction does not
