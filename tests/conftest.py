"""Session settings and shared fixtures of the test suite.

XLA compiles the suite's programs without its backend optimisations
(``JAX_DISABLE_MOST_OPTIMIZATIONS``, set before JAX starts and inherited by the processes the
tests spawn): the programs are tiny, so compilation is most of their time, and the
optimisations do not change what is computed — only how fast. ``MEMARCH_TEST_XLA_OPTIMIZE=1``
keeps them on (the optimised path users run; the benchmarks under experiments/ always use it).
Compiled programs go to one persistent compilation cache per test run (a temporary directory).

Fixtures of the language-model tests (data and training): a generated corpus, and a BPE
tokenizer and a SentencePiece model trained on it inside the test session (CPU, no network, in
tmp paths).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# (set before any test module imports JAX; numpy, tokenizers and sentencepiece above do not)
# The suite runs on the CPU (JAX_PLATFORMS=cpu, inherited by workers and spawned processes):
# with libtpu installed (dev extra) an unset platform makes JAX probe for a TPU at start-up,
# slowly and with a page of libtpu errors. TPU compile tests ask for topologies on purpose
# (memarch.kernels.tpu_topology_devices). On a GPU/TPU host: JAX_PLATFORMS=cuda (or tpu) pytest.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if os.environ.get("MEMARCH_TEST_XLA_OPTIMIZE") != "1":
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One persistent compilation cache per test run, made by the first pytest process (the xdist
# controller) and inherited by its workers and the processes the tests spawn: the many runs of
# the same tiny configs compile once. Removed at the end of the run unless the user set one.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="memarch-tests-jax-")
# Likewise one folder for artifacts that several workers share (a model trained once per run:
# tests/eval/conftest.py), removed at the end of the run.
if "MEMARCH_TEST_SHARED_DIR" not in os.environ:
    os.environ["MEMARCH_TEST_SHARED_DIR"] = tempfile.mkdtemp(prefix="memarch-tests-shared-")
    _OWN_SHARED = True
else:
    _OWN_SHARED = False
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


@pytest.fixture
def xla_optimized():
    """XLA's optimisations on for one test, for tests whose time is spent running many steps
    rather than compiling (e.g. a model trained until it learns)."""
    import jax

    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
    if _OWN_SHARED:
        shutil.rmtree(os.environ["MEMARCH_TEST_SHARED_DIR"], ignore_errors=True)


WORDS = (
    "the memory of a model is a state that sums keys and values over time while the gate "
    "forgets old facts and the delta rule writes new ones "
    "Gödel naïve café über straße 東京 日本語 テキスト 😀 🚀 Ωμέγα привет мир ∑∫√ ✓"
).split()


def generate_documents(n: int, seed: int, max_words: int = 120) -> list[str]:
    """``n`` documents of random words (ASCII and Unicode), lines and punctuation; some empty."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        k = int(rng.integers(0, max_words))
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=k)]
        for j in range(7, k, 13):
            words[j] += "." if j % 2 else ",\n"
        docs.append(" ".join(words))
    return docs


@pytest.fixture(scope="session")
def make_documents():
    """:func:`generate_documents`, for tests that need documents of their own."""
    return generate_documents


@pytest.fixture(scope="session")
def training_text() -> list[str]:
    """The texts the tokenizers are trained on."""
    return generate_documents(400, seed=1234)


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory, training_text) -> str:
    """A directory as ``transformers`` saves a tokenizer: ``tokenizer.json`` (byte-level BPE,
    vocabulary 400, ``<pad>`` = 0, ``<s>`` = 1, ``</s>`` = 2) and ``special_tokens_map.json``."""
    out = tmp_path_factory.mktemp("bpe")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_text, trainer)
    tok.save(str(out / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    (out / "special_tokens_map.json").write_text(json.dumps(specials))
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    return str(out)


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory, training_text) -> str:
    """A SentencePiece BPE model (``*.model``; vocabulary 400, byte fallback, identity
    normalization so every text round-trips; unk 0, BOS 1, EOS 2, PAD 3)."""
    out = tmp_path_factory.mktemp("sp") / "sp.model"
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(line for doc in training_text for line in doc.split("\n")),
        model_writer=proto,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        pad_id=3,
        minloglevel=2,
    )
    out.write_bytes(proto.getvalue())
    return str(out)
