"""qkd_circuits: BB84 quantum key distribution on real Qiskit circuits.

The public API is what ``__all__`` lists; everything else is private, except the raw primitives
(Cascade, universal hashing, Toeplitz hashing, message codec), which :mod:`qkd_circuits.hazmat`
exposes for studies and tests: sharp tools, easy to misuse.  Names that need Qiskit
(circuits, backends, execution) are loaded on first use, so the classical layers import without
it.

A key made on a simulator or on a cloud QPU is known to whoever runs that simulator or QPU:
simulated keys are for study, not for secrets.
"""

from __future__ import annotations

import importlib

from . import channel as _channel  # noqa: F401  (import order: channel before session)
from . import decoy, hybrid
from .analysis import keyrate
from .channel import attacks
from .channel.pool import AuthKeyPool, create_psk_file
from .exceptions import (
    AbortReason,
    AuthenticationError,
    BackendError,
    ConfigurationError,
    KeyPoolExhausted,
    KeyStoreError,
    LinkHalted,
    MissingExtraError,
    ProtocolAborted,
    ProtocolError,
    QBERTooHigh,
    QKDError,
    RecordError,
)
from .hazmat.cascade import PRESETS as CASCADE_PRESETS
from .analysis.finite_key import KeyLength, binary_entropy, decoy_key_length, finite_key_length, shor_preskill_rate, variable_key_length
from .postprocessing.ledger import LeakageLedger
from .postprocessing.protocol import AliceParty, BobParty, FinalKey, PartyOutcome, PostProcessingConfig, drive
from .postprocessing.estimation import QBEREstimate, clopper_pearson, estimate_qber
from .quantum.models import Channel, Detector, EntanglingProbe, InterceptResend
from .records import (AliceView, BobView, EveView, MeasurementRecord, Provenance, WcpRecord, WeakCoherentSource,
                      load_record, sift_mask)
from .session import BB84Result, MitmResult, Report, postprocess, run_bb84, run_mitm, run_round
from . import teaching
from .teaching import format_pulse_table, one_photon, pulse_table

__version__ = "0.1.0"

_LAZY = {
    "build_exchange_circuit": "qkd_circuits.quantum.circuits",
    "ExchangeTemplate": "qkd_circuits.quantum.circuits",
    "resolve_backend": "qkd_circuits.quantum.backends",
    "Backend": "qkd_circuits.quantum.backends",
    "submit": "qkd_circuits.quantum.execution",
    "run_exchanges": "qkd_circuits.quantum.execution",
    "draw_choices": "qkd_circuits.quantum.execution",
    "PartyChoices": "qkd_circuits.quantum.execution",
    "PendingExchange": "qkd_circuits.quantum.execution",
    "PhotonNumberSplitting": "qkd_circuits.quantum.wcp",
    "run_wcp_exchanges": "qkd_circuits.quantum.wcp",
    "build_pulse_circuit": "qkd_circuits.quantum.wcp",
}

__all__ = sorted([
    "AbortReason", "AuthKeyPool", "AuthenticationError", "KeyPoolExhausted", "KeyStoreError", "MitmResult", "attacks",
    "LinkHalted",
    "create_psk_file",
    "hybrid", "decoy", "keyrate", "decoy_key_length", "run_mitm", "AliceParty", "AliceView", "BB84Result", "BackendError", "BobParty", "BobView", "CASCADE_PRESETS",
    "Channel", "ConfigurationError", "Detector", "EntanglingProbe", "EveView", "FinalKey",
    "InterceptResend", "KeyLength", "LeakageLedger", "MeasurementRecord", "MissingExtraError",
    "PartyOutcome", "PostProcessingConfig", "Provenance", "ProtocolAborted", "ProtocolError",
    "QBEREstimate", "QBERTooHigh", "QKDError", "RecordError", "Report", "binary_entropy",
    "clopper_pearson", "drive", "estimate_qber", "finite_key_length", "load_record", "postprocess",
    "run_bb84", "run_round", "shor_preskill_rate", "sift_mask", "WcpRecord", "WeakCoherentSource", "variable_key_length", "__version__",
    "teaching", "pulse_table", "format_pulse_table", "one_photon", *_LAZY,
])


def __getattr__(name: str):
    if name == "hazmat":  # the raw primitives: importable as qkd_circuits.hazmat, not in __all__
        return importlib.import_module("qkd_circuits.hazmat")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qkd_circuits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
