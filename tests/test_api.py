"""The public surface and the layering rules."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import qkd_circuits as qkd

PUBLIC = {
    "AuthKeyPool", "AuthenticationError", "KeyPoolExhausted", "KeyStoreError", "MitmResult", "attacks",
    "create_psk_file", "LinkHalted",
    "hybrid", "run_mitm", "AliceParty", "AliceView", "BB84Result", "Backend", "BackendError", "BobParty", "BobView",
    "CASCADE_PRESETS", "Channel", "ConfigurationError", "Detector", "EntanglingProbe", "EveView",
    "ExchangeTemplate", "FinalKey", "InterceptResend", "KeyLength", "LeakageLedger",
    "MeasurementRecord", "MissingExtraError", "PartyChoices", "PartyOutcome", "PendingExchange",
    "PostProcessingConfig", "Provenance", "ProtocolAborted", "ProtocolError", "QBEREstimate",
    "QBERTooHigh", "QKDError", "RecordError", "Report", "__version__", "binary_entropy",
    "build_exchange_circuit", "clopper_pearson", "draw_choices", "drive", "estimate_qber",
    "finite_key_length", "load_record", "postprocess", "resolve_backend", "run_bb84", "run_exchanges",
    "shor_preskill_rate", "sift_mask", "submit", "variable_key_length",
    # Weak coherent pulses and decoy states (issue 6).
    "decoy", "keyrate", "decoy_key_length", "WeakCoherentSource", "PhotonNumberSplitting", "WcpRecord",
    "run_wcp_exchanges", "build_pulse_circuit",
}


def test_public_api_is_locked():
    assert set(qkd.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(qkd, name) is not None


def test_classical_layers_import_without_qiskit():
    # Make any qiskit import fail, then import everything that is not the quantum layer.
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "qiskit" or name.startswith(("qiskit.", "qiskit_")):
                    raise ImportError("qiskit is blocked in this test")
        sys.meta_path.insert(0, Block())
        import qkd_circuits, qkd_circuits.records, qkd_circuits.session, qkd_circuits.hazmat
        import qkd_circuits.postprocessing.estimation, qkd_circuits.postprocessing.sifting
        import qkd_circuits.postprocessing.protocol, qkd_circuits.channel, qkd_circuits.hybrid
        import qkd_circuits.channel.pki, qkd_circuits.keystore, qkd_circuits.analysis.keyrate, qkd_circuits.decoy
        import qkd_circuits.quantum.models
        assert not any(m == "qiskit" or m.startswith("qiskit") for m in sys.modules), sorted(sys.modules)
        try:
            qkd_circuits.build_exchange_circuit
        except ImportError as exc:
            print("lazy:", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lazy: qiskit is blocked" in proc.stdout  # the quantum layer really needs qiskit


def test_only_the_quantum_layer_imports_qiskit():
    from pathlib import Path

    root = Path(qkd.__file__).parent
    offenders = [
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if "quantum" not in p.parts and ("import qiskit" in p.read_text() or "from qiskit" in p.read_text())
    ]
    assert offenders == []


def test_aborted_report_raises_on_request():
    result = qkd.run_bb84(4000, eve=qkd.InterceptResend(1.0), seed=4)
    assert result.report.aborted
    with pytest.raises(qkd.QBERTooHigh, match="exceeds the abort threshold 0.1100") as info:
        result.report.raise_for_abort()
    assert info.value.upper > info.value.threshold == 0.11
