"""Sequence mixers behind one protocol (see :mod:`memarch.mixers.protocol`).

``available()`` lists the registered names; ``build(name, d_model=, num_heads=, rngs=,
**options)`` makes one. Importing this package registers every built-in mixer.
"""

from memarch.mixers import attention as _attention  # noqa: F401  (registers attention, swa)
from memarch.mixers import deltanet as _deltanet  # noqa: F401  (deltanet, gated_deltanet)
from memarch.mixers import fox as _fox  # noqa: F401  (Forgetting Transformer)
from memarch.mixers import gla as _gla  # noqa: F401
from memarch.mixers import hgrn2 as _hgrn2  # noqa: F401
from memarch.mixers import linear_attention as _linear_attention  # noqa: F401
from memarch.mixers import mom as _mom  # noqa: F401  (Mixture-of-Memories)
from memarch.mixers import titans as _titans  # noqa: F401  (titans_lmm, moneta, yaad, memora, …)
from memarch.mixers import titans_hybrid as _titans_hybrid  # noqa: F401  (titans_mag, titans_mal)
from memarch.mixers import titans_mac as _titans_mac  # noqa: F401
from memarch.mixers import trimkv as _trimkv  # noqa: F401  (TRIM-KV retention gates)
from memarch.mixers._registry import (
    MIXERS,
    available,
    build,
    config_class,
    letters,
    make_config,
    register,
    unregister,
)
from memarch.mixers.protocol import Mixer

MIXERS.seal()  # the mixers above are the built-ins

__all__ = [
    "MIXERS",
    "Mixer",
    "available",
    "build",
    "config_class",
    "letters",
    "make_config",
    "register",
    "unregister",
]
