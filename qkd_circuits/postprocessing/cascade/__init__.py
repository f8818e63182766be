"""Cascade information reconciliation: presets (data, with sources) and the vectorised core."""

from .core import CascadeAlice, CascadeBob, CascadeStats, reconcile
from .presets import PRESETS, CascadePreset, block_size

__all__ = ["CascadeAlice", "CascadeBob", "CascadeStats", "CascadePreset", "PRESETS", "block_size", "reconcile"]
