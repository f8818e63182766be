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
