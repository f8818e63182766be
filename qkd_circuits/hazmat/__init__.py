"""Raw primitives of the classical post-processing, for studies, teaching and tests.

These are sharp: a Toeplitz seed or a hash key used twice, a permutation derived from a
secret, or a message decoded without a phase check, each breaks a guarantee that the recipes
in :mod:`qkd_circuits` (``run_bb84``, ``AliceParty``/``BobParty``) keep for you.
"""

from .amplification import toeplitz_hash, toeplitz_hash_naive
from .cascade import PRESETS, CascadeAlice, CascadeBob, CascadePreset, CascadeStats, block_size, reconcile
from .messages import MESSAGE_TYPES, decode, encode
from .shuffle import derive_permutation, inverse_permutation
from .universal_hash import PolyHash128, gf128_mul, ghash

__all__ = [
    "CascadeAlice", "CascadeBob", "CascadePreset", "CascadeStats", "MESSAGE_TYPES", "PRESETS", "PolyHash128",
    "block_size", "decode", "derive_permutation", "encode", "gf128_mul", "ghash", "inverse_permutation",
    "reconcile", "toeplitz_hash", "toeplitz_hash_naive",
]
