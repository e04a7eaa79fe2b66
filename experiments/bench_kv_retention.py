"""KV retention benchmarks, measured in one run on the current backend.

    python experiments/bench_kv_retention.py [--context 8192 --budget 1024 --steps 32 --T 4096]

1. Decode: one ``trimkv`` layer (GQA) decoding ``--steps`` tokens (a jitted ``lax.scan``) after
   a context of ``--context`` tokens, with the full cache vs a budgeted cache of ``--budget``
   keys per KV head (TRIM-KV eviction after every token). Reports cache bytes and tokens/s.
   The caches are filled with random keys (decode cost does not depend on their values).
2. Attention with the decay bias, forward+backward at T: plain masked attention (materialised
   T×T, :func:`memarch.mixers.attention.attend`) vs :func:`memarch.ops.decay_attention` with
   FoX gates and TRIM-KV slopes, blockwise and naive, and blockwise without a bias.
   Before timing, blockwise is checked against naive on the same inputs. "XLA temp MiB" is
   the compiled program's temporary buffer size (``memory_analysis``), i.e. activation memory.

Results are printed as Markdown and written to experiments/results/bench_kv_retention.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from memarch import mixers
from memarch.kvcache import RetentionEviction
from memarch.mixers.attention import attend
from memarch.ops import decay_attention
from memarch.testing import rel_rms


def best_time(f, *args, repeats: int) -> float:
    jax.block_until_ready(f(*args))  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def filled_cache(mixer, context: int, steps: int, budget: int | None, seed: int = 0):
    """A cache that has seen ``context`` tokens: full (context + steps slots) or ``budget``."""
    cache = mixer.init_cache(1, context + steps, jnp.float32)
    s, hkv = cache.slots, mixer.num_kv_heads
    n = min(s, context)
    ks = jax.random.split(jax.random.key(seed), 3)
    rng = np.random.default_rng(seed)
    pos = np.full((1, s, hkv), -1, np.int32)
    for h in range(hkv):  # a budgeted cache holds a subset of the context
        kept = rng.choice(context, n, replace=False) if n < context else np.arange(n)
        pos[0, :n, h] = np.sort(kept)
    return cache.replace(
        k=jax.random.normal(ks[0], cache.k.shape),
        v=jax.random.normal(ks[1], cache.v.shape),
        pos=jnp.asarray(pos),
        slope=jnp.where(pos >= 0, -1e-3 * jax.random.uniform(ks[2], cache.slope.shape), 0.0),
        length=jnp.asarray(context, jnp.int32),
    )


def bench_decode(args) -> list[tuple[str, float, float]]:
    rows = []
    x = jax.random.normal(jax.random.key(1), (1, args.steps, args.d_model))
    for label, budget in (("full cache", None), (f"budget {args.budget}", args.budget)):
        opts = dict(num_kv_heads=args.kv_heads, gate_hidden=128)
        if budget is not None:
            opts["eviction"] = RetentionEviction(budget=budget)
        m = mixers.build(
            "trimkv", d_model=args.d_model, num_heads=args.heads, rngs=nnx.Rngs(0), **opts
        )
        graphdef, state = nnx.split(m)
        cache = filled_cache(m, args.context, args.steps, budget)

        @jax.jit
        def decode(state, cache, x, graphdef=graphdef):
            mixer = nnx.merge(graphdef, state)

            def step(c, xt):
                y, c = mixer(xt[None, None], cache=c)
                return c, y

            cache, ys = jax.lax.scan(step, cache, x[0])
            return ys, cache

        secs = best_time(decode, state, cache, x, repeats=args.repeats)
        nbytes = sum(leaf.nbytes for leaf in jax.tree.leaves(cache))
        rows.append((label, nbytes / 2**20, args.steps / secs))
    return rows


def bench_bias_attention(args) -> list[tuple[str, float, float]]:
    """(variant, fwd+bwd seconds, XLA temporary buffer MiB) per variant."""
    b, t, h, hkv, d = 1, args.T, args.heads, args.kv_heads, args.d_model // args.heads
    ks = jax.random.split(jax.random.key(2), 5)
    q = jax.random.normal(ks[0], (b, t, h, d))
    k = jax.random.normal(ks[1], (b, t, hkv, d))
    v = jax.random.normal(ks[2], (b, t, hkv, d))
    log_f = jax.nn.log_sigmoid(jax.random.normal(ks[3], (b, t, h)) + 4.0)
    slope = jax.nn.log_sigmoid(jax.random.normal(ks[4], (b, t, hkv)) + 6.0)
    mask = jnp.tril(jnp.ones((t, t), bool))[None]

    def grad_of(fn):
        return jax.jit(
            jax.grad(lambda q, k, v, f, a: jnp.sum(fn(q, k, v, f, a) ** 2), argnums=(0, 1, 2, 3, 4))
        )

    variants = {
        "plain attention (materialised T×T)": lambda q, k, v, f, a: attend(q, k, v, mask),
        "decay_attention naive (FoX + TRIM-KV bias)": lambda q, k, v, f, a: decay_attention(
            q, k, v, f, a, impl="naive"
        ),
        "decay_attention blockwise (FoX + TRIM-KV bias)": lambda q, k, v, f, a: decay_attention(
            q, k, v, f, a, impl="chunk", block_size=args.block
        ),
        "decay_attention blockwise, no bias": lambda q, k, v, f, a: decay_attention(
            q, k, v, impl="chunk", block_size=args.block
        ),
    }
    small = [x[:, :257] for x in (q, k, v, log_f, slope)]
    err = max(
        rel_rms(a, r)
        for a, r in zip(
            grad_of(variants["decay_attention blockwise (FoX + TRIM-KV bias)"])(*small),
            grad_of(variants["decay_attention naive (FoX + TRIM-KV bias)"])(*small),
            strict=True,
        )
    )
    if err > 1e-4:
        raise SystemExit(f"blockwise vs naive gradients differ (rel RMS {err:.2e}); not timing")
    rows = []
    for name, fn in variants.items():
        f = grad_of(fn)
        mem = f.lower(q, k, v, log_f, slope).compile().memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", float("nan")) / 2**20
        rows.append((name, best_time(f, q, k, v, log_f, slope, repeats=args.repeats), temp))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--d_model", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="experiments/results/bench_kv_retention.md")
    args = p.parse_args()

    dev = jax.devices()[0]
    lines = [
        "# KV retention benchmarks",
        "",
        f"Backend: {dev.platform} ({dev.device_kind}); one run of "
        "`experiments/bench_kv_retention.py`; best of "
        f"{args.repeats}. d_model {args.d_model}, {args.heads} query heads, "
        f"{args.kv_heads} KV heads, head dim {args.d_model // args.heads}, batch 1. "
        f"Load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
        "",
        f"## Decode: one `trimkv` layer, {args.steps} tokens after a {args.context}-token context",
        "",
        "| cache | cache MiB | tokens/s | tokens/s ratio |",
        "|---|---:|---:|---:|",
    ]
    dec = bench_decode(args)
    for label, mib, tps in dec:
        lines.append(f"| {label} | {mib:.2f} | {tps:.1f} | {tps / dec[0][2]:.2f} |")
    lines += [
        "",
        f"## Attention forward+backward at T = {args.T} (block {args.block})",
        "",
        "| variant | seconds | ratio to plain | XLA temp MiB |",
        "|---|---:|---:|---:|",
    ]
    att = bench_bias_attention(args)
    for name, secs, temp in att:
        lines.append(f"| {name} | {secs:.3f} | {secs / att[0][1]:.2f} | {temp:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
