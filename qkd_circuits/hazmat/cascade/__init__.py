"""Cascade information reconciliation: presets (data, with sources) and the vectorised core."""

from .core import CascadeAlice, CascadeBob, CascadeStats, parities_asked, reconcile
from .presets import PRESETS, CascadePreset, block_size

__all__ = ["CascadeAlice", "CascadeBob", "CascadeStats", "CascadePreset", "PRESETS", "block_size", "parities_asked",
           "reconcile"]
