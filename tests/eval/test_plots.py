import numpy as np
import pytest

from memarch.eval.plots import (
    plot_accuracy_matrix,
    plot_needle_heatmap,
    plot_retention,
    plot_slice_accuracy,
    plot_task_curves,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return (
        data[:8] == PNG and data[12:16] == b"IHDR" and data[-8:-4] == b"IEND" and len(data) > 5000
    )


def test_every_plot_writes_a_valid_png(tmp_path):
    r = np.array([[0.9, np.nan, np.nan], [0.5, 0.8, np.nan], [0.3, 0.6, 0.95]])
    paths = [
        plot_accuracy_matrix(r, tmp_path / "r.png"),
        plot_task_curves(
            [0, 10, 20, 30, 40],
            [[0.0, 0.0], [0.6, 0.0], [0.9, 0.1], [0.4, 0.7], [0.6, 0.9]],
            [20, 40],
            tmp_path / "sub" / "curves.png",
            chance=0.03,
        ),
        plot_retention(
            {"carry": {1: 0.9, 2: 0.6, 4: 0.3}, "reset": {1: 0.9, 2: 0.03, 4: 0.03}},
            tmp_path / "retention.png",
            xlabel="segments + 1",
            chance=0.03,
        ),
        plot_needle_heatmap(
            {(0.0, 256): 1.0, (50.0, 256): 0.8, (100.0, 256): 0.9, (0.0, 1024): 0.4},
            tmp_path / "needle.png",
        ),
    ]
    for path in paths:
        assert path.exists() and _is_png(path)
    assert paths[1] == tmp_path / "sub" / "curves.png"


def test_bad_plot_inputs_raise():
    with pytest.raises(ValueError, match="square"):
        plot_accuracy_matrix(np.ones((2, 3)), "x.png")
    with pytest.raises(ValueError, match="labels"):
        plot_accuracy_matrix(np.eye(2), "x.png", labels=["a"])
    with pytest.raises(ValueError, match="x > 0"):
        plot_retention({"a": {0: 1.0, 1: 0.5}}, "x.png")
    with pytest.raises(ValueError, match="task_ends"):
        plot_task_curves([0, 1], [[0.1], [0.2]], [1, 2], "x.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_needle_heatmap({}, "x.png")


def test_slice_accuracy_bars(tmp_path):
    results = {"a": {(16, 2): 1.0, (24, 3): 0.5}, "b": {(16, 2): 0.25}}
    path = tmp_path / "p.png"
    plot_slice_accuracy(results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert np.isfinite(path.stat().st_size)


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    from fake_gcs import fake_gcs as fake_gcs_folder

    yield from fake_gcs_folder(tmp_path, monkeypatch)


def test_plot_into_a_bucket_url(fake_gcs):
    """A plot written into a ``gs://`` run directory lands in the bucket (rendered in memory,
    written through etils.epath), and nothing is written locally."""
    from fake_gcs import BUCKET, local_files

    root, cwd = fake_gcs
    url = f"gs://{BUCKET}/run/eval/needle.png"
    path = plot_needle_heatmap({(0.0, 256): 1.0, (50.0, 256): 0.5}, url)
    assert str(path) == url
    assert _is_png(root / BUCKET / "run" / "eval" / "needle.png")
    assert local_files(cwd) == [] and not (cwd / "gs:").exists()
