"""Pure array functions for the matrix-memory recurrences.

Every op follows one convention: ``op(q, k, v, <gates>, *, scale=None, initial_state=None,
output_final_state=False, segment_ids=None, impl="auto", chunk_size=64) -> (o, final_state)``
with layout ``[B, T, H, D]``, gates in log space and a float32 state ``[B, H, K, V]``.
``impl="naive"`` is the ``lax.scan`` specification, ``impl="chunk"`` the chunked XLA form,
``impl="pallas"`` the Pallas kernels of :mod:`memarch.kernels` (gla, linear_attention,
delta_rule, gated_delta_rule; interpreted on CPU) and ``impl="auto"`` the kernels on the
backends in ``_checks.AUTO_PALLAS_BACKENDS``, the chunked form elsewhere; ``*_step`` functions
advance one token (decode).

:func:`decay_attention` is softmax attention with the additive decay bias
``Λ_t − Λ_i + (t − i)·a_i`` (ALiBi / FoX / TRIM-KV): it returns only ``o`` (its state is a KV
cache, held by the mixers); ``impl="naive"``, ``"blockwise"`` or ``"pallas"`` (flash
attention), and :func:`decay_attention_cached` attends new queries to a cache.
"""

from memarch.ops.decay_attention import decay_attention, decay_attention_cached
from memarch.ops.delta_rule import delta_rule, delta_rule_step
from memarch.ops.gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from memarch.ops.gla import gla, gla_step
from memarch.ops.linear_attention import linear_attention, linear_attention_step

__all__ = [
    "decay_attention",
    "decay_attention_cached",
    "delta_rule",
    "delta_rule_step",
    "gated_delta_rule",
    "gated_delta_rule_step",
    "gla",
    "gla_step",
    "linear_attention",
    "linear_attention_step",
]
