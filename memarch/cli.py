"""``memarch`` command line: ``train``, ``eval``, ``ablate``, ``data``, ``compile``, ``convert``
and ``demo``.

memarch train --config configs/mqar_attention.py --workdir runs/attn optim.learning_rate=1e-3
memarch train --config configs/mqar_attention.py --workdir runs/attn --resume   # after a stop
memarch train --config configs/mqar_attention.py --workdir runs/attn --resume=auto  # if possible
memarch train --config runs/gla --workdir runs/gla --resume data.text_file=… num_steps=… # fine-tune
memarch train --config configs/lm_340m_hybrid.py mesh.data=2 mesh.fsdp=2 mesh.tensor=2
memarch eval  --config configs/mqar_attention.py --workdir runs/attn
memarch eval  --checkpoint runs/attn --task needle data.eval_slices='((256,1),)'
memarch eval  --checkpoint runs/attn --step 200
memarch eval  --checkpoint runs/lm --lm-eval-tasks hellaswag,lambada_openai --limit 200
memarch eval  --checkpoint runs/lm --extraction data/based-swde --extraction-task swde
memarch eval  --checkpoint runs/lm --needle-text 'corpus/*.txt' --lengths 512,1024 --depths 0,50,100
memarch ablate --config configs/mqar_hybrid.py --grid model.pattern=LA,AA --grid seed=0,1 \
    --out runs/ablate_hybrid [--workers 2] [key.sub=value ...]
memarch data prepare 'corpus/*.jsonl' --text-field text --tokenizer tok/ --out data/corpus
memarch compile --config configs/lm_340m_hybrid.py --topology v5e:16x16 [--step-time 0.5]
memarch convert from-fla ckpt/gla-340M runs/gla   # an fla checkpoint -> a run directory
memarch convert to-fla runs/gla out/gla-fla        # and back (fla's AutoModelForCausalLM loads it)
memarch demo
memarch --debug train …   # a user error with its traceback (also: MEMARCH_DEBUG=1)

A user error (a rejected config field or override, a config file that raises, a missing file)
is one or two lines on stderr naming the field, file and line, or path, with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from memarch.ablate import load_grid_file, parse_grid_args, run_grid, write_report
from memarch.compile import STEPS, check_fits, compile_config
from memarch.compile import write_report as write_compile_report
from memarch.convert import export_fla, import_fla
from memarch.data.extraction import read_extraction
from memarch.data.needle_text import TextNeedleConfig, load_haystack
from memarch.data.prepare import main as prepare_main
from memarch.data.tasks import get_task
from memarch.demo import run_demo
from memarch.errors import UserError, user_error_lines
from memarch.eval.extraction import compare_passes, passes_table
from memarch.eval.lm_session import LMSession
from memarch.eval.needle_text import evaluate_needle_grid, needle_grid_table, write_needle_heatmap
from memarch.eval.periodic import evaluate_config, periodic_evaluation
from memarch.eval.recall import baselines, evaluate_task, recall_table, task_data
from memarch.eval.text import text_report
from memarch.kernels import choose_platform
from memarch.train.config import apply_overrides, load_config
from memarch.train.run_dir import load_run_config, restore_run_params
from memarch.train.setup import build_model
from memarch.train.trainer import train
from memarch.train.workdir import as_path, is_url

RESUME_CHOICES = {"latest": True, "auto": "auto"}  # --resume[=auto] -> train(resume=...)


def _resume_mode(args) -> bool | str:
    """``train``'s ``resume`` from ``--resume[=auto]``. ``--resume key=value`` (an override
    right after the bare flag) is given back to the overrides."""
    if args.resume is None:
        return False
    if args.resume in RESUME_CHOICES:
        return RESUME_CHOICES[args.resume]
    if "=" in args.resume and not args.resume.startswith("="):
        args.overrides.insert(0, args.resume)
        return True
    raise ValueError(f"--resume accepts no value or 'auto'; got {args.resume!r}")


def _train_config(args):
    """``--config``: a ``configs/*.py`` file, or a run directory (e.g. one written by
    ``memarch convert from-fla``) whose saved ``config.json`` is the config."""
    if is_url(args.config) or as_path(args.config).is_dir():
        if args.tiny:
            raise UserError("--tiny applies to a config file, not to a run directory")
        return load_run_config(args.config)
    return load_config(args.config, tiny=args.tiny)


def _cmd_train(args) -> int:
    resume = _resume_mode(args)
    cfg = apply_overrides(_train_config(args), args.overrides)
    workdir = args.workdir or f"runs/{cfg.name}"
    try:
        res = train(
            cfg,
            workdir=workdir,
            progress=not args.no_progress,
            resume=resume,
            new_run=args.new_run,
            allow_schedule_change=args.allow_schedule_change,
            evaluate=periodic_evaluation(cfg),
        )
    except KeyboardInterrupt:  # Ctrl-C before the first step (later ones save and return)
        print(f"memarch train: interrupted; nothing saved in {workdir}", file=sys.stderr)
        return 130
    workdir = res.run_dir or workdir
    if res.preempted:
        print(f"pre-empted at step {res.final_step}; continue with --resume")
        return 0
    for row in res.history:
        print(f"step {row['step']:6d}  loss {row['loss']:.4f}  acc {row['accuracy']:.3f}")
    if res.evals and isinstance(res.evals[-1]["accuracy"], dict):  # MQAR: per slice
        print(recall_table({cfg.name: res.evals[-1]["accuracy"]}))
    elif res.evals:
        print(f"eval (held-out text, step {res.evals[-1]['step']}): {text_report(res.evals[-1])}")
    if res.skipped_steps:
        print(f"skipped {res.skipped_steps} non-finite steps (on_nonfinite=skip)")
    print(f"saved to {workdir} ({res.wall_time:.0f} s)")
    return 0


def _cmd_eval(args) -> int:
    """The model (and its weights' layout) always comes from the run's own ``config.json``;
    ``--config`` supplies only the rest (task, slices, evaluation sizes)."""
    if args.lm_eval_tasks:
        return _lm_eval(args)
    if args.extraction:
        return _extraction_eval(args)
    if args.needle_text:
        return _needle_text_eval(args)
    if args.checkpoint:
        if args.config or args.workdir:
            raise ValueError("give either --checkpoint DIR or --config FILE --workdir DIR")
        run_dir = args.checkpoint
        saved = cfg = load_run_config(run_dir)
    else:
        if not (args.config and args.workdir):
            raise ValueError("give --checkpoint DIR (a run directory) or --config and --workdir")
        run_dir = args.workdir
        saved = load_run_config(run_dir)
        cfg = dataclasses.replace(load_config(args.config, tiny=args.tiny), model=saved.model)
    cfg = apply_overrides(cfg, args.overrides)
    task = args.task or cfg.data.task
    if task == "text":
        model, source = restore_run_params(build_model(cfg), saved, run_dir, step=args.step)
        print(f"scoring {source}")
        print(f"held-out text: {text_report(evaluate_config(model, cfg))}")
        return 0
    data, slices = task_data(cfg.data, task)  # bad task / slice: an error before any loading
    model, source = restore_run_params(build_model(cfg), saved, run_dir, step=args.step)
    print(f"scoring {source}")
    rows = {cfg.name: evaluate_task(model, task, data, slices)}
    rows.update(baselines(task, data, slices))
    print(f"task {task} ({data.num_eval_examples} test examples per slice, seed {data.eval_seed})")
    print(recall_table(rows, get_task(task).slice_names))
    return 0


def _lm_eval(args) -> int:
    """``memarch eval --checkpoint RUN --lm-eval-tasks a,b``: lm-evaluation-harness tasks."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError(
            "--lm-eval-tasks needs lm-evaluation-harness: pip install 'memarch[lm-eval]'"
        ) from None
    # lazy: lm-evaluation-harness is an optional extra (memarch[lm-eval]) and slow to import
    from memarch.eval.lm_harness import results_table, run_lm_eval, task_manager, write_results

    run_dir = _session_run_dir(args, "--lm-eval-tasks")
    tasks = [t.strip() for t in args.lm_eval_tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--lm-eval-tasks: give at least one task name (comma-separated)")
    manager = task_manager(tasks, args.lm_eval_include)  # unknown names: before any loading
    session = _run_session(args, run_dir)
    print(f"scoring {session.source}")
    results = run_lm_eval(
        session,
        tasks,
        include_path=args.lm_eval_include,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        manager=manager,
    )
    print(results_table(results))
    print(f"wrote {write_results(results, run_dir)} ({results['memarch']['wall_s']:.1f} s)")
    return 0


def _session_run_dir(args, option: str) -> str:
    """The run directory of an evaluation that takes its model, tokenizer and length from the
    run (``--checkpoint``; no task or overrides)."""
    run_dir = args.checkpoint or args.workdir
    if not run_dir or args.task or args.overrides:
        raise ValueError(
            f"{option} takes --checkpoint RUN_DIR (no --task and no overrides: the model, "
            "tokenizer and length come from the run)"
        )
    return run_dir


def _run_session(args, run_dir: str) -> LMSession:
    """The :class:`LMSession` of ``run_dir`` with ``--step``, ``--max-length``, ``--batch-size``."""
    return LMSession.from_run_dir(
        run_dir, step=args.step, max_length=args.max_length, batch_size=args.batch_size
    )


def _extraction_eval(args) -> int:
    """``memarch eval --checkpoint RUN --extraction PATH --extraction-task T``: JRT-format
    extraction scored by contains-match, once per ``--num-passes`` value."""
    run_dir = _session_run_dir(args, "--extraction")
    passes = _int_list(args.num_passes, "--num-passes")
    limit = None if args.limit is None else int(args.limit)
    records = read_extraction(args.extraction, args.extraction_task, limit=limit)
    session = _run_session(args, run_dir)
    print(f"scoring {session.source} on {len(records)} {args.extraction_task} records")
    results = compare_passes(
        session.generate_until,
        records,
        task=args.extraction_task,
        tokenizer=session.tokenizer,
        passes=passes,
        context_tokens=args.context_tokens,
        max_length=session.max_length,
    )
    print(passes_table({args.extraction_task: results}))
    print("wall time: " + ", ".join(f"passes={p} {r['wall_s']:.1f} s" for p, r in results.items()))
    return 0


def _int_list(text: str, option: str, kind=int) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{option} takes comma-separated numbers; got {text!r}") from None
    if not values:
        raise ValueError(f"{option} takes comma-separated numbers; got {text!r}")
    return values


def _needle_text_eval(args) -> int:
    """``memarch eval --checkpoint RUN --needle-text SOURCE``: RULER-style needles in real text
    over a depth × length grid, scored by generation; table, heatmap PNG, wall time."""
    run_dir = _session_run_dir(args, "--needle-text")
    lengths = _int_list(args.lengths, "--lengths")
    depths = _int_list(args.depths, "--depths", float)
    config = TextNeedleConfig(family=args.needle_family, value_digits=args.needle_digits)
    session = _run_session(args, run_dir)
    haystack = load_haystack(args.needle_text, tokenizer=session.tokenizer)
    print(f"scoring {session.source}")
    result = evaluate_needle_grid(
        session.generate_until,
        config,
        haystack,
        session.tokenizer,
        lengths=lengths,
        depths=depths,
        num_examples=args.num_examples,
        seed=args.needle_seed,
        max_new_tokens=args.needle_new_tokens,
    )
    print(
        f"needle in a haystack ({config.family}; string_match_all), {args.num_examples} "
        "examples per cell:"
    )
    print(needle_grid_table(result))
    png_path = as_path(run_dir) / "eval" / f"needle_text_{config.family}.png"
    png = write_needle_heatmap(result, png_path)
    print(f"wrote {png} ({result.wall_time_s:.1f} s)")
    return 0


def _cmd_ablate(args) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1; got {args.workers}")
    base = apply_overrides(load_config(args.config, tiny=args.tiny), args.overrides)
    given = parse_grid_args(args.grid)
    names = {x.name for x in given}
    axes = [] if args.grid_file is None else load_grid_file(args.grid_file)
    axes = [x if x.name not in names else next(g for g in given if g.name == x.name) for x in axes]
    axes += [g for g in given if g.name not in {x.name for x in axes}]
    if args.pivot is not None and args.pivot not in [x.name for x in axes]:
        raise ValueError(
            f"--pivot {args.pivot!r} is not a grid axis; axes: {[x.name for x in axes]}"
        )
    run = run_grid(
        base,
        axes,
        args.out,
        workers=args.workers,
        progress=not args.no_progress,
        train=not args.report_only,
    )
    print(
        f"{len(run.trained)} cells trained, {len(run.skipped)} already done, "
        f"{len(run.failed)} failed ({run.wall_time:.0f} s)"
    )
    if run.results:
        paths = write_report(run.results, axes, args.out, pivot=args.pivot, title=args.title)
        print(paths["md"].read_text())
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if run.failed:
        for name in sorted(run.failed):
            print(f"{name}: {run.failed[name].splitlines()[0]}", file=sys.stderr)
        print(f"failed cells (re-run to retry): {sorted(run.failed)}", file=sys.stderr)
        return 1
    return 0


def _cmd_compile(args) -> int:
    """Compiles the config's steps for ``--topology`` and writes the report into the run
    directory; a step that does not fit the chip's HBM is a user error (after the report)."""
    cfg = apply_overrides(load_config(args.config, tiny=args.tiny), args.overrides)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    report = compile_config(cfg, args.topology, steps=steps, log=print)
    md, _ = write_compile_report(report, args.workdir or f"runs/{cfg.name}", args.step_time)
    print(md.read_text(), end="")
    print(f"report: {md} (and .json)")
    check_fits(report)
    return 0


def _cmd_convert(args) -> int:
    """fla checkpoint -> memarch run directory (from-fla), or back (to-fla)."""
    if args.direction == "from-fla":
        cfg = import_fla(args.src, args.out)
        print(
            f"wrote run directory {args.out}: {len(cfg.model.layer_names())} layers "
            f"{','.join(cfg.model.layer_names())}, tokenizer {cfg.data.tokenizer}"
        )
    else:
        config = export_fla(args.src, args.out)
        print(f"wrote fla checkpoint {args.out}: model_type {config['model_type']}")
    return 0


def _cmd_data(args) -> int:
    return prepare_main(args.args)


def _cmd_demo(args) -> int:
    run_demo(args.out, args.overrides, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memarch", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one config")
    t.add_argument(
        "--config",
        required=True,
        help="a configs/*.py file with get_config(), or a run directory (its config.json: "
        "e.g. fine-tuning a converted fla checkpoint with --workdir RUN --resume)",
    )
    t.add_argument("--workdir", help="run directory (default runs/<name>)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="auto",
        help="continue from the newest checkpoint in --workdir that verifies (an error if there "
        "is none); --resume=auto: resume if possible, else start a fresh run",
    )
    t.add_argument(
        "--new-run",
        action="store_true",
        help="if --workdir holds a run, train a fresh one in a new subdirectory of it",
    )
    t.add_argument(
        "--allow-schedule-change",
        action="store_true",
        help="with --resume: accept a changed learning-rate schedule (num_steps, warm-up, "
        "peak learning rate)",
    )
    t.add_argument(
        "--tiny", action="store_true", help="the config's tiny CPU variant (get_config(tiny=True))"
    )
    t.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser(
        "eval", help="evaluate a saved run on any recall task (with chance and oracle rows)"
    )
    e.add_argument("--checkpoint", help="a `memarch train` run directory (its config.json)")
    e.add_argument("--task", help="task name (memarch.data.tasks; default: the run's data.task)")
    e.add_argument("--config", help="instead of --checkpoint: the config the run used …")
    e.add_argument("--workdir", help="… and the run directory of `memarch train`")
    e.add_argument("--tiny", action="store_true", help="with --config: its tiny CPU variant")
    e.add_argument(
        "--step", type=int, help="score checkpoint N (default: the newest that verifies)"
    )
    e.add_argument(
        "--lm-eval-tasks",
        metavar="T1,T2",
        help="score the run on lm-evaluation-harness tasks (comma-separated names)",
    )
    e.add_argument("--lm-eval-include", metavar="DIR", help="a folder of extra harness task YAMLs")
    e.add_argument(
        "--extraction",
        metavar="PATH",
        help="score JRT-format extraction records (.jsonl/.json/.parquet or their folder)",
    )
    e.add_argument(
        "--extraction-task",
        default="swde",
        help="with --extraction: swde | fda | squad | triviaqa | nq | drop (field conventions)",
    )
    e.add_argument(
        "--num-passes", default="1,2", help="with --extraction: context repeats to compare (JRT)"
    )
    e.add_argument(
        "--context-tokens", type=int, help="with --extraction: cut each pass to N tokens (JRT)"
    )
    e.add_argument(
        "--needle-text",
        metavar="SOURCE",
        help="needles in real text: a haystack corpus (path/glob of .txt/.jsonl/.parquet, or a "
        "prepared directory)",
    )
    e.add_argument(
        "--needle-family",
        default="single",
        help="with --needle-text: single | multikey | multivalue | multiquery (RULER)",
    )
    e.add_argument("--needle-digits", type=int, default=7, help="with --needle-text: value digits")
    e.add_argument(
        "--lengths", default="256,512", help="with --needle-text: prompt lengths in tokens"
    )
    e.add_argument(
        "--depths", default="0,25,50,75,100", help="with --needle-text: needle depths (%%)"
    )
    e.add_argument("--num-examples", type=int, default=10, help="with --needle-text: per cell")
    e.add_argument("--needle-seed", type=int, default=0, help="with --needle-text: example seed")
    e.add_argument(
        "--needle-new-tokens", type=int, default=32, help="with --needle-text: generated tokens"
    )
    e.add_argument("--num-fewshot", type=int, help="with --lm-eval-tasks: few-shot examples")
    e.add_argument(
        "--limit", type=float, help="documents per task (lm-eval: or a fraction; extraction)"
    )
    e.add_argument("--batch-size", type=int, default=8, help="rows per scoring batch")
    e.add_argument(
        "--max-length", type=int, help="longest row in tokens (default: the run's training length)"
    )
    e.add_argument(
        "overrides",
        nargs="*",
        help="key.sub=value overrides, e.g. task parameters data.eval_slices='((256,8),)' "
        "data.needle_depth=50 data.overwrite_fraction=0.5 data.num_eval_examples=1000",
    )
    e.set_defaults(func=_cmd_eval)
    a = sub.add_parser(
        "ablate", help="train a grid of config overrides; write CSV, Markdown and PNG plots"
    )
    a.add_argument("--config", required=True, help="the base config (configs/*.py)")
    a.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="one axis of the grid (repeatable; replaces the grid file's axis of that name); "
        "the axis 'seed' also sets data.seed",
    )
    a.add_argument("--grid-file", help="a Python file defining GRID = {axis: values}")
    a.add_argument("--out", required=True, help="output folder (cells, CSV, Markdown, plots)")
    a.add_argument("--workers", type=int, default=1, help="cells trained in parallel processes")
    a.add_argument("--pivot", help="an axis whose values become column suffixes in the table")
    a.add_argument("--title", default="Ablation", help="title of the Markdown report")
    a.add_argument("--tiny", action="store_true", help="the config's tiny CPU variant")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.add_argument(
        "--report-only", action="store_true", help="train nothing; report the finished cells"
    )
    a.add_argument("overrides", nargs="*", help="key.sub=value overrides for every cell")
    a.set_defaults(func=_cmd_ablate)
    dp = sub.add_parser(
        "data", help="language-model data: `memarch data prepare SRC... --out DIR --tokenizer T`"
    )
    dp.add_argument(
        "action", choices=["prepare"], help="prepare: tokenize a corpus into ArrayRecord shards"
    )
    dp.add_argument(
        "args", nargs=argparse.REMAINDER, help="its arguments (memarch data prepare --help)"
    )
    dp.set_defaults(func=_cmd_data)
    c = sub.add_parser(
        "compile",
        help="compile the train/eval/decode steps for a TPU topology on this host; report "
        "memory per chip, FLOPs, MFU bound, collectives and sharding warnings",
    )
    c.add_argument("--config", required=True, help="a configs/*.py file with get_config()")
    c.add_argument("--topology", required=True, help="TPU topology, e.g. v5e:16x16, v4:4x4x4")
    c.add_argument("--workdir", help="where the report goes (default runs/<name>)")
    c.add_argument("--tiny", action="store_true", help="the config's tiny CPU variant")
    c.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}"
    )
    c.add_argument(
        "--step-time",
        type=float,
        help="seconds per train step for the MFU bound (default: XLA's estimate)",
    )
    c.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    c.set_defaults(func=_cmd_compile)
    cv = sub.add_parser(
        "convert",
        help="fla (flash-linear-attention, Hugging Face format) checkpoint <-> memarch run "
        "directory (docs/convert.md)",
    )
    cv.add_argument(
        "direction",
        choices=["from-fla", "to-fla"],
        help="from-fla: SRC is an fla checkpoint directory, OUT a new run directory; to-fla: "
        "SRC is a run directory, OUT the fla checkpoint directory",
    )
    cv.add_argument("src", help="source directory")
    cv.add_argument("out", help="output directory")
    cv.set_defaults(func=_cmd_convert)
    d = sub.add_parser("demo", help="MQAR: attention vs linear attention vs hybrid (CPU)")
    d.add_argument("--out", default="runs/demo", help="output folder (table, plot, runs)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("overrides", nargs="*", help="key.sub=value overrides for all three configs")
    d.set_defaults(func=_cmd_demo)
    debug_help = "show the traceback of a user error (also: MEMARCH_DEBUG=1)"
    p.add_argument("--debug", action="store_true", help=debug_help)
    for command in sub.choices.values():  # also accepted after the subcommand
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help
        )
    return p


def debug_requested(args: argparse.Namespace) -> bool:
    """``--debug`` was given, or the environment sets ``MEMARCH_DEBUG`` (to anything but
    ``""``/``0``): user errors then show their traceback too."""
    env = os.environ.get("MEMARCH_DEBUG", "")
    return bool(getattr(args, "debug", False)) or env not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. A user error (:mod:`memarch.errors`: a rejected config field,
    override, file or path) prints one or two lines ``memarch CMD: error: …`` naming the field,
    file (and line) or path, and returns 2; with ``--debug`` or ``MEMARCH_DEBUG=1`` it is
    raised with its traceback. Any other exception is a bug and keeps its traceback.

    JAX runs on the CPU unless an accelerator is attached or ``JAX_PLATFORMS`` says otherwise
    (:func:`memarch.kernels.choose_platform`): no start-up probe for an absent TPU."""
    choose_platform()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:
        lines = user_error_lines(err)
        if lines is None or debug_requested(args):
            raise
        print(f"memarch {args.command}: error: " + "\n".join(lines), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
