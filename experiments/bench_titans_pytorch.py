"""Titans LMM speed: memarch (JAX) vs the community reference titans-pytorch, in one run.

    python experiments/bench_titans_pytorch.py [--torch-python /tmp/venv-titans-bench/bin/python]
        [--dim 256 --heads 1 --T 4096 --B 1 --chunks 16 64 --repeats 3]

Matched configuration: model width ``dim``, ``heads`` memory heads of width dim / heads, a
2-layer MLP memory with expansion 4 (GELU), momentum and decay, gradients anchored every
``chunk`` tokens, sequence length T, batch B. Measured: forward + backward (gradients of
sum(y²) w.r.t. every parameter) tokens/s, best of ``repeats`` timed calls. Warm-up: memarch's
function is compiled ahead of time (``lower().compile()``, not timed); titans-pytorch runs one
call on a short sequence first.

- memarch: the ``titans_lmm`` mixer (q/k/v projections, short conv, gates, memory, output),
  ``jax.jit(value_and_grad)``, chunk form with per-chunk rematerialisation (the defaults).
- titans-pytorch: ``NeuralMemory(dim, chunk_size=chunk, batch_size=chunk, heads)`` (its
  ``batch_size`` is the gradient-anchor unit, the paper's b; ``chunk_size`` the read unit),
  eager PyTorch.

JAX and PyTorch live in separate virtual environments (the benchmark extra,
``pip install -e .[bench]``, installs torch and titans-pytorch): this script times memarch in
its own process and runs the titans-pytorch side as a subprocess of ``--torch-python``, one
after the other on the same CPU. Results go to experiments/results/bench_titans_pytorch.md.
Not an exact functional match: memarch reads the memory after every token's write (per-token
weights inside a chunk), titans-pytorch reads with per-chunk weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TORCH_SIDE = r"""
import json, sys, time
import torch
from titans_pytorch import NeuralMemory
dim, heads, T, B, chunk, repeats = (int(x) for x in sys.argv[1:7])
torch.manual_seed(0)
mem = NeuralMemory(dim=dim, dim_head=dim // heads, heads=heads, chunk_size=chunk,
                   batch_size=chunk, default_model_kwargs=dict(depth=2, expansion_factor=4.0))
x = torch.randn(B, T, dim)
def step(x):
    mem.zero_grad(set_to_none=True)
    y, _ = mem(x)
    (y * y).sum().backward()
step(x[:, : 4 * chunk])
best = float("inf")
for _ in range(repeats):
    t0 = time.perf_counter(); step(x); best = min(best, time.perf_counter() - t0)
print(json.dumps({"tokens_per_s": B * T / best, "seconds": best,
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""


def memarch_tokens_per_s(dim: int, heads: int, t: int, b: int, chunk: int, repeats: int):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from memarch import mixers

    layer = mixers.build(
        "titans_lmm",
        d_model=dim,
        num_heads=heads,
        rngs=nnx.Rngs(0),
        depth=2,
        expansion=4.0,
        chunk_size=chunk,
    )
    graphdef, params = nnx.split(layer, nnx.Param)
    x = jax.random.normal(jax.random.key(0), (b, t, dim))

    def loss(params, x):
        y, _ = nnx.merge(graphdef, params)(x)
        return jnp.sum(y * y)

    f = jax.jit(jax.value_and_grad(loss)).lower(params, x).compile()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(params, x))
        best = min(best, time.perf_counter() - t0)
    return {"tokens_per_s": b * t / best, "seconds": best, "jax": jax.__version__}


def torch_tokens_per_s(python: str, dim, heads, t, b, chunk, repeats):
    args = [python, "-c", TORCH_SIDE] + [str(x) for x in (dim, heads, t, b, chunk, repeats)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torch-python", default="/tmp/venv-titans-bench/bin/python")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--T", type=int, default=4096)
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--chunks", type=int, nargs="+", default=[16, 64])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    a = p.parse_args()
    if not Path(a.torch_python).exists():
        raise ValueError(
            f"--torch-python {a.torch_python!r} does not exist: make a venv with the "
            "benchmark extra (torch, titans-pytorch) and pass its python"
        )
    rows = [
        "| chunk | memarch tok/s | titans-pytorch tok/s | memarch / titans-pytorch |",
        "|---|---|---|---|",
    ]
    versions = {}
    for c in a.chunks:
        ours = memarch_tokens_per_s(a.dim, a.heads, a.T, a.B, c, a.repeats)
        ref = torch_tokens_per_s(a.torch_python, a.dim, a.heads, a.T, a.B, c, a.repeats)
        versions = {"jax": ours["jax"], "torch": ref["torch"], "torch threads": ref["threads"]}
        ratio = ours["tokens_per_s"] / ref["tokens_per_s"]
        rows.append(
            f"| {c} | {ours['tokens_per_s']:.0f} | {ref['tokens_per_s']:.0f} | {ratio:.2f}× |"
        )
        print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (
        f"# Titans LMM forward+backward speed: memarch vs titans-pytorch (CPU, one run)\n\n"
        f"dim {a.dim}, heads {a.heads}, 2-layer MLP memory ×4, T={a.T}, batch {a.B}, "
        f"best of {a.repeats}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average at the end {load:.1f}; {versions}\n\n"
        + "\n".join(rows)
        + "\n"
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_titans_pytorch.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
