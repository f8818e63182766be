"""Measurement records: what a BB84 exchange produced, who may see which part, and where it came from.

A :class:`MeasurementRecord` holds one bool array per quantity, all of length ``n`` (one entry
per pulse, in the order the pulses were sent), plus a :class:`Provenance`.  Bases are coded
0 = Z (rectilinear), 1 = X (diagonal).  The record is the simulator's omniscient view; the
parties must only ever see their own part, which :meth:`MeasurementRecord.alice_view` and
:meth:`MeasurementRecord.bob_view` cut out.  Eve's results, when an eavesdropper ran, are kept
for scoring what she learned.

Files are ``.npz`` archives holding the arrays and a JSON header with the format name and version;
:func:`load_record` refuses anything else — whatever the bytes — with a :class:`RecordError`.  A
record holds Alice's raw bits: :meth:`MeasurementRecord.save` writes it with
:func:`~qkd_circuits.secretfile.write_secret_file` (mode 0600, atomic, never through a symlink).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tokenize
import zipfile
import zlib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from .exceptions import RecordError
from .secretfile import write_secret_file

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
        seed: the simulation seed, or ``None`` (parties' choices from ``secrets``).  A seed is
            public: anyone who has it recomputes the record.
        versions: package versions (qkd_circuits, qiskit, qiskit-aer, numpy, ...).
        created_utc: ISO 8601 time the results were collected.
        models: channel, detector and eavesdropper parameters.
        circuit: size of the executed (transpiled) circuit.
        simulator_seed_bits: the entropy, in bits, of each simulator seed (Aer's
            ``seed_simulator``; one fresh seed per job).  64 when the seeds were drawn from
            :mod:`secrets` (no ``seed`` given): the seeds themselves are never recorded, since
            with them and the record's circuits anyone could recompute the raw bits.  0 when they
            were derived from a user ``seed`` (public, so no entropy).  ``None`` where the
            backend takes no simulator seed (hardware, the Braket simulator) and in records
            written before this field existed.
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
    simulator_seed_bits: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["job_ids"] = list(self.job_ids)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Provenance:
        """The inverse of :meth:`to_dict`; a missing, unknown or mistyped field raises
        :class:`RecordError` (a field added later may be missing: it takes its default)."""
        if not isinstance(d, dict):
            raise RecordError(f"record provenance is malformed: a JSON object was expected, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_PROVENANCE_TYPES))
        missing = sorted(f.name for f in fields(cls)
                         if f.name not in d and f.default is MISSING and f.default_factory is MISSING)
        if unknown or missing:
            raise RecordError(f"record provenance is malformed: unknown fields {unknown}, missing fields {missing}")
        for name, value in d.items():
            if not _PROVENANCE_TYPES[name](value):
                raise RecordError(f"record provenance is malformed: {name} = {value!r:.80}")
        return cls(**{**d, "job_ids": tuple(d["job_ids"])})


def _is_int(value, *, minimum: int = 0, optional: bool = False) -> bool:
    if value is None:
        return optional
    return type(value) is int and value >= minimum


# What a field must hold in a file (JSON types): checked on load, so that the code that reads a
# loaded record's provenance (seeds, lane counts...) never meets a value of the wrong type.
_PROVENANCE_TYPES = {
    "backend": lambda v: isinstance(v, str),
    "backend_name": lambda v: isinstance(v, str),
    "mode": lambda v: isinstance(v, str),
    "schedule": lambda v: isinstance(v, str),
    "lanes": lambda v: _is_int(v, minimum=1),
    "shots": lambda v: _is_int(v),
    "job_ids": lambda v: isinstance(v, list) and all(isinstance(j, str) for j in v),
    "seed": lambda v: _is_int(v, optional=True),
    "versions": lambda v: isinstance(v, dict),
    "created_utc": lambda v: isinstance(v, str),
    "models": lambda v: isinstance(v, dict),
    "circuit": lambda v: isinstance(v, dict),
    "simulator_seed_bits": lambda v: _is_int(v, optional=True),
}


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
        """Write the record to ``path`` (``.npz``; an existing file is replaced); returns the path.

        The file is secret (it holds Alice's raw bits): mode 0600, written atomically, a symlink
        at ``path`` replaced rather than followed (:func:`~qkd_circuits.secretfile.write_secret_file`).
        """
        header = {"format": FORMAT, "version": FORMAT_VERSION, "provenance": self.provenance.to_dict()}
        arrays = {k: getattr(self, k) for k in _PARTY_ARRAYS + _EVE_ARRAYS if getattr(self, k) is not None}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays)
        with buffer.getbuffer() as data:
            return write_secret_file(path, data, overwrite=True)


# What decoding an untrusted archive can raise (zip layer, inflate, npy headers, JSON); our own
# checks raise RecordError directly.  RuntimeError: zipfile on an encrypted member.
# NotImplementedError: an unsupported zip compression method or feature.  SyntaxError and
# tokenize.TokenError: numpy re-tokenizes an npy header that is not a Python literal (its
# "Python 2 header" fallback) and lets the tokenizer's errors through.
_DECODE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, OSError, EOFError, ValueError, KeyError,
                  struct.error, NotImplementedError, RuntimeError, OverflowError, SyntaxError, tokenize.TokenError)
_ARCHIVE_MEMBERS = frozenset(("header",) + _PARTY_ARRAYS + _EVE_ARRAYS)
# Deflate expands at most 1032:1; np.savez writes stored or deflated members only.
_MAX_EXPANSION = 1032
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _read_member(npz, name: str, file_bytes: int, path: Path) -> np.ndarray:
    """One array of the archive, after checking that its npy header declares no more data than
    the member can hold (a forged shape would otherwise allocate before reading fails)."""
    info = npz.zip.getinfo(f"{name}.npy")
    if info.compress_type not in _COMPRESSIONS:
        raise RecordError(f"{path}: member {name!r} uses zip compression method {info.compress_type}, "
                          f"not stored or deflate")
    with npz.zip.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise RecordError(f"{path}: member {name!r} is npy format version {version}, not 1.0 or 2.0")
    need = math.prod(shape) * dtype.itemsize
    if need > info.file_size or need > _MAX_EXPANSION * file_bytes:
        raise RecordError(f"{path}: array {name!r} declares {need} bytes, more than its member holds")
    return npz[name]


def load_record(path: str | Path) -> MeasurementRecord:
    """Read a record written by :meth:`MeasurementRecord.save`.

    Whatever the file holds, the only error raised is :class:`RecordError`.

    Raises:
        RecordError: the file is missing, not an npz archive, truncated, of another format or
            version, or its arrays or provenance are inconsistent.
    """
    path = Path(path)
    try:
        file_bytes = os.stat(path).st_size
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array (np.load returns it)
            raise RecordError(f"{path} is not a qkd_circuits measurement record (not an npz archive)")
        with loaded as npz:
            if "header" not in npz.files:
                raise RecordError(f"{path} is not a qkd_circuits measurement record (no header)")
            unexpected = sorted(set(npz.files) - _ARCHIVE_MEMBERS)
            if unexpected or len(npz.files) != len(set(npz.files)):
                raise RecordError(f"{path} is not a qkd_circuits measurement record (unexpected or repeated "
                                  f"members {unexpected or sorted(npz.files)})")
            raw = {k: _read_member(npz, k, file_bytes, path) for k in npz.files}
        header_array = raw.pop("header")
        if header_array.shape != () or header_array.dtype.kind != "U":
            raise RecordError(f"{path} is not a qkd_circuits measurement record (malformed header)")
        header = json.loads(str(header_array))
    except RecordError:
        raise
    except FileNotFoundError:
        raise RecordError(f"no record file at {path}") from None
    except RecursionError:  # JSON nested deeper than the interpreter's stack
        raise RecordError(f"{path} is not a readable record (its header is nested too deeply)") from None
    except MemoryError:
        raise RecordError(f"{path} is not a readable record (too large to load)") from None
    except _DECODE_ERRORS as exc:
        raise RecordError(f"{path} is not a readable record (corrupt or truncated): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordError(f"{path} is not a qkd_circuits measurement record")
    if header.get("version") != FORMAT_VERSION:
        raise RecordError(
            f"{path} is record format version {header.get('version')!r:.40}; this qkd_circuits "
            f"reads version {FORMAT_VERSION}: load it with the version that wrote it"
        )
    missing = [k for k in _PARTY_ARRAYS if k not in raw]
    if missing:
        raise RecordError(f"{path} lacks the arrays {missing}")
    provenance = Provenance.from_dict(header.get("provenance", {}))
    return MeasurementRecord(provenance=provenance, **raw)
