"""Forward+backward time of the Pallas kernels (issue 8) against the XLA paths and references.

    python experiments/bench_kernels.py [--tiny] [--ops attention gla gated_delta_rule]
        [--lengths 2048 8192 16384] [--B 8 --H 16 --D 128] [--out PATH]

Per op and sequence length, one jitted ``value_and_grad`` of ``Σ o²`` (fwd+bwd), best of
``--repeats`` after a compile + warm-up call, bfloat16 inputs:

* ``attention``: ``decay_attention`` with the FoX + TRIM-KV bias, ``impl="pallas"`` vs the XLA
  ``impl="chunk"`` (blockwise) form; ``jax.nn.dot_product_attention`` without bias (cuDNN on GPU) as
  the reference; also the Pallas kernel without bias.
* ``gla`` (per-channel gate) and ``gated_delta_rule``: ``impl="pallas"`` vs the XLA
  ``impl="chunk"`` path; flash-linear-attention's Triton kernels (``chunk_gla``,
  ``chunk_gated_delta_rule``, PyTorch on the same GPU, same shapes and dtype) as the reference
  when torch, fla and CUDA are present (skipped with a note otherwise).

Before timing, each op's Pallas path is checked against its XLA path (float32, outputs and
all gradients, relative RMS) on a small case; an op that fails is not timed, and an op whose
``impl="pallas"`` is not accepted (ValueError) is skipped with a note.

Rates: model FLOPs / time as a fraction of a measured bf16 matmul ceiling, and minimum HBM
bytes (every input, output and gradient read or written once) / time as a fraction of a
measured copy ceiling. FLOP models (fwd+bwd, per batch row and head): causal attention
``3.5 · 2 T² D`` (forward 2 matmuls over half the square, backward 2.5× the forward); chunked
GLA / delta rule ``3 · T (4 C D + 4 D²)`` with chunk C (intra-chunk scores and values plus
the state read and write; the delta rule's WY solve is not counted).

Targets (issue 8): Pallas GLA and gated delta rule ≥ 2× the XLA chunked path at T=8192 and
≥ 0.7× FLA; flash attention with bias within 1.3× of cuDNN without bias. ``--tiny`` (the
default on CPU) runs CPU-sized shapes in interpret mode: it proves the script runs, its
timings mean nothing. Results are printed as Markdown and written to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

from memarch.ops import decay_attention, gated_delta_rule, gla
from memarch.testing import rel_rms

OPS = ("attention", "gla", "gated_delta_rule")
CHUNK = 64  # chunk / block size of every op (the ops' default)


def make_inputs(op: str, b: int, t: int, h: int, d: int, dtype, seed: int = 0) -> tuple:
    """The op's array arguments (q, k, v first), gates in float32."""
    ks = jax.random.split(jax.random.key(seed), 6)
    q, k, v = (jax.random.normal(ks[i], (b, t, h, d)) for i in range(3))
    if op == "gated_delta_rule":
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    g_head = jax.nn.log_sigmoid(jax.random.normal(ks[3], (b, t, h)) + 3.0)
    if op == "attention":
        slope = jax.nn.log_sigmoid(jax.random.normal(ks[4], (b, t, h)) + 6.0)
        return q, k, v, g_head, slope
    if op == "gla":
        return q, k, v, jax.nn.log_sigmoid(jax.random.normal(ks[4], (b, t, h, d)) + 3.0) / 4
    beta = jax.nn.sigmoid(jax.random.normal(ks[5], (b, t, h)))
    return q, k, v, g_head, beta


def jax_fn(op: str, impl: str) -> Callable:
    """``fn(*inputs) -> o`` for one op and implementation."""
    if op == "attention":
        if impl == "dot_product_attention":
            cudnn = jax.default_backend() == "gpu"

            def sdpa(q, k, v, *_):
                kind = "cudnn" if cudnn else None
                return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=kind)

            return sdpa
        if impl == "pallas_nobias":
            return lambda q, k, v, *_: decay_attention(q, k, v, impl="pallas", block_size=CHUNK)
        return lambda *a: decay_attention(*a, impl=impl, block_size=CHUNK)
    fn = gla if op == "gla" else gated_delta_rule
    return lambda *a: fn(*a, impl=impl, chunk_size=CHUNK)[0]


def _loss(fn, args):
    return jnp.sum(fn(*args).astype(jnp.float32) ** 2)


