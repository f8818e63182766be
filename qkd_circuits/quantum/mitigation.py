"""Readout mitigation for device-QBER studies (``qkd submit --readout-mitigation``).

A device's readout error adds to the QBER a round measures: a qubit that reads 1 for a prepared 0
with probability e0 and 0 for a prepared 1 with probability e1 turns a pre-readout error rate q
for Alice's bit a into the observed rate

    P(error | a) = e_a + q_a (1 - e0 - e1)       so       q_a = (P(error | a) - e_a) / (1 - e0 - e1)

(e_0 = e0, e_1 = e1).  The calibration job prepares |0> and |1> on the qubits Bob measures (one
per lane, as the transpiled round circuit placed them) and counts both errors per qubit; the
mitigated QBER inverts the formula per lane and per Alice bit over the sifted pulses and averages
with their counts.  It is a **study figure** (what the QBER would be without readout error, i.e.
how much of it is the channel and the gates): it is printed beside the report and never reaches
the key length, which is bounded from the parties' disclosed sample as measured.  With finite
calibration shots it is itself an estimate and can fall slightly below 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigurationError

__all__ = ["DEFAULT_CALIBRATION_SHOTS", "bob_qubits", "calibration_circuits", "confusion", "mitigated_qber"]

#: Shots per calibration circuit (|0...0> and |1...1>): a readout error of 3% is then known to
#: about ±0.2 percentage points (one standard deviation).
DEFAULT_CALIBRATION_SHOTS = 8192
CALIBRATION_REGISTER = "cal"


def bob_qubits(circuit: Any) -> list[int]:
    """The physical qubits a transpiled round circuit measures into ``bob_result``, in lane order."""
    register = next((r for r in circuit.cregs if r.name == "bob_result"), None)
    if register is None:
        raise ConfigurationError("the circuit measures no bob_result register")
    qubits = [None] * register.size
    for inst in circuit.data:
        if inst.operation.name == "measure" and inst.clbits[0] in register:
            qubits[register.index(inst.clbits[0])] = circuit.find_bit(inst.qubits[0]).index
    if any(q is None for q in qubits):
        raise ConfigurationError("a lane's bob_result is never measured")
    return qubits


def calibration_circuits(device: Any, qubits: list[int]) -> list[Any]:
    """Two ISA circuits on ``device``: measure ``qubits`` after preparing all |0>, then all |1>."""
    from qiskit import ClassicalRegister, QuantumCircuit
    from qiskit.transpiler import generate_preset_pass_manager

    out = []
    for prepared in (0, 1):
        register = ClassicalRegister(len(qubits), CALIBRATION_REGISTER)
        qc = QuantumCircuit(device.num_qubits)
        qc.add_register(register)
        for lane, q in enumerate(qubits):
            if prepared:
                qc.x(q)
            qc.measure(q, register[lane])
        pm = generate_preset_pass_manager(backend=device, optimization_level=0,
                                          initial_layout=list(range(device.num_qubits)))
        out.append(pm.run(qc))
    return out


def confusion(pub_results: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per qubit (lane order), e0 = P(read 1 | prepared 0) and e1 = P(read 0 | prepared 1)."""
    zeros, ones = (getattr(p.data, CALIBRATION_REGISTER).to_bool_array(order="little") for p in pub_results)
    return zeros.mean(axis=0), 1.0 - ones.mean(axis=0)


def mitigated_qber(record: Any, lane_of_pulse: np.ndarray, e0: np.ndarray, e1: np.ndarray) -> dict:
    """The sifted QBER as measured and with the readout error inverted (see the module docstring)."""
    from ..records import sift_mask

    sifted = sift_mask(record.alice_bases, record.bob_bases, record.detected)
    errors = record.bob_results != record.alice_bits
    n_total = int(sifted.sum())
    weighted, counted = 0.0, 0
    for lane in range(len(e0)):
        denominator = 1.0 - e0[lane] - e1[lane]
        if denominator <= 0:
            raise ConfigurationError(f"qubit of lane {lane} reads no better than a coin (e0 + e1 >= 1): "
                                     "its readout cannot be inverted")
        for bit, e_bit in ((0, e0[lane]), (1, e1[lane])):
            sel = sifted & (lane_of_pulse == lane) & (record.alice_bits == bit)
            n = int(sel.sum())
            if n:
                weighted += n * (errors[sel].mean() - e_bit) / denominator
                counted += n
    return {
        "qber_measured": float(errors[sifted].mean()) if n_total else None,
        "qber_mitigated": float(weighted / counted) if counted else None,
        "readout_error_0to1": [float(x) for x in e0], "readout_error_1to0": [float(x) for x in e1],
        "sifted_bits": n_total,
        "method": "per-lane inversion of the calibrated readout confusion, q_a = (P(error|a) - e_a) / (1 - e0 - e1)",
        "note": "a study figure: the key length uses the parties' sampled QBER as measured",
    }
