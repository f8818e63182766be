"""Cascade variants as data, each citing where it comes from.

Block sizes are functions of the agreed QBER estimate ``q``, the key length ``n`` and the pass
number ``i`` (1-based); both parties compute them from the same agreed values.  Sizes are
clamped to [1, n], and ``q`` to at least 1e-5 (a zero estimate would ask for infinite blocks).

References:
  * Brassard & Salvail, "Secret-key reconciliation by public discussion", EUROCRYPT '93:
    the original protocol, k1 ≈ 0.73/Q, k_i = 2·k_(i−1), four passes.
  * Yan, Ren, Peng, Sheng, Zhang, Zhao, Zhang, Guo, "Information reconciliation protocol in
    quantum key distribution system", ICNC 2008: k1 = 0.80/Q, k2 = 5·k1, then n/2; 10 passes.
  * Martinez-Mateo, Pacher, Peev, Ciurana, Martin, "Demystifying the information reconciliation
    protocol Cascade", QIC 15, 453 (2015), §4 ("Cascade opt. (7)" and "opt. (8)"): power-of-two
    first blocks, n/2 from the third (resp. fourth) pass, 14 passes, reuse of the sub-block
    parities disclosed earlier.  Their Fig. 6 puts opt. (7)/(8) near f ≈ 1.05–1.1 at n = 10^4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

__all__ = ["CascadePreset", "PRESETS", "block_size"]

_MIN_Q = 1e-5


@dataclass(frozen=True)
class CascadePreset:
    """A Cascade variant.

    Attributes:
        name: short name used on the command line and in reports.
        passes: number of Cascade passes.
        rule: block size as a function of (q, n, pass_number).
        sub_block_reuse: whether parities disclosed earlier are remembered and never asked
            again (``False`` re-asks them when cascading, as the original protocol does).
        source: where the parameters come from.
    """

    name: str
    passes: int
    rule: Callable[[float, int, int], float]
    sub_block_reuse: bool
    source: str


def _original(q: float, n: int, i: int) -> float:
    return math.ceil(0.73 / q) * 2 ** (i - 1)


def _yanetal(q: float, n: int, i: int) -> float:
    k1 = math.ceil(0.80 / q)
    return (k1, 5 * k1)[i - 1] if i <= 2 else n // 2


def _option7(q: float, n: int, i: int) -> float:
    k1 = 2 ** math.ceil(math.log2(1.0 / q))
    return (k1, 4 * k1)[i - 1] if i <= 2 else n // 2


def _option8(q: float, n: int, i: int) -> float:
    alpha = math.log2(1.0 / q) - 0.5
    if i == 1:
        return 2 ** math.ceil(alpha)
    if i == 2:
        return 2 ** math.ceil((alpha + 12.0) / 2.0)
    return 4096 if i == 3 else n // 2


PRESETS: dict[str, CascadePreset] = {
    p.name: p
    for p in (
        CascadePreset("original", 4, _original, False, "Brassard & Salvail 1993"),
        CascadePreset("yanetal", 10, _yanetal, False, "Yan et al. 2008 (Martinez-Mateo 2015: opt. 2)"),
        CascadePreset("option7", 14, _option7, True, "Martinez-Mateo et al. 2015, Cascade opt. (7)"),
        CascadePreset("option8", 14, _option8, True, "Martinez-Mateo et al. 2015, Cascade opt. (8)"),
    )
}


def block_size(preset: CascadePreset, q: float, n: int, pass_number: int) -> int:
    """Block size of ``pass_number`` (1-based) for a key of ``n`` bits at estimated QBER ``q``.

    Examples:
        >>> [block_size(PRESETS["original"], 0.01, 10_000, i) for i in (1, 2, 3)]
        [73, 146, 292]
        >>> [block_size(PRESETS["option8"], 0.02, 10_000, i) for i in (1, 2, 3, 4)]
        [64, 512, 4096, 5000]
    """
    q = max(float(q), _MIN_Q)
    return int(min(max(preset.rule(q, n, pass_number), 1), n))
