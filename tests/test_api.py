"""The public surface and the layering rules."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import qkd_circuits as qkd

# The top-level names: the recipes, the records, the models, the exceptions (lazy: the Qiskit ones).
PUBLIC = {
    "AbortReason", "AliceParty", "AliceView", "AuthKeyPool", "AuthenticationError", "BB84Result", "Backend",
    "BackendError", "BobParty", "BobView", "CASCADE_PRESETS", "Channel", "ConfigurationError", "Detector",
    "EntanglingProbe", "EveView", "ExchangeTemplate", "FinalKey", "InterceptResend", "KeyLength",
    "KeyPoolExhausted", "KeyStoreError", "LeakageLedger", "LinkHalted", "MeasurementRecord", "MissingExtraError",
    "MitmResult", "PartyChoices", "PartyOutcome", "PendingExchange", "PhotonNumberSplitting",
    "PostProcessingConfig", "ProtocolAborted", "ProtocolError", "Provenance", "QBEREstimate", "QBERTooHigh",
    "QKDError", "RecordError", "Report", "WcpRecord", "WeakCoherentSource", "__version__", "attacks",
    "binary_entropy", "build_exchange_circuit", "build_pulse_circuit", "clopper_pearson", "create_psk_file",
    "decoy", "decoy_key_length", "draw_choices", "drive", "estimate_qber", "finite_key_length",
    "format_pulse_table", "hybrid", "keyrate", "load_record", "one_photon", "postprocess", "pulse_table",
    "resolve_backend", "run_bb84", "run_exchanges", "run_mitm", "run_round", "run_wcp_exchanges",
    "shor_preskill_rate", "sift_mask", "submit", "teaching", "variable_key_length",
}

# Every public namespace (each package and module without a leading underscore) and the names its
# ``__all__`` exports.  A name added to (or dropped from) an ``__all__``, and a new public module,
# fails test_every_namespace_is_locked until it is listed here: the public surface changes on purpose.
NAMESPACES: dict[str, set[str]] = {
    "qkd_circuits": PUBLIC,
    "qkd_circuits.analysis": {
        "decoy", "finite_decoy", "finite_key", "keyrate"
    },
    "qkd_circuits.analysis.chsh": {
        "ALICE_ANGLES", "ALICE_CODES", "ANGLES", "BOB_ANGLES", "BOB_CODES", "CHSHEstimate", "CHSH_TERMS",
        "CLASSICAL_BOUND", "DI_KEY_PAIR", "KEY_PAIRS", "Prediction", "TSIRELSON_BOUND", "bb84_key_rate",
        "chsh_value", "correlator", "di_key_rate", "di_privacy_cost", "di_threshold_qber", "estimate_chsh",
        "hoeffding_radius", "intercept_resend_chsh", "intercept_resend_correlator", "intercept_resend_qber",
        "key_qber", "predicted_statistics", "visibility_from_depolarizing", "visibility_from_misalignment",
        "visibility_from_pauli_probability"
    },
    "qkd_circuits.analysis.finite_decoy": {
        "BasisCounts", "DecoyCounts", "DecoyKeyLength", "EpsilonLedger", "EpsilonTerm", "METHODS", "SAMPLINGS",
        "decoy_key_length", "gamma_fung", "gamma_serfling", "hoeffding_delta", "lim2014", "rusca2018", "tau",
        "terms_total"
    },
    "qkd_circuits.analysis.decoy": {
        "DecoyAnalysis", "IntensityStats", "analyse", "intensity_statistics"
    },
    "qkd_circuits.analysis.finite_rate": {
        "FiniteRateCurve", "FiniteRatePoint", "METHODS", "MISALIGNMENT", "asymptotic_rate", "expected_counts",
        "finite_key_rate", "finite_key_rate_curve", "link_probabilities", "max_finite_distance_km"
    },
    "qkd_circuits.analysis.finite_key": {
        "EPSILON_MAX", "KeyLength", "TOLERANCE_STEP", "TOLERANCE_VALUES", "binary_entropy", "check_epsilon",
        "decoy_key_length", "finite_key_length", "minimum_sifted_bits", "optimal_length_at", "optimal_sample_size",
        "shor_preskill_rate", "variable_key_length"
    },
    "qkd_circuits.analysis.keyrate": {
        "DecoyEstimate", "KeyRateCurve", "KeyRatePoint", "LinkParameters", "METHODS", "PRESETS",
        "decoy_estimate", "error_gain", "gain", "key_rate", "key_rate_curve", "max_distance_km", "poisson",
        "rate_from_estimate", "reach_km", "shor_preskill_threshold"
    },
    "qkd_circuits.analysis.mdi": {
        "ANNOUNCEMENTS", "DecoyBounds", "FAIL", "MDI_PRESETS", "MdiLink", "PSI_MINUS", "PSI_PLUS", "announce",
        "bob_key_bits", "decoy_bounds", "decoy_key_rate", "gain_x", "gain_z", "key_rate", "key_rate_curve",
        "linear_optics_probabilities", "max_distance_km", "model_gains", "optimal_key_rate",
        "output_mode_probabilities", "phase_averaged_gain", "qber_by_basis", "sift_mask", "single_photon_error_x",
        "single_photon_yield"
    },
    "qkd_circuits.analysis.sarg04": {
        "PROTOCOLS", "PnsRatePoint", "four_state_gram", "four_state_usd_probability", "optimal_pns_mu",
        "pair_usd_probability", "pns_known_fraction", "pns_rate", "qber_depolarizing", "qber_intercept_resend",
        "sarg04_qber_from_bb84", "sifted_fraction", "usd_probability"
    },
    "qkd_circuits.channel": {
        "AuthKeyPool", "AuthSummary", "AuthenticatedAlice", "AuthenticatedBob", "DEFAULT_REPLENISH_BITS",
        "ENVELOPE_HEADER_BYTES", "EpsilonLedger", "LinkState", "PAD_BYTES_PER_ROUND", "Settlement", "TAG_BYTES",
        "admit", "create_psk_file", "view_digest"
    },
    "qkd_circuits.channel.admission": {
        "MAX_DIGESTS", "admit", "admit_view", "refuse_known_keys", "view_digest"
    },
    "qkd_circuits.channel.attacks": {
        "ATTACKS", "drop", "record", "reorder_replies", "replay", "tamper"
    },
    "qkd_circuits.channel.authenticated": {
        "AuthSummary", "AuthenticatedAlice", "AuthenticatedBob", "DEFAULT_REPLENISH_BITS",
        "ENVELOPE_HEADER_BYTES", "PAD_BYTES_PER_ROUND", "PkiIdentity", "Settlement", "TAG_BYTES",
        "open_envelope"
    },
    "qkd_circuits.channel.pki": {
        "ALGORITHMS", "MAX_CERT_BYTES", "MAX_CHAIN_CERTS", "PartyCredentials", "chain_from_bytes",
        "chain_to_bytes", "init_demo_pki", "load_credentials", "sign_transcript", "verify_transcript"
    },
    "qkd_circuits.channel.pool": {
        "AuthKeyPool", "DEFAULT_HALT_AFTER", "EpsilonLedger", "HASH_KEY_BYTES", "LinkState",
        "ROUND_SLICE_BYTES", "create_psk_file"
    },
    "qkd_circuits.channel.rounds": {
        "CHANNEL_ERRORS", "channel_failure", "check_pools", "drive_authenticated", "random_sources"
    },
    "qkd_circuits.channel.tcp": {
        "MAX_FRAME", "TcpClient", "TcpServer", "parse_address", "serve_connection", "serve_round"
    },
    "qkd_circuits.cli": {
        "EXIT_ABORTED", "EXIT_BACKEND", "EXIT_OK", "EXIT_USAGE", "main"
    },
    "qkd_circuits.cli.analysis": {
        "decoy_command", "keyrate"
    },
    "qkd_circuits.cli.auth": {
        "pki_group", "psk"
    },
    "qkd_circuits.cli.cloud": {
        "cancel", "collect", "status", "submit"
    },
    "qkd_circuits.cli.keyrate_plot": {
        "finite_label", "footer", "plot_keyrate", "provenance"
    },
    "qkd_circuits.cli.bb84": {
        "PROGRESS_MIN_EXCHANGES", "run"
    },
    "qkd_circuits.cli.errors": {
        "EXIT_ABORTED", "EXIT_BACKEND", "EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "exit_code",
        "exit_codes", "fail"
    },
    "qkd_circuits.cli.kme": {
        "kme"
    },
    "qkd_circuits.cli.kme_client": {
        "CLIENT_COMMANDS", "kme_audit", "kme_get_key", "kme_get_key_with_ids", "kme_status"
    },
    "qkd_circuits.cli.node": {
        "node_group"
    },
    "qkd_circuits.cli.options": {
        "AliasedOption", "ROUND", "SHORT", "json_option", "output_file", "param_option", "round_kwargs",
        "round_options"
    },
    "qkd_circuits.cli.party": {
        "alice", "bob"
    },
    "qkd_circuits.cli.report": {
        "echo_json", "json_default", "print_report", "simulation_notice"
    },
    "qkd_circuits.cli.sweep": {
        "sweep_command"
    },
    "qkd_circuits.decoy": {
        "COMPOSABLE_METHODS", "DecoyAnalysis", "DecoySessionResult", "IntensityStats", "analyse",
        "intensity_statistics", "link_models", "one_decoy_source", "run_decoy_session", "simulate_point"
    },
    "qkd_circuits.etsi014": {
        "Etsi014Error", "KeyIsWrapped", "KeyNotWrapped", "KmeClient", "KmeConfig", "KmeMetrics", "RunningKme",
        "WrapMismatch", "client_context", "init_tls_pki", "purge_expired", "server_context", "start_kme"
    },
    "qkd_circuits.etsi014.client": {
        "Etsi014Error", "KeyIsWrapped", "KeyNotWrapped", "KmeClient", "WrapMismatch"
    },
    "qkd_circuits.etsi014.metrics": {
        "CONTENT_TYPE_LATEST", "KmeMetrics"
    },
    "qkd_circuits.etsi014.runner": {
        "RunningKme", "start_kme"
    },
    "qkd_circuits.etsi014.server": {
        "JsonLogFormatter", "KmeConfig", "KmeRunner", "MIN_KEY_SIZE", "make_app", "make_metrics_app",
        "purge_expired", "recover", "settle"
    },
    "qkd_circuits.etsi014.tls": {
        "client_context", "init_tls_pki", "peer_identity", "server_context"
    },
    "qkd_circuits.etsi014.wrap": {
        "EXTENSION", "MAX_KEY_BYTES", "MIN_KEY_BYTES", "SUITE", "generate_wrapping_keypair",
        "load_wrapping_key", "load_wrapping_public", "public_key_of", "save_wrapping_key",
        "save_wrapping_public", "unwrap_delivered", "unwrap_key", "wrap_for_sae", "wrap_key"
    },
    "qkd_circuits.exceptions": {
        "AbortReason", "AuthenticationError", "BackendError", "ConfigurationError", "KeyPoolExhausted",
        "KeyStoreError", "LinkHalted", "MissingExtraError", "ProtocolAborted", "ProtocolError", "QBERTooHigh",
        "QKDError", "RecordError"
    },
    "qkd_circuits.hazmat": {
        "CascadeAlice", "CascadeBob", "CascadePreset", "CascadeStats", "MESSAGE_TYPES", "PRESETS",
        "PolyHash128", "block_size", "decode", "derive_permutation", "encode", "gf128_mul", "ghash",
        "inverse_permutation", "reconcile", "toeplitz_hash", "toeplitz_hash_naive"
    },
    "qkd_circuits.hazmat.amplification": {
        "MAX_KEY_BITS", "toeplitz_hash", "toeplitz_hash_naive"
    },
    "qkd_circuits.hazmat.cascade": {
        "CascadeAlice", "CascadeBob", "CascadePreset", "CascadeStats", "PRESETS", "block_size",
        "parities_asked", "reconcile"
    },
    "qkd_circuits.hazmat.cascade.core": {
        "CascadeAlice", "CascadeBob", "CascadeStats", "MAX_BITS", "parities_asked", "reconcile"
    },
    "qkd_circuits.hazmat.cascade.presets": {
        "CascadePreset", "PRESETS", "block_size"
    },
    "qkd_circuits.hazmat.messages": {
        "AmplifyReply", "AmplifyRequest", "EstimateReply", "EstimateRequest", "IntensityReply",
        "IntensityRequest", "KeyErrorsAck", "KeyErrorsRequest", "MAX_FRAME_BYTES", "MESSAGE_TYPES",
        "RangeParitiesReply", "RangeParitiesRequest", "ReconcileAck", "ReconcileStart", "SiftReply",
        "SiftRequest", "TestBitsReply", "TestBitsRequest", "TopParitiesReply", "TopParitiesRequest",
        "VerifyReply", "VerifyRequest", "decode", "encode", "register",
    },
    "qkd_circuits.hazmat.shuffle": {
        "derive_permutation", "inverse_permutation"
    },
    "qkd_circuits.hazmat.universal_hash": {
        "BLOCK_BYTES", "ONE", "PolyHash128", "PolyHash128Stream", "R", "gf128_mul", "ghash"
    },
    "qkd_circuits.hybrid": {
        "HybridInitiator", "HybridKey", "HybridResponder", "LABEL", "MAX_MESSAGE_BYTES", "initiate",
        "offer_key_ID", "respond"
    },
    "qkd_circuits.keystore": {
        "AlreadyDelivered", "KeyStore", "KeysNotFound", "NotARecipient", "NotEnoughKeys",
        "ReservationCancelled", "StoreFull", "StoreUnavailable", "StoredKey", "cut_key", "store_final_key"
    },
    "qkd_circuits.keystore.store": {
        "AlreadyDelivered", "KeyStore", "KeysNotFound", "NotARecipient", "NotEnoughKeys",
        "ReservationCancelled", "StoreFull", "StoreUnavailable", "StoredKey", "cut_key", "store_final_key"
    },
    "qkd_circuits.network": {
        "PartyResult", "party_result", "run_alice", "run_bob"
    },
    "qkd_circuits.node": {
        "Node", "NodeConfig", "default_config_text", "load_config", "read_status"
    },
    "qkd_circuits.node.config": {
        "CONFIG_NAME", "DEFAULTS", "NodeConfig", "default_config_text", "load_config"
    },
    "qkd_circuits.node.quantum": {
        "MAX_PULSES", "PulseSource", "READY", "decode_pulses", "encode_pulses", "measure_pulses"
    },
    "qkd_circuits.node.service": {
        "Node", "STATUS_NAME"
    },
    "qkd_circuits.params": {
        "BB84", "DECOY", "DECOY_EXCHANGES", "PARAMETERS", "Parameter", "default", "defaults"
    },
    "qkd_circuits.postprocessing": {
        "decoy_rounds", "estimation", "ledger", "protocol"
    },
    "qkd_circuits.postprocessing.decoy_rounds": {
        "DecoyProtocol", "KEY_BASIS", "TEST_BASIS", "count_bits"
    },
    "qkd_circuits.postprocessing.estimation": {
        "QBEREstimate", "clopper_pearson", "estimate_qber"
    },
    "qkd_circuits.postprocessing.ledger": {
        "LeakageLedger"
    },
    "qkd_circuits.postprocessing.protocol": {
        "ABORT_REASONS", "AliceParty", "BobParty", "FinalKey", "LEAK_BUDGET_SLACK_BITS", "LeakBudget",
        "PartyOutcome", "PostProcessingConfig", "drive", "explain_abort", "leak_budget"
    },
    "qkd_circuits.quantum": set(),  # the names live in its modules, so that the package loads no qiskit
    "qkd_circuits.quantum.b92": {
        "B92Record", "b92_from_record", "build_b92_usd_circuit", "run_b92", "run_b92_usd_attack", "usd_unitary"
    },
    "qkd_circuits.quantum.backends": {
        "Backend", "DD_SEQUENCES", "DENSITY_MATRIX_MAX_QUBITS", "ExecutionOptions", "SAMPLER_MODES",
        "SIMULATOR_SEED_BITS", "draw_simulator_seed", "resolve_backend", "used_qubits", "worst_qubits"
    },
    "qkd_circuits.quantum.braket": {
        "LOCAL_SEED_BITS", "MANAGED_SIMULATORS", "SeededLocalSampler", "braket_cost_estimate", "braket_sampler",
        "braket_task", "describe_cost", "resolve_braket"
    },
    "qkd_circuits.quantum.circuits": {
        "ExchangeTemplate", "MODES", "build_exchange_circuit"
    },
    "qkd_circuits.quantum.e91": {
        "E91Choices", "E91Record", "E91Template", "PAIRS", "build_e91_circuit", "draw_e91_choices",
        "e91_measurement_record", "run_e91", "run_e91_exchanges"
    },
    "qkd_circuits.quantum.entangled": {
        "ARMS", "EntangledTemplate", "SOURCES", "build_bbm92_circuit", "build_six_state_circuit",
        "run_protocol_exchanges"
    },
    "qkd_circuits.quantum.execution": {
        "PartyChoices", "PendingExchange", "StoredJob", "SubmissionPlan", "draw_choices", "plan_submission",
        "run_exchanges", "sample_circuit", "submit"
    },
    "qkd_circuits.quantum.mdi": {
        "BELL_SOURCES", "InterceptRelay", "LinearOpticsRelay", "MAX_RELAY_PHOTONS", "MdiRecord", "RandomAnnouncer",
        "Relay", "build_pulse_pair_circuit", "build_relay_circuit", "relay_announcements", "run_mdi_exchanges",
        "run_mdi_wcp_exchanges"
    },
    "qkd_circuits.quantum.mitigation": {
        "DEFAULT_CALIBRATION_SHOTS", "bob_qubits", "calibration_circuits", "confusion", "mitigated_qber"
    },
    "qkd_circuits.quantum.models": {
        "Channel", "Detector", "Eavesdropper", "EntanglingProbe", "InterceptResend", "parse_eve", "parse_noise"
    },
    "qkd_circuits.quantum.photon": {
        "PhotonStep", "one_photon", "parse_basis"
    },
    "qkd_circuits.quantum.sarg04": {
        "FourStateUsd", "Sarg04Record", "StoredPhotonAttack", "build_four_state_usd_circuit",
        "build_stored_photon_circuit", "draw_pairs", "run_four_state_usd", "run_sarg04", "run_stored_photon_attack",
        "sarg04_from_record"
    },
    "qkd_circuits.quantum.usage": {
        "FAKE_SECONDS_PER_EXECUTION", "SLOW_RUN_SECONDS", "fake_run_seconds", "plan_warnings", "usage_estimate"
    },
    "qkd_circuits.quantum.wcp": {
        "PhotonNumberSplitting", "WcpRecord", "WeakCoherentSource", "build_pulse_circuit", "run_wcp_exchanges"
    },
    "qkd_circuits.protocols": {
        "BB84", "BBM92", "E91", "E91Protocol", "PROTOCOLS", "Protocol", "SIX_STATE", "SixState", "get_protocol",
        "six_state_privacy_cost",
        "six_state_rate"
    },
    "qkd_circuits.records": {
        "AliceView", "BobView", "EveView", "MeasurementRecord", "Provenance", "WcpRecord", "WeakCoherentSource",
        "load_record", "sift_mask"
    },
    "qkd_circuits.secretfile": {
        "SECRET_FILE_MODE", "read_secret_file", "wipe", "write_secret_file"
    },
    "qkd_circuits.session": {
        "BB84Result", "CascadeSummary", "EveSummary", "KeyLengthSummary", "MitmResult", "QberSummary", "Report",
        "RoundAuthSummary", "VerificationSummary", "classroom_report", "postprocess", "round_arguments", "run_bb84",
        "run_mitm", "run_round"
    },
    "qkd_circuits.sweep": {
        "COLUMNS", "PARAMETERS", "SweepSpec", "SweepSummary", "Task", "columns", "expand", "load_spec",
        "parse_spec", "read_results", "run_sweep", "run_task", "sidecars", "task_id"
    },
    "qkd_circuits.sweep.output": {
        "COLUMNS", "LEGACY_COLUMNS", "columns", "open_output", "read_results", "sidecars"
    },
    "qkd_circuits.sweep.runner": {
        "SweepSummary", "run_sweep", "run_task"
    },
    "qkd_circuits.sweep.spec": {
        "PARAMETERS", "SweepSpec", "Task", "expand", "load_spec", "parse_spec", "session_options", "task_id"
    },
    "qkd_circuits.teaching": {
        "BASIS_SYMBOLS", "EVE_BASIS_SYMBOLS", "format_pulse_table", "one_photon", "pulse_table"
    },
}


def _public_modules() -> list[str]:
    """Every module of the package on disk whose dotted name has no part with a leading underscore."""
    root = Path(qkd.__file__).parent
    names = []
    for path in root.rglob("*.py"):
        parts = ["qkd_circuits", *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        if not any(part.startswith("_") for part in parts):
            names.append(".".join(parts))
    return sorted(names)


def test_every_public_module_has_a_lock():
    found = set(_public_modules())
    assert (sorted(found - set(NAMESPACES)), sorted(set(NAMESPACES) - found)) == ([], []), (
        "(new public modules, locked modules that are gone): list each public module in NAMESPACES")


@pytest.mark.parametrize("name", sorted(NAMESPACES))
def test_every_namespace_is_locked(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    assert set(exported) == NAMESPACES[name], (
        f"{name}.__all__ changed: added {sorted(set(exported) - NAMESPACES[name])}, "
        f"dropped {sorted(NAMESPACES[name] - set(exported))}")
    for attr in exported:
        assert getattr(module, attr) is not None, f"{name}.{attr}"


def test_public_api_is_locked():
    assert set(qkd.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(qkd, name) is not None
    assert qkd.hazmat is importlib.import_module("qkd_circuits.hazmat")  # reachable, not in __all__
    assert "hazmat" not in qkd.__all__


def test_the_lock_fails_on_an_unlisted_name(monkeypatch):
    # The lock is an equality, not a subset: an exported name that is not listed is caught.
    module = importlib.import_module("qkd_circuits.hazmat")
    monkeypatch.setattr(module, "__all__", [*module.__all__, "toeplitz_hash_fast"])
    with pytest.raises(AssertionError, match="added \\['toeplitz_hash_fast'\\]"):
        test_every_namespace_is_locked("qkd_circuits.hazmat")


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
        import qkd_circuits.postprocessing.estimation
        import qkd_circuits.postprocessing.protocol, qkd_circuits.channel, qkd_circuits.hybrid
        import qkd_circuits.channel.pki, qkd_circuits.keystore, qkd_circuits.analysis.keyrate, qkd_circuits.decoy
        import qkd_circuits.quantum.models, qkd_circuits.params, qkd_circuits.analysis, qkd_circuits.network
        import qkd_circuits.cli, qkd_circuits.etsi014, qkd_circuits.node  # the command line starts without qiskit
        import qkd_circuits.analysis.chsh, qkd_circuits.analysis.mdi, qkd_circuits.analysis.sarg04
        import qkd_circuits.protocols, qkd_circuits.teaching
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
