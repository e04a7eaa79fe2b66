import numpy as np
from flax import nnx

from memarch.eval.mqar import evaluate_mqar, markdown_table, plot_accuracy
from memarch.models import LM, LMConfig
from memarch.train.config import DataConfig

DATA = DataConfig(vocab_size=32, eval_slices=((16, 2), (24, 3)), num_eval_examples=20)


def test_untrained_model_scores_near_chance_per_slice():
    model = LM(LMConfig(vocab_size=32, d_model=16, num_heads=2, pattern="A"), rngs=nnx.Rngs(0))
    acc = evaluate_mqar(model, DATA, batch_size=8)
    assert set(acc) == {(16, 2), (24, 3)}
    assert all(0.0 <= a <= 0.3 for a in acc.values())


def test_table_and_plot(tmp_path):
    results = {"a": {(16, 2): 1.0, (24, 3): 0.5}, "b": {(16, 2): 0.25}}
    table = markdown_table(results)
    assert "| a | 1.000 | 0.500 | 0.750 |" in table and "| b | 0.250 | — | 0.250 |" in table
    path = tmp_path / "p.png"
    plot_accuracy(results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert np.isfinite(path.stat().st_size)
