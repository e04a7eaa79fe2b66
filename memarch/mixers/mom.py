"""Mixture-of-Memories (MoM; Du et al. 2025, arXiv 2502.13685), registered as ``mom`` (``M``).

M matrix memories, each a full recurrent state ``[H, K, V]`` of a ``base`` matrix-memory
mixer (any registered :class:`~memarch.mixers._recurrent.RecurrentMixer`: Gated DeltaNet by
default; GLA, DeltaNet, HGRN2, plain linear attention), of which each token writes to and
reads from only its top-k. Per token ``x_t ∈ R^D``, with the base's parts (see
:class:`~memarch.mixers._recurrent.RecurrentMixer`)::

    (w_t, I_t) = top-k routing of x_t               (memarch.mixers.routing)
    q = conv(base.query(x))                          one query projection for all memories
    m ∈ I_t:  k, v = conv(base.keys_values^m(x)),  gates = base.gates^m(x)
              S^m_t = base op step on (features(q, k, v, gates))     e.g. Gated DeltaNet:
              S^m_t = α(I − β k kᵀ) S^m_{t−1} + β k vᵀ   with memory m's W_k, W_v, W_β, W_a
    m ∉ I_t:  S^m_t = S^m_{t−1}                      untouched: no decay, no write, no conv step
    shared:   S^s_t = same update with its own write parameters, every token (optional)
    o_t = Σ_j w_tj · read of S^{m_j}_t + read of S^s_t
    y_t = base.output(x_t, o_t)                      output head shared by all memories

``^m`` marks the base's *write parameters* (:meth:`RecurrentMixer.memory_params`: key and
value projections and the gate parameters), of which each memory owns a copy; the query
projection, the short-conv weights (each memory keeps its own conv cache), the output head
and shared constants (Gated DeltaNet's ``A_log``, ``dt_bias``) are the base's, one for all.
MoM knows nothing else about its base: the base's options (``base_options``) are validated by
the base's own config dataclass, and any later-registered RecurrentMixer is a valid base.

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

**Parameters.** ``router [D, M]``, ``router_conv`` (optional), ``base`` (the base mixer's
shared parts; its write attributes are None) and ``memories`` (the write parameters of the
M (+1 shared, index M) memories, stacked along a leading memory axis: a ``[D, E]`` kernel is
stored ``[S, D, E]``; a per-memory vector (a bias) is stored flattened ``[S·E]`` so the
rank-based weight-decay mask treats it as a bias). :meth:`MoM.memory_mixer` returns memory m
as a standalone base mixer.

**Capacity.** Each call gives memory m at most ``C = ceil(capacity_factor · T)`` of its routed
tokens (per batch row). ``capacity_factor = 1`` (default) means C = T: exact, nothing dropped.
With ``< 1`` a memory that received ``n_m > C`` tokens drops its *oldest* ``n_m − C`` (it
keeps its newest C, as in the reference implementation); a dropped token neither writes to nor
reads from that memory and its conv sees the kept subsequence only. The shared memory is never
capacity-limited. Dropping is per call, so a prefill with ``capacity_factor < 1`` can differ
from token-by-token decode (which never drops).

**Auxiliary loss** (Switch style, layer-wise, as in the MoM paper): ``L_aux = M · Σ_m f_m P_m``
(:func:`memarch.mixers.routing.aux_loss`; = k when balanced, = M when all tokens pick the same
k memories with equal weights). In training/eval calls (``cache is None``) the mixer sows
``aux_loss_weight · L_aux`` as ``"aux_loss"`` (added to the loss by :mod:`memarch.train.step`)
and the metrics ``"router_entropy"`` (mean entropy of the full router softmax, nats; log M =
uniform) and ``"memory_load_max"`` (``max_m f_m · M / k``: 1 = balanced, M/k = all tokens on k
memories), plus ``"memory_drop_frac"`` (fraction of routed (token, memory) pairs dropped) when
``capacity_factor < 1``. Every position counts: the mixer protocol has no padding mask (packed
training has no padded positions; a padded batch would count its pads). With ``top_k = 1`` the
renormalised weight is identically 1, so L_aux has no gradient (the paper's form; use k ≥ 2).
Nothing is sown during decode, and ``sow`` is a no-op outside ``nnx.capture``.

**Implementation (XLA, static shapes, no Python loop over tokens).** The (t, j) pairs of a row
(plus one pair per token for the shared memory, index M) are ranked within their memory by a
cumsum of one-hot memory ids (= a stable sort by memory id), then scattered to buffer positions:

- training / no cache: a packed buffer ``[B, (k+1)·T]`` ordered by (memory, t), i.e. each
  memory's subsequence contiguous, with segment ids that restart at every memory boundary
  (and every packed-sequence start). One op call over this buffer does exactly the
  k·T (+ T shared) token steps; no padding.
- prefill with a cache (T > 1): slots ``[B, M(+1), C]`` (rank → slot, oldest dropped), padded
  slots are identity steps (:meth:`RecurrentMixer.identity_inputs`), the op runs with M folded
  into the batch and one initial state per memory; a memory that got no token keeps its state
  bit-identically.
- decode (T == 1): only the k selected memories (and the shared one) are gathered, stepped and
  written back with ``.at[b, idx].set``; the others stay bit-identical.

The write projections and gates are computed for every memory on every token (the base's own
``keys_values`` and ``gates``, vmapped over the stacked write parameters) and selected per
pair; in the packed layout the gathers between pair order and buffer order are permutations,
differentiated as the inverse gather (custom VJP) instead of XLA's scatter-add.

Outputs are gathered back per (t, j), weighted by ``w_tj`` (1 for the shared memory) and summed.

Shapes: ``x [B, T, D] -> y [B, T, D]``. Cache (:class:`MoMCache`): ``state [B, M, H, K, V]``
f32, ``conv [B, M, W − 1, C]`` (C = the base's conv channels, e.g. H·(2K + V) for q|k|v),
``shared_state [B, H, K, V]``, ``shared_conv [B, W − 1, C]``, ``length``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from memarch.layers.short_conv import ShortConv
from memarch.mixers import routing
from memarch.mixers._recurrent import RecurrentConfig, RecurrentMixer
from memarch.mixers._registry import available, build, config_class, make_config, register
from memarch.mixers.protocol import check_call

# MoM's defaults for its base's options (the MoM paper: value width = key width); the base's
# own defaults apply to every other option, and ``base_options`` overrides both.
BASE_DEFAULTS: dict[str, Any] = {"expand_v": 1.0}


def memory_bases() -> list[str]:
    """Registered mixers that can be a MoM base: the matrix-memory mixers, i.e. those whose
    options dataclass derives from :class:`RecurrentConfig` (their class from
    :class:`RecurrentMixer`, checked when a MoM is built)."""
    return [n for n in available() if issubclass(config_class(n), RecurrentConfig)]


@dataclasses.dataclass(frozen=True)
class MoMConfig:
    """Options of the Mixture-of-Memories mixer (defaults: the paper's 4 memories, top-2).

    ``base_options`` (a mapping; stored as sorted ``(name, value)`` pairs) are options of the
    ``base`` mixer's own config dataclass, e.g. ``{"head_dim": 16, "dt_max": 1e-2}`` for
    ``gated_deltanet`` or ``{"gate_rank": 8, "gate_normalizer": 8.0}`` for ``gla``; on top of
    the base's defaults MoM sets :data:`BASE_DEFAULTS`.
    """

    num_memories: int = 4  # M: routed memories, each a full [H, K, V] state of the base
    top_k: int = 2  # memories each token is routed to, 1 ≤ top_k ≤ num_memories
    shared_memory: bool = True  # add an always-on memory (own write parameters, same q)
    base: str = "gated_deltanet"  # registry name of the memory's mixer (see memory_bases())
    base_options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()  # the base's options
    # tokens per memory per call C = ceil(capacity_factor·T), in (0, 1]; 1 = exact (C = T);
    # < 1 drops each memory's OLDEST overflowing tokens (keeps its newest C), as the reference
    capacity_factor: float = 1.0
    aux_loss_weight: float = 0.01  # weight of the load-balancing loss sown as "aux_loss" (0 = off)
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
        bases = memory_bases()
        if self.base not in bases:
            raise ValueError(f"base must be one of {bases}; got {self.base!r}")
        if not 0.0 < self.capacity_factor <= 1.0:
            raise ValueError(
                f"capacity_factor must be in (0, 1] (1 = exact, no drops); "
                f"got {self.capacity_factor!r}"
            )
        if not self.aux_loss_weight >= 0.0:
            raise ValueError(f"aux_loss_weight must be >= 0; got {self.aux_loss_weight!r}")
        if not is_int(self.router_conv) or self.router_conv < 0:
            raise ValueError(
                f"router_conv must be an int >= 0 (0 disables); got {self.router_conv!r}"
            )
        opts = self.base_options
        try:
            pairs = tuple(sorted(dict(opts).items()))
        except (TypeError, ValueError):
            raise ValueError(
                f"base_options must be a mapping of option name -> value; got {opts!r}"
            ) from None
        object.__setattr__(self, "base_options", pairs)  # hashable: configs are static
        try:
            self.base_config()
        except ValueError as err:
            raise ValueError(f"base_options for base {self.base!r}: {err}") from None

    def base_kwargs(self) -> dict[str, Any]:
        """The base mixer's options: :data:`BASE_DEFAULTS` updated by ``base_options``."""
        return {**BASE_DEFAULTS, **dict(self.base_options)}

    def base_config(self) -> RecurrentConfig:
        """The base mixer's validated config dataclass."""
        return make_config(self.base, **self.base_kwargs())


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


class MemoryParams(nnx.Module):
    """One memory's write parameters: the modules named by ``mixer.memory_params()``, taken
    from a base mixer (built once per memory under ``nnx.vmap``, so their parameters stack)."""

    def __init__(self, mixer: RecurrentMixer, names: tuple[str, ...]):
        for name in names:
            setattr(self, name, getattr(mixer, name))


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
    """Mixture-of-Memories: top-k routed matrix memories (+ a shared one) of any base mixer."""

    def __init__(self, config: MoMConfig, *, d_model: int, num_heads: int, rngs: nnx.Rngs):
        self.config = config
        self.d_model = d_model
        self.num_heads = num_heads
        m, d, f32 = config.num_memories, d_model, jnp.float32
        self.router = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (d, m), f32))
        wr = config.router_conv
        self.router_conv = ShortConv(d, wr, activation="identity", rngs=rngs) if wr else None
        if self.router_conv is not None:  # starts as the paper's router on x_t
            self.router_conv.weight[...] = jnp.zeros((wr, d), f32).at[0].set(1.0)
        opts = config.base_kwargs()
        self.base = build(config.base, d_model=d_model, num_heads=num_heads, rngs=rngs, **opts)
        if not isinstance(self.base, RecurrentMixer):
            raise ValueError(
                f"base must name a RecurrentMixer (a matrix-memory mixer); got {config.base!r}"
            )
        if getattr(self.base.config, "normalize", False):
            raise ValueError(
                "base_options normalize=True (a normalised read) is not supported in MoM"
            )
        names = self.base.memory_params()
        for name in names:  # the write parameters live in self.memories, one copy per memory
            setattr(self.base, name, None)

        @nnx.split_rngs(splits=self.num_slots)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_memories(rngs: nnx.Rngs) -> MemoryParams:
            mixer = build(config.base, d_model=d_model, num_heads=num_heads, rngs=rngs, **opts)
            return MemoryParams(mixer, names)

        self.memories = make_memories(rngs)
        # per-memory vectors (biases) stored flattened [S·E], so they stay rank-1 parameters
        state = nnx.state(self.memories)
        leaves, treedef = jax.tree.flatten(state)
        self.memory_shapes = tuple(tuple(a.shape[1:]) for a in leaves)
        flat = [a.reshape(-1) if a.ndim == 2 else a for a in leaves]
        nnx.update(self.memories, jax.tree.unflatten(treedef, flat))

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        """Memories with a state: M routed (+ 1 shared, index M)."""
        return self.config.num_memories + int(self.config.shared_memory)

    @property
    def pairs_per_token(self) -> int:
        """J = top_k (+ 1 for the shared memory)."""
        return self.config.top_k + int(self.config.shared_memory)

    @property
    def key_dim(self) -> int:
        return self.base.key_dim

    @property
    def value_dim(self) -> int:
        return self.base.value_dim

    # --- the memories as base mixers ------------------------------------------------------------
    def _stacked_memory_state(self) -> tuple[nnx.GraphDef, nnx.State]:
        """(graphdef, state) of :attr:`memories` with every parameter ``[S, ...]``."""
        graphdef, state = nnx.split(self.memories)
        leaves, treedef = jax.tree.flatten(state)
        s = self.num_slots
        leaves = [a.reshape(s, *shape) for a, shape in zip(leaves, self.memory_shapes, strict=True)]
        return graphdef, jax.tree.unflatten(treedef, leaves)

    def _mixer_with(self, base_def, base_state, memory_def, memory_state) -> RecurrentMixer:
        """A base mixer with the shared parts and one memory's write parameters."""
        mixer = nnx.merge(base_def, base_state)
        params = nnx.merge(memory_def, memory_state)
        for name in self.base.memory_params():
            setattr(mixer, name, getattr(params, name))
        return mixer

    def memory_mixer(self, m: int) -> RecurrentMixer:
        """Memory ``m`` (``m = M``: the shared memory) as a standalone base mixer (a copy of
        its parameters): running it on the tokens routed to m alone gives m's reads."""
        if not 0 <= m < self.num_slots:
            raise ValueError(f"m must be in [0, {self.num_slots}) (M = shared memory); got {m}")
        memory_def, state = self._stacked_memory_state()
        one = jax.tree.map(lambda a: a[m], state)
        return self._mixer_with(*nnx.split(self.base), memory_def, one)

    def _memory_inputs(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Every memory's write inputs for every token (dense over memories; selected later).

        ``x [B, T, D]`` -> (k|v ``[B, T, S, C − H·K]`` before the conv, gates: one
        ``[B, T, S, ...]`` array per gate of the base op).
        """
        base_def, base_state = nnx.split(self.base)
        memory_def, state = self._stacked_memory_state()

        def one(memory_state):
            mixer = self._mixer_with(base_def, base_state, memory_def, memory_state)
            return mixer.keys_values(x), tuple(mixer.gates(x))

        return jax.vmap(one, out_axes=2)(state)

    # --- routing -------------------------------------------------------------------------------
    def route(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Router input ``x [B, T, D]`` (x itself, or its router conv) -> (probs ``[B, T, M]``
        f32 softmax, weights ``[B, T, k]`` f32 renormalised, memory ids ``[B, T, k]`` int32)."""
        probs = routing.router_probs(x, self.router[...])
        w, idx = routing.top_k(probs, self.config.top_k)
        return probs, w, idx

    def _pairs(self, w: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Appends the shared memory (index M, weight 1) to every token's routed pairs."""
        if not self.config.shared_memory:
            return w, idx
        return routing.append_always_on(w, idx, self.config.num_memories)

    def _capacity(self, t: int) -> tuple[int, jax.Array]:
        """(C, per-memory cap ``[M(+1)]``): routed memories keep ≤ C, the shared one all T."""
        c = routing.capacity(self.config.capacity_factor, t)
        cap = jnp.full((self.num_slots,), c, jnp.int32)
        if self.config.shared_memory:
            cap = cap.at[-1].set(t)
        return c, cap

    def _packed_layout(self, idx: jax.Array) -> _Layout:
        """Buffer ``[B, P = T·J]`` ordered by (memory, t): each memory's pairs contiguous."""
        b, t, j = idx.shape
        mem = idx.reshape(b, t * j)
        _, cap = self._capacity(t)
        rank, count, drop = routing.rank_in_memory(mem, cap)
        offset = jnp.cumsum(count, axis=-1) - count  # first position of each memory
        pos = jnp.take_along_axis(offset, mem, axis=-1) + rank  # a permutation of [0, P)
        ok = routing.kept_slot(mem, rank, drop) >= 0
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
        rank, count, drop = routing.rank_in_memory(mem, cap)
        slot = routing.kept_slot(mem, rank, drop)
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

    # --- buffers -------------------------------------------------------------------------------
    def _conv_input(
        self, x: jax.Array, idx: jax.Array, layout: _Layout
    ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
        """Conv inputs q|k|v ``[B, L, C]`` and gates (each ``[B, L, ...]``) at buffer
        positions: the shared query and pair (t, j)'s memory-specific k, v and gates."""
        q = self.base.query(x)
        kv, gates = self._memory_inputs(x)
        b, t, s, _ = kv.shape
        j = idx.shape[-1]
        sel = jax.nn.one_hot(idx, s, dtype=kv.dtype)  # [B, T, J, S]: select, exactly

        def select(a):  # [B, T, S, ...] -> [B, T·J, prod(...)]
            a = a.reshape(b, t, s, -1)
            picked = jnp.einsum(
                "btjs,btse->btje", sel.astype(a.dtype), a, precision=jax.lax.Precision.HIGHEST
            )
            return picked.reshape(b, t * j, -1)

        q = jnp.broadcast_to(q[:, :, None], (b, t, j, q.shape[-1]))
        qkv = jnp.concatenate([q.reshape(b, t * j, -1), select(kv).astype(q.dtype)], axis=-1)
        pairs = [qkv] + [select(g) for g in gates]
        if layout.permutation:
            bufs = [_permute_rows(a, layout.order, layout.pair_pos) for a in pairs]
        else:
            order = jnp.minimum(layout.order, t * j - 1)
            bufs = [_take_rows(a, order) for a in pairs]
        bufs[0] = jnp.where(layout.valid[..., None], bufs[0], 0)
        gate_shapes = [g.shape[3:] for g in gates]
        lead = bufs[0].shape[:-1]
        return bufs[0], tuple(
            a.reshape(*lead, *gs) for a, gs in zip(bufs[1:], gate_shapes, strict=True)
        )

    def _op_inputs(
        self, qkv: jax.Array, gates: tuple[jax.Array, ...], valid: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array, tuple[jax.Array, ...]]:
        """Conv output ``[..., C]`` and gates at buffer positions -> the base op's
        (q, k, v, gates) with ``[..., H, ·]`` heads; invalid positions become identity steps."""
        q, k, v, gates = self.base.features(*self.base.split_heads(qkv), gates)
        return self.base.identity_inputs(valid, q, k, v, gates)

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
        return self.base.output(x, o.astype(x.dtype))

    # --- the protocol --------------------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype: Any = jnp.float32) -> MoMCache:
        del max_len  # constant-size state
        m, h, dk, dv = self.config.num_memories, self.num_heads, self.key_dim, self.value_dim
        shared = self.config.shared_memory
        conv = None
        if self.base.conv is not None:
            w = self.base.conv.kernel_size - 1
            conv = jnp.zeros((batch_size, m, w, self.base.conv_channels), dtype)
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
        if self.base.conv is not None:
            qkv, _ = self.base.conv(qkv, segment_ids=seg_buf)
        q, k, v, gates = self._op_inputs(qkv, g, lay.valid)
        o_buf, _ = self.base.run_op(q, k, v, gates, segment_ids=seg_buf)
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
        g = tuple(a.reshape(b * s, width, *a.shape[2:]) for a in g)
        state0, conv0 = self._all_states(cache)
        conv_new = None
        conv = self.base.conv
        if conv is not None:
            conv0 = conv0.reshape(b * s, *conv0.shape[2:])
            xp = jnp.concatenate([conv0.astype(qkv.dtype), qkv], axis=1)  # [B·S, W−1+width, C]
            qkv, _ = conv(qkv, cache=conv0)
            # the last W − 1 *kept* inputs of each memory (its own time), not the padding
            n = kept.reshape(b * s, 1)
            keep = n + jnp.arange(conv.kernel_size - 1, dtype=jnp.int32)
            conv_new = _take_rows(xp, keep).astype(cache.conv.dtype).reshape(b, s, -1, xp.shape[-1])
        q, k, v, gates = self._op_inputs(qkv, g, lay.valid.reshape(b * s, width))
        o_buf, final = self.base.run_op(
            q,
            k,
            v,
            gates,
            initial_state=state0.reshape(b * s, *state0.shape[2:]),
            output_final_state=True,
        )
        # a memory that received no token keeps its state bit-identically
        final = jnp.where((kept > 0)[..., None, None, None], final.reshape(state0.shape), state0)
        o = self._combine(o_buf.reshape(b, s * width, *o_buf.shape[2:]), w, lay, t)
        return self._output(x, o), self._new_cache(final, conv_new, cache.length + t)

    def _decode(
        self, x: jax.Array, w: jax.Array, idx: jax.Array, cache: MoMCache
    ) -> tuple[jax.Array, MoMCache]:
        """T == 1: step only the selected memories (and the shared one); others untouched."""
        b = x.shape[0]
        w, idx = self._pairs(w[:, 0], idx[:, 0])  # [B, J]
        j = idx.shape[-1]
        q = self.base.query(x)[:, 0]  # [B, H·K]
        kv, gates = self._memory_inputs(x)  # [B, 1, S, ...]
        qkv = jnp.concatenate(
            [jnp.broadcast_to(q[:, None], (b, j, q.shape[-1])), _take_rows(kv[:, 0], idx)],
            axis=-1,
        )  # [B, J, C]
        g = tuple(_take_rows(a[:, 0], idx).reshape(b * j, *a.shape[3:]) for a in gates)
        states, convs = self._all_states(cache)
        rows = jnp.arange(b)[:, None]
        if self.base.conv is not None:
            c_sel = _take_rows(convs, idx).reshape(b * j, *convs.shape[2:])
            y, c_new = self.base.conv(qkv.reshape(b * j, 1, -1), cache=c_sel)
            qkv = y.reshape(b, j, -1)
            convs = convs.at[rows, idx].set(
                c_new.reshape(b, j, *c_new.shape[1:]).astype(convs.dtype)
            )
        q, k, v, g = self.base.features(*self.base.split_heads(qkv.reshape(b * j, -1)), g)
        s_sel = _take_rows(states, idx).reshape(b * j, *states.shape[2:])
        o, s_new = self.base.run_step(q, k, v, g, s_sel)
        states = states.at[rows, idx].set(s_new.reshape(b, j, *s_new.shape[1:]))
        o = jnp.sum(o.reshape(b, j, *o.shape[1:]) * w.astype(o.dtype)[..., None, None], axis=1)
        return self._output(x, o[:, None]), self._new_cache(states, convs, cache.length + 1)

    # --- auxiliary loss and routing statistics -------------------------------------------------
    def aux_loss(self, w: jax.Array, idx: jax.Array) -> jax.Array:
        """``L_aux = M · Σ_m f_m P_m`` over all positions (= top_k when balanced).

        ``w, idx [B, T, k]``: renormalised weights and memory ids from :meth:`route`.
        """
        return routing.aux_loss(w, idx, self.config.num_memories)

    def _sow_routing(self, probs: jax.Array, w: jax.Array, idx: jax.Array) -> None:
        m = self.config.num_memories
        sow = lambda name, v: self.sow(nnx.Intermediate, name, v, capture_noop=True)
        sow("aux_loss", self.config.aux_loss_weight * self.aux_loss(w, idx))
        sow("memory_load_max", routing.load_max(idx, m))
        sow("router_entropy", routing.router_entropy(probs))
