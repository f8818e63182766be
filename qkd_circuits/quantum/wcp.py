"""Weak coherent pulses, decoy intensities and the photon-number-splitting attack, as circuits.

A phase-randomised laser pulse of mean photon number μ is a Poisson mixture of Fock states:
``ρ_μ = Σ_n e^−μ μ^n / n! |n><n|`` (Lo, Ma & Chen 2005).  The simulator's source model draws
each pulse's photon number ``n`` from that distribution (the laser's physics, labelled
``# sim-rng``; Alice never learns it), and the pulse becomes a circuit with **n photon qubits,
all prepared in the same BB84 state** by ``RY(alice_theta)``.  Alice picks each pulse's
intensity (signal, weak decoy, vacuum) with her own random numbers, like her bits and bases.

Per photon, in the circuit::

    photon j: RY(alice_theta) ─[misalignment RY]─ RY(bob_theta) ─ M     (Bob's result for j)
    flag j:   RY(2 asin √η) ─ M                                        (photon j reaches a detector)

``η = η_channel · η_detector`` for the honest fibre: each photon is lost independently, so an
n-photon pulse clicks with probability ``1 − (1 − η)^n`` — the yield ``Y_n`` of Ma et al. 2005.
Bob has threshold detectors, one per outcome: the pulse clicks the detectors of the results of
its arriving photons, plus a dark count (probability ``p_d`` per pulse, on a random detector: a
swap-free ancilla pair ``dark``/``dark_bit``).  One clicked detector gives that result; both
(a double click) give a random bit from the ``tie`` ancilla (the squashing model).

Photon-number splitting (Brassard, Lütkenhaus, Mor & Sanders 2000), :class:`PhotonNumberSplitting`:
Eve measures the photon number without disturbing the polarisation, keeps **one photon** of
every multi-photon pulse in a quantum memory and sends the others to Bob over a lossless line;
single-photon pulses she blocks (or passes some, to match the expected click rate).  After the
bases are announced she measures her photon in Alice's basis: the circuit measures qubit 0 after
``RY(eve_theta)`` with ``eve_theta = −π/2 · alice_basis``, a parameter bound from Alice's
*announced* basis (her measurement is delayed until then, which the circuit expresses by
choosing the rotation from it).  She learns the bit exactly and causes no error.  Her forwarding
probabilities cannot depend on the intensity, which she cannot see: that is what decoys detect.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter

from ..exceptions import ConfigurationError
from ..records import MeasurementRecord, Provenance, WcpRecord, WeakCoherentSource  # noqa: F401  (re-exported)
from .backends import Backend, draw_simulator_seed, resolve_backend
from .execution import simulator_seed_bits
from .models import Channel, Detector

# WeakCoherentSource and WcpRecord live in qkd_circuits.records (no qiskit); re-exported here.
__all__ = ["WeakCoherentSource", "PhotonNumberSplitting", "WcpRecord", "build_pulse_circuit", "run_wcp_exchanges"]


def _ry_for_probability(p: float) -> float:
    return 2.0 * math.asin(math.sqrt(min(max(p, 0.0), 1.0)))


@dataclass(frozen=True)
class PhotonNumberSplitting:
    """Eve's PNS attack: keep one photon of each multi-photon pulse, forward the rest losslessly.

    Args:
        single_pass: probability she forwards a single-photon pulse (she learns nothing from it).
        multi_pass: probability she forwards a multi-photon pulse (minus her photon); otherwise
            she blocks it.

    Use :meth:`matching` to choose both so the signal's click rate is what the honest fibre
    would give: then the gain and QBER of the signal look normal.
    """

    single_pass: float = 0.0
    multi_pass: float = 1.0

    def __post_init__(self) -> None:
        for name in ("single_pass", "multi_pass"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ConfigurationError(f"{name} must be a probability, got {v!r}")

    @classmethod
    def matching(cls, mu: float, channel: Channel, detector: Detector) -> PhotonNumberSplitting:
        """The attack that reproduces the honest gain 1 − e^(−ημ) of intensity ``mu``.

        Eve's line is lossless, so a forwarded pulse of n photons (n − 1 after she keeps one)
        clicks with probability ``1 − (1 − η_det)^(n−1)``.  She forwards multi-photon pulses
        first (they tell her the bit), then single photons if that is not enough.
        """
        eta = channel.transmittance * detector.efficiency
        honest = 1.0 - math.exp(-eta * mu)
        ns = np.arange(2, 60)
        p = np.exp(-mu + ns * math.log(mu) - np.array([math.lgamma(n + 1) for n in ns]))
        multi = float(np.sum(p * (1.0 - (1.0 - detector.efficiency) ** (ns - 1))))
        single = mu * math.exp(-mu) * detector.efficiency
        if multi >= honest:
            return cls(single_pass=0.0, multi_pass=honest / multi)
        return cls(single_pass=min(1.0, (honest - multi) / single), multi_pass=1.0)

    def to_dict(self) -> dict:
        return {"kind": "pns", **asdict(self)}


def build_pulse_circuit(photons: int, *, channel: Channel | None = None, detector: Detector | None = None,
                        eve: PhotonNumberSplitting | None = None) -> QuantumCircuit:
    """The circuit of one pulse carrying ``photons`` photons (see the module docstring).

    Parameters: ``alice_theta``, ``bob_theta`` and, with PNS and >= 2 photons, ``eve_theta``.
    Registers (measured): ``result`` (one bit per photon), ``flag`` (photon reaches a detector),
    ``dark``, ``dark_bit``, ``tie``, and with PNS ``forward`` and (>= 2 photons) ``eve_result``.

    Examples:
        >>> qc = build_pulse_circuit(2, eve=PhotonNumberSplitting())
        >>> sorted(p.name for p in qc.parameters)
        ['alice_theta', 'bob_theta', 'eve_theta']
        >>> [c.name for c in qc.cregs]
        ['result', 'flag', 'dark', 'dark_bit', 'tie', 'forward', 'eve_result']
    """
    if not isinstance(photons, int) or photons < 0:
        raise ConfigurationError(f"photons must be a whole number >= 0, got {photons!r}")
    channel = channel or Channel()
    detector = detector or Detector()
    a_theta, b_theta = Parameter("alice_theta"), Parameter("bob_theta")
    qc = QuantumCircuit(name=f"wcp_{photons}")

    def reg(name: str, size: int) -> QuantumRegister:
        q = QuantumRegister(size, name)
        qc.add_register(q)
        qc.add_register(ClassicalRegister(size, name))
        return q

    kept = 1 if (eve is not None and photons >= 2) else 0  # Eve's photon: qubit 0
    photon = reg("result", max(photons, 1))
    flag = reg("flag", max(photons, 1))
    dark, dark_bit, tie = reg("dark", 1), reg("dark_bit", 1), reg("tie", 1)
    forward = reg("forward", 1) if eve is not None else None
    eve_result = reg("eve_result", 1) if kept else None

    if photons:
        qc.ry(a_theta, photon[:photons])
        # Eve's forwarding decision, then per-photon arrival at Bob's detector.
        if eve is None:
            eta = channel.transmittance * detector.efficiency
        else:
            eta = detector.efficiency  # Eve's line is lossless; Bob's own detector is not
            pass_p = eve.single_pass if photons == 1 else eve.multi_pass
            qc.ry(_ry_for_probability(pass_p), forward[0])
        for j in range(kept, photons):
            if channel.misalignment > 0:
                qc.ry(_ry_for_probability(channel.misalignment), photon[j])
            qc.ry(b_theta, photon[j])
            qc.ry(_ry_for_probability(eta), flag[j])
        if kept:
            e_theta = Parameter("eve_theta")
            qc.ry(e_theta, photon[0])  # measured after the basis announcement: in Alice's basis
    elif eve is not None:
        qc.ry(0.0, forward[0])
    # Bob's dark count: a click on a random detector; a coin for double clicks.
    if detector.dark_count_probability > 0:
        qc.ry(_ry_for_probability(detector.dark_count_probability), dark[0])
    qc.h(dark_bit[0])
    qc.h(tie[0])
    qc.measure(photon, qc.cregs[0])
    qc.measure(flag, qc.cregs[1])
    qc.measure(dark, qc.cregs[2])
    qc.measure(dark_bit, qc.cregs[3])
    qc.measure(tie, qc.cregs[4])
    if forward is not None:
        qc.measure(forward, qc.cregs[5])
    if eve_result is not None:
        qc.measure(photon[0], qc.cregs[6])
    return qc


def _choice_bits(n: int, rng: np.random.Generator | None) -> np.ndarray:
    """``n`` random 0/1 choices (``uint8``)."""
    if rng is None:
        return np.unpackbits(np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8))[:n]
    return rng.integers(0, 2, size=n).astype(np.uint8)  # sim-rng: seeded (int64 draws: the seeded stream kept)


def _biased_bits(n: int, p_one: float, rng: np.random.Generator | None) -> np.ndarray:
    """``n`` choices, each 1 with probability ``p_one`` (``uint8``), from :mod:`secrets` unless seeded."""
    if rng is None:
        u = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64) / float(2 ** 64)
    else:
        u = rng.random(n)  # sim-rng
    return (u < p_one).astype(np.uint8)


def _intensity_choices(source: WeakCoherentSource, n: int, rng: np.random.Generator | None) -> np.ndarray:
    cdf = np.cumsum([source.probabilities[label] for label in source.labels])
    if rng is None:
        u = np.frombuffer(secrets.token_bytes(8 * n), dtype=np.uint64) / float(2 ** 64)
    else:
        u = rng.random(n)  # sim-rng
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int8)


def run_wcp_exchanges(pulses: int, *, source: WeakCoherentSource | None = None, channel: Channel | None = None,
                      detector: Detector | None = None, eve: PhotonNumberSplitting | None = None,
                      seed: int | None = None, backend: str | Backend = "aer",
                      key_basis_probability: float = 0.5) -> WcpRecord:
    """Send ``pulses`` weak coherent pulses through circuits on a backend (Aer by default).

    Each pulse runs the :func:`build_pulse_circuit` of its photon number bound to its setting
    (Alice's bit and basis, Bob's basis).  As in the ``grouped`` schedule of
    :func:`~qkd_circuits.submit`, pulses with the same photon number and setting take
    consecutive shots of one binding.

    Args:
        pulses: pulses Alice sends.
        source: the laser and its intensities (default: signal only, μ = 0.5).
        channel, detector: the honest link (loss, misalignment) and Bob's detector.
        eve: a :class:`PhotonNumberSplitting` attack, or ``None``.
        seed: simulation seed for the parties' choices, the photon numbers and the simulator;
            ``None`` draws the parties' choices and (Aer, fake backends) a fresh 64-bit
            simulator seed per job from :mod:`secrets`.
        backend: ``"aer"`` or another backend spec (only Aer runs millions of shots quickly).
        key_basis_probability: the probability that Alice, and independently Bob, chooses basis 0
            (the key basis of a decoy round): 1/2 is BB84's symmetric choice; more makes the
            "efficient" BB84 of Lim et al. 2014, whose test basis is rarer.  Recorded in the
            record's models when it is not 1/2.
    """
    q = key_basis_probability
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q < 1.0:
        raise ConfigurationError(f"key_basis_probability must be in (0, 1), got {q!r}")
    if not isinstance(pulses, int) or isinstance(pulses, bool) or pulses < 1:
        raise ConfigurationError(f"pulses must be a whole number >= 1, got {pulses!r}")
    source = source or WeakCoherentSource()
    channel, detector = channel or Channel(), detector or Detector()
    if channel.has_noise_instructions or detector.has_noise_instructions:
        raise ConfigurationError("weak-coherent runs model loss, misalignment and dark counts; "
                                 "depolarizing/dephasing/bit-flip/readout noise is not supported here")
    if eve is not None and not isinstance(eve, PhotonNumberSplitting):
        raise ConfigurationError(f"weak-coherent runs take a PhotonNumberSplitting eve, got {type(eve).__name__}")
    backend = resolve_backend(backend)
    choice_rng = np.random.default_rng([seed, 11]) if seed is not None else None  # sim-rng
    laser_rng = np.random.default_rng([seed, 12] if seed is not None else None)  # sim-rng: the laser's physics
    intensity = _intensity_choices(source, pulses, choice_rng)
    bits = _choice_bits(pulses, choice_rng)
    if q == 0.5:  # the symmetric draw (and its seeded stream) as always
        a_bases, b_bases = (_choice_bits(pulses, choice_rng) for _ in range(2))
    else:
        a_bases, b_bases = (_biased_bits(pulses, 1.0 - q, choice_rng) for _ in range(2))
    mus = np.array([source.intensities[label] for label in source.labels])[intensity]
    photons = laser_rng.poisson(mus).astype(np.int16)

    setting = (bits.astype(np.int64) << 2) | (a_bases.astype(np.int64) << 1) | b_bases.astype(np.int64)
    k = np.arange(8)
    theta_a = np.pi * (k >> 2 & 1) + np.pi / 2 * (k >> 1 & 1)
    theta_b = -np.pi / 2 * (k & 1)
    theta_e = -np.pi / 2 * (k >> 1 & 1)

    clicked = np.zeros(pulses, dtype=bool)
    results = np.zeros(pulses, dtype=bool)
    eve_known = np.zeros(pulses, dtype=bool)
    eve_results = np.zeros(pulses, dtype=bool)
    job_ids, total_shots = [], 0
    sim_seeds = np.random.SeedSequence(seed).generate_state(int(photons.max()) + 1).tolist() if seed is not None else None
    for n in range(int(photons.max()) + 1):
        idx = np.flatnonzero(photons == n)
        if idx.size == 0:
            continue
        circuit = build_pulse_circuit(n, channel=channel, detector=detector, eve=eve)
        order = np.argsort(setting[idx], kind="stable")
        idx = idx[order]
        counts = np.bincount(setting[idx], minlength=8)
        params = {p.name: p for p in circuit.parameters}
        values = {}
        if "alice_theta" in params:
            values[params["alice_theta"]] = theta_a
            values[params["bob_theta"]] = theta_b
        if "eve_theta" in params:
            values[params["eve_theta"]] = theta_e
        prepared = backend.prepare(circuit)
        if sim_seeds is not None:
            sim_seed = int(sim_seeds[n])
        else:  # one job per sampler here, so one fresh secret seed each (never recorded)
            sim_seed = draw_simulator_seed() if backend.takes_simulator_seed else None
        if backend.kind == "aer":
            # No noise instructions here (loss, dark counts, misalignment and Eve are gates), so
            # the state-vector method is exact, and far faster than density matrices at 9+ qubits.
            from qiskit_aer.primitives import SamplerV2

            sampler = SamplerV2(seed=sim_seed, options={"backend_options": {"method": "statevector"}})
        else:
            sampler = backend.sampler(seed=sim_seed, num_qubits=circuit.num_qubits)
        if values:  # one binding per setting; pulse r of setting s takes shot r of binding s
            pub = (prepared, {tuple(values): np.stack([values[p] for p in values], axis=-1)})
            shots = int(counts.max())
        else:  # no photons: nothing depends on the setting; pulse i takes shot i
            pub = (prepared,)
            shots = idx.size
        job = sampler.run([pub], shots=shots)
        data = job.result()[0].data
        job_ids.append(job.job_id())
        total_shots += shots * (8 if values else 1)
        cols = {name: getattr(data, name).to_bool_array(order="little") for name in
                ("result", "flag", "dark", "dark_bit", "tie", "forward", "eve_result") if hasattr(data, name)}
        # Row r of binding s is the r-th pulse (in send order) with setting s.
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        s_of = setting[idx]
        rank = np.arange(idx.size) - starts[s_of]

        def take(name):
            arr = cols[name]
            if arr.ndim == 2:  # no bindings: (shots, bits)
                return arr[:idx.size]
            return arr[s_of, rank]

        res, flg = take("result")[:, :max(n, 1)], take("flag")[:, :max(n, 1)]
        fwd = take("forward")[:, 0] if "forward" in cols else np.ones(idx.size, dtype=bool)
        kept = 1 if (eve is not None and n >= 2) else 0
        arriving = flg[:, kept:n] & fwd[:, None] if n else np.zeros((idx.size, 0), dtype=bool)
        res_b = res[:, kept:n] if n else np.zeros((idx.size, 0), dtype=bool)
        d0 = np.any(arriving & ~res_b, axis=1)
        d1 = np.any(arriving & res_b, axis=1)
        dark = take("dark")[:, 0]
        dbit = take("dark_bit")[:, 0]
        d0 |= dark & ~dbit
        d1 |= dark & dbit
        clicked[idx] = d0 | d1
        results[idx] = np.where(d0 & d1, take("tie")[:, 0], d1)
        if kept:
            eve_known[idx] = True  # she keeps a photon whether or not she forwards the rest
            eve_results[idx] = take("eve_result")[:, 0]
    models = {"channel": asdict(channel), "detector": asdict(detector),
              "eve": eve.to_dict() if eve is not None else None, "source": source.to_dict(),
              "backend": backend.spec}
    if q != 0.5:
        models["key_basis_probability"] = float(q)
    provenance = Provenance.build(backend, mode="wcp", schedule="grouped", lanes=1, shots=total_shots, seed=seed,
                                  models=models, job_ids=job_ids,
                                  simulator_seed_bits=simulator_seed_bits(backend, seed))
    # Eve measures her kept photon in Alice's announced basis (the circuit's eve_theta).
    ground_truth = ({} if eve is None else
                    {"eve_active": eve_known, "eve_bases": a_bases.astype(np.int8), "eve_results": eve_results})
    return WcpRecord(alice_bits=bits, alice_bases=a_bases, bob_bases=b_bases, bob_results=results, detected=clicked,
                     provenance=provenance, intensity=intensity, source=source, photons=photons, **ground_truth)
