"""Forward+backward time of the chunked vs naive form of every linear-attention-family op.

    python experiments/bench_ops.py [--B 2 --T 4096 --H 4 --D 64 --long 16384 --repeats 3]

Measured in one run on the current backend: for each op, fwd+bwd wall time of ``impl="chunk"``
and ``impl="naive"`` at T, their ratio, and the chunked form's time at ``--long`` divided by
its time at T (linear scaling would be long/T). Before timing, each op's chunk form is checked
against the naive one on a small case; the script refuses to report an op that fails.
Results are printed as a Markdown table and written to experiments/results/bench_ops.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from memarch.ops import delta_rule, gated_delta_rule, gla, linear_attention
from memarch.testing import rel_rms


def make_inputs(op: str, b: int, t: int, h: int, d: int, seed: int = 0):
    ks = jax.random.split(jax.random.key(seed), 6)
    q = jax.random.normal(ks[0], (b, t, h, d))
    k = jax.random.normal(ks[1], (b, t, h, d))
    v = jax.random.normal(ks[2], (b, t, h, d))
    if op in ("delta_rule", "gated_delta_rule"):
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    beta = jax.nn.sigmoid(jax.random.normal(ks[3], (b, t, h)))
    g_head = jax.nn.log_sigmoid(jax.random.normal(ks[4], (b, t, h)) + 3.0)
    g_chan = jax.nn.log_sigmoid(jax.random.normal(ks[5], (b, t, h, d)) + 3.0) / 4
    return {
        "linear_attention": (linear_attention, (q, k, v)),
        "gla_channel": (gla, (q, k, v, g_chan)),
        "gla_head": (gla, (q, k, v, g_head)),
        "delta_rule": (delta_rule, (q, k, v, beta)),
        "gated_delta_rule": (gated_delta_rule, (q, k, v, g_head, beta)),
    }[op]


OPS = ("linear_attention", "gla_channel", "gla_head", "delta_rule", "gated_delta_rule")


def timed(fn, impl: str, args, repeats: int) -> float:
    n = len(args)
    f = jax.jit(jax.value_and_grad(lambda *a: _loss(fn, impl, a), argnums=tuple(range(n))))
    jax.block_until_ready(f(*args))  # compile
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def _loss(fn, impl, args):
    o, s = fn(*args, impl=impl, output_final_state=True)
    return jnp.sum(o.astype(jnp.float32) ** 2) + jnp.sum(s)


def check(op: str) -> float:
    """Chunk vs naive on a small case (outputs and gradients); returns the worst rel. RMS."""
    fn, args = make_inputs(op, 1, 75, 2, 24, seed=1)
    grads = [
        jax.grad(lambda *a, i=impl: _loss(fn, i, a), argnums=tuple(range(len(args))))(*args)
        for impl in ("chunk", "naive")
    ]
    outs = [fn(*args, impl=impl, output_final_state=True) for impl in ("chunk", "naive")]
    errs = [
        rel_rms(a, b)
        for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True)
    ]
    errs += [rel_rms(a, b) for a, b in zip(grads[0], grads[1], strict=True)]
    return max(errs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--B", type=int, default=2)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--H", type=int, default=4)
    p.add_argument("--D", type=int, default=64)
    p.add_argument("--long", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS)
    p.add_argument("--out", default=str(Path(__file__).with_name("results") / "bench_ops.md"))
    a = p.parse_args()
    rows = [
        f"# fwd+bwd, B={a.B}, T={a.T}, H={a.H}, D={a.D}, backend {jax.default_backend()}",
        "",
        f"| op | check (rel RMS) | naive ms | chunk ms | naive/chunk | chunk T={a.long} ms "
        f"| time({a.long})/time({a.T}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in a.ops:
        err = check(op)
        if not err <= 1e-4:
            rows.append(f"| {op} | FAILED ({err:.1e}) | — | — | — | — | — |")
            continue
        fn, args = make_inputs(op, a.B, a.T, a.H, a.D)
        naive = timed(fn, "naive", args, a.repeats)
        chunk = timed(fn, "chunk", args, a.repeats)
        fn, args_long = make_inputs(op, a.B, a.long, a.H, a.D)
        chunk_long = timed(fn, "chunk", args_long, a.repeats)
        rows.append(
            f"| {op} | {err:.1e} | {naive * 1e3:.1f} | {chunk * 1e3:.1f} | {naive / chunk:.1f}x "
            f"| {chunk_long * 1e3:.1f} | {chunk_long / chunk:.2f} |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(rows) + "\n"
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
