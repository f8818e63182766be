"""The protocol seam: the generic circuit runner and the :class:`~qkd_circuits.protocols.Protocol` interface."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_circuits.exceptions import BackendError, ConfigurationError

qiskit = pytest.importorskip("qiskit")
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister  # noqa: E402
from qiskit.circuit import Parameter  # noqa: E402

from qkd_circuits.quantum.execution import sample_circuit  # noqa: E402


def _two_register_circuit():
    """Qubit 0 rotated by theta, qubit 1 flipped; register a = [q0], register b = [q0, q1]."""
    theta = Parameter("theta")
    qc = QuantumCircuit(QuantumRegister(2, "q"), ClassicalRegister(1, "a"), ClassicalRegister(2, "b"))
    qc.ry(theta, 0)
    qc.x(1)
    qc.measure(0, qc.cregs[0][0])
    qc.measure(0, qc.cregs[1][0])
    qc.measure(1, qc.cregs[1][1])
    return qc, theta


def test_sample_circuit_shapes_bit_order_and_bindings():
    qc, theta = _two_register_circuit()
    out = sample_circuit(qc, 64, seed=5, parameter_values={theta: np.array([[0.0], [np.pi]])})
    assert set(out) == {"a", "b"}
    assert out["a"].shape == (2, 64, 1) and out["b"].shape == (2, 64, 2)
    assert out["a"].dtype == bool
    # binding 0: theta = 0 -> q0 reads 0; binding 1: theta = pi -> q0 reads 1; q1 is always 1.
    assert not out["a"][0].any() and out["a"][1].all()
    assert (out["b"][..., 0] == out["a"][..., 0]).all()  # little-endian: clbit 0 is column 0
    assert out["b"][..., 1].all()


def test_sample_circuit_seed_reproduces_and_secret_seed_varies():
    theta = Parameter("theta")
    qc = QuantumCircuit(QuantumRegister(1, "q"), ClassicalRegister(1, "m"))
    qc.ry(theta, 0)
    qc.measure(0, 0)
    values = {theta: np.array([np.pi / 2])}
    one = sample_circuit(qc, 400, seed=11, parameter_values=values)["m"]
    two = sample_circuit(qc, 400, seed=11, parameter_values=values)["m"]
    assert one.shape == (400, 1)  # one value for one parameter: no binding axes
    assert np.array_equal(one, two)
    # seed=None: a fresh secret seed per job; two 400-shot fair-coin runs agree with probability 2^-400
    fresh = [sample_circuit(qc, 400, parameter_values=values)["m"] for _ in range(2)]
    assert not np.array_equal(*fresh)
    assert abs(one.mean() - 0.5) < 0.1  # 5 sigma of a fair coin at 400 shots is 0.125


def test_sample_circuit_misuse():
    qc, theta = _two_register_circuit()
    with pytest.raises(ConfigurationError, match="shots must be a whole number"):
        sample_circuit(qc, 0)
    with pytest.raises(ConfigurationError, match="seed must be a whole number"):
        sample_circuit(qc, 4, seed=-1, parameter_values={theta: [0.0]})
    with pytest.raises(ConfigurationError, match="named classical register"):
        sample_circuit(QuantumCircuit(1), 4)
    with pytest.raises(BackendError, match="refused the job"):
        sample_circuit(qc, 4, seed=1)  # a parameter left unbound


# -- the seam: BB84 through it is BB84 as before -------------------------------------------

from qkd_circuits.analysis import finite_key  # noqa: E402
from qkd_circuits.protocols import BB84, PROTOCOLS, get_protocol  # noqa: E402


def test_bb84_through_the_seam_is_the_analysis_modules_bb84():
    for n, k, q, leak in ((10**5, 10**4, 0.0, 0), (10**6, 10**5, 0.031, 2 * 10**5), (5000, 500, 0.09, 3000)):
        assert BB84.variable_key_length(n, k, q, leak) == finite_key.variable_key_length(n, k, q, leak)
        assert BB84.finite_key_length(n, k, q, leak) == finite_key.finite_key_length(n, k, q, leak)
    assert BB84.threshold == pytest.approx(0.1100, abs=1e-4)
    for q in (0.0, 0.05, 0.1):
        assert BB84.asymptotic_rate(q) == pytest.approx(finite_key.shor_preskill_rate(q))


def test_bb84_sift_requests_are_the_frames_bb84_always_sent():
    from qkd_circuits.hazmat import messages as m

    rng = np.random.default_rng(0)  # sim-rng: test data
    detected, bases = rng.integers(0, 2, 300, dtype=np.uint8), rng.integers(0, 2, 300, dtype=np.uint8)
    for name in ("bb84", "bbm92"):
        assert m.encode(m.SiftRequest(detected, PROTOCOLS[name].encode_bases(bases))) == \
            m.encode(m.SiftRequest(detected, bases))


def test_every_protocol_describes_itself_and_unknown_names_are_refused():
    for proto in PROTOCOLS.values():
        facts = proto.describe()
        assert facts["name"] == proto.name
        assert facts["estimates"] == (["qber", "chsh"] if proto.name == "e91" else ["qber"])
        assert 0.10 < facts["threshold"] < 0.13 and facts["abort_qber"] <= facts["threshold"]
        assert get_protocol(proto.name) is proto and get_protocol(proto) is proto
    with pytest.raises(ConfigurationError, match="unknown protocol 'b92'"):
        get_protocol("b92")


def test_run_round_bb84_is_run_bb84():
    from qkd_circuits.session import run_bb84, run_round

    one = run_round(8000, protocol="bb84", mode="prepared", seed=7).report
    two = run_bb84(8000, mode="prepared", seed=7).report
    assert one.protocol == two.protocol == "bb84"
    assert (one.sifted, one.final_key_bits, one.bob_key_sha256) == (two.sifted, two.final_key_bits, two.bob_key_sha256)
    assert "protocol" not in one.provenance  # BB84 records and reports read as before


@pytest.mark.parametrize("protocol", ["bbm92", "six-state"])
def test_qkd_run_protocol_json(protocol):
    import json

    from click.testing import CliRunner

    from qkd_circuits.cli import main

    ok = CliRunner().invoke(main, ["run", "--protocol", protocol, "-n", "30000", "--seed", "4", "--noise",
                                   "depolarizing:0.04", "--json"])
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)
    assert report["protocol"] == protocol == report["provenance"]["protocol"]
    assert report["final_key_bits"] > 0 and report["alice_key_sha256"] == report["bob_key_sha256"]
    assert report["qber"]["threshold"] == get_protocol(protocol).abort_qber
    aborted = CliRunner().invoke(main, ["run", "--protocol", protocol, "-n", "8000", "--seed", "4", "--eve",
                                        "intercept-resend:1", "--json"])
    assert aborted.exit_code == 3 and json.loads(aborted.output)["abort_reason"] == "qber_too_high"
    bad = CliRunner().invoke(main, ["run", "--protocol", protocol, "--mode", "qrng", "-n", "100"])
    assert bad.exit_code == 2 and "drop --mode" in bad.output
    lesson = CliRunner().invoke(main, ["run", "--protocol", protocol, "--classroom", "-n", "100"])
    assert lesson.exit_code == 2 and "BB84 lessons" in lesson.output


def test_source_options_are_bbm92s():
    from click.testing import CliRunner

    from qkd_circuits.cli import main

    bad = CliRunner().invoke(main, ["run", "--source", "alice", "-n", "100"])
    assert bad.exit_code == 2 and "--protocol bbm92" in bad.output


# -- the same channel attacks as BB84, for every protocol -------------------------------------

_ATTACKS = [
    ("tamper a data envelope to Alice", lambda a: lambda c: a.tamper(c, index=1, bit=8 * 40 + 3)),
    ("replay an old envelope", lambda a: lambda c: a.replay(c, index=3, old=1)),
    ("drop Alice's tag", lambda a: lambda c: a.drop(c, direction="to_bob")),
]


@pytest.mark.parametrize("protocol", ["bbm92", "six-state"])
@pytest.mark.parametrize("name, make", _ATTACKS, ids=[a[0] for a in _ATTACKS])
def test_channel_attacks_abort_with_no_key_and_the_next_round_recovers(protocol, name, make):
    from qkd_circuits.channel import attacks
    from qkd_circuits.channel.pool import AuthKeyPool
    from qkd_circuits.quantum.entangled import run_protocol_exchanges
    from qkd_circuits.quantum.models import Channel
    from qkd_circuits.session import postprocess

    alice_pool = AuthKeyPool.fresh(1024, bootstrap="psk", simulation=True)  # seeded records: a simulation pool
    bob_pool = alice_pool.copy()
    records = [run_protocol_exchanges(50_000, protocol=protocol, channel=Channel(depolarizing=0.03), seed=s)
               for s in (91, 92)]
    res = postprocess(records[0], alice_pool=alice_pool, bob_pool=bob_pool, attack=make(attacks))
    r = res.report
    assert r.aborted and r.abort_reason in ("authentication_failed", "qber_too_high") and r.protocol == protocol
    assert res.alice_key is None and res.bob_key is None and r.auth["pool_bits_added"] == 0
    nxt = postprocess(records[1], alice_pool=alice_pool, bob_pool=bob_pool)
    assert not nxt.report.aborted and nxt.alice_key.matches(nxt.bob_key)
    assert alice_pool.state_digest() == bob_pool.state_digest()
