"""Learning rules: how the gradient becomes a write.

- ``gd``:       ``S_t = −θ_t u_t`` (no state carried between tokens), ``A_t = γ_t A_{t−1} + S_t``
- ``momentum``: Titans' surprise, ``S_t = η_t S_{t−1} − θ_t u_t``, ``A_t = γ_t A_{t−1} + S_t``

``u_t = ∇_W ℓ(W_anchor; k_t, v_t)`` is the gradient at the chunk-start memory, θ the step size
(Titans' θ, Miras' η), η the momentum (Titans' η) and γ = 1 − α the retention (Titans' α is the
forget rate; Miras' α is γ). All three are token-level and data-dependent (see gates.py).
"""

from __future__ import annotations

from memarch.registry import Registry

RULES: Registry[bool] = Registry("learning rule")  # name -> carries a momentum state
RULES.register("gd", False)
RULES.register("momentum", True)
RULES.seal()


def uses_momentum(name: str) -> bool:
    """True for rules with a momentum state; ValueError naming ``rule`` for unknown names."""
    return RULES.choice("rule", name)
