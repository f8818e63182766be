"""The leakage ledger: every bit either party disclosed about the key, by category."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LeakageLedger"]

#: Categories that count against the key through leak_EC (error correction, verification, and
#: statistics announced about the key's errors in decoy-state rounds); "sample" bits are disclosed
#: too, but they are removed from the key rather than subtracted.
EC_CATEGORIES = ("cascade_parity", "verification", "statistics")
CATEGORIES = ("sample",) + EC_CATEGORIES


@dataclass
class LeakageLedger:
    """Counts disclosed bits.  Each party keeps its own; the protocol checks they agree."""

    entries: dict = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    def record(self, category: str, bits: int) -> None:
        if category not in self.entries:
            raise ValueError(f"unknown leakage category {category!r}; use one of {CATEGORIES}")
        if bits < 0:
            raise ValueError(f"disclosed bits must be >= 0, got {bits}")
        self.entries[category] += int(bits)

    @property
    def sample_bits(self) -> int:
        return self.entries["sample"]

    @property
    def leak_ec(self) -> int:
        """leak_EC of the key-length formula: parity bits, verification tag bits, announced statistics."""
        return sum(self.entries[c] for c in EC_CATEGORIES)

    def to_dict(self) -> dict:
        return {**self.entries, "leak_ec": self.leak_ec}
