"""Store-then-recall probe of a bare neural memory (no training): which inner step size θ lets
each memory hold a few random associations?

    python experiments/memory_recall_probe.py [--pairs 8 --dim 32 --thetas 0.01 0.03 0.1]

For each memory preset (Titans LMM, Moneta, Yaad, Memora; MLP memory of expansion 2, chunk
size 1, momentum η = 0.5 where used, retention γ = 0.99, Huber δ = 1) the engine writes
``pairs`` random (unit key, Gaussian value) pairs with a constant θ from the preset's initial
memory, then reads every key back. The score is the fraction of keys whose read-out
``M(k) − k`` (the residual memory's LayerNorm branch) is closest, by inner product, to its own
value. Used to pick each memory's θ_init in configs/mqar_titans_small.py; printed as Markdown.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from memarch.memory import WriteGates, make_spec, memory_forward
from memarch.memory.engine import memory_read
from memarch.mixers.titans import MemoraConfig, MonetaConfig, TitansLMMConfig, YaadConfig

PRESETS = {
    "titans_lmm": TitansLMMConfig,
    "moneta": MonetaConfig,
    "yaad": YaadConfig,
    "memora": MemoraConfig,
}


def recall(cfg, theta: float, pairs: int, dim: int, seed: int = 0) -> float:
    """Fraction of the ``pairs`` keys read back closest to their own value."""
    spec = make_spec(cfg)
    ks = jax.random.split(jax.random.key(seed), 3)
    k = jax.random.normal(ks[0], (1, pairs, 1, dim))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(ks[1], (1, pairs, 1, dim))
    init = jax.tree.map(lambda x: x[None], spec.structure.init(ks[2], dim, dim))
    full = lambda x: jnp.full((1, pairs, 1), x)  # noqa: E731
    gates = WriteGates(
        lr=full(theta),
        log_momentum=full(math.log(0.5)) if spec.momentum else None,
        log_keep=full(math.log(0.99)) if spec.retention.decays else None,
        delta=full(1.0),
    )
    _, state = memory_forward(spec, init, k, k, v, gates, impl="naive")
    read = memory_read(spec, state.memory, k)[0, :, 0] - k[0, :, 0]
    sims = read @ v[0, :, 0].T
    return float(jnp.mean(jnp.argmax(sims, -1) == jnp.arange(pairs)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--thetas", type=float, nargs="+", default=[0.01, 0.03, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args()
    head = "| memory | " + " | ".join(f"θ = {t:g}" for t in a.thetas) + " |"
    rows = [head, "|---" * (len(a.thetas) + 1) + "|"]
    for name, config in PRESETS.items():
        cfg = config(expansion=2.0, chunk_size=1)
        accs = [
            sum(recall(cfg, t, a.pairs, a.dim, s) for s in a.seeds) / len(a.seeds) for t in a.thetas
        ]
        rows.append(f"| {name} | " + " | ".join(f"{x:.2f}" for x in accs) + " |")
        print(rows[-1], flush=True)
    print(
        f"\nRecall of {a.pairs} pairs, key/value width {a.dim}, seeds {a.seeds}\n\n"
        + "\n".join(rows)
    )


if __name__ == "__main__":
    main()
