"""The lm-evaluation-harness model ``memarch`` against lm-eval itself, offline: a tiny trained run
scored on a local multiple-choice task and a local generation task written by the test; the
harness's numbers equal the ones computed from LMSession directly; ``memarch eval
--lm-eval-tasks`` prints and saves them reproducibly; bad input is one clear error."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memarch.cli import main
from memarch.eval.lm_harness import MemarchHarnessLM, results_table, run_lm_eval
from memarch.eval.lm_session import LMSession

LM_340M = str(Path(__file__).resolve().parents[2] / "configs" / "lm_340m_hybrid.py")
MC_DOCS = [
    {"q": "The cat sat on the", "choices": [" mat", " sky", " idea"], "label": 0},
    {"q": "Water is", "choices": [" wet", " dry"], "label": 1},
    {"q": "the the the", "choices": [" the", " zebra", "!"], "label": 0},
    {"q": "", "choices": ["A", "An", "The start of a text"], "label": 2},
]
GEN_DOCS = [{"q": "Say hi:", "a": "hi"}, {"q": "one two", "a": " three"}, {"q": "x", "a": "y"}]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The harness reads the local JSON files through ``datasets``: never the network."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def run_dir(trained_run) -> Path:
    """The shared trained run (tests/eval/conftest.py: a 2-layer Gated DeltaNet LM, byte
    tokenizer, trained on key: value documents; training length 128)."""
    return trained_run[0]


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    """A folder of two harness task YAMLs over JSON files: multiple choice and generation."""
    root = tmp_path_factory.mktemp("tasks")
    for name, docs in (("mc", MC_DOCS), ("gen", GEN_DOCS)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    common = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {}\ntest_split: test\n"
    (root / "tiny_mc.yaml").write_text(
        "task: tiny_mc\n" + common.format(root / "mc.jsonl") + "output_type: multiple_choice\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "tiny_gen.yaml").write_text(
        "task: tiny_gen\n" + common.format(root / "gen.jsonl") + "output_type: generate_until\n"
        'doc_to_text: "{{q}}"\ndoc_to_target: "{{a}}"\n'
        'generation_kwargs:\n  until: ["\\n", "."]\n  max_gen_toks: 6\n'
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


@pytest.fixture(scope="module")
def session(run_dir) -> LMSession:
    return LMSession.from_run_dir(run_dir, batch_size=4, bucket=32)


def test_harness_scores_equal_the_sessions_own(session, tasks):
    results = run_lm_eval(session, ["tiny_mc", "tiny_gen"], include_path=str(tasks))
    # multiple choice: acc = mean over documents of [argmax_choice loglikelihood == label]
    hits = []
    for d in MC_DOCS:
        ll = session.loglikelihood([(d["q"], c) for c in d["choices"]])
        hits.append(int(np.argmax([x for x, _ in ll])) == d["label"])
    assert results["results"]["tiny_mc"]["acc,none"] == pytest.approx(np.mean(hits))
    # generation: exact match of the greedy text cut at the stop strings
    outs = session.generate_until([d["q"] for d in GEN_DOCS], max_new_tokens=6, until=["\n", "."])
    want = np.mean([o == d["a"] for o, d in zip(outs, GEN_DOCS, strict=True)])
    assert results["results"]["tiny_gen"]["exact_match,none"] == pytest.approx(want)
    table = results_table(results)
    assert "| tiny_mc | acc |" in table and "| tiny_gen | exact_match |" in table
    print(table)


def test_requests_through_the_harness_interface(session, run_dir):
    """The adapter's three methods on harness ``Instance`` objects, as lm-eval calls them."""
    from lm_eval.api.instance import Instance

    lm = MemarchHarnessLM(session=session)

    def inst(kind, args):
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    pairs = [("Water is", " wet"), ("A longer context of several words", " here"), ("", "x")]
    scores = lm.loglikelihood([inst("loglikelihood", p) for p in pairs])
    assert scores == session.loglikelihood(pairs)
    # the trained model's own logits, one unpadded row per request (only the tokenizer's ids)
    for (context, continuation), (logp, _) in zip(pairs, scores, strict=True):
        ctx, cont = session.encode_pair(context, continuation)
        logits, _ = session.model(jnp.asarray([ctx + cont]))
        table = jax.nn.log_softmax(logits[0, :, : session.num_classes])
        direct = sum(float(table[len(ctx) - 1 + i, t]) for i, t in enumerate(cont))
        assert abs(logp - direct) <= 1e-5 * max(1.0, abs(direct))
    # batch size 1 (every request alone) gives the same scores as batches of 4
    alone = MemarchHarnessLM(session=LMSession.from_run_dir(run_dir, batch_size=1, bucket=32))
    np.testing.assert_allclose(
        [x for x, _ in alone.loglikelihood([inst("loglikelihood", p) for p in pairs])],
        [x for x, _ in scores],
        rtol=1e-5,
    )
    text = "It was the best of times."
    assert lm.loglikelihood_rolling([inst("loglikelihood_rolling", (text,))]) == (
        session.loglikelihood_rolling([text])
    )
    gen = lm.generate_until([inst("generate_until", ("Say", {"until": ["\n"], "max_gen_toks": 4}))])
    assert gen == session.generate_until(["Say"], max_new_tokens=4, until=["\n"])
    with pytest.raises(ValueError, match="generates greedily"):
        lm.generate_until([inst("generate_until", ("Say", {"do_sample": True}))])


