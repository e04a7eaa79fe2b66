"""Memory engine: peak memory of the chunked training form at long T, and chunked vs online
speed, measured in one run on the current backend.

    python experiments/bench_memory.py [--T 4096 --B 1 --H 4 --D 64 --chunks 16 64
                                        --speed-T 1024 --repeats 3]

- Peak memory: XLA's compiled-memory analysis (temporaries + arguments + outputs) of
  ``value_and_grad`` of the chunked form at T, for a linear memory and a 2-layer MLP memory
  in the dual form (no per-token weights), and the MLP memory with per-token weights
  materialised inside each chunk (associative scans; the form Moneta's and Memora's
  non-identity retentions need), each with and without per-chunk rematerialisation. Also the
  size of one copy of all per-token weights (T × memory size), which a naive materialisation
  would need at least once.
- Speed: forward+backward tokens/s of ``impl="chunk"`` vs ``impl="naive"`` (token by token),
  for the same three memories.

Results are printed as Markdown and written to experiments/results/bench_memory.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from memarch.memory import MemoryConfig, WriteGates, make_spec, memory_forward

ROOT = Path(__file__).resolve().parents[1]


def case(cfg: MemoryConfig, dual: bool, b: int, t: int, h: int, d: int):
    spec = dataclasses.replace(make_spec(cfg), dual_form=dual)
    ks = jax.random.split(jax.random.key(0), 6)
    init = jax.vmap(lambda k: spec.structure.init(k, d, d))(jax.random.split(ks[0], h))
    q = jax.random.normal(ks[1], (b, t, h, d))
    k = jax.random.normal(ks[2], (b, t, h, d))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(ks[3], (b, t, h, d))
    gates = WriteGates(
        lr=0.1 * jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h))),
        log_momentum=jnp.full((b, t, h), jnp.log(0.5)) if spec.momentum else None,
        log_keep=jax.nn.log_sigmoid(4.0 + jax.random.normal(ks[5], (b, t, h))),
    )
    return spec, init, (q, k, v), gates


def fwd_bwd(spec, init, qkv, gates, impl):
    def loss(init, q, k, v):
        y, _ = memory_forward(spec, init, q, k, v, gates, impl=impl)
        return jnp.sum(y * y)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))


def peak_bytes(f, *args) -> int:
    m = f.lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes)


def tokens_per_s(f, args, tokens: int, repeats: int) -> float:
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return tokens / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--chunks", type=int, nargs="+", default=[16, 64])
    p.add_argument("--speed-T", type=int, default=1024)
    p.add_argument("--speed-D", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    a = p.parse_args()
    mib = 2.0**20
    mlp = MemoryConfig(structure="mlp", depth=2, expansion=4.0)
    structures = {  # label: (config, dual form)
        "linear (dual form)": (MemoryConfig(structure="linear"), True),
        "mlp depth 2, ×4 (dual form)": (mlp, True),
        "mlp depth 2, ×4 (per-token weights)": (mlp, False),
    }
    rows = [
        "| memory | chunk | remat | peak MiB (fwd+bwd) | one per-token weight copy MiB |",
        "|---|---|---|---|---|",
    ]
    for label, (cfg0, dual) in structures.items():
        for c in a.chunks:
            for remat in (True, False):
                cfg = dataclasses.replace(cfg0, chunk_size=c, remat=remat)
                spec, init, qkv, gates = case(cfg, dual, a.B, a.T, a.H, a.D)
                per_token = a.B * a.T * sum(x.size for x in jax.tree.leaves(init)) * 4
                peak = peak_bytes(fwd_bwd(spec, init, qkv, gates, "chunk"), init, *qkv)
                rows.append(
                    f"| {label} | {c} | {remat} | {peak / mib:.1f} | {per_token / mib:.1f} |"
                )
                print(rows[-1], flush=True)
    speed = [
        "| memory | chunk | chunk form tok/s | online (scan) tok/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for label, (cfg0, dual) in structures.items():
        c = a.chunks[0]
        cfg = dataclasses.replace(cfg0, chunk_size=c)
        spec, init, qkv, gates = case(cfg, dual, a.B, a.speed_T, a.H, a.speed_D)
        n = a.B * a.speed_T
        fast = tokens_per_s(fwd_bwd(spec, init, qkv, gates, "chunk"), (init, *qkv), n, a.repeats)
        slow = tokens_per_s(fwd_bwd(spec, init, qkv, gates, "naive"), (init, *qkv), n, a.repeats)
        speed.append(f"| {label} | {c} | {fast:.0f} | {slow:.0f} | {fast / slow:.1f}× |")
        print(speed[-1], flush=True)
    text = (
        f"# Memory engine benchmark ({jax.default_backend()}), B={a.B}, H={a.H}\n\n"
        f"## Peak memory of value_and_grad, T={a.T}, head dim {a.D}\n\n"
        + "\n".join(rows)
        + f"\n\n## Forward+backward speed, T={a.speed_T}, head dim {a.speed_D}\n\n"
        + "\n".join(speed)
        + "\n"
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_memory.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
