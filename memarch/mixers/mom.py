"""Mixture-of-Memories (MoM; Du et al. 2025, arXiv 2502.13685), registered as ``mom`` (``M``).

M matrix memories, each a full recurrent state ``[H, K, V]`` of the chosen ``base`` recurrence
(Gated DeltaNet by default; GLA or plain linear attention), of which each token writes to and
reads from only its top-k. Per token ``x_t ∈ R^D``::

    s_t = softmax_fp32(x_t W_g)                     W_g ∈ R^{D×M}, no bias
    (w_t, I_t) = TopK(s_t, k);  w_t ← w_t / Σ_j w_tj  (renormalised; the weights get gradients)
    q = conv(x W_q)                                  one W_q for all memories
    m ∈ I_t:  k, v = conv(x W_{k,v}^m);  β = σ(x W_β^m);
              log α = −exp(A_log) · softplus(x W_a^m + dt_bias)
              S^m_t = α(I − β k kᵀ) S^m_{t−1} + β k vᵀ    (gated_deltanet; q, k L2-normalised)
    m ∉ I_t:  S^m_t = S^m_{t−1}                      untouched: no decay, no write, no conv step
    shared:   S^s_t = same update with its own W_{k,v,β,a}^s, every token (optional)
    o_t = Σ_j w_tj · s S^{m_j}_tᵀ q^{m_j}_t + s S^s_tᵀ q^s_t        (s = K^{-1/2})
    y_t = W_o · RMSNormGated(o_t, x_t W_go)           per head, shared by all memories

With ``router_conv = W_r > 0`` the router reads ``x̃_t = Σ_{j<W_r} c_j ⊙ x_{t−j}`` (a causal
depthwise conv along sequence time, segment-aware, initialised to ``x̃_t = x_t``) instead of
``x_t``, so a token can be routed by the tokens before it; decode keeps its last ``W_r − 1``
inputs in the cache.

**Memory time.** A memory's short conv, decay and recurrence run over the tokens routed to it
only, in their original order (its "memory time"); tokens of other memories are not steps of
it. So ``q^m`` (the conv of the shared q projection over memory m's subsequence) differs from
memory to memory and from the shared memory's ``q^s`` (conv over the full sequence). With
``segment_ids`` each routed subsequence keeps the ids of its tokens: a memory's state and conv
restart at every packed-sequence start, nothing leaks across sequences or memories.

**Parameters.** Per memory (stacked ``[M, D, ·]``, applied by einsum): W_k, W_v and the
decay / write-strength projections (GDN: W_a, W_β; GLA: the rank-16 gate W₂W₁ + b₂).
Shared: router W_g, W_q, the short-conv weights (separate caches per memory), A_log and
dt_bias (GDN), the output gate W_go, the output RMSNorm and W_o. The shared memory has its own
W_k, W_v and gate projections and uses the same W_q. Bases: ``gated_deltanet`` (as above; GDN
initialisation, dt in [dt_min, dt_max] = [1e-3, 1e-1] by default), ``gla``
(``S = Diag(exp g) S + k vᵀ``, ``g = logsigmoid(W₂W₁x + b₂)/16`` per key channel, rank 16, b₂
initialised to ``gate_bias_init``), ``linear_attention``
(``S = S + φ(k) vᵀ``, φ = elu + 1 on q and k). Every base gets the gated output norm
(``output_gate=False``: a plain RMSNorm, as the single-memory mixers allow).

**Capacity.** Each call gives memory m at most ``C = ceil(capacity_factor · T)`` of its routed
tokens (per batch row). ``capacity_factor = 1`` (default) means C = T: exact, nothing dropped.
With ``< 1`` a memory that received ``n_m > C`` tokens drops its *oldest* ``n_m − C`` (it
keeps its newest C, as in the reference implementation); a dropped token neither writes to nor
reads from that memory and its conv sees the kept subsequence only. The shared memory is never
capacity-limited. Dropping is per call, so a prefill with ``capacity_factor < 1`` can differ
from token-by-token decode (which never drops).

**Auxiliary loss** (Switch style, layer-wise, as in the MoM paper). Over all B·T positions of a
call: ``f_m`` = fraction of tokens routed to m (``Σ_m f_m = k``, counted before capacity
drops, no gradient), ``P_m`` = mean renormalised weight on m (0 where not selected,
``Σ_m P_m = 1``)::

    L_aux = M · Σ_m f_m P_m          = k under perfectly balanced routing (f = k/M, P = 1/M);
                                     larger when routing concentrates (e.g. = M when all tokens
                                     pick the same k memories with equal weights).

In training/eval calls (``cache is None``) the mixer sows ``aux_loss_weight · L_aux`` as
``"aux_loss"`` (added to the loss by :mod:`memarch.train.step`) and the metrics
``"router_entropy"`` (mean entropy of the full router softmax, nats; log M = uniform) and
``"memory_load_max"`` (``max_m f_m · M / k``: 1 = balanced, M/k = all tokens on k memories),
plus ``"memory_drop_frac"`` (fraction of routed (token, memory) pairs dropped) when
``capacity_factor < 1``. Every position counts: the mixer protocol has no padding mask (packed
training has no padded positions; a padded batch would count its pads). With ``top_k = 1`` the
renormalised weight is identically 1, so L_aux has no gradient (the paper's form; use k ≥ 2).
Nothing is sown during decode, and ``sow`` is a no-op outside ``nnx.capture``.

**Implementation (XLA, static shapes, no Python loop over tokens).** The (t, j) pairs of a row
(plus one pair per token for the shared memory, index M) are ranked within their memory by a
cumsum of one-hot memory ids (= a stable sort by memory id), then scattered to buffer positions:

- training / no cache: a packed buffer ``[B, (k+1)·T]`` ordered by (memory, t), i.e. each
  memory's subsequence contiguous, with segment ids that restart at every memory boundary
  (and every packed-sequence start). One chunked op call over this buffer does exactly the
  k·T (+ T shared) token steps; no padding.
- prefill with a cache (T > 1): slots ``[B, M(+1), C]`` (rank → slot, oldest dropped), padded
  slots are identity steps (log-decay 0, β 0, q = k = v = 0), the op runs with M folded into
  the batch and one initial state per memory; a memory that got no token keeps its state
  bit-identically.
- decode (T == 1): only the k selected memories (and the shared one) are gathered, stepped and
  written back with ``.at[b, idx].set``; the others stay bit-identical.

The per-memory k/v/gate projections are computed for every memory on every token (one einsum
over ``[M(+1), D, ·]`` weights) and selected per pair; in the packed layout the gathers between
pair order and buffer order are permutations, differentiated as the inverse gather (custom VJP)
instead of XLA's scatter-add.

Outputs are gathered back per (t, j), weighted by ``w_tj`` (1 for the shared memory) and summed.

Shapes: ``x [B, T, D] -> y [B, T, D]``. Cache (:class:`MoMCache`): ``state [B, M, H, K, V]``
f32, ``conv [B, M, W − 1, C]`` (C = H·(2K + V), the q|k|v conv channels),
``shared_state [B, H, K, V]``, ``shared_conv [B, W − 1, C]``, ``length``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.norms import GatedRMSNorm, RMSNorm, l2_normalize
from memarch.layers.short_conv import ShortConv
from memarch.mixers._recurrent import head_dims
from memarch.mixers._registry import register
from memarch.mixers.protocol import check_call
from memarch.ops import (
    gated_delta_rule,
    gated_delta_rule_step,
    gla,
    gla_step,
    linear_attention,
    linear_attention_step,
)

BASES = ("gated_deltanet", "gla", "linear_attention")
IMPLS = ("auto", "naive", "chunk")
_GLA_RANK = 16  # rank of the GLA gate projection W₂W₁ (as the gla mixer's default)
_GLA_TAU = 16.0  # GLA gate normaliser: g = logsigmoid(·) / τ

_OPS = {
    "gated_deltanet": (gated_delta_rule, gated_delta_rule_step),
    "gla": (gla, gla_step),
    "linear_attention": (linear_attention, linear_attention_step),
}


@dataclasses.dataclass(frozen=True)
class MoMConfig:
    """Options of the Mixture-of-Memories mixer (defaults: the paper's 4 memories, top-2)."""

    num_memories: int = 4  # M: routed memories, each a full [H, K, V] state of the base op
    top_k: int = 2  # memories each token is routed to, 1 ≤ top_k ≤ num_memories
    shared_memory: bool = True  # add an always-on memory (own k/v/gate projections, same q)
    base: str = "gated_deltanet"  # memory recurrence: gated_deltanet | gla | linear_attention
    # tokens per memory per call C = ceil(capacity_factor·T), in (0, 1]; 1 = exact (C = T);
    # < 1 drops each memory's OLDEST overflowing tokens (keeps its newest C), as the reference
    capacity_factor: float = 1.0
    aux_loss_weight: float = 0.01  # weight of the load-balancing loss sown as "aux_loss" (0 = off)
    head_dim: int | None = None  # key (and query) width per head; None = d_model // num_heads
    expand_v: float = 1.0  # value width per head = expand_v · head_dim (MoM paper: 1)
    short_conv: int = 4  # causal depthwise conv kernel on q, k, v along memory time; 0 disables
    impl: str = "auto"  # op implementation for sequences: auto | naive | chunk
    chunk_size: int = 64  # chunk length of the chunked op
    output_gate: bool = True  # o_proj(RMSNorm(o) ⊙ silu(W_g x)) instead of o_proj(RMSNorm(o))
    dt_min: float = 1e-3  # gated_deltanet base: smallest initial softplus step (decay rate)
    dt_max: float = 1e-1  # gated_deltanet base: largest initial softplus step
    gate_bias_init: float = 0.0  # gla base: initial gate bias b₂ (larger = slower forgetting)
    # kernel of a causal depthwise conv (no activation) on the router's input along sequence
    # time, initialised to the identity; 0 = route on x_t alone (the paper). ≥ 2 lets a token be
    # routed by its predecessors (in MQAR: a value token by its key, so the pair and its later
    # query land in the same memory)
    router_conv: int = 0

    def __post_init__(self):
        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.num_memories) or self.num_memories < 1:
            raise ValueError(f"num_memories must be an int >= 1; got {self.num_memories!r}")
        if not is_int(self.top_k) or not 1 <= self.top_k <= self.num_memories:
            raise ValueError(
                f"top_k must be an int in [1, num_memories={self.num_memories}]; got {self.top_k!r}"
            )
        if not isinstance(self.shared_memory, bool):
            raise ValueError(f"shared_memory must be True or False; got {self.shared_memory!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {list(BASES)}; got {self.base!r}")
        if not 0.0 < self.capacity_factor <= 1.0:
            raise ValueError(
                f"capacity_factor must be in (0, 1] (1 = exact, no drops); "
                f"got {self.capacity_factor!r}"
            )
        if not self.aux_loss_weight >= 0.0:
            raise ValueError(f"aux_loss_weight must be >= 0; got {self.aux_loss_weight!r}")
        if self.head_dim is not None and (not is_int(self.head_dim) or self.head_dim < 1):
            raise ValueError(f"head_dim must be None or an int >= 1; got {self.head_dim!r}")
        if not self.expand_v > 0:
            raise ValueError(f"expand_v must be > 0; got {self.expand_v!r}")
        if not is_int(self.short_conv) or self.short_conv < 0:
            raise ValueError(
                f"short_conv must be an int >= 0 (0 disables); got {self.short_conv!r}"
            )
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {list(IMPLS)}; got {self.impl!r}")
        if not is_int(self.chunk_size) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int; got {self.chunk_size!r}")
        if not is_int(self.router_conv) or self.router_conv < 0:
            raise ValueError(
                f"router_conv must be an int >= 0 (0 disables); got {self.router_conv!r}"
            )
        if not 0.0 < self.dt_min <= self.dt_max:
            raise ValueError(
                f"dt_min and dt_max must satisfy 0 < dt_min <= dt_max; "
                f"got dt_min={self.dt_min!r}, dt_max={self.dt_max!r}"
            )


