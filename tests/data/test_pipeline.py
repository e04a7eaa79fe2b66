import numpy as np
import pytest

from memarch.data.mqar import IGNORE_INDEX
from memarch.data.pipeline import eval_batches, train_dataset
from memarch.train.config import DataConfig

CFG = DataConfig(
    vocab_size=64, train_slices=((16, 2), (32, 4)), num_train_examples=50, num_eval_examples=10
)


def test_train_batches_padded_mixed_and_deterministic():
    ds = train_dataset(CFG, 8)
    b0, b0_again, b1 = ds[0], train_dataset(CFG, 8)[0], ds[1]
    assert b0["inputs"].shape == (8, 32) and b0["targets"].shape == (8, 32)
    np.testing.assert_array_equal(b0["inputs"], b0_again["inputs"])
    assert not np.array_equal(b0["inputs"], b1["inputs"])
    labelled = (b0["targets"] != IGNORE_INDEX).sum(1)
    assert set(labelled.tolist()) <= {2, 4}
    # the endless dataset keeps going past one epoch
    assert ds[1000]["inputs"].shape == (8, 32)


def test_eval_batches_cover_the_slice_once():
    rows = np.concatenate([b["inputs"] for b in eval_batches(CFG, 32, 4, 4)])
    assert rows.shape == (10, 32)


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        train_dataset(CFG, 0)


def test_overwrite_fraction_sets_the_reassigned_keys_per_slice():
    import dataclasses

    from memarch.data.pipeline import mqar_config

    cfg = dataclasses.replace(CFG, overwrite_fraction=0.5)
    assert [mqar_config(cfg, n, p).num_overwrites for n, p in cfg.train_slices] == [1, 2]
    assert train_dataset(cfg, 4)[0]["inputs"].shape == (4, 32)
    with pytest.raises(ValueError, match="overwrite_fraction"):
        mqar_config(dataclasses.replace(CFG, overwrite_fraction=1.5), 32, 4)
