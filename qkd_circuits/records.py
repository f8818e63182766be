"""Measurement records: what a BB84 exchange produced, who may see which part, and where it came from.

A :class:`MeasurementRecord` holds one array per quantity, all of length ``n`` (one entry per
pulse, in the order the pulses were sent), plus a :class:`Provenance`.  Bases are coded
0 = Z (rectilinear), 1 = X (diagonal) and, in a protocol with three bases (six-state), 2 = Y
(circular); the provenance's ``protocol`` says which (:mod:`qkd_circuits.protocols`) and a
record holding a code its protocol lacks is refused.  In a BBM92 record (entangled pairs)
``alice_bits`` are Alice's measurement results.  The record is the simulator's omniscient view; the
parties must only ever see their own part, which :meth:`MeasurementRecord.alice_view` and
:meth:`MeasurementRecord.bob_view` cut out.  Eve's results, when an eavesdropper ran, are kept
for scoring what she learned.  A weak-coherent-pulse run adds each pulse's intensity label and
the source those labels index (:class:`WcpRecord` is that record; :class:`WeakCoherentSource` describes the source).

The bit convention, here and wherever these arrays cross a layer boundary (views, sifting,
:class:`~qkd_circuits.postprocessing.protocol.FinalKey`): **bits and bases are** ``uint8``
**arrays of 0/1; masks** (``detected``, ``eve_active``, a sifting mask) **are** ``bool``.
Constructors accept either dtype for 0/1 data and convert once.  They also *copy* their inputs
and make the copy read-only: the caller's arrays stay as they were (writable), and nobody can
change a record behind its back.

Files are ``.npz`` archives holding the arrays and a JSON header with the format name and version;
:func:`load_record` refuses anything else — whatever the bytes — with a :class:`RecordError`.  On
disk the 0/1 arrays are stored as ``bool``, as every version of this format wrote them, so files
written earlier load unchanged.  A record holds Alice's raw bits: :meth:`MeasurementRecord.save`
writes it with :func:`~qkd_circuits.secretfile.write_secret_file` (mode 0600, atomic, never
through a symlink).
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import _provenance
from .exceptions import ConfigurationError, QKDError, RecordError
from .params import default
from .secretfile import write_secret_file

__all__ = ["MeasurementRecord", "Provenance", "AliceView", "BobView", "EveView", "WcpRecord", "WeakCoherentSource",
           "load_record", "sift_mask"]

FORMAT = "qkd_circuits.MeasurementRecord"
FORMAT_VERSION = 1

_PARTY_ARRAYS = ("alice_bits", "alice_bases", "bob_bases", "bob_results", "detected")
_EVE_ARRAYS = ("eve_active", "eve_bases", "eve_results")
#: What a weak-coherent-pulse run adds: Alice's intensity label per pulse, and the photon
#: numbers the simulator's source model drew (ground truth, like Eve's arrays).
_WCP_ARRAYS = ("intensity", "photons")

BIT = np.dtype(np.uint8)
MASK = np.dtype(np.bool_)
# Each array's dtype in a record and its views; what the integer codes may hold.
_DTYPES = {"alice_bits": BIT, "alice_bases": BIT, "bob_bases": BIT, "bob_results": BIT, "eve_results": BIT,
           "detected": MASK, "eve_active": MASK,
           "eve_bases": np.dtype(np.int8), "intensity": np.dtype(np.int8), "photons": np.dtype(np.int16)}
#: Basis codes: 0 = Z, 1 = X, 2 = Y (Y only in protocols with three bases: six-state).
_CODES = {"alice_bases": (0, 2), "bob_bases": (0, 2), "bases": (0, 2), "eve_bases": (0, 2), "intensity": (0, np.iinfo(np.int8).max), "photons": (0, np.iinfo(np.int16).max)}


def _frozen_copy(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """A read-only copy of ``value`` as a 1-D ``dtype`` array; ``value`` itself is left alone.

    0/1 data (bits, bases, masks) may come as ``bool`` or any integer dtype holding only 0 and 1;
    the integer codes (Eve's bases, intensity labels, photon numbers) as any integer dtype in range.
    """
    a = np.asarray(value)
    if a.ndim != 1:
        raise RecordError(f"{name} must be a 1-D array, got shape {a.shape}")
    if a.dtype != np.bool_ and not np.issubdtype(a.dtype, np.integer):
        raise RecordError(f"{name} must be a 1-D {dtype.name} array, got {a.dtype}{a.shape}")
    low, high = _CODES.get(name, (0, 1))
    if a.dtype != np.bool_ and a.size and (int(a.min()) < low or int(a.max()) > high):
        what = "0/1 values" if high == 1 else f"values in [{low}, {high}]"
        raise RecordError(f"{name} must hold {what}, got {a.dtype} values in [{a.min()}, {a.max()}]")
    out = np.array(a, dtype=dtype)  # always a copy
    out.setflags(write=False)
    return out


def _freeze_fields(obj: Any, names: tuple[str, ...]) -> None:
    """Replace each named field of a frozen dataclass by its read-only copy (``None`` stays)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None:
            object.__setattr__(obj, name, _frozen_copy(name, value, _DTYPES[name]))


@dataclass(frozen=True)
class Provenance:
    """Where a record came from.

    Attributes:
        backend: backend spec as given (``"aer"``, ``"fake:fake_manila"``, ``"ibm:ibm_torino"``...).
        backend_name: the backend's own name.
        mode: ``"prepared"`` or ``"qrng"`` (:func:`~qkd_circuits.submit`), ``"wcp"`` (weak
            coherent pulses, :func:`~qkd_circuits.quantum.wcp.run_wcp_exchanges`).
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
        protocol: the :mod:`qkd_circuits.protocols` name of the round (``"bb84"``,
            ``"bbm92"``, ``"six-state"``); ``"bb84"`` in records written before this field existed.
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
    protocol: str = "bb84"

    def __post_init__(self) -> None:
        from .protocols import PROTOCOLS

        if self.protocol not in PROTOCOLS:
            raise RecordError(f"unknown protocol {self.protocol!r} in the provenance; known: {', '.join(PROTOCOLS)}")

    @classmethod
    def build(cls, backend: Any, *, mode: str, schedule: str, lanes: int, shots: int, seed: int | None,
              models: dict, simulator_seed_bits: int | None, job_ids=(), circuit: dict | None = None,
              protocol: str = "bb84") -> Provenance:
        """The provenance of a run that has just been collected: the one place records get one.

        ``backend`` is the resolved :class:`~qkd_circuits.quantum.backends.Backend` (its spec,
        name and whether it takes simulator seeds); the versions come from
        :func:`qkd_circuits._provenance.versions` and the time is now (UTC).  The quantum layer
        works out ``simulator_seed_bits`` from the backend and ``seed`` (one rule,
        ``qkd_circuits.quantum.execution.simulator_seed_bits``).
        """
        return cls(backend=backend.spec, backend_name=backend.name, mode=mode, schedule=schedule, lanes=int(lanes),
                   shots=int(shots), job_ids=tuple(str(j) for j in job_ids), seed=seed,
                   versions=_provenance.versions(),
                   created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   models=dict(models), circuit=dict(circuit or {}),
                   simulator_seed_bits=simulator_seed_bits, protocol=protocol)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values; ``protocol`` only when it is not ``"bb84"``, so that BB84
        records and reports read exactly as before the field existed (:meth:`from_dict` defaults it)."""
        d = asdict(self)
        d["job_ids"] = list(self.job_ids)
        if d["protocol"] == "bb84":
            del d["protocol"]
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
    "protocol": lambda v: isinstance(v, str),
}


