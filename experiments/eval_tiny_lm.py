"""A tiny language model scored the way the field scores language models, on CPU, offline.

    python experiments/eval_tiny_lm.py [--steps 300] [--out experiments/results/eval_tiny_lm.md]

Trains ``configs/lm_340m_hybrid.py --tiny`` (Gated DeltaNet + attention, byte tokenizer) on
the local text corpus (tiny Shakespeare from ``shared/data``, or ``$MEMARCH_TEXT_FILE``), then
scores the run directory with lm-evaluation-harness (the ``memarch`` model,
:mod:`memarch.eval.lm_harness`) on three local tasks built from the corpus's held-out
validation rows (nothing is downloaded):

* ``tiny_next_passage`` (multiple choice): 48 bytes of held-out text; choices: the true next
  24 bytes and 3 passages of 24 bytes from other rows (chance 0.25); ``acc``, ``acc_norm``.
* ``tiny_next_word`` (generation): the same contexts; target: the next word; exact match.
* ``tiny_rolling`` (log-likelihood of whole passages): ``word_perplexity``,
  ``byte_perplexity``, ``bits_per_byte`` of 96-byte held-out passages.

and writes the harness's table, the held-out metrics of the run and the wall time of each
step to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from memarch.data.text import eval_rows, text_tokenizer
from memarch.eval.lm_harness import results_table, run_lm_eval
from memarch.eval.lm_session import LMSession
from memarch.eval.periodic import periodic_evaluation
from memarch.eval.text import text_report
from memarch.train.config import apply_overrides, load_config
from memarch.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lm_340m_hybrid.py"
TASKS = ("tiny_next_passage", "tiny_next_word", "tiny_rolling")


def held_out_passages(cfg, n: int, length: int) -> list[str]:
    """``n`` texts of ``length`` bytes from the validation rows (first segment of each row)."""
    rows, _ = eval_rows(cfg.data)
    tok = text_tokenizer(cfg.data)
    out = []
    for i in range(len(rows)):
        row = rows[i]
        ids = row["inputs"][row["segment_ids"] == row["segment_ids"][0]]
        text = tok.decode(ids).strip()
        if len(text.encode()) >= length and text.isascii():
            out.append(text[:length])
        if len(out) == n:
            break
    if len(out) < n:
        raise ValueError(f"the validation split has only {len(out)} passages of {length} bytes")
    return out


def write_tasks(folder: Path, passages: list[str], seed: int = 0) -> None:
    """The three harness task YAMLs and their JSON-lines data."""
    rng = np.random.default_rng(seed)
    mc, words, rolling = [], [], []
    for i, p in enumerate(passages):
        context, answer = p[:48], p[48:72]
        others = [passages[j][48:72] for j in rng.choice(len(passages), 4) if j != i][:3]
        choices = [answer, *others]
        order = rng.permutation(len(choices))
        mc.append(
            {
                "context": context,
                "choices": [choices[k] for k in order],
                "label": int(np.argmax(order == 0)),
            }
        )
        rest = p[48:].lstrip()
        if rest.split():  # the context ends where the next word starts
            words.append({"context": p[: len(p) - len(rest)], "word": rest.split()[0]})
        rolling.append({"text": p})
    for name, docs in (("mc", mc), ("words", words), ("rolling", rolling)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    head = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {}\ntest_split: test\n"
    (folder / "tiny_next_passage.yaml").write_text(
        "task: tiny_next_passage\n"
        + head.format(folder / "mc.jsonl")
        + 'output_type: multiple_choice\ndoc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: label\nmetric_list:\n'
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (folder / "tiny_next_word.yaml").write_text(
        "task: tiny_next_word\n"
        + head.format(folder / "words.jsonl")
        + 'output_type: generate_until\ndoc_to_text: "{{context}}"\n'
        'doc_to_target: "{{word}}"\ngeneration_kwargs:\n  until: [" ", "\\n"]\n'
        "  max_gen_toks: 16\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n"
    )
    (folder / "tiny_rolling.yaml").write_text(
        "task: tiny_rolling\n"
        + head.format(folder / "rolling.jsonl")
        + 'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
        'doc_to_target: "{{text}}"\nmetric_list:\n'
        "  - metric: word_perplexity\n  - metric: byte_perplexity\n  - metric: bits_per_byte\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--passages", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "experiments/results/eval_tiny_lm.md"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="eval_tiny_lm_"))
    cfg = apply_overrides(
        load_config(CONFIG, tiny=True),
        [
            f"num_steps={args.steps}",
            "data.seq_len=128",
            "data.num_eval_examples=64",
            "batch_size=16",
            f"data.data_dir='{work / 'data'}'",
        ],
    )
    start = time.perf_counter()
    res = train(cfg, workdir=str(work / "run"), evaluate=periodic_evaluation(cfg))
    train_s = time.perf_counter() - start
    held_out = res.evals[-1]
    folder = work / "tasks"
    folder.mkdir()
    write_tasks(folder, held_out_passages(cfg, args.passages, 96))
    session = LMSession.from_run_dir(res.run_dir or work / "run", batch_size=16)
    results = run_lm_eval(session, TASKS, include_path=str(folder))
    lines = [
        "# A tiny language model through lm-evaluation-harness (CPU, offline)",
        "",
        f"`python experiments/eval_tiny_lm.py --steps {args.steps}`: "
        f"`configs/lm_340m_hybrid.py --tiny` (pattern {cfg.model.pattern}, d_model "
        f"{cfg.model.d_model}, byte tokenizer) trained {args.steps} steps on "
        f"`{Path(cfg.data.text_file).name}` in {train_s:.0f} s.",
        "",
        f"Held-out text (`memarch eval --task text`): {text_report(held_out)}",
        "",
        f"lm-evaluation-harness, model `memarch`, {args.passages} held-out passages per task "
        f"(chance on tiny_next_passage: 0.25), {results['memarch']['wall_s']:.1f} s:",
        "",
        results_table(results),
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
