"""Trainer overhead: ``memarch.train.train``'s step time vs a bare jitted step (one run).

    python experiments/bench_trainer.py [--window 10 --windows 8 --rounds 2 --batch 16 --seq 128]

Model: a tiny hybrid (Gated DeltaNet, Gated DeltaNet, attention; SwiGLU MLPs) on MQAR.
*Bare*: the very step the trainer compiles (same shardings, same donation) called in windows
of ``window`` steps on one pre-built device batch, with a ``block_until_ready`` per window.
*Trainer*: ``train(cfg)`` logging every ``window`` steps; its step time per window is what it
logs (data loading in a background thread, device_put, per-step dispatch and the metric fetch
at the log boundary included; compilation and the final evaluation excluded). Each side
reports its fastest window (the first, warm-up window dropped), which filters out other jobs'
load on a shared CPU; rounds alternate the two. Target: overhead < 5 %. Writes a Markdown
table to ``experiments/results/bench_trainer.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import jax
from flax import nnx

from memarch.data.pipeline import train_examples
from memarch.models import LMConfig
from memarch.train.checkpoint import abstract_like
from memarch.train.config import DataConfig, OptimConfig, TrainConfig
from memarch.train.input import BatchLoader
from memarch.train.mesh import batch_sharding, make_mesh, tree_shardings
from memarch.train.optimizer import make_optimizer
from memarch.train.setup import build_model
from memarch.train.step import init_state, make_train_step
from memarch.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def tiny_hybrid(batch: int, seq: int, d: int, steps: int, window: int) -> TrainConfig:
    return TrainConfig(
        name="bench_tiny_hybrid",
        model=LMConfig(vocab_size=64, d_model=d, num_heads=2, pattern="GGA"),
        data=DataConfig(
            vocab_size=64,
            train_slices=((seq, 8),),
            eval_slices=((seq, 8),),
            num_eval_examples=16,
        ),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=10),
        batch_size=batch,
        num_steps=steps,
        log_every=window,
        tensorboard=False,
    )


def bare_step_time(cfg: TrainConfig, *, load: bool = False) -> float:
    """Seconds per call of the trainer's compiled step (fastest window): on one fixed batch,
    or (``load``) on batch ``s`` from the trainer's loader at step ``s``."""
    mesh = make_mesh(cfg.mesh)
    tx = make_optimizer(cfg.optim, cfg.num_steps)
    graphdef = nnx.split(nnx.eval_shape(lambda: build_model(cfg)), nnx.Param)[0]

    def fresh():
        return init_state(build_model(cfg), tx, cfg.seed)

    abstract = jax.eval_shape(fresh)
    shardings = tree_shardings(cfg.mesh, mesh, abstract)
    loader = BatchLoader(train_examples(cfg.data), cfg.batch_size, batch_sharding(cfg.mesh, mesh))
    step = make_train_step(graphdef, tx, state_shardings=shardings, batch_shardings=loader.sharding)
    compiled = step.lower(abstract_like(abstract, shardings), loader.abstract()).compile()
    state = jax.jit(fresh, out_shardings=shardings)()
    batch = loader(0)
    for _ in range(3):  # warm-up
        state, m = compiled(state, batch)
    jax.block_until_ready(state)
    best, s = float("inf"), 1
    for _ in range(cfg.num_steps // cfg.log_every - 1):
        t0 = time.perf_counter()
        for _ in range(cfg.log_every):
            state, m = compiled(state, loader(s) if load else batch)
            s += 1
        jax.block_until_ready((state, m))
        best = min(best, (time.perf_counter() - t0) / cfg.log_every)
    loader.close()
    return best


def trainer_step_time(cfg: TrainConfig) -> float:
    """The trainer's logged step time (fastest window after the first)."""
    res = train(cfg, log=lambda s: None)
    return min(h["step_time"] for h in res.history[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--window", type=int, default=10, help="steps per timed window")
    p.add_argument("--windows", type=int, default=8, help="timed windows per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "experiments/results/bench_trainer.md"))
    a = p.parse_args()
    cfg = tiny_hybrid(a.batch, a.seq, a.d, a.window * (a.windows + 1), a.window)
    bare, loaded, trainer = [], [], []
    for r in range(a.rounds):
        bare.append(bare_step_time(cfg))
        loaded.append(bare_step_time(cfg, load=True))
        trainer.append(trainer_step_time(cfg))
        print(
            f"round {r}: bare {bare[-1] * 1e3:.2f} ms, bare + data {loaded[-1] * 1e3:.2f} ms, "
            f"trainer {trainer[-1] * 1e3:.2f} ms"
        )
    b, bl, t = min(bare), min(loaded), min(trainer)
    overhead = t / b - 1
    tokens = a.batch * a.seq
    n_params = sum(x.size for x in jax.tree.leaves(nnx.state(build_model(cfg), nnx.Param)))
    verdict = "met" if overhead < 0.05 else "not met"
    lines = [
        f"# Trainer overhead, {jax.default_backend()} ({platform.machine()}, "
        f"{jax.device_count()} device)",
        "",
        f"Tiny hybrid (pattern GGA, d_model {a.d}, SwiGLU, {n_params:,} parameters), MQAR "
        f"batch {a.batch} × {a.seq} tokens, fp32; fastest of {a.windows} windows of "
        f"{a.window} steps, "
        f"over {a.rounds} alternating rounds.",
        "",
        "| loop | step (ms) | tokens/s | × bare |",
        "|---|---|---|---|",
        f"| bare jitted step | {b * 1e3:.2f} | {tokens / b:,.0f} | 1.000 |",
        f"| bare step + data loader | {bl * 1e3:.2f} | {tokens / bl:,.0f} | {bl / b:.3f} |",
        f"| memarch.train.train | {t * 1e3:.2f} | {tokens / t:,.0f} | {t / b:.3f} |",
        "",
        f"Trainer overhead vs the bare step {overhead * 100:+.1f} % (target < 5 %: {verdict}); "
        f"vs the bare step fed by the same data loader {(t / bl - 1) * 100:+.1f} %. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs. "
        "Rounds (ms, bare / bare + data / trainer): "
        + ", ".join(
            f"{x * 1e3:.1f}/{y * 1e3:.1f}/{z * 1e3:.1f}"
            for x, y, z in zip(bare, loaded, trainer, strict=True)
        )
        + ". Timings on a shared CPU vary between runs.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