def timed(fn: Callable, args, repeats: int) -> float:
    """Best wall time (s) of one jitted fwd+bwd call, after compile and one warm-up."""
    f = jax.jit(jax.value_and_grad(lambda *a: _loss(fn, a), argnums=tuple(range(len(args)))))
    jax.block_until_ready(f(*args))
    jax.block_until_ready(f(*args))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def pallas_available(op: str) -> str | None:
    """None when the op accepts impl="pallas", else the reason (the ValueError's message)."""
    args = make_inputs(op, 1, 16, 1, 16, jnp.float32)
    try:
        jax.eval_shape(jax_fn(op, "pallas"), *args)
    except ValueError as e:
        return str(e)
    return None


def check(op: str, xla_impl: str) -> float:
    """Pallas vs XLA on a small float32 case (outputs and all gradients): worst rel. RMS."""
    args = make_inputs(op, 1, 100, 2, 32, jnp.float32, seed=1)
    with jax.default_matmul_precision("float32"):
        res = []
        for impl in ("pallas", xla_impl):
            fn = jax_fn(op, impl)
            grads = jax.grad(lambda *a, f=fn: _loss(f, a), argnums=tuple(range(len(args))))(*args)
            res.append((fn(*args), *grads))
    return max(rel_rms(a, b) for a, b in zip(*res, strict=True))


def fla_timer(op: str, b: int, t: int, h: int, d: int, repeats: int) -> tuple[float | None, str]:
    """flash-linear-attention's Triton kernel (PyTorch, CUDA, bf16): (best seconds, note)."""
    try:
        import torch

        if op == "gla":
            from fla.ops.gla import chunk_gla as fla_fn
        else:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_fn
    except ImportError as e:
        return None, f"FLA skipped: {e.msg}"
    if not torch.cuda.is_available():
        return None, "FLA skipped: no CUDA device for PyTorch"
    torch.manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16
    q, k, v = (torch.randn(b, t, h, d, device=dev, dtype=bf16) for _ in range(3))
    if op == "gla":
        g = torch.nn.functional.logsigmoid(torch.randn(b, t, h, d, device=dev) + 3.0) / 4
        extra = {"g": g}
    else:
        k = torch.nn.functional.normalize(k.float(), dim=-1).to(bf16)
        extra = {
            "g": torch.nn.functional.logsigmoid(torch.randn(b, t, h, device=dev) + 3.0),
            "beta": torch.sigmoid(torch.randn(b, t, h, device=dev)).to(bf16),
        }
    leaves = [q, k, v, *extra.values()]
    for x in leaves:
        x.requires_grad_(True)

    def step():
        o = fla_fn(q=q, k=k, v=v, **extra)[0]
        (o.float() ** 2).sum().backward()
        for x in leaves:
            x.grad = None

    step(), step()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, "FLA (Triton, PyTorch)"


