"""Model FLOPs of one training step, counted from the config (the "model FLOPs" of MFU).

For a batch of ``B`` rows of ``T`` tokens (``tokens = B·T``):

* matrices: ``6 · N · tokens`` — forward ``2·N`` per token, backward twice that — where ``N``
  counts every parameter used in a matmul: all parameters except the embedding table (a
  lookup), plus the ``d_model × vocab`` output matmul when the head is tied to the embedding;
* softmax attention (``attention``, ``fox``, ``trimkv``, ``swa``): per layer
  ``3 · 4 · B · H · d_head · Σ_t min(t, w)`` — ``QKᵀ`` and ``PV`` over the keys each query sees
  (causal: ``T(T+1)/2`` in all; a window ``w`` caps it), ×3 for forward and backward;
* every other mixer keeps a ``d_k × d_v`` state per head: writing ``k vᵀ`` and reading ``q S``
  cost ``2·2·d_k·d_v`` per token and head, ×3 for forward and backward (the recurrent count;
  the chunked form does a little more, and a mixer's gates and MoM's routing are left out).

Remat recomputation is not model work and is not counted; XLA's own count
(``compiled.cost_analysis()["flops"]``, per chip) includes it, the optimiser and everything else.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax

from memarch.train.config import TrainConfig

SOFTMAX_MIXERS = ("attention", "fox", "trimkv", "swa")


@dataclasses.dataclass(frozen=True)
class ModelFlops:
    matmul_params: int  # N: parameters used in matmuls (see the module docstring)
    dense: float  # 6 · N · tokens
    attention: float  # the softmax-attention score and value terms
    state: float  # the linear-memory state terms

    @property
    def total(self) -> float:
        return self.dense + self.attention + self.state


def _attended(seq_len: int, window: int | None) -> int:
    """``Σ_{t=1..T} min(t, w)``: query–key pairs of a causal (windowed) attention row."""
    w = seq_len if window is None else min(int(window), seq_len)
    return w * (w + 1) // 2 + (seq_len - w) * w


def model_flops(cfg: TrainConfig, params: Any, seq_len: int) -> ModelFlops:
    """:class:`ModelFlops` of one step of ``cfg`` on rows of ``seq_len`` tokens; ``params``: the
    model's parameter tree (arrays or ``ShapeDtypeStruct``), ``{"embed": {"embedding": …}}``."""
    m = cfg.model
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
    embedding = m.vocab_size * m.d_model
    n = total - embedding + (embedding if m.tie_embeddings else 0)
    rows = cfg.batch_size
    tokens = rows * seq_len
    attention = state = 0.0
    for i, name in enumerate(m.layer_names()):
        options = m.layer_options(i)
        d_k = getattr(options, "head_dim", None) or m.d_model // m.num_heads
        if name in SOFTMAX_MIXERS:
            pairs = _attended(seq_len, getattr(options, "window", None))
            attention += 3 * 4 * rows * m.num_heads * d_k * pairs
        else:
            d_v = d_k * float(getattr(options, "expand_v", 1.0) or 1.0)
            state += 3 * 4 * tokens * m.num_heads * d_k * d_v
    return ModelFlops(matmul_params=n, dense=6.0 * n * tokens, attention=attention, state=state)


__all__ = ["SOFTMAX_MIXERS", "ModelFlops", "model_flops"]
