"""Training and scoring a language model on a prepared corpus (task ``text``): a BPE tokenizer
trained in the session, shards prepared by ``memarch.data.prepare``; one process vs two on
127.0.0.1, exact resume after SIGKILL, held-out perplexity and bits per byte (in training and
from ``memarch eval --task text``), the padding ids never predicted, bad input before compiling."""

import json
import math
import random
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from tiny_run import TINY, free_port, kill_during_run, max_rel_err, params_to_numpy, run

from memarch.cli import main
from memarch.data.documents import LocalCorpus
from memarch.data.pipeline import text_eval_batches
from memarch.data.prepare import prepare
from memarch.data.source import IGNORE_INDEX
from memarch.data.text import bytes_per_target, eval_rows
from memarch.errors import ConfigError
from memarch.eval.periodic import periodic_evaluation
from memarch.models.forward import forward
from memarch.train.config import apply_overrides
from memarch.train.trainer import train
from memarch.train.validation import validate

VOCAB = 400  # the session BPE tokenizer's ids (tests/conftest.py)
LM_340M = str(Path(__file__).resolve().parents[2] / "configs" / "lm_340m_hybrid.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, make_documents, bpe_dir):
    """A jsonl corpus of generated documents prepared with the BPE tokenizer."""
    root = tmp_path_factory.mktemp("lm")
    docs = make_documents(160, seed=99)
    (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    prepare(
        LocalCorpus((str(root / "*.jsonl"),)),
        root / "prepared",
        bpe_dir,
        val_every=8,
        progress=False,
    )
    return root / "prepared"


def train_lm_340m_tiny(workdir, *overrides: str) -> list[str]:
    """``memarch train`` arguments of ``configs/lm_340m_hybrid.py --tiny`` into ``workdir``."""
    return [
        "train",
        "--config",
        LM_340M,
        "--tiny",
        "--no-progress",
        f"--workdir={workdir}",
        *overrides,
    ]


def text_overrides(corpus, bpe_dir) -> list[str]:
    return [
        "data.task='text'",
        f"data.text_dir='{corpus}'",
        f"data.tokenizer='{bpe_dir}'",
        f"data.vocab_size={VOCAB}",
        "model.vocab_size=512",  # padded to a multiple of 128: ids 400…511 are never predicted
        "data.seq_len=16",
        "data.num_eval_examples=8",
    ]


@pytest.fixture(scope="module")
def text_cfg(corpus, bpe_dir):
    return apply_overrides(TINY, text_overrides(corpus, bpe_dir))


@pytest.fixture(scope="module")
def one_process(text_cfg, tmp_path_factory):
    """The reference: 20 steps on this process's single device, evaluated at the end."""
    work = tmp_path_factory.mktemp("ref")
    res = train(text_cfg, workdir=work, evaluate=periodic_evaluation(text_cfg), log=lambda s: None)
    params = params_to_numpy(nnx.to_pure_dict(nnx.state(res.model, nnx.Param)))
    return res, params, work


def test_two_processes_on_a_prepared_corpus_agree_with_one(one_process, corpus, bpe_dir, tmp_path):
    # Given two processes on 127.0.0.1 with 4 fake CPU devices each (one 2×2×2 mesh across
    # them), each reading only its own rows of the prepared corpus
    common = [
        *text_overrides(corpus, bpe_dir),
        "mesh.data=2",
        "mesh.fsdp=2",
        "mesh.tensor=2",
        "distributed.initialize=True",
        f"distributed.coordinator_address='127.0.0.1:{free_port()}'",
        "distributed.num_processes=2",
    ]
    procs = [
        run(
            {"overrides": [*common, f"distributed.process_id={i}"], "workdir": str(tmp_path)},
            devices=4,
            wait=False,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    out = json.loads(outs[0][0].strip().splitlines()[-1])
    # Then they see 8 devices and train like one process on the same global batches
    assert out["devices"] == 8
    assert max_rel_err(out["losses"], [h["loss"] for h in one_process[0].history]) <= 1e-5
    assert (tmp_path / "checkpoints" / "20").is_dir() and (tmp_path / "params").is_dir()


def test_resume_after_sigkill_on_a_prepared_corpus_is_bit_exact(
    one_process, text_cfg, corpus, bpe_dir, tmp_path
):
    # Given a run checkpointing (asynchronously) every step, killed with SIGKILL at a random step
    kill_at = random.Random().randint(4, 15)
    work = tmp_path / "run"
    ckpt = ["checkpoint.every=1", "checkpoint.keep=3"]
    kill_during_run(work, [*text_overrides(corpus, bpe_dir), *ckpt], kill_at, timeout=240)
    # Then only complete checkpoints count (an unfinished save is a temporary directory)
    cfg = apply_overrides(text_cfg, ckpt)
    names = sorted(p.name for p in (work / "checkpoints").iterdir())
    complete = [int(n) for n in names if n.isdigit()]
    assert complete, names
    # When resumed, the run ends with parameters bit-identical to an uninterrupted run
    resumed = train(cfg, workdir=work, resume=True, log=lambda s: None)
    assert resumed.resumed_from == max(complete) and resumed.final_step == 20
    got = params_to_numpy(nnx.to_pure_dict(nnx.state(resumed.model, nnx.Param)))
    for k, want in one_process[1].items():
        np.testing.assert_array_equal(got[k], want, err_msg=f"{k} (killed at {kill_at})")


def test_held_out_perplexity_and_bits_per_byte(one_process, text_cfg, capsys):
    res, _, work = one_process
    last = res.evals[-1]
    assert last["step"] == 20 and set(last) >= {"loss", "perplexity", "bits_per_byte", "tokens"}
    # the loss is the mean −log p of every validation target, computed here from the logits
    # with the padding ids (400…511) left out of the softmax
    nll, n = 0.0, 0
    for batch in text_eval_batches(text_cfg.data, 16):
        logits = np.asarray(forward(res.model, jax.tree.map(np.asarray, batch))[0], np.float64)
        logits = logits[..., :VOCAB]
        logp = (
            logits
            - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - logits.max(-1, keepdims=True)
        )
        t = batch["targets"]
        mask = t != IGNORE_INDEX
        nll -= np.take_along_axis(logp, np.where(mask, t, 0)[..., None], -1)[..., 0][mask].sum()
        n += int(mask.sum())
    assert last["tokens"] == n and math.isclose(last["loss"], nll / n, rel_tol=1e-5)
    assert math.isclose(last["perplexity"], math.exp(last["loss"]), rel_tol=1e-9)
    per_target = bytes_per_target(text_cfg.data, eval_rows(text_cfg.data)[0])
    assert 1.0 < per_target < 8.0  # BPE: several bytes per token
    assert math.isclose(last["bits_per_byte"], last["loss"] / math.log(2) / per_target)
    # memarch eval --task text scores the run's parameters the same way
    assert main(["eval", "--checkpoint", str(work), "--task", "text"]) == 0
    out = capsys.readouterr().out
    assert f"loss {last['loss']:.4f} nats/token" in out
    assert f"bits/byte {last['bits_per_byte']:.4f}" in out and f"({n} tokens scored)" in out


def test_bad_text_input_is_one_clear_error_before_compiling(text_cfg, bpe_dir, sp_model, tmp_path):
    def refused(overrides, match):
        with pytest.raises(ConfigError, match=match):
            validate(apply_overrides(text_cfg, overrides), 1)

    refused([f"data.tokenizer='{tmp_path / 'missing.json'}'"], "data.tokenizer: .*does not exist")
    refused(
        ["model.vocab_size=384"], r"model.vocab_size \(384\) must be >= data.vocab_size \(400\)"
    )
    refused(["data.vocab_size=512"], "data.vocab_size must be the tokenizer's id count 400")
    refused([f"data.tokenizer='{sp_model}'"], "was prepared with tokenizer HFTokenizer")
    refused([f"data.text_dir='{tmp_path}'"], "holds no prepared data")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    refused(
        ["data.text_dir=''", f"data.text_file='{empty}'", f"data.data_dir='{tmp_path}'"],
        "has no tokens",
    )
    # the command line prints it in a line or two, exit status 2, nothing compiled
    args = train_lm_340m_tiny(tmp_path / "w", f"data.tokenizer='{tmp_path / 'missing.json'}'")
    assert main(args) == 2
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_lm_340m_tiny_trains_on_a_prepared_subword_corpus(corpus, bpe_dir, tmp_path, capsys):
    args = train_lm_340m_tiny(
        tmp_path / "w",
        "num_steps=3",
        "log_every=1",
        "eval_every=3",
        "data.text_file=''",
        f"data.text_dir='{corpus}'",
        f"data.tokenizer='{bpe_dir}'",
        f"data.vocab_size={VOCAB}",
        "model.vocab_size=512",
        "data.num_eval_examples=4",
    )
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "step      3  loss" in out and "perplexity" in out and "bits/byte" in out


def test_the_padding_ids_are_never_predicted():
    from memarch.train.step import masked_ce_sums

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 12)).astype(np.float32)
    logits[..., 9:] += 50.0  # the padding rows would win every argmax and most of the softmax
    targets = rng.integers(0, 9, size=(2, 5)).astype(np.int32)
    targets[0, 0] = IGNORE_INDEX
    ce, correct, n = masked_ce_sums(logits, targets, num_classes=9)
    ce_ref, correct_ref, n_ref = masked_ce_sums(logits[..., :9], targets)
    np.testing.assert_allclose(float(ce), float(ce_ref), rtol=1e-6)
    assert int(correct) == int(correct_ref) and int(n) == int(n_ref) == 9


def test_worker_processes_load_the_same_batches(text_cfg):
    from memarch.data.pipeline import train_examples
    from memarch.train.input import BatchLoader
    from memarch.train.mesh import batch_sharding, make_mesh

    examples = train_examples(text_cfg.data)
    sharding = batch_sharding(text_cfg.mesh, make_mesh(text_cfg.mesh))
    thread = BatchLoader(examples, 8, sharding)
    workers = BatchLoader(examples, 8, sharding, worker_count=1, num_steps=20)
    try:
        for step in (3, 4, 5, 9, 2):  # in order, then a jump forward and one back
            want, got = thread(step), workers(step)
            for key in ("inputs", "targets", "segment_ids"):
                np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    finally:
        thread.close()
        workers.close()