def ceilings(tiny: bool, repeats: int) -> tuple[float, float]:
    """Measured (bf16 matmul FLOP/s, copy bytes/s) of this device."""
    n = 512 if tiny else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    mm = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    cp = jax.jit(lambda x: x + 1)
    x = jnp.zeros(((4 if tiny else 512) * 2**20 // 4,), jnp.float32)
    best = [float("inf"), float("inf")]
    for i, (f, args) in enumerate(((mm, (a, a)), (cp, (x,)))):
        jax.block_until_ready(f(*args))
        for _ in range(max(repeats, 3)):
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            best[i] = min(best[i], time.perf_counter() - t0)
    return 2 * n**3 / best[0], 2 * x.nbytes / best[1]


def model_flops(op: str, b: int, t: int, h: int, d: int) -> float:
    if op == "attention":
        return 3.5 * 2 * t * t * d * b * h
    return 3 * t * (4 * CHUNK * d + 4 * d * d) * b * h


def min_bytes(op: str, b: int, t: int, h: int, d: int, itemsize: int) -> float:
    """Each of q, k, v, o (and dq, dk, dv, dO) once, plus the float32 gates and their grads."""
    big = b * t * h * d * itemsize
    gates = {"attention": 2 * b * t * h * 4, "gla": b * t * h * d * 4}.get(op, 2 * b * t * h * 4)
    return 4 * big + 2 * gates + 4 * big  # fwd: q k v o + gates; bwd: dO q k v -> dq dk dv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="CPU-sized shapes (default on CPU)")
    p.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS)
    p.add_argument("--lengths", nargs="*", type=int, default=None)
    p.add_argument("--B", type=int, default=None)
    p.add_argument("--H", type=int, default=None)
    p.add_argument("--D", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).with_name("results") / "bench_kernels.md"))
    a = p.parse_args()
    backend = jax.default_backend()
    tiny = a.tiny or backend == "cpu"
    b = a.B or (1 if tiny else 8)
    h = a.H or (2 if tiny else 16)
    d = a.D or (32 if tiny else 128)
    lengths = a.lengths or ([128, 256] if tiny else [2048, 8192, 16384])
    dtype = jnp.bfloat16
    flops_ceil, bw_ceil = ceilings(tiny, a.repeats)
    device = jax.devices()[0].device_kind
    rows = [
        f"# Pallas kernels, fwd+bwd: B={b}, H={h}, D={d}, bfloat16, block/chunk {CHUNK}",
        "",
        f"Backend {backend} ({device}){' — TINY: interpret mode, timings meaningless' * tiny}. "
        f"Ceilings: bf16 matmul {flops_ceil / 1e12:.1f} TFLOP/s, copy {bw_ceil / 1e9:.0f} GB/s.",
        "",
        "| op | T | impl | ms | Pallas speed-up | TFLOP/s (% ceiling) | GB/s (% ceiling) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes, targets = [], []
    for op in a.ops:
        reason = pallas_available(op)
        if reason is not None:
            notes.append(f"{op}: skipped, impl='pallas' not accepted yet ({reason})")
            print(notes[-1], flush=True)
            continue
        xla_impl = "chunk"
        err = check(op, xla_impl)
        if not err <= 1e-3:
            notes.append(f"{op}: Pallas vs XLA check FAILED (rel RMS {err:.1e}); not timed")
            print(notes[-1], flush=True)
            continue
        notes.append(f"{op}: Pallas vs XLA check (float32, o and all grads) rel RMS {err:.1e}")
        for t in lengths:
            args = make_inputs(op, b, t, h, d, dtype)
            impls = ["pallas", xla_impl]
            if op == "attention":
                impls += ["pallas_nobias", "dot_product_attention"]
            times = {impl: timed(jax_fn(op, impl), args, a.repeats) for impl in impls}
            ref_name = "dot_product_attention" if op == "attention" else "fla"
            if op != "attention":
                secs, note = fla_timer(op, b, t, h, d, a.repeats)
                if secs is None:
                    if f"{op}: {note}" not in notes:
                        notes.append(f"{op}: {note}")
                else:
                    times["fla"] = secs
            fl, by = model_flops(op, b, t, h, d), min_bytes(op, b, t, h, d, 2)
            for impl, s in times.items():
                speed = s / times["pallas"]
                rows.append(
                    f"| {op} | {t} | {impl} | {s * 1e3:.2f} | {speed:.2f}x "
                    f"| {fl / s / 1e12:.3g} ({100 * fl / s / flops_ceil:.0f}%) "
                    f"| {by / s / 1e9:.3g} ({100 * by / s / bw_ceil:.0f}%) |"
                )
                print(rows[-1], flush=True)
            if op == "attention":
                r = times["pallas"] / times["dot_product_attention"]
                targets.append(
                    f"attention T={t}: Pallas with bias / {ref_name} without bias = "
                    f"{r:.2f} (target ≤ 1.3: {'met' if r <= 1.3 else 'MISSED'})"
                )
            elif t == 8192 or tiny:
                r = times[xla_impl] / times["pallas"]
                targets.append(
                    f"{op} T={t}: Pallas speed-up over XLA chunk {r:.2f}x "
                    f"(target ≥ 2: {'met' if r >= 2 else 'MISSED'})"
                )
                if "fla" in times:
                    r = times["fla"] / times["pallas"]
                    targets.append(
                        f"{op} T={t}: Pallas speed / FLA speed {r:.2f} "
                        f"(target ≥ 0.7: {'met' if r >= 0.7 else 'MISSED'})"
                    )
    rows += ["", "Pallas speed-up = this row's time / the Pallas row's time.", ""]
    rows += ["## Targets" + " (tiny run: not meaningful)" * tiny, ""]
    rows += [f"- {x}" for x in targets]
    rows += ["", "## Notes", ""] + [f"- {x}" for x in notes]
    text = "\n".join(rows) + "\n"
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