@dataclass(frozen=True)
class AliceView:
    """What Alice knows: her bits and bases (``uint8`` 0/1 arrays, length n), and for weak coherent
    pulses the intensity code of each pulse (``int8``, an index into the source's labels).

    The arrays given are copied (as ``uint8``) and the copies made read-only.
    """

    bits: np.ndarray
    bases: np.ndarray
    intensity: np.ndarray | None = None  # weak coherent pulses: her intensity code per pulse

    def __post_init__(self) -> None:
        for name, value in (("bits", self.bits), ("bases", self.bases)):
            object.__setattr__(self, name, _frozen_copy(name, value, BIT))
        if self.intensity is not None:
            object.__setattr__(self, "intensity", _frozen_copy("intensity", self.intensity, _DTYPES["intensity"]))
            if self.intensity.shape != self.bits.shape:
                raise RecordError(f"intensity has {self.intensity.size} entries, bits {self.bits.size}")


@dataclass(frozen=True)
class BobView:
    """What Bob knows: his bases and results (``uint8`` 0/1) and which pulses clicked
    (``detected``, a ``bool`` mask), length n.

    ``results`` is meaningless where ``detected`` is False.  The arrays given are copied and the
    copies made read-only.
    """

    bases: np.ndarray
    results: np.ndarray
    detected: np.ndarray

    def __post_init__(self) -> None:
        for name, value, dtype in (("bases", self.bases, BIT), ("results", self.results, BIT),
                                   ("detected", self.detected, MASK)):
            object.__setattr__(self, name, _frozen_copy(name, value, dtype))