def test_cli_prints_and_saves_reproducible_scores(run_dir, tasks, capsys):
    argv = [
        "eval",
        f"--checkpoint={run_dir}",
        "--lm-eval-tasks=tiny_mc,tiny_gen",
        f"--lm-eval-include={tasks}",
        "--batch-size=4",
    ]
    saved = []
    for _ in range(2):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert "| tiny_mc | acc |" in out and "wrote " in out
        saved.append(json.loads(Path(out.split("wrote ")[1].split(" (")[0]).read_text()))
    assert saved[0]["results"] == saved[1]["results"]


def test_bad_input_is_one_clear_error(run_dir, tasks, tmp_path, capsys, monkeypatch):
    from lm_eval import tasks as harness_tasks

    class WithoutCatalogue(harness_tasks.TaskManager):
        """The harness's task manager without its 15,000-file catalogue (indexing it takes
        most of a minute): the name is then unknown, which is what this test needs."""

        def __init__(self, *args, include_defaults=True, **kwargs):
            super().__init__(*args, include_defaults=False, **kwargs)

    bad = ["eval", f"--checkpoint={run_dir}", f"--lm-eval-include={tasks}"]
    with monkeypatch.context() as patch:
        patch.setattr(harness_tasks, "TaskManager", WithoutCatalogue)
        assert main([*bad, "--lm-eval-tasks=tiny_mc,no_such_task"]) == 2
    assert "unknown lm-evaluation-harness task(s) ['no_such_task']" in capsys.readouterr().err
    assert main([*bad, "--lm-eval-tasks=tiny_mc", "--max-length=4"]) == 2
    assert "longer than the model supports: max_length=4" in capsys.readouterr().err
    # a run whose tokenizer file is gone
    broken = tmp_path / "run"
    broken.mkdir()
    for item in run_dir.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "config.json").unlink()
    saved = json.loads((run_dir / "config.json").read_text())
    saved["data"]["tokenizer"] = str(tmp_path / "missing" / "tokenizer.json")
    (broken / "config.json").write_text(json.dumps(saved))
    assert (
        main(
            [
                "eval",
                f"--checkpoint={broken}",
                "--lm-eval-tasks=tiny_mc",
                f"--lm-eval-include={tasks}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "the run's tokenizer cannot be loaded" in err and "missing" in err
    with pytest.raises(ValueError, match="unknown argument"):
        MemarchHarnessLM(checkpoint=str(run_dir), temperature=1)


def test_cli_extraction_compares_one_and_two_passes(run_dir, tmp_path, capsys):
    """``memarch eval --extraction``: the run's model on JRT-format records, read once and
    twice; the printed scores are the ones evaluate_extraction gives through LMSession."""
    from memarch.data.extraction import read_extraction
    from memarch.eval.extraction import compare_passes

    records = [
        {"text": "name: ada\ncity: oslo", "key": "city", "value": "oslo"},
        {"text": "name: bo\ncity: rome", "key": "name", "value": "bo"},
        {"text": "city: lima\nname: cy", "key": "city", "value": "lima"},
    ]
    path = tmp_path / "swde.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["eval", f"--checkpoint={run_dir}", f"--extraction={path}", "--max-length=128"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| swde |"))
    session = LMSession.from_run_dir(run_dir, max_length=128)
    want = compare_passes(
        session.generate_until,
        read_extraction(path, "swde"),
        task="swde",
        tokenizer=session.tokenizer,
    )
    assert row.startswith(f"| swde | {want[1]['contains']:.3f} | {want[2]['contains']:.3f} | 3 |")
    assert main([*argv, "--num-passes=1,x"]) == 2
    assert "--num-passes takes comma-separated numbers" in capsys.readouterr().err


def test_cli_needle_grid_prints_the_table_and_draws_the_heatmap(run_dir, capsys):
    corpus = run_dir.parent / "train.jsonl"  # the run's own training documents as the haystack
    argv = [
        "eval",
        f"--checkpoint={run_dir}",
        f"--needle-text={corpus}",
        "--lengths=400",
        "--max-length=600",
        "--depths=0,100",
        "--num-examples=2",
        "--needle-digits=2",
        "--needle-new-tokens=4",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| depth % \\ length | 400 |" in out and "| mean |" in out
    assert (run_dir / "eval" / "needle_text_single.png").stat().st_size > 0
    assert main([*argv, "--needle-family=haystack"]) == 2
    assert "family must be one of" in capsys.readouterr().err


def test_write_results_into_a_bucket_url(tmp_path, monkeypatch):
    """``RUN/eval/lm_eval-<time>.json`` for a ``gs://`` run directory lands in the bucket
    (tests/fake_gcs.py), holding the JSON-able parts only; nothing is written locally."""
    from fake_gcs import BUCKET, fake_gcs, local_files

    from memarch.eval.lm_harness import write_results

    for root, cwd in fake_gcs(tmp_path, monkeypatch):
        path = write_results(
            {"results": {"t": {"acc,none": 0.5}}, "samples": [object()]}, f"gs://{BUCKET}/run"
        )
        assert str(path).startswith(f"gs://{BUCKET}/run/eval/lm_eval-")
        (local,) = (root / BUCKET / "run" / "eval").iterdir()
        assert json.loads(local.read_text()) == {"results": {"t": {"acc,none": 0.5}}}
        assert local_files(cwd) == []
