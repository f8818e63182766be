"""Measurement records: what a BB84 exchange produced, who may see which part, and where it came from.

A :class:`MeasurementRecord` holds one bool array per quantity, all of length ``n`` (one entry
per pulse, in the order the pulses were sent), plus a :class:`Provenance`.  Bases are coded
0 = Z (rectilinear), 1 = X (diagonal).  The record is the simulator's omniscient view; the
parties must only ever see their own part, which :meth:`MeasurementRecord.alice_view` and
:meth:`MeasurementRecord.bob_view` cut out.  Eve's results, when an eavesdropper ran, are kept
for scoring what she learned.

Files are ``.npz`` archives holding the arrays and a JSON header with the format name and version;
:func:`load_record` refuses anything else with a :class:`RecordError`.  A record holds Alice's
raw bits: treat a file of a real (non-simulated) exchange as secret.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .exceptions import RecordError

__all__ = ["MeasurementRecord", "Provenance", "AliceView", "BobView", "EveView", "load_record"]

FORMAT = "qkd_circuits.MeasurementRecord"
FORMAT_VERSION = 1

_PARTY_ARRAYS = ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected")
_EVE_ARRAYS = ("eve_active", "eve_bases", "eve_results")


@dataclass(frozen=True)
class Provenance:
    """Where a record came from.

    Attributes:
        backend: backend spec as given (``"aer"``, ``"fake:fake_manila"``, ``"ibm:ibm_torino"``...).
        backend_name: the backend's own name.
        mode: ``"prepared"`` or ``"qrng"``.
        schedule: how settings were mapped onto circuit executions (prepared mode).
        lanes: exchanges per shot.
        shots: total shots executed (over all pubs and jobs).
        job_ids: the jobs that produced the data.
        seed: the simulation seed, or ``None`` (parties' choices from ``secrets``).
        versions: package versions (qkd_circuits, qiskit, qiskit-aer, numpy, ...).
        created_utc: ISO 8601 time the results were collected.
        models: channel, detector and eavesdropper parameters.
        circuit: size of the executed (transpiled) circuit.
    """

    backend: str
    backend_name: str
    mode: str
    schedule: str
    lanes: int
    shots: int
    job_ids: tuple[str, ...]
    seed: int | None
    versions: dict
    created_utc: str
    models: dict = field(default_factory=dict)
    circuit: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["job_ids"] = list(self.job_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Provenance:
        try:
            return cls(**{**d, "job_ids": tuple(d["job_ids"])})
        except (TypeError, KeyError) as exc:
            raise RecordError(f"record provenance is malformed: {exc}") from None


@dataclass(frozen=True)
class AliceView:
    """What Alice knows: her bits and bases (bool arrays, length n)."""

    bits: np.ndarray
    bases: np.ndarray


@dataclass(frozen=True)
class BobView:
    """What Bob knows: his bases, his results and which pulses clicked (bool arrays, length n).

    ``results`` is meaningless where ``detected`` is False.
    """

    bases: np.ndarray
    results: np.ndarray
    detected: np.ndarray


@dataclass(frozen=True)
class EveView:
    """What an eavesdropper recorded.

    Attributes:
        active: bool, the pulses she attacked.
        bases: int8, her basis per pulse (0 Z, 1 X, 2 Breidbart).
        results: bool, her measurement result, read as her guess of Alice's bit.
    """

    active: np.ndarray
    bases: np.ndarray
    results: np.ndarray


@dataclass(frozen=True, eq=False)
class MeasurementRecord:
    """The outcome of ``n`` BB84 pulses.

    Attributes:
        alice_bits, alice_bases, bob_bases, bob_results, detected: bool arrays, shape (n,).
        eve_active, eve_results: bool arrays, shape (n,), or ``None`` without an eavesdropper.
        eve_bases: int8 array, shape (n,), or ``None``.
        provenance: a :class:`Provenance`.
    """

    alice_bits: np.ndarray
    alice_bases: np.ndarray
    bob_bases: np.ndarray
    bob_results: np.ndarray
    detected: np.ndarray
    provenance: Provenance
    eve_active: np.ndarray | None = None
    eve_bases: np.ndarray | None = None
    eve_results: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = None
        for name in _PARTY_ARRAYS + _EVE_ARRAYS:
            a = getattr(self, name)
            if a is None and name in _EVE_ARRAYS:
                continue
            a = np.asarray(a)
            want = np.int8 if name == "eve_bases" else np.bool_
            if a.dtype != want or a.ndim != 1:
                raise RecordError(f"{name} must be a 1-D {np.dtype(want).name} array, got {a.dtype}{a.shape}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise RecordError(f"{name} has {a.shape[0]} entries, expected {n} like alice_bits")
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        present = [getattr(self, k) is not None for k in _EVE_ARRAYS]
        if any(present) and not all(present):
            raise RecordError("eve_active, eve_bases and eve_results come together or not at all")

    def __len__(self) -> int:
        return int(self.alice_bits.shape[0])

    def __repr__(self) -> str:  # never print key material
        eve = ", eve" if self.has_eve else ""
        return (
            f"MeasurementRecord(n={len(self)}, detected={int(self.detected.sum())}, "
            f"backend={self.provenance.backend!r}, mode={self.provenance.mode!r}{eve})"
        )

    @property
    def has_eve(self) -> bool:
        return self.eve_active is not None

    def alice_view(self) -> AliceView:
        return AliceView(bits=self.alice_bits, bases=self.alice_bases)

    def bob_view(self) -> BobView:
        return BobView(bases=self.bob_bases, results=self.bob_results, detected=self.detected)

    def eve_view(self) -> EveView | None:
        if not self.has_eve:
            return None
        return EveView(active=self.eve_active, bases=self.eve_bases, results=self.eve_results)

    def save(self, path: str | Path) -> Path:
        """Write the record to ``path`` (``.npz``); returns the path written."""
        path = Path(path)
        header = {"format": FORMAT, "version": FORMAT_VERSION, "provenance": self.provenance.to_dict()}
        arrays = {k: getattr(self, k) for k in _PARTY_ARRAYS + _EVE_ARRAYS if getattr(self, k) is not None}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, header=np.array(json.dumps(header)), **arrays)
        return path


def load_record(path: str | Path) -> MeasurementRecord:
    """Read a record written by :meth:`MeasurementRecord.save`.

    Raises:
        RecordError: the file is missing, not an npz archive, truncated, of another format or
            version, or its arrays are inconsistent.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "header" not in npz.files:
                raise RecordError(f"{path} is not a qkd_circuits measurement record (no header)")
            header = json.loads(str(npz["header"]))
            arrays = {k: npz[k] for k in npz.files if k != "header"}
    except RecordError:
        raise
    except FileNotFoundError:
        raise RecordError(f"no record file at {path}") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise RecordError(f"{path} is not a readable record (corrupt or truncated): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordError(f"{path} is not a qkd_circuits measurement record")
    if header.get("version") != FORMAT_VERSION:
        raise RecordError(
            f"{path} is record format version {header.get('version')!r}; this qkd_circuits "
            f"reads version {FORMAT_VERSION}: load it with the version that wrote it"
        )
    missing = [k for k in _PARTY_ARRAYS if k not in arrays]
    if missing:
        raise RecordError(f"{path} lacks the arrays {missing}")
    provenance = Provenance.from_dict(header.get("provenance", {}))
    return MeasurementRecord(provenance=provenance, **arrays)