@dataclass(frozen=True)
class EveView:
    """What an eavesdropper recorded (copied and read-only, like the other views).

    Attributes:
        active: bool mask, the pulses she attacked.
        bases: int8, her basis per pulse (0 Z, 1 X, 2 Breidbart).
        results: uint8 0/1, her measurement result, read as her guess of Alice's bit.
    """

    active: np.ndarray
    bases: np.ndarray
    results: np.ndarray

    def __post_init__(self) -> None:
        for name, field_name in (("eve_active", "active"), ("eve_bases", "bases"), ("eve_results", "results")):
            object.__setattr__(self, field_name, _frozen_copy(field_name, getattr(self, field_name), _DTYPES[name]))


@dataclass(frozen=True, eq=False)
class MeasurementRecord:
    """The outcome of ``n`` BB84 pulses.

    Every array is copied on construction and the copy made read-only (the caller's stays
    writable); 0/1 data may be given as ``bool`` or integers (see the module docstring).

    Attributes:
        alice_bits, bob_results: ``uint8`` 0/1 arrays, shape (n,); alice_bases, bob_bases: ``uint8``
            basis codes, shape (n,): 0 Z, 1 X, and 2 Y where the provenance's protocol has three bases.
        detected: ``bool`` mask, shape (n,): Bob's detector clicked.
        provenance: a :class:`Provenance`.
        eve_active (``bool``), eve_bases (``int8``: 0 Z, 1 X, 2 Breidbart), eve_results
            (``uint8``): shape (n,), or all ``None`` without an eavesdropper.
        intensity: weak coherent pulses only: ``int8`` index into ``source.labels`` per pulse
            (Alice announces it after the quantum phase), or ``None``.
        source: with ``intensity``: the source the labels index (a
            :class:`~qkd_circuits.records.WeakCoherentSource`), else ``None``.
        photons: weak coherent pulses only: the photon numbers the simulator's source model drew
            (``int16``; ground truth for studies, no party sees it), or ``None``.
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
    intensity: np.ndarray | None = None
    source: Any = None
    photons: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in _PARTY_ARRAYS:
            if getattr(self, name) is None:
                raise RecordError(f"{name} is required")
        _freeze_fields(self, _PARTY_ARRAYS + _EVE_ARRAYS + _WCP_ARRAYS)
        n = self.alice_bits.shape[0]
        for name in _PARTY_ARRAYS + _EVE_ARRAYS + _WCP_ARRAYS:
            a = getattr(self, name)
            if a is not None and a.shape[0] != n:
                raise RecordError(f"{name} has {a.shape[0]} entries, expected {n} like alice_bits")
        present = [getattr(self, k) is not None for k in _EVE_ARRAYS]
        if any(present) and not all(present):
            raise RecordError("eve_active, eve_bases and eve_results come together or not at all")
        if (self.intensity is None) != (self.source is None):
            raise RecordError("intensity and source come together or not at all")
        from .protocols import get_protocol

        protocol = get_protocol(self.provenance.protocol)
        for name in ("alice_bases", "bob_bases"):
            try:
                protocol.check_bases(name, getattr(self, name))
            except ConfigurationError as exc:
                raise RecordError(str(exc)) from None
        if self.intensity is not None and n and int(self.intensity.max()) >= len(self.source.labels):
            raise RecordError(f"intensity labels index source.labels {self.source.labels}, "
                              f"got {int(self.intensity.max())}")

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
        return AliceView(bits=self.alice_bits, bases=self.alice_bases, intensity=self.intensity)

    def bob_view(self) -> BobView:
        return BobView(bases=self.bob_bases, results=self.bob_results, detected=self.detected)

    def eve_view(self) -> EveView | None:
        if not self.has_eve:
            return None
        return EveView(active=self.eve_active, bases=self.eve_bases, results=self.eve_results)

    def sifted_mask(self) -> np.ndarray:
        """``bool`` mask, shape (n,): the pulses the record's protocol keeps (BB84, BBM92,
        six-state: Bob clicked and measured in Alice's basis, :func:`sift_mask`; E91: a key pair of
        settings); the simulator's view."""
        from .protocols import get_protocol

        return get_protocol(getattr(self.provenance, "protocol", None) or "bb84").sift(
            self.alice_bases, self.bob_bases, self.detected)

    def label_mask(self, label: str) -> np.ndarray:
        """``bool`` mask, shape (n,): the pulses Alice sent at intensity ``label``."""
        if self.source is None:
            raise RecordError("this record has no intensity labels (it is not a weak-coherent-pulse run)")
        if label not in self.source.labels:
            raise RecordError(f"no intensity {label!r} in this record; its labels are {self.source.labels}")
        return self.intensity == self.source.labels.index(label)

    def party_subset(self, mask: np.ndarray) -> MeasurementRecord:
        """The pulses where ``mask`` holds, as a plain record with the same provenance.

        Only the parties' arrays are kept (what post-processing reads): the intensity labels and
        the simulator's ground truth (Eve's arrays, photon numbers) are left out.
        """
        mask = _frozen_copy("mask", mask, MASK)
        if mask.shape[0] != len(self):
            raise RecordError(f"mask has {mask.shape[0]} entries, expected {len(self)}")
        return MeasurementRecord(provenance=self.provenance, **{k: getattr(self, k)[mask] for k in _PARTY_ARRAYS})

    def save(self, path: str | Path) -> Path:
        """Write the record to ``path`` (``.npz``; an existing file is replaced); returns the path.

        The file is secret (it holds Alice's raw bits): mode 0600, written atomically, a symlink
        at ``path`` replaced rather than followed (:func:`~qkd_circuits.secretfile.write_secret_file`).
        """
        header = {"format": FORMAT, "version": FORMAT_VERSION, "provenance": self.provenance.to_dict()}
        if self.source is not None:
            header["source"] = self.source.to_dict()
        arrays = {k: getattr(self, k) for k in _PARTY_ARRAYS + _EVE_ARRAYS + _WCP_ARRAYS if getattr(self, k) is not None}
        # On disk 0/1 data are bool, as this format has always stored them (older readers load it);
        # bases with the Y code (2) of a three-basis protocol stay uint8.
        arrays = {k: a.astype(np.bool_) if _DTYPES[k] == BIT and not (a.size and int(a.max()) > 1) else a
                  for k, a in arrays.items()}
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
_ARCHIVE_MEMBERS = frozenset(("header",) + _PARTY_ARRAYS + _EVE_ARRAYS + _WCP_ARRAYS)
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
    if "source" not in header:
        return MeasurementRecord(provenance=provenance, **raw)
    source = header["source"]
    try:
        if not isinstance(source, dict) or set(source) != {"intensities", "probabilities"}:
            raise TypeError("expected intensities and probabilities")
        source = WeakCoherentSource(**source)
    except (TypeError, ValueError, QKDError) as exc:
        raise RecordError(f"{path}: the record's source is malformed: {exc}") from None
    return WcpRecord(provenance=provenance, source=source, **raw)


