"""Teaching views of a BB84 round: a pulse-by-pulse table and a one-photon step-through.

:func:`pulse_table` reads the first pulses of a :class:`~qkd_circuits.MeasurementRecord` (the
simulator's omniscient view: Alice's bits, everyone's bases, Eve's results, Bob's clicks) and
says for each whether sifting kept it and whether it is an error; :func:`format_pulse_table`
prints those rows as a fixed-width table with a legend (``qkd run --show-bits N`` prints it).

:func:`one_photon` follows a single photon through real circuits: Alice prepares it, Eve (if
asked) measures and resends, Bob rotates into his basis and measures; each step carries the
circuit so far and its :class:`qiskit.quantum_info.Statevector` (computed by
:mod:`qkd_circuits.quantum.photon`, the only part of this module that needs Qiskit, imported on
first call so that ``import qkd_circuits`` stays Qiskit-free).

The table shows raw bits, sifted key bits included: it is for classroom rounds and studies.
A key made by a simulator or a cloud QPU is known to whoever runs it anyway; never print the
table of a round whose key you mean to use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .exceptions import ConfigurationError
from .records import MeasurementRecord

__all__ = ["BASIS_SYMBOLS", "EVE_BASIS_SYMBOLS", "format_pulse_table", "one_photon", "pulse_table"]

#: How the table writes a party's basis code: 0 = Z (rectilinear, "+"), 1 = X (diagonal, "x").
BASIS_SYMBOLS = ("+", "x")
#: Eve's basis codes: Z, X, and the Breidbart basis between the two ("B").
EVE_BASIS_SYMBOLS = ("+", "x", "B")

_LEGEND = ("bases: + = Z (rectilinear), x = X (diagonal), B = Breidbart (Eve, between the two); "
           "- = nothing (no click, or Eve idle); kept = Bob clicked in Alice's basis (sifted); "
           "error = kept and Bob's bit differs from Alice's")


def _check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise ConfigurationError(f"the number of pulses to show must be an integer >= 1, got {n!r}")
    if n < 1:
        raise ConfigurationError(f"the number of pulses to show must be >= 1, got {n}")
    return n


def pulse_table(record: MeasurementRecord, n: int) -> list[dict]:
    """The first ``n`` pulses of ``record``, one dict per pulse (all of them if the record is shorter).

    Each row holds ``index`` (the pulse's position, from 0), ``alice_bit`` (0/1), ``alice_basis``
    (``"+"`` or ``"x"``), ``bob_basis``, ``detected`` (Bob's detector clicked), ``bob_result``
    (0/1, ``None`` without a click), ``kept`` (the click was in Alice's basis: the pulse survives
    sifting) and ``error`` (kept and Bob's bit differs from Alice's).  A record with an
    eavesdropper adds ``eve_active`` (she attacked this pulse), ``eve_basis`` (``"+"``, ``"x"``
    or ``"B"`` for Breidbart) and ``eve_result`` (0/1), both ``None`` on pulses she let pass.  A
    weak-coherent-pulse record adds ``intensity``, the pulse's label (``"signal"``, ``"decoy"``...).

    Raises:
        ConfigurationError: ``n`` is not an integer >= 1.
        TypeError: ``record`` is not a :class:`~qkd_circuits.MeasurementRecord`.

    Examples:
        >>> import numpy as np
        >>> from qkd_circuits import MeasurementRecord, Provenance
        >>> prov = Provenance("aer", "aer", "prepared", "bound", 1, 2, (), 1, {}, "2026-01-01T00:00:00+00:00")
        >>> rec = MeasurementRecord(np.array([1, 0]), np.array([0, 1]), np.array([0, 0]), np.array([1, 0]),
        ...                         np.array([True, True]), prov)
        >>> [(r["alice_bit"], r["alice_basis"], r["bob_basis"], r["kept"]) for r in pulse_table(rec, 5)]
        [(1, '+', '+', True), (0, 'x', '+', False)]
    """
    if not isinstance(record, MeasurementRecord):
        raise TypeError(f"pulse_table reads a MeasurementRecord, got {type(record).__name__}")
    n = min(_check_count(n), len(record))
    kept = record.sifted_mask()[:n]
    rows = []
    for i in range(n):
        detected = bool(record.detected[i])
        row: dict[str, Any] = {
            "index": i,
            "alice_bit": int(record.alice_bits[i]),
            "alice_basis": BASIS_SYMBOLS[int(record.alice_bases[i])],
        }
        if record.intensity is not None:
            row["intensity"] = record.source.labels[int(record.intensity[i])]
        if record.has_eve:
            active = bool(record.eve_active[i])
            row["eve_active"] = active
            row["eve_basis"] = EVE_BASIS_SYMBOLS[int(record.eve_bases[i])] if active else None
            row["eve_result"] = int(record.eve_results[i]) if active else None
        row["bob_basis"] = BASIS_SYMBOLS[int(record.bob_bases[i])]
        row["detected"] = detected
        row["bob_result"] = int(record.bob_results[i]) if detected else None
        row["kept"] = bool(kept[i])
        row["error"] = bool(kept[i]) and int(record.bob_results[i]) != int(record.alice_bits[i])
        rows.append(row)
    return rows


# (row key, column title, how a value is written)
def _yes(value: Any) -> str:
    return "yes" if value else "-"


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


_COLUMNS = (
    ("index", "pulse", _plain),
    ("intensity", "intensity", _plain),
    ("alice_bit", "Alice bit", _plain),
    ("alice_basis", "Alice basis", _plain),
    ("eve_active", "Eve active", _yes),
    ("eve_basis", "Eve basis", _plain),
    ("eve_result", "Eve bit", _plain),
    ("bob_basis", "Bob basis", _plain),
    ("detected", "Bob click", _yes),
    ("bob_result", "Bob bit", _plain),
    ("kept", "kept", _yes),
    ("error", "error", _yes),
)


def format_pulse_table(rows: list[dict]) -> str:
    """``rows`` (from :func:`pulse_table`) as a fixed-width text table, a legend line below it and a
    closing line counting the pulses shown, kept and in error.

    The columns are those the rows hold (Eve's only for a record with an eavesdropper, the
    intensity only for weak coherent pulses); booleans are written ``yes`` or ``-``.

    Raises:
        ConfigurationError: a row lacks one of the keys every :func:`pulse_table` row has.
    """
    rows = list(rows)
    required = ("index", "alice_bit", "alice_basis", "bob_basis", "detected", "bob_result", "kept", "error")
    for row in rows:
        missing = [k for k in required if k not in row]
        if missing:
            raise ConfigurationError(f"not a pulse_table row: it lacks {missing}")
    present = set().union(*rows) if rows else set(required)
    columns = [c for c in _COLUMNS if c[0] in present]
    cells = [[fmt(row.get(key)) for key, _, fmt in columns] for row in rows]
    widths = [max([len(title), *(len(r[j]) for r in cells)]) for j, (_, title, _) in enumerate(columns)]
    lines = ["  ".join(title.rjust(w) for (_, title, _), w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    kept = sum(bool(r["kept"]) for r in rows)
    errors = sum(bool(r["error"]) for r in rows)
    lines.append(_LEGEND)
    lines.append(f"{len(rows)} pulses shown: {kept} kept, {errors} of them in error")
    return "\n".join(lines)


def one_photon(bit: int, basis: str | int, bob_basis: str | int, *, eve_basis: str | int | None = None,
               seed: int | None = None, eve_outcome: int | None = None) -> list:
    """One photon through BB84, step by step: a list of
    :class:`~qkd_circuits.quantum.photon.PhotonStep` (title, circuit so far, state vector,
    explanation, Z-measurement probabilities, outcome).  Alice prepares, Eve (if ``eve_basis``
    is given) measures and resends, Bob rotates into his basis, Bob measures.  ``seed`` seeds
    Eve's outcome; ``eve_outcome`` picks it (one branch of her measurement).  See :func:`qkd_circuits.quantum.photon.one_photon`; needs Qiskit (imported on
    the first call).
    """
    photon = importlib.import_module("qkd_circuits.quantum.photon")
    return photon.one_photon(bit, basis, bob_basis, eve_basis=eve_basis, seed=seed, eve_outcome=eve_outcome)
