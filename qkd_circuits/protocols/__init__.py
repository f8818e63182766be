"""The protocol seam: what a QKD protocol contributes to a round, without Qiskit.

A :class:`Protocol` names everything that differs between BB84-family protocols and nothing the
rest of the stack does the same way for all of them:

* its **circuits**: :attr:`Protocol.circuits` names the quantum layer's builder
  (``qkd_circuits.quantum.circuits`` for ``bb84``, ``qkd_circuits.quantum.entangled`` for
  ``bbm92`` and ``six-state``) and :attr:`Protocol.source` says whether Alice prepares states or a
  source distributes entangled pairs; lanes and schedules are the quantum layer's;
* the **parties' choices** (:attr:`Protocol.bases`: basis codes 0, 1, ... name ``Z``, ``X``, ``Y``)
  and the **sifting rule** (:meth:`Protocol.sift`: a pulse is kept when it clicked and the two
  bases agree; a random ``sample_fraction`` of the kept bits is the test set);
* what is **estimated** (:attr:`Protocol.estimates`; every protocol here estimates the QBER, one
  rate over all matching bases, with its Clopper–Pearson bound);
* its **key-length bound and abort rule**: :meth:`Protocol.privacy_cost` (the secret bits
  privacy amplification must remove per key bit at error rate Q), :meth:`asymptotic_rate`,
  :attr:`threshold` (the QBER at which the one-way rate reaches zero, found numerically),
  :attr:`abort_qber` (the default abort threshold), and the finite-size lengths
  :meth:`finite_key_length` / :meth:`variable_key_length`;
* its **messages** (:attr:`Protocol.messages`): the post-processing frames its round uses, and
  how Bob's bases travel in the sift request (:meth:`encode_bases` / :meth:`decode_bases`:
  one bit per pulse for two bases, as BB84 always sent them, two bits per pulse for three).

Three protocols fill it (:data:`PROTOCOLS`): ``bb84`` (prepare and measure, Z/X), ``bbm92``
(entanglement-based BB84: the same bases, sifting and finite-key analysis; Bennett, Brassard &
Mermin, PRL 68, 557 (1992)) and ``six-state`` (Z/X/Y; Bruß, PRL 81, 3018 (1998); one-way key rate
of Lo, Quantum Inf. Comput. 1, 81 (2001)); a fourth, ``e91`` (:class:`E91Protocol`: Ekert 1991
with the CHSH test, BB84's finite-key length on its key rounds, its sifting rule by equal
angles), is run by :func:`qkd_circuits.session.run_round`.  ``docs/protocols.md`` says how E91
fills it and how B92, SARG04, MDI and twin-field would, and what it cannot hold yet.

Six-state's key length.  The one-way (Devetak–Winter) rate of the six-state protocol on the
depolarizing-symmetric state with QBER Q is

    r(Q) = 1 + (3Q/2)·log2(Q/2) + (1 − 3Q/2)·log2(1 − 3Q/2) = 1 − H(λ),
    λ = (1 − 3Q/2, Q/2, Q/2, Q/2),

which is zero at Q = 12.62% (:func:`six_state_rate`; the test reproduces the root).  It splits
into error correction, h(Q) per bit, and privacy amplification, Eve's Holevo information
χ(Q) = H(λ) − h(Q) per bit; BB84's split is h(Q) + h(Q).  Note: subtracting h(Q) once more
from r, as ``r = 1 + (3Q/2)log2(Q/2) + (1 − 3Q/2)log2(1 − 3Q/2) − h(Q)``, counts error
correction twice and puts the zero at 6.84%, not 12.6%.

Finite size, honestly.  For six-state rounds :meth:`SixState.finite_key_length` uses BB84's
finite-size treatment unchanged (Tomamichel, Lim, Gisin & Renner 2012: the same statistical
margin μ on the sampled error rate, the same security term log2(2/(ε_sec² ε_cor)), the same grid
of tolerances for a variable length) with the privacy term n·χ(Q_tol + μ) in place of
n·h(Q_tol + μ).  That substitution is **not** a proven finite-key bound: TLGR's proof bounds the
smooth min-entropy through the phase-error rate of two complementary bases, and the six-state
gain comes from the joint statistics of three bases, which that proof does not use.  Its
asymptotic limit is the proven Lo 2001 rate; at finite n it is a heuristic.  BB84 and BBM92
rounds use TLGR as proven (for BBM92 through the usual source-replacement argument: a
measurement of one half of a pair at Alice's end is a preparation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..analysis.finite_key import (TOLERANCE_STEP, TOLERANCE_VALUES, KeyLength, binary_entropy, check_epsilon,
                                   finite_key_length as _tlgr_length)
from ..exceptions import ConfigurationError

__all__ = ["BB84", "BBM92", "E91", "E91Protocol", "PROTOCOLS", "Protocol", "SIX_STATE", "SixState", "get_protocol",
           "six_state_privacy_cost", "six_state_rate"]

#: The post-processing frames every BB84-family round exchanges (``qkd_circuits.hazmat.messages``).
_BB84_MESSAGES = ("SiftRequest", "SiftReply", "EstimateRequest", "EstimateReply", "ReconcileStart",
                  "ReconcileAck", "TopParitiesRequest", "TopParitiesReply", "RangeParitiesRequest",
                  "RangeParitiesReply", "VerifyRequest", "VerifyReply", "AmplifyRequest", "AmplifyReply")


def _bisect(f, lo: float, hi: float, tol: float = 1e-12) -> float:
    """The root of a continuous ``f`` with f(lo) > 0 >= f(hi)."""
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class Protocol:
    """A BB84-family protocol's contribution to a round (module docstring).

    Attributes:
        name: the registry key (``qkd run --protocol NAME``).
        title: one line for reports and docs.
        bases: basis labels, indexed by the basis codes of records and messages.
        source: ``"prepare-and-measure"`` or ``"entangled-pairs"``.
        circuits: the quantum layer's circuit family that runs it.
        estimates: what parameter estimation measures.
        messages: the post-processing frames of its round.
        references: where its security statement comes from.
    """

    name: str
    title: str
    bases: tuple[str, ...] = ("Z", "X")
    source: str = "prepare-and-measure"
    circuits: str = "bb84"
    estimates: tuple[str, ...] = ("qber",)
    messages: tuple[str, ...] = _BB84_MESSAGES
    references: tuple[str, ...] = ("Bennett & Brassard 1984", "Shor & Preskill, PRL 85, 441 (2000)",
                                   "Tomamichel, Lim, Gisin & Renner, Nat. Commun. 3, 634 (2012)")
    finite_size: ClassVar[str] = "proven (TLGR 2012)"

    def __repr__(self) -> str:
        return f"Protocol({self.name!r})"

    # -- the parties' choices and sifting ---------------------------------------------------

    @property
    def basis_bits(self) -> int:
        """Bits per pulse that announce a basis in the sift request (1 for two bases, 2 for three)."""
        return max(1, math.ceil(math.log2(len(self.bases))))

    @property
    def sifting_fraction(self) -> float:
        """The expected share of clicks kept when both parties choose their basis uniformly: 1/|bases|."""
        return 1.0 / len(self.bases)

    def check_bases(self, name: str, bases: np.ndarray) -> None:
        """Raise :class:`ConfigurationError` if ``bases`` holds a code this protocol does not have."""
        a = np.asarray(bases)
        if a.size and (int(a.min()) < 0 or int(a.max()) >= len(self.bases)):
            raise ConfigurationError(f"{name} holds basis codes in [{int(a.min())}, {int(a.max())}]; "
                                     f"{self.name} has the bases {', '.join(self.bases)} (codes 0-{len(self.bases) - 1})")

    def sift(self, alice_bases: np.ndarray, bob_bases: np.ndarray, detected: np.ndarray) -> np.ndarray:
        """``bool`` mask: the pulses kept (Bob clicked and the bases agree)."""
        a, b = (np.asarray(x).astype(np.int16) for x in (alice_bases, bob_bases))
        d = np.asarray(detected, dtype=bool)
        if not a.shape == b.shape == d.shape or a.ndim != 1:
            raise ValueError(f"bases and detection flags must be 1-D arrays of one length, got shapes "
                             f"{a.shape}, {b.shape}, {d.shape}")
        return d & (a == b)

    def encode_bases(self, bases: np.ndarray) -> np.ndarray:
        """Bob's bases as the sift request's bit array: the codes themselves for two bases (the
        frame BB84 always sent); for more, ``basis_bits`` bit planes, most significant first."""
        codes = np.asarray(bases).astype(np.uint8)
        if self.basis_bits == 1:
            return codes
        return np.concatenate([(codes >> (self.basis_bits - 1 - j)) & 1 for j in range(self.basis_bits)]).astype(np.uint8)

    def decode_bases(self, bits: np.ndarray, n: int) -> np.ndarray:
        """The inverse of :meth:`encode_bases` for ``n`` pulses; ``ValueError`` if the size or a code is wrong."""
        bits = np.asarray(bits).astype(np.uint8)
        if bits.size != n * self.basis_bits:
            raise ValueError(f"the sift request announces {bits.size} basis bits, {self.name} needs "
                             f"{self.basis_bits} for each of {n} pulses")
        if self.basis_bits == 1:
            return bits
        planes = bits.reshape(self.basis_bits, n).astype(np.uint16)
        codes = sum(planes[j] << (self.basis_bits - 1 - j) for j in range(self.basis_bits))
        if codes.size and int(codes.max()) >= len(self.bases):
            raise ValueError(f"the sift request announces basis code {int(codes.max())}; {self.name} has "
                             f"{len(self.bases)} bases")
        return codes.astype(np.uint8)

    # -- the key-length bound and the abort rule --------------------------------------------

    def privacy_cost(self, qber: float) -> float:
        """Bits privacy amplification removes per key bit at error rate ``qber`` (BB84: h(Q))."""
        return float(binary_entropy(qber))

    def asymptotic_rate(self, qber: float, f: float = 1.0) -> float:
        """One-way secret fraction per sifted bit, 1 − privacy_cost(Q) − f·h(Q) (0 when negative)."""
        return max(0.0, 1.0 - self.privacy_cost(qber) - f * float(binary_entropy(qber)))

    @property
    def threshold(self) -> float:
        """The QBER where the one-way rate (f = 1) reaches zero, by bisection (BB84: 11.00%)."""
        return _bisect(lambda q: 1.0 - self.privacy_cost(q) - float(binary_entropy(q)), 1e-9, 0.5)

    @property
    def abort_qber(self) -> float:
        """The default abort threshold on the QBER's upper bound: the threshold rounded down to 0.1%."""
        return math.floor(self.threshold * 1000) / 1000

    def finite_key_length(self, n: int, k: int, qber_tolerance: float, leak_ec: int, *,
                          eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> KeyLength:
        """The finite-key length with Q_tol fixed in advance (BB84: TLGR 2012)."""
        return _tlgr_length(n, k, qber_tolerance, leak_ec, eps_sec=eps_sec, eps_cor=eps_cor)

    def variable_key_length(self, n: int, k: int, sampled_qber: float, leak_ec: int, *,
                            eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> KeyLength:
        """Q_tol picked from the sample on the public grid, ε_sec split over the grid (see
        :func:`~qkd_circuits.analysis.finite_key.variable_key_length`)."""
        if not 0.0 <= sampled_qber <= 0.5:
            raise ConfigurationError(f"sampled_qber must be in [0, 0.5], got {sampled_qber}")
        eps_sec, eps_cor = check_epsilon("eps_sec", eps_sec), check_epsilon("eps_cor", eps_cor)
        steps = max(1, math.ceil(round(sampled_qber / TOLERANCE_STEP, 9)))
        q_tol = min(steps, TOLERANCE_VALUES) * TOLERANCE_STEP
        kl = self.finite_key_length(n, k, q_tol, leak_ec, eps_sec=eps_sec / TOLERANCE_VALUES, eps_cor=eps_cor)
        return KeyLength(**{**kl.__dict__, "tolerance_rule":
                            f"sampled QBER rounded up to a {TOLERANCE_STEP:g} grid; eps_sec/{TOLERANCE_VALUES} each"})

    def minimum_sifted_bits(self, qber: float, *, sample_fraction: float, f_ec: float = 1.2, extra_leak: int = 128,
                            eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> int | None:
        """The fewest sifted bits giving a key of at least one bit at ``qber`` with this protocol's
        length (error correction leaking ``f_ec·n·h(Q) + extra_leak``); ``None`` when no size up to
        2^40 does.  For BB84 and BBM92 exactly
        :func:`~qkd_circuits.analysis.finite_key.minimum_sifted_bits`."""
        if type(self) is Protocol:
            from ..analysis.finite_key import minimum_sifted_bits

            return minimum_sifted_bits(qber, sample_fraction=sample_fraction, f_ec=f_ec, extra_leak=extra_leak,
                                       eps_sec=eps_sec, eps_cor=eps_cor)
        if not (0.0 <= qber < 0.5 and 0.0 < sample_fraction < 1.0 and math.isfinite(f_ec) and f_ec >= 1.0):
            raise ConfigurationError(f"need qber in [0, 0.5), sample_fraction in (0, 1) and f_ec >= 1, got "
                                     f"{qber!r}, {sample_fraction!r}, {f_ec!r}")

        def gives_key(sifted: int) -> bool:
            k = min(sifted - 1, max(1, math.ceil(sample_fraction * sifted)))
            n = sifted - k
            leak = math.ceil(f_ec * n * float(binary_entropy(qber))) + extra_leak
            return self.variable_key_length(n, k, qber, leak, eps_sec=eps_sec, eps_cor=eps_cor).length > 0

        hi = 1 << 40
        if not gives_key(hi):
            return None
        lo = 2
        while hi - lo > max(1, lo // 1000):  # to 0.1%, as the BB84 function: a guide, not a threshold
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if gives_key(mid) else (mid, hi)
        return hi

    def describe(self) -> dict:
        """The protocol's public facts (JSON-ready), as ``docs/protocols.md`` tabulates them."""
        return {"name": self.name, "title": self.title, "bases": list(self.bases), "source": self.source,
                "circuits": self.circuits, "estimates": list(self.estimates), "sifting_fraction": self.sifting_fraction,
                "threshold": self.threshold, "abort_qber": self.abort_qber, "finite_size": self.finite_size,
                "references": list(self.references)}


def six_state_privacy_cost(qber: float) -> float:
    """χ(Q) = H(λ) − h(Q), λ = (1 − 3Q/2, Q/2, Q/2, Q/2): Eve's Holevo information per key bit in
    the six-state protocol (Lo 2001); 1 from Q = 1/2 on."""
    q = float(qber)
    if q <= 0.0:
        return 0.0
    if q >= 0.5:
        return 1.0
    lam = (1.0 - 1.5 * q, q / 2, q / 2, q / 2)
    entropy = -sum(p * math.log2(p) for p in lam if p > 0)
    return entropy - float(binary_entropy(q))


def six_state_rate(qber: float) -> float:
    """The six-state one-way rate r(Q) = 1 + (3Q/2)log2(Q/2) + (1 − 3Q/2)log2(1 − 3Q/2) (not clipped)."""
    q = float(qber)
    if q <= 0.0:
        return 1.0
    return 1.0 + 1.5 * q * math.log2(q / 2) + (1.0 - 1.5 * q) * math.log2(1.0 - 1.5 * q)


@dataclass(frozen=True)
class SixState(Protocol):
    """Six-state QKD: three bases, the Lo 2001 privacy term with BB84's finite-size terms (module docstring)."""

    finite_size: ClassVar[str] = ("heuristic: TLGR 2012 finite-size terms with the six-state privacy term "
                                  "(asymptotically the proven Lo 2001 rate; not a proven finite-key bound)")

    def privacy_cost(self, qber: float) -> float:
        return six_state_privacy_cost(qber)

    def finite_key_length(self, n: int, k: int, qber_tolerance: float, leak_ec: int, *,
                          eps_sec: float = 1e-10, eps_cor: float = 1e-15) -> KeyLength:
        """BB84's TLGR terms with n·χ(Q_tol + μ) as the privacy term (not proven at finite n)."""
        bb84 = _tlgr_length(n, k, qber_tolerance, leak_ec, eps_sec=eps_sec, eps_cor=eps_cor)
        privacy = n * six_state_privacy_cost(qber_tolerance + bb84.mu)
        length = max(0, math.floor(n - privacy - leak_ec - bb84.security_term))
        return KeyLength(length, n, k, qber_tolerance, bb84.mu, int(leak_ec), bb84.eps_sec, bb84.eps_cor, privacy,
                         bb84.security_term, bb84.tolerance_rule,
                         "six-state privacy term chi(Q_tol + mu) (Lo 2001) with the TLGR 2012 finite-size terms "
                         "(not a proven finite-key bound)")


BB84 = Protocol("bb84", "BB84: Alice prepares Z/X states, Bob measures in a random Z/X basis")
BBM92 = Protocol("bbm92", "BBM92: a source of Bell pairs, both parties measure in a random Z/X basis",
                 source="entangled-pairs", circuits="bbm92",
                 references=("Bennett, Brassard & Mermin, PRL 68, 557 (1992)", *BB84.references[1:]))
SIX_STATE = SixState("six-state", "Six-state: Alice prepares Z/X/Y states, Bob measures in a random Z/X/Y basis",
                     bases=("Z", "X", "Y"), circuits="six-state",
                     references=("Bruss, PRL 81, 3018 (1998)", "Lo, Quantum Inf. Comput. 1, 81 (2001)",
                                 "Tomamichel, Lim, Gisin & Renner, Nat. Commun. 3, 634 (2012)"))



@dataclass(frozen=True)
class E91Protocol(Protocol):
    """E91 with the CHSH test (Ekert 1991; ``qkd_circuits.quantum.e91``, ``qkd_circuits.analysis.chsh``).

    The basis codes are each party's setting index 0, 1, 2 (Alice's angles
    :data:`~qkd_circuits.analysis.chsh.ALICE_ANGLES` 0, π/4, π/2; Bob's
    :data:`~qkd_circuits.analysis.chsh.BOB_ANGLES` π/4, π/2, 3π/4; the labels give both in
    degrees), so the sifting rule is not "codes equal" but "angles equal": :meth:`sift` keeps
    exactly the two key pairs (Alice 1, Bob 0) = (π/4, π/4) and (Alice 2, Bob 1) = (π/2, π/2)
    (:data:`~qkd_circuits.analysis.chsh.KEY_PAIRS`), 2 of the 9 setting pairs.
    The four CHSH pairs are the *test* rounds: both parties announce their outcomes there, S and
    its Hoeffding bound come from them (:func:`~qkd_circuits.analysis.chsh.estimate_chsh`), and
    the round aborts with ``chsh_not_violated`` when S_lower <= 2.  The key length is BB84's
    device-dependent TLGR length on the key rounds (:class:`Protocol`'s methods, unchanged); the
    device-independent rate of Acín et al. 2007 is reported beside it, not used
    (``docs/protocols.md``).
    """

    @property
    def sifting_fraction(self) -> float:
        """2/9: two of the nine uniformly chosen setting pairs are key pairs."""
        return 2.0 / 9.0

    def sift(self, alice_bases: np.ndarray, bob_bases: np.ndarray, detected: np.ndarray) -> np.ndarray:
        """``bool`` mask: the pulses kept, those of a key pair (equal angles) that clicked."""
        from ..analysis.chsh import KEY_PAIRS

        keep = super().sift(alice_bases, np.asarray(alice_bases), detected)  # shape checks; detected & True
        a, b = (np.asarray(x).astype(np.int16) for x in (alice_bases, bob_bases))
        if a.shape != b.shape:
            raise ValueError(f"bases must be 1-D arrays of one length, got shapes {a.shape}, {b.shape}")
        pair = np.zeros(a.shape, dtype=bool)
        for i, j in KEY_PAIRS:
            pair |= (a == i) & (b == j)
        return keep & pair


E91 = E91Protocol("e91", "E91: a source of Bell pairs, three CHSH settings per party; key from matching settings, "
                         "S from the test rounds", bases=("A0/B45", "A45/B90", "A90/B135"), source="entangled-pairs",
                  circuits="e91", estimates=("qber", "chsh"),
                  references=("Ekert, PRL 67, 661 (1991)",
                              "Acin, Brunner, Gisin, Massar, Pironio & Scarani, PRL 98, 230501 (2007)",
                              *BB84.references[1:]))

#: The protocols a round can run, by name.
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (BB84, BBM92, SIX_STATE, E91)}


def get_protocol(protocol: str | Protocol) -> Protocol:
    """The :class:`Protocol` named ``protocol`` (or ``protocol`` itself); :class:`ConfigurationError` if unknown."""
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, str) and protocol in PROTOCOLS:
        return PROTOCOLS[protocol]
    raise ConfigurationError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
