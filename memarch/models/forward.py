"""The model forward pass used for training and evaluation, capturing sown values.

Mixers may ``self.sow(nnx.Intermediate, name, value)`` during a (non-decode) forward pass:
values named ``aux_loss`` are auxiliary losses the trainer adds to the objective (already
weighted by the mixer, e.g. MoM's load-balancing loss); any other name is a statistic that
is logged, averaged over layers (e.g. routing entropy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

AUX_LOSS = "aux_loss"


def _walk(tree, name=None):
    """Yields ``(innermost str key, leaf)`` pairs of a nested dict of sown values."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _walk(value, key if isinstance(key, str) else name)
    elif isinstance(tree, (tuple, list)):
        for value in tree:
            yield from _walk(value, name)
    else:
        yield name, tree


def collect_intermediates(intermediates) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Splits values that mixers ``sow`` as ``nnx.Intermediate`` during a forward pass
    (an ``nnx.State`` or the nested dict of one).

    Values named ``aux_loss`` (already weighted by the mixer) are summed into the returned
    auxiliary loss; every other name is averaged over layers into a metric of that name.
    """
    aux = jnp.zeros((), jnp.float32)
    stats: dict[str, list] = {}
    if isinstance(intermediates, nnx.State):
        intermediates = nnx.to_pure_dict(intermediates)
    for name, value in _walk(intermediates):
        if name == AUX_LOSS:
            aux = aux + jnp.sum(value)
        elif name is not None:
            stats.setdefault(name, []).append(jnp.mean(value))
    return aux, {k: jnp.mean(jnp.stack(v)) for k, v in stats.items()}


def forward(model, batch: dict[str, jax.Array]):
    """``model(inputs, segment_ids=…)`` capturing sown values: ``(logits, aux_loss, stats)``."""

    def run(m):
        return m(batch["inputs"], segment_ids=batch.get("segment_ids"))[0]

    logits, intermediates = nnx.capture(run, nnx.Intermediate)(model)
    aux, stats = collect_intermediates(intermediates)
    return logits, aux, stats