@struct.dataclass
class MoMCache:
    """Decode cache. ``state [B, M, H, K, V]`` f32 (one per routed memory);
    ``conv [B, M, W − 1, C]`` or None; ``shared_state [B, H, K, V]`` f32 or None;
    ``shared_conv [B, W − 1, C]`` or None; ``length`` int32 (tokens seen);
    ``router_conv [B, W_r − 1, D]`` (the router conv's last inputs) or None."""

    state: jax.Array
    conv: jax.Array | None
    shared_state: jax.Array | None
    shared_conv: jax.Array | None
    length: jax.Array
    router_conv: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each (token, memory) pair lives in a buffer of ``L`` positions per row.

    Pairs are numbered p = t·J + j. ``pair_pos [B, P]``: buffer position of each pair;
    ``pair_ok [B, P]``: pair kept (not dropped by capacity); ``order [B, L]``: pair at each
    buffer position (P = padding); ``mem [B, L]``: memory of each position; ``valid [B, L]``:
    position holds a kept pair. ``permutation``: L = P and ``order`` inverts ``pair_pos``.
    """

    pair_pos: jax.Array
    pair_ok: jax.Array
    order: jax.Array
    mem: jax.Array
    valid: jax.Array
    permutation: bool


def _take_rows(a: jax.Array, idx: jax.Array) -> jax.Array:
    """``a [B, N, ...]``, ``idx [B, L]`` int in [0, N) -> ``a[b, idx[b, l]]`` ``[B, L, ...]``."""
    return jax.vmap(lambda x, i: x[i])(a, idx)


@jax.custom_vjp
def _permute_rows(a: jax.Array, perm: jax.Array, inv: jax.Array) -> jax.Array:
    """``a[b, perm[b]]`` for a permutation ``perm`` with inverse ``inv``: its gradient is the
    inverse gather, not the scatter-add XLA would emit for a general gather."""
    return _take_rows(a, perm)


def _permute_rows_fwd(a, perm, inv):
    return _take_rows(a, perm), inv


def _permute_rows_bwd(inv, g):
    return _take_rows(g, inv), None, None


_permute_rows.defvjp(_permute_rows_fwd, _permute_rows_bwd)


@register("mom", config=MoMConfig, letter="M")
class MoM(nnx.Module):
    """Mixture-of-Memories: top-k routed matrix memories (+ a shared one) over a base op."""

    def __init__(self, config: MoMConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.config = config
        self.d_model = d_model
        self.num_heads = num_heads
        self.key_dim, self.value_dim = head_dims(config, d_model, num_heads)
        m, h, dk, dv, d = config.num_memories, num_heads, self.key_dim, self.value_dim, d_model
        f32 = jnp.float32
        # lecun-normal per memory: fan-in D, the memory axis is a batch axis
        stacked = nnx.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))

        def per_memory(*shape):
            return nnx.Param(stacked(rngs.params(), (m, *shape), f32))

        def linear(n_in, n_out, bias=False):
            return nnx.Linear(n_in, n_out, use_bias=bias, rngs=rngs)

        self.router = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (d, m), f32))
        wr = config.router_conv
        self.router_conv = ShortConv(d, wr, activation="identity", rngs=rngs) if wr else None
        if self.router_conv is not None:  # starts as the paper's router on x_t
            self.router_conv.weight[...] = jnp.zeros((wr, d), f32).at[0].set(1.0)
        self.q_proj = linear(d, h * dk)
        self.k_proj = per_memory(d, h * dk)  # [M, D, H·K]
        self.v_proj = per_memory(d, h * dv)  # [M, D, H·V]
        shared = config.shared_memory
        self.shared_k_proj = linear(d, h * dk) if shared else None
        self.shared_v_proj = linear(d, h * dv) if shared else None
        if config.base == "gated_deltanet":
            self.beta_proj = per_memory(d, h)  # [M, D, H]
            self.a_proj = per_memory(d, h)  # [M, D, H]
            self.shared_beta_proj = linear(d, h) if shared else None
            self.shared_a_proj = linear(d, h) if shared else None
            a = jax.random.uniform(rngs.params(), (h,), f32, 0.0, 16.0)
            self.A_log = nnx.Param(jnp.log(jnp.maximum(a, 1e-4)))
            u = jax.random.uniform(rngs.params(), (h,), f32)
            lo, hi = math.log(config.dt_min), math.log(config.dt_max)
            dt = jnp.exp(u * (hi - lo) + lo)
            dt = jnp.maximum(dt, 1e-4)
            self.dt_bias = nnx.Param(dt + jnp.log(-jnp.expm1(-dt)))  # softplus⁻¹(dt)
        elif config.base == "gla":
            self.gate_down = per_memory(d, _GLA_RANK)  # W₁ [M, D, r]
            self.gate_up = per_memory(_GLA_RANK, h * dk)  # W₂ [M, r, H·K]
            # b₂, flattened [M·H·K] so the rank-based weight-decay mask treats it as a bias
            self.gate_bias = nnx.Param(jnp.full((m * h * dk,), config.gate_bias_init, f32))
            self.shared_gate_down = linear(d, _GLA_RANK) if shared else None
            self.shared_gate_up = (
                nnx.Linear(
                    _GLA_RANK,
                    h * dk,
                    bias_init=nnx.initializers.constant(config.gate_bias_init),
                    rngs=rngs,
                )
                if shared
                else None
            )
        self.conv_channels = h * (2 * dk + dv)
        self.conv = (
            ShortConv(self.conv_channels, config.short_conv, rngs=rngs)
            if config.short_conv
            else None
        )
        if config.output_gate:
            self.g_proj = linear(d, h * dv)
            self.o_norm = GatedRMSNorm(dv, rngs=rngs)
        else:
            self.g_proj, self.o_norm = None, RMSNorm(dv, rngs=rngs)
        self.o_proj = linear(h * dv, d)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        """Memories with a state: M routed (+ 1 shared, index M)."""
        return self.config.num_memories + int(self.config.shared_memory)

    @property
    def pairs_per_token(self) -> int:
        """J = top_k (+ 1 for the shared memory)."""
        return self.config.top_k + int(self.config.shared_memory)

    # --- routing -------------------------------------------------------------------------------
    def route(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Router input ``x [B, T, D]`` (x itself, or its router conv) -> (probs ``[B, T, M]``
        f32 softmax, weights ``[B, T, k]`` f32 renormalised, memory ids ``[B, T, k]`` int32)."""
        logits = jnp.einsum("btd,dm->btm", x.astype(jnp.float32), self.router[...])
        probs = jax.nn.softmax(logits, axis=-1)
        w, idx = jax.lax.top_k(probs, self.config.top_k)
        return probs, w / jnp.sum(w, axis=-1, keepdims=True), idx.astype(jnp.int32)

    def _pairs(self, w: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Appends the shared memory (index M, weight 1) to every token's routed pairs."""
        if not self.config.shared_memory:
            return w, idx
        lead = idx.shape[:-1]
        idx = jnp.concatenate([idx, jnp.full((*lead, 1), self.config.num_memories, idx.dtype)], -1)
        w = jnp.concatenate([w, jnp.ones((*lead, 1), w.dtype)], -1)
        return w, idx

    def _capacity(self, t: int) -> tuple[int, jax.Array]:
        """(C, per-memory cap ``[M(+1)]``): routed memories keep ≤ C, the shared one all T."""
        c = max(1, math.ceil(self.config.capacity_factor * t - 1e-9))
        cap = jnp.full((self.num_slots,), c, jnp.int32)
        if self.config.shared_memory:
            cap = cap.at[-1].set(t)
        return c, cap

    def _rank(self, mem: jax.Array, cap: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Rank of each pair within its memory (time order) and per-memory counts / drops.

        ``mem [B, P]`` (pairs in time order) -> (rank ``[B, P]``, count ``[B, S]``,
        drop ``[B, S]`` = oldest pairs beyond capacity)."""
        onehot = jax.nn.one_hot(mem, self.num_slots, dtype=jnp.int32)  # [B, P, S]
        csum = jnp.cumsum(onehot, axis=1)
        rank = jnp.take_along_axis(csum, mem[..., None], axis=-1)[..., 0] - 1
        count = csum[:, -1]
        return rank, count, jnp.maximum(count - cap, 0)

    def _packed_layout(self, idx: jax.Array) -> _Layout:
        """Buffer ``[B, P = T·J]`` ordered by (memory, t): each memory's pairs contiguous."""
        b, t, j = idx.shape
        mem = idx.reshape(b, t * j)
        _, cap = self._capacity(t)
        rank, count, drop = self._rank(mem, cap)
        offset = jnp.cumsum(count, axis=-1) - count  # first position of each memory
        pos = jnp.take_along_axis(offset, mem, axis=-1) + rank  # a permutation of [0, P)
        ok = rank >= jnp.take_along_axis(drop, mem, axis=-1)
        pair = jnp.arange(t * j, dtype=jnp.int32)
        order = jax.vmap(lambda p: jnp.zeros_like(pair).at[p].set(pair, unique_indices=True))(pos)
        return _Layout(
            pair_pos=pos,
            pair_ok=ok,
            order=order,
            mem=_take_rows(mem, order),
            valid=_take_rows(ok, order),
            permutation=True,
        )

    def _slot_layout(self, idx: jax.Array, width: int) -> tuple[_Layout, jax.Array]:
        """Buffer ``[B, S·width]``: memory m's kept pairs at slots ``m·width + 0, 1, …`` (time
        order, oldest dropped), the rest padding. Also returns kept counts ``[B, S]``."""
        b, t, j = idx.shape
        s = self.num_slots
        mem = idx.reshape(b, t * j)
        _, cap = self._capacity(t)
        rank, count, drop = self._rank(mem, cap)
        slot = rank - jnp.take_along_axis(drop, mem, axis=-1)
        ok = slot >= 0
        pos = jnp.where(ok, mem * width + slot, s * width)  # s·width: out of range, dropped
        pair = jnp.arange(t * j, dtype=jnp.int32)
        fill = jnp.full((s * width,), t * j, jnp.int32)
        order = jax.vmap(lambda p: fill.at[p].set(pair, mode="drop"))(pos)
        valid = order < t * j
        layout = _Layout(
            pair_pos=jnp.minimum(pos, s * width - 1),
            pair_ok=ok,
            order=order,
            mem=jnp.broadcast_to(jnp.repeat(jnp.arange(s, dtype=jnp.int32), width), (b, s * width)),
            valid=valid,
            permutation=False,
        )
        return layout, count - drop

    # --- projections ---------------------------------------------------------------------------
    def _stack(self, routed: nnx.Param, shared: nnx.Linear | None) -> jax.Array:
        w = routed[...]
        if shared is not None:
            w = jnp.concatenate([w, shared.kernel[...][None]], axis=0)
        return w

    def _features(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Every memory's projections of every token (dense over memories; gathered later).

        ``x [B, T, D]`` -> (q ``[B, T, H·K]``, kv ``[B, T, S, H·K + H·V]`` in x's dtype,
        gates ``[B, T, S, G]`` f32 or None). G: GDN 2H (log α, β), GLA H·K (log decay), LA 0.
        """
        cfg, dt = self.config, x.dtype
        q = self.q_proj(x)
        w_kv = jnp.concatenate(
            [
                self._stack(self.k_proj, self.shared_k_proj),
                self._stack(self.v_proj, self.shared_v_proj),
            ],
            axis=-1,
        )
        kv = jnp.einsum("btd,mde->btme", x, w_kv.astype(dt))
        gates = None
        if cfg.base == "gated_deltanet":
            w_ab = jnp.concatenate(
                [
                    self._stack(self.a_proj, self.shared_a_proj),
                    self._stack(self.beta_proj, self.shared_beta_proj),
                ],
                axis=-1,
            )
            ab = jnp.einsum("btd,mde->btme", x, w_ab.astype(dt)).astype(jnp.float32)
            a, b = jnp.split(ab, 2, axis=-1)
            log_alpha = -jnp.exp(self.A_log[...]) * jax.nn.softplus(a + self.dt_bias[...])
            gates = jnp.concatenate([log_alpha, jax.nn.sigmoid(b)], axis=-1)
        elif cfg.base == "gla":
            m, hk = cfg.num_memories, self.num_heads * self.key_dim
            down = self._stack(self.gate_down, self.shared_gate_down)
            up = self._stack(self.gate_up, self.shared_gate_up)
            bias = self.gate_bias[...].reshape(m, hk)
            if cfg.shared_memory:
                bias = jnp.concatenate([bias, self.shared_gate_up.bias[...][None]], axis=0)
            hid = jnp.einsum("btd,mdr->btmr", x, down.astype(dt))
            logits = jnp.einsum("btmr,mre->btme", hid, up.astype(dt)) + bias.astype(dt)
            gates = jax.nn.log_sigmoid(logits.astype(jnp.float32)) / _GLA_TAU
        return q, kv, gates

    def _op_inputs(
        self, qkv: jax.Array, gates: jax.Array | None, valid: jax.Array
    ) -> tuple[jax.Array, ...]:
        """Conv output ``[..., C]`` (+ gates ``[..., G]``) at buffer positions -> the base op's
        (q, k, v, *gates) with ``[..., H, ·]`` heads; invalid positions become identity steps."""
        cfg, h, dk, dv = self.config, self.num_heads, self.key_dim, self.value_dim
        lead = qkv.shape[:-1]
        q, k, v = jnp.split(qkv, [h * dk, 2 * h * dk], axis=-1)
        q, k, v = q.reshape(*lead, h, dk), k.reshape(*lead, h, dk), v.reshape(*lead, h, dv)
        if cfg.base == "gated_deltanet":
            if self.conv is None:  # the conv applies SiLU; without it apply it here
                q, k = jax.nn.silu(q), jax.nn.silu(k)
            q, k = l2_normalize(q), l2_normalize(k)
        elif cfg.base == "linear_attention":
            q, k = jax.nn.elu(q) + 1.0, jax.nn.elu(k) + 1.0
        ok = valid[..., None, None]
        q, k, v = (jnp.where(ok, a, 0) for a in (q, k, v))
        if cfg.base == "gated_deltanet":
            g, beta = jnp.split(gates, 2, axis=-1)
            return (
                q,
                k,
                v,
                jnp.where(valid[..., None], g, 0.0),
                jnp.where(valid[..., None], beta, 0.0),
            )
        if cfg.base == "gla":
            g = gates.reshape(*lead, h, dk)
            return q, k, v, jnp.where(ok, g, 0.0)
        return q, k, v

    def _conv_input(
        self, x: jax.Array, idx: jax.Array, layout: _Layout
    ) -> tuple[jax.Array, jax.Array | None]:
        """Conv inputs q|k|v ``[B, L, C]`` and gates ``[B, L, G]`` (or None) at buffer positions:
        the shared q projection and pair (t, j)'s memory-specific k, v and gates."""
        q, kv, gates = self._features(x)
        b, t, s, _ = kv.shape
        j = idx.shape[-1]
        sel = jax.nn.one_hot(idx, s, dtype=kv.dtype)  # [B, T, J, S]: select, exactly
        kv = jnp.einsum("btjs,btse->btje", sel, kv, precision=jax.lax.Precision.HIGHEST)
        q = jnp.broadcast_to(q[:, :, None], (b, t, j, q.shape[-1]))
        pairs = [jnp.concatenate([q, kv], axis=-1).reshape(b, t * j, -1)]
        if gates is not None:
            g = jnp.einsum(
                "btjs,btsg->btjg",
                sel.astype(gates.dtype),
                gates,
                precision=jax.lax.Precision.HIGHEST,
            )
            pairs.append(g.reshape(b, t * j, -1))
        if layout.permutation:
            bufs = [_permute_rows(a, layout.order, layout.pair_pos) for a in pairs]
        else:
            order = jnp.minimum(layout.order, t * j - 1)
            bufs = [_take_rows(a, order) for a in pairs]
        bufs[0] = jnp.where(layout.valid[..., None], bufs[0], 0)
        return bufs[0], (bufs[1] if gates is not None else None)

    def _combine(self, o_buf: jax.Array, w: jax.Array, layout: _Layout, t: int) -> jax.Array:
        """``o_buf [B, L, H, V]`` -> ``Σ_j w_tj o[pos(t, j)]`` ``[B, T, H, V]``."""
        b, _, h, dv = o_buf.shape
        j = w.shape[-1]
        if layout.permutation:
            o = _permute_rows(o_buf, layout.pair_pos, layout.order)
        else:
            o = _take_rows(o_buf, layout.pair_pos)
        o = o.reshape(b, t, j, h, dv)
        ok = layout.pair_ok.reshape(b, t, j)[..., None, None]
        wt = w.astype(o.dtype)[..., None, None]
        return jnp.sum(jnp.where(ok, o * wt, 0), axis=2)

    def _output(self, x: jax.Array, o: jax.Array) -> jax.Array:
        b, t, _ = x.shape
        h, dv = self.num_heads, self.value_dim
        o = o.astype(x.dtype)
        if self.g_proj is None:
            o = self.o_norm(o)
        else:
            o = self.o_norm(o, self.g_proj(x).reshape(b, t, h, dv))
        return self.o_proj(o.reshape(b, t, h * dv))

    # --- the protocol --------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype: Any = jnp.float32) -> MoMCache:
        del max_len  # constant-size state
        m, h, dk, dv = self.config.num_memories, self.num_heads, self.key_dim, self.value_dim
        shared = self.config.shared_memory
        conv = None
        if self.conv is not None:
            conv = jnp.zeros((batch_size, m, self.conv.kernel_size - 1, self.conv_channels), dtype)
        return MoMCache(
            state=jnp.zeros((batch_size, m, h, dk, dv), jnp.float32),
            conv=conv,
            shared_state=jnp.zeros((batch_size, h, dk, dv), jnp.float32) if shared else None,
            shared_conv=conv[:, 0] if shared and conv is not None else None,
            length=jnp.zeros((), jnp.int32),
            router_conv=(
                None if self.router_conv is None else self.router_conv.init_cache(batch_size, dtype)
            ),
        )

    def __call__(
        self,
        x: jax.Array,
        *,
        cache: MoMCache | None = None,
        segment_ids: jax.Array | None = None,
    ) -> tuple[jax.Array, MoMCache | None]:
        check_call(x, self.d_model, cache, segment_ids)
        r_in, r_cache = x, None
        if self.router_conv is not None:
            r_in, r_cache = self.router_conv(
                x, segment_ids=segment_ids, cache=None if cache is None else cache.router_conv
            )
        probs, w, idx = self.route(r_in)
        if cache is not None:
            step = self._decode if x.shape[1] == 1 else self._prefill
            y, new_cache = step(x, w, idx, cache)
            return y, new_cache.replace(router_conv=r_cache)
        y = self._forward(x, w, idx, segment_ids)
        self._sow_routing(probs, w, idx)
        return y, None

    def _forward(
        self, x: jax.Array, w: jax.Array, idx: jax.Array, segment_ids: jax.Array | None
    ) -> jax.Array:
        """No cache: one op call over the packed, memory-sorted buffer ``[B, T·J]``."""
        cfg = self.config
        b, t, _ = x.shape
        w, idx = self._pairs(w, idx)
        lay = self._packed_layout(idx)
        qkv, g = self._conv_input(x, idx, lay)
        # segment restarts: memory boundaries, packed-sequence starts, dropped → kept
        starts = (lay.mem[:, 1:] != lay.mem[:, :-1]) | (lay.valid[:, 1:] != lay.valid[:, :-1])
        if segment_ids is not None:
            seg = _take_rows(segment_ids, lay.order // idx.shape[-1])
            starts = starts | (seg[:, 1:] != seg[:, :-1])
        seg_buf = jnp.concatenate(
            [jnp.zeros((b, 1), jnp.int32), jnp.cumsum(starts.astype(jnp.int32), axis=1)], axis=1
        )
        if self.conv is not None:
            qkv, _ = self.conv(qkv, segment_ids=seg_buf)
        op, _ = _OPS[cfg.base]
        o_buf, _ = op(
            *self._op_inputs(qkv, g, lay.valid),
            segment_ids=seg_buf,
            impl=cfg.impl,
            chunk_size=cfg.chunk_size,
        )
        if cfg.capacity_factor < 1.0:
            kept = lay.pair_ok.reshape(b, t, -1)[..., : cfg.top_k]
            self.sow(nnx.Intermediate, "memory_drop_frac", 1.0 - jnp.mean(kept), capture_noop=True)
        return self._output(x, self._combine(o_buf, w, lay, t))

    def _all_states(self, cache: MoMCache) -> tuple[jax.Array, jax.Array | None]:
        """Cache -> (states ``[B, S, H, K, V]``, conv caches ``[B, S, W−1, C]`` or None)."""
        state, conv = cache.state, cache.conv
        if self.config.shared_memory:
            state = jnp.concatenate([state, cache.shared_state[:, None]], axis=1)
            if conv is not None:
                conv = jnp.concatenate([conv, cache.shared_conv[:, None]], axis=1)
        return state, conv

    def _new_cache(self, state: jax.Array, conv: jax.Array | None, length: jax.Array) -> MoMCache:
        m = self.config.num_memories
        shared = self.config.shared_memory
        return MoMCache(
            state=state[:, :m],
            conv=None if conv is None else conv[:, :m],
            shared_state=state[:, m] if shared else None,
            shared_conv=conv[:, m] if shared and conv is not None else None,
            length=length,
        )

    def _prefill(
        self, x: jax.Array, w: jax.Array, idx: jax.Array, cache: MoMCache
    ) -> tuple[jax.Array, MoMCache]:
        """T > 1 with a cache: slots ``[B, S, width]``, M folded into the batch."""
        cfg = self.config
        b, t, _ = x.shape
        s = self.num_slots
        w, idx = self._pairs(w, idx)
        c, _ = self._capacity(t)
        width = t if cfg.shared_memory else c
        lay, kept = self._slot_layout(idx, width)  # kept [B, S]
        qkv, g = self._conv_input(x, idx, lay)
        qkv = qkv.reshape(b * s, width, -1)
        state0, conv0 = self._all_states(cache)
        conv_new = None
        if self.conv is not None:
            conv0 = conv0.reshape(b * s, *conv0.shape[2:])
            xp = jnp.concatenate([conv0.astype(qkv.dtype), qkv], axis=1)  # [B·S, W−1+width, C]
            qkv, _ = self.conv(qkv, cache=conv0)
            # the last W − 1 *kept* inputs of each memory (its own time), not the padding
            n = kept.reshape(b * s, 1)
            keep = n + jnp.arange(self.conv.kernel_size - 1, dtype=jnp.int32)
            conv_new = _take_rows(xp, keep).astype(cache.conv.dtype).reshape(b, s, -1, xp.shape[-1])
        ins = self._op_inputs(
            qkv, None if g is None else g.reshape(b * s, width, -1), lay.valid.reshape(b * s, width)
        )
        op, _ = _OPS[cfg.base]
        o_buf, final = op(
            *ins,
            initial_state=state0.reshape(b * s, *state0.shape[2:]),
            output_final_state=True,
            impl=cfg.impl,
            chunk_size=cfg.chunk_size,
        )
        # a memory that received no token keeps its state bit-identically
        final = jnp.where((kept > 0)[..., None, None, None], final.reshape(state0.shape), state0)
        o = self._combine(o_buf.reshape(b, s * width, *o_buf.shape[2:]), w, lay, t)
        return self._output(x, o), self._new_cache(final, conv_new, cache.length + t)

    def _decode(
        self, x: jax.Array, w: jax.Array, idx: jax.Array, cache: MoMCache
    ) -> tuple[jax.Array, MoMCache]:
        """T == 1: step only the selected memories (and the shared one); others untouched."""
        cfg = self.config
        b = x.shape[0]
        w, idx = self._pairs(w[:, 0], idx[:, 0])  # [B, J]
        j = idx.shape[-1]
        q, kv, gates = self._features(x)  # [B, 1, ...]
        qkv = jnp.concatenate(
            [jnp.broadcast_to(q[:, 0, None], (b, j, q.shape[-1])), _take_rows(kv[:, 0], idx)],
            axis=-1,
        )  # [B, J, C]
        g = None if gates is None else _take_rows(gates[:, 0], idx)
        states, convs = self._all_states(cache)
        rows = jnp.arange(b)[:, None]
        if self.conv is not None:
            c_sel = _take_rows(convs, idx).reshape(b * j, *convs.shape[2:])
            y, c_new = self.conv(qkv.reshape(b * j, 1, -1), cache=c_sel)
            qkv = y.reshape(b, j, -1)
            convs = convs.at[rows, idx].set(
                c_new.reshape(b, j, *c_new.shape[1:]).astype(convs.dtype)
            )
        ins = self._op_inputs(
            qkv.reshape(b * j, -1),
            None if g is None else g.reshape(b * j, -1),
            jnp.ones((b * j,), bool),
        )
        _, step = _OPS[cfg.base]
        s_sel = _take_rows(states, idx).reshape(b * j, *states.shape[2:])
        o, s_new = step(*ins, s_sel)
        states = states.at[rows, idx].set(s_new.reshape(b, j, *s_new.shape[1:]))
        o = jnp.sum(o.reshape(b, j, *o.shape[1:]) * w.astype(o.dtype)[..., None, None], axis=1)
        return self._output(x, o[:, None]), self._new_cache(states, convs, cache.length + 1)

    # --- auxiliary loss and routing statistics -------------------------------------------------
    def aux_loss(self, w: jax.Array, idx: jax.Array) -> jax.Array:
        """``L_aux = M · Σ_m f_m P_m`` over all positions (= top_k when balanced).

        ``w, idx [B, T, k]``: renormalised weights and memory ids from :meth:`route`.
        """
        m = self.config.num_memories
        sel = jax.nn.one_hot(idx, m, dtype=jnp.float32)  # [B, T, k, M]
        f = jnp.mean(jnp.sum(sel, axis=2), axis=(0, 1))  # fraction routed, Σ f = k
        p = jnp.mean(jnp.sum(sel * w[..., None], axis=2), axis=(0, 1))  # mean weight, Σ P = 1
        return m * jnp.sum(f * p)

    def _sow_routing(self, probs: jax.Array, w: jax.Array, idx: jax.Array) -> None:
        m, k = self.config.num_memories, self.config.top_k
        sow = lambda name, v: self.sow(nnx.Intermediate, name, v, capture_noop=True)
        sow("aux_loss", self.config.aux_loss_weight * self.aux_loss(w, idx))
        f = jnp.mean(jnp.sum(jax.nn.one_hot(idx, m, dtype=jnp.float32), axis=2), axis=(0, 1))
        sow("memory_load_max", jnp.max(f) * m / k)
        sow("router_entropy", jnp.mean(jnp.sum(jax.scipy.special.entr(probs), axis=-1)))