def sift_mask(alice_bases: np.ndarray, bob_bases: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """``bool`` mask, shape (n,): Bob clicked and the bases agree.

    Args:
        alice_bases, bob_bases: ``uint8`` (or ``bool``) basis codes, shape (n,), 0 = Z, 1 = X, 2 = Y.
        detected: ``bool`` mask, shape (n,).

    Examples:
        >>> sift_mask(np.array([0, 1, 1, 0], np.uint8), np.array([0, 0, 1, 0], np.uint8),
        ...           np.array([True, True, True, False]))
        array([ True, False,  True, False])
    """
    # Bases compare as integer codes (a three-basis protocol has a code 2); masks as bool.
    alice_bases, bob_bases = (np.asarray(a).astype(np.int16) for a in (alice_bases, bob_bases))
    detected = np.asarray(detected, dtype=bool)
    if not alice_bases.shape == bob_bases.shape == detected.shape or alice_bases.ndim != 1:
        raise ValueError(
            f"bases and detection flags must be 1-D arrays of one length, got shapes "
            f"{alice_bases.shape}, {bob_bases.shape}, {detected.shape}"
        )
    return detected & (alice_bases == bob_bases)


@dataclass(frozen=True)
class WeakCoherentSource:
    """Alice's attenuated laser with intensity modulation.

    Args:
        intensities: mean photon number per label, e.g. ``{"signal": 0.5, "decoy": 0.1,
            "vacuum": 0.0}``.  The label ``"signal"`` is required (its pulses make the key).
        probabilities: how often Alice picks each label (same keys; sums to 1).

    Examples:
        >>> s = WeakCoherentSource.vacuum_weak(mu=0.5, nu=0.1)
        >>> s.labels, s.mu, s.nu
        (('signal', 'decoy', 'vacuum'), 0.5, 0.1)
    """

    intensities: dict = field(default_factory=lambda: {"signal": 0.5})
    probabilities: dict = field(default_factory=lambda: {"signal": 1.0})

    def __post_init__(self) -> None:
        if set(self.intensities) != set(self.probabilities):
            raise ConfigurationError("intensities and probabilities must name the same labels")
        if "signal" not in self.intensities:
            raise ConfigurationError("the source needs a 'signal' intensity (its pulses make the key)")
        for label, mu in self.intensities.items():
            if not isinstance(mu, (int, float)) or isinstance(mu, bool) or not (0.0 <= mu <= 10.0):
                raise ConfigurationError(f"intensity {label!r} must be a mean photon number in [0, 10], got {mu!r}")
        total = 0.0
        for label, p in self.probabilities.items():
            if not isinstance(p, (int, float)) or isinstance(p, bool) or not (0.0 < p <= 1.0):
                raise ConfigurationError(f"probability of {label!r} must be in (0, 1], got {p!r}")
            total += p
        if abs(total - 1.0) > 1e-9:
            raise ConfigurationError(f"the intensity probabilities must sum to 1, got {total}")
        if self.intensities["signal"] <= 0:
            raise ConfigurationError("the signal intensity must be > 0")

    @classmethod
    def vacuum_weak(cls, mu: float = default("mu"), nu: float = default("nu"), *,
                    p_signal: float = default("p_signal"), p_decoy: float = default("p_decoy")) -> WeakCoherentSource:
        """Signal μ, weak decoy ν and vacuum (Ma et al. 2005), picked with the given odds."""
        if not nu < mu:
            raise ConfigurationError(f"the decoy nu={nu} must be weaker than the signal mu={mu}")
        return cls({"signal": mu, "decoy": nu, "vacuum": 0.0},
                   {"signal": p_signal, "decoy": p_decoy, "vacuum": 1.0 - p_signal - p_decoy})

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.intensities)

    @property
    def mu(self) -> float:
        return float(self.intensities["signal"])

    @property
    def nu(self) -> float | None:
        return float(self.intensities["decoy"]) if "decoy" in self.intensities else None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class WcpRecord(MeasurementRecord):
    """What a weak-coherent-pulse run produced: a :class:`~qkd_circuits.MeasurementRecord` whose
    ``intensity`` (index into ``source.labels``), ``source`` and ``photons`` are set.

    A thin subclass that adds no field and no logic of its own: it requires the weak-coherent
    fields, keeps its short repr, and names a few of the record's fields as this class always
    did (``clicked`` is ``detected``, ``eve_known`` is ``eve_active``; ``seed``, ``models`` and
    ``simulator_seed_bits`` are the provenance's).  ``photons`` and ``eve_*`` are the
    simulator's ground truth, for studies only: no party sees them.  Saved with
    :meth:`~qkd_circuits.MeasurementRecord.save`, it loads back as a ``WcpRecord``.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.intensity is None or self.photons is None:
            raise RecordError("a WcpRecord needs intensity, source and photons")

    def __repr__(self) -> str:  # never print key material (Alice's bits, Bob's results)
        return f"WcpRecord(pulses={len(self)}, clicks={int(self.detected.sum())}, seed={self.seed})"

    @property
    def clicked(self) -> np.ndarray:
        """Bob's detection (``bool``): :attr:`detected`."""
        return self.detected

    @property
    def eve_known(self) -> np.ndarray:
        """``bool``, the pulses of which Eve kept a photon: :attr:`eve_active`, all False without Eve."""
        return self.eve_active if self.has_eve else np.zeros(len(self), dtype=bool)

    @property
    def seed(self) -> int | None:
        return self.provenance.seed

    @property
    def models(self) -> dict:
        return self.provenance.models

    @property
    def simulator_seed_bits(self) -> int | None:
        return self.provenance.simulator_seed_bits
