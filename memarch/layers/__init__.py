"""Small shared blocks: norms, SwiGLU MLP, RoPE, short causal conv."""

from memarch.layers.mlp import SwiGLU
from memarch.layers.norms import GatedRMSNorm, RMSNorm, l2_normalize, rms_normalize
from memarch.layers.rope import apply_rope, segment_positions
from memarch.layers.short_conv import ShortConv

__all__ = [
    "GatedRMSNorm",
    "RMSNorm",
    "ShortConv",
    "SwiGLU",
    "apply_rope",
    "l2_normalize",
    "rms_normalize",
    "segment_positions",
]
