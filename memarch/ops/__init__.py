"""Pure array functions for the matrix-memory recurrences.

Every op follows one convention: ``op(q, k, v, <gates>, *, scale=None, initial_state=None,
output_final_state=False, segment_ids=None, impl="auto", chunk_size=64) -> (o, final_state)``
with layout ``[B, T, H, D]``, gates in log space and a float32 state ``[B, H, K, V]``.
One implementation vocabulary (:mod:`memarch.ops._dispatch`): ``impl="naive"`` is the
``lax.scan`` specification, ``impl="chunk"`` the chunked XLA form, ``impl="pallas"`` the
Pallas kernels of :mod:`memarch.kernels` (interpreted on CPU) and ``impl="auto"`` the kernels
on the backends in ``_dispatch.AUTO_PALLAS_BACKENDS``, the chunked form elsewhere; ``*_step``
functions advance one token (decode).

Two engines, one pattern: :func:`gla` (gate ``None``: :func:`linear_attention`) and
:func:`gated_delta_rule` (gate ``None``: :func:`delta_rule`). Each module is private
(``_gla.py``, ...), so ``memarch.ops.gla`` is the function; the input checks live in
:mod:`memarch.kernels._checks` (shared with the kernels, which sit below the ops).

:func:`decay_attention` is softmax attention with the additive decay bias
``Λ_t − Λ_i + (t − i)·a_i`` (ALiBi / FoX / TRIM-KV): it returns only ``o`` (its state is a KV
cache, held by the mixers); ``impl="naive"``, ``"chunk"`` (blockwise), ``"pallas"`` (flash
attention) or ``"auto"``, and :func:`decay_attention_cached` attends new queries to a cache.
"""

from memarch.ops._decay_attention import decay_attention, decay_attention_cached
from memarch.ops._delta_rule import delta_rule, delta_rule_step
from memarch.ops._dispatch import AUTO_PALLAS_BACKENDS, IMPLS, IMPLS_NO_PALLAS, check_impl
from memarch.ops._gated_delta_rule import gated_delta_rule, gated_delta_rule_step
from memarch.ops._gla import gla, gla_step
from memarch.ops._linear_attention import linear_attention, linear_attention_step

__all__ = [
    "AUTO_PALLAS_BACKENDS",
    "IMPLS",
    "IMPLS_NO_PALLAS",
    "check_impl",
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
