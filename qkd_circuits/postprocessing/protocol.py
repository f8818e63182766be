"""BB84 post-processing between two parties that share nothing but messages.

Alice answers, Bob drives.  :class:`AliceParty` is a state machine: :meth:`AliceParty.handle`
takes one frame (bytes) and returns the reply frame, refusing messages that are malformed or
arrive out of order.  :class:`BobParty` is a generator: it yields request frames and receives
Alice's replies.  :func:`drive` connects the two through any callable that carries a frame to
Alice and brings her reply back (here a direct call; the next layer adds authentication and TCP).

The steps, each one round trip unless noted::

    sift        Bob: clicks + bases               Alice: which pulses are kept
    estimate    Bob: sample seed + his bits       Alice: her bits      -> QBER, abort check,
                                                                          leak budget
    reconcile   Bob: Cascade preset + seed        Alice: ack; then Cascade's questions,
                                                         each answered only within the budget
    verify      Bob: hash key + his tag           Alice: match + her tag
    amplify     Bob: final length ℓ               Alice: Toeplitz seed -> both hash to ℓ bits

Both parties compute every decision (abort, block sizes, leak budget, ℓ) from the same public
values, and check each other's where a message carries one.  Public random choices (sample
seed, Cascade seed, hash key, Toeplitz seed) come from each party's CSPRNG (:mod:`secrets`).

The leak budget (:class:`LeakBudget`, :func:`leak_budget`).  Alice answers Cascade's parity
questions before any authentication tag is checked, so whoever speaks to her as Bob can ask
them; without a limit an active attacker reads her whole sifted key in a round that then
aborts.  As soon as the QBER is estimated both parties fix, from public values only,

    budget = min( ceil(f_budget · n · h(Q_upper)) + LEAK_BUDGET_SLACK_BITS,  ℓ(leak_EC = 0) − 1 − 128 )

(n the bits being reconciled, Q_upper the sample's QBER upper bound, f_budget
:attr:`PostProcessingConfig.leak_budget_efficiency`; the second term is the most Cascade may
disclose and still leave a key of one bit beside the 128-bit verification tag).  Alice counts
the parities a request would reveal *before* computing them and refuses one that would take
her past the budget: her round aborts (``leak_budget_exceeded``) and :meth:`AliceParty.handle`
raises :class:`ProtocolError`, which the authenticated layer above turns into a closed
connection.  Bob runs the same check before sending each request, so an honest pair never
meets Alice's refusal: he aborts with ``leak_budget_exceeded`` when Cascade would pass the
f_budget term (measured to essentially never happen, see the field's docstring), and with
``key_too_short`` when it would pass the key-length term, which is where the round would
have ended anyway (so small rounds stop disclosing as soon as they cannot give a key; when
not even Cascade's top-level parities fit, both parties stop right after estimation).

Protocols (:attr:`PostProcessingConfig.protocol`, :mod:`qkd_circuits.protocols`).  The steps
above are the same for every BB84-family protocol; what the agreed protocol changes is how Bob's
bases travel in the sift request (one bit per pulse for two bases, the frame BB84 always sent;
two bit planes for six-state's three), the sifting rule, and the key length ℓ
(:meth:`~qkd_circuits.protocols.Protocol.variable_key_length`: TLGR for BB84 and BBM92, the
six-state privacy term for six-state).  Both parties hold the same configuration, so both
decode the same bases and compute the same ℓ.

Abort reasons (``PartyOutcome.abort_reason``): ``too_few_sifted_bits``, ``qber_too_high``,
``key_too_short``, ``leak_budget_exceeded``, ``verification_failed``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import numbers
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Generator

import numpy as np

from ..exceptions import AbortReason, ConfigurationError, ProtocolError
from ..params import default
from ..protocols import PROTOCOLS, get_protocol
from ..records import AliceView, BobView
from ..hazmat import messages as m
from ..hazmat.amplification import toeplitz_hash
from ..hazmat.cascade import CascadeAlice, CascadeBob, PRESETS, parities_asked
from .estimation import QBEREstimate, estimate_qber
from ..analysis.finite_key import KeyLength, binary_entropy, check_epsilon, decoy_key_length
from .decoy_rounds import KEY_BASIS, TEST_BASIS, DecoyProtocol, count_bits
from .ledger import LeakageLedger
from ..analysis.finite_decoy import DecoyCounts, DecoyKeyLength, decoy_key_length as composable_decoy_length
from ..hazmat.shuffle import derive_permutation
from ..hazmat.universal_hash import PolyHash128

__all__ = ["PostProcessingConfig", "FinalKey", "PartyOutcome", "AliceParty", "BobParty", "drive",
           "LeakBudget", "leak_budget", "LEAK_BUDGET_SLACK_BITS", "ABORT_REASONS", "explain_abort"]

SAMPLE_LABEL = 0  # shuffle label of the parameter-estimation sample (Cascade uses 1..passes)
TAG_BITS = 128

#: Additive slack of the leak budget (bits), for tiny keys, where Cascade's fixed costs (one
#: top-level parity per pass, a binary search of ~log2(n) parities per error) are large next to
#: n·h(Q_upper).  Measured: at the strictest f_budget (1.0) and a weaker QBER bound
#: (qber_epsilon 1e-3), rounds of 300–3000 sifted bits exceeded n·h(Q_upper) by at most 57
#: bits; 64 covers that and is nothing next to a budget that can leave a key.
LEAK_BUDGET_SLACK_BITS = 64

#: Every ``abort_reason`` a party's outcome can carry (see the module docstring): the party's
#: members of :class:`~qkd_circuits.AbortReason` (the round and the link add their own).
ABORT_REASONS = (AbortReason.TOO_FEW_SIFTED_BITS, AbortReason.QBER_TOO_HIGH, AbortReason.KEY_TOO_SHORT,
                 AbortReason.LEAK_BUDGET_EXCEEDED, AbortReason.VERIFICATION_FAILED)


@dataclass(frozen=True)
class PostProcessingConfig:
    """Public parameters both parties agree on before the round.

    Attributes:
        sample_fraction: share of the sifted key disclosed for parameter estimation.
        abort_qber: abort when the QBER's upper confidence bound exceeds this.
        qber_epsilon: failure probability of that bound (Clopper–Pearson).
        cascade: Cascade preset name (see :data:`~qkd_circuits.hazmat.cascade.PRESETS`).
        eps_sec, eps_cor: secrecy and correctness parameters of the key-length formula.
        qber_tolerance: Q_tol of the key-length formula, fixed in advance (a sample above it
            gives no key); ``None`` (default) picks it from the sample on a public grid, see
            :func:`~qkd_circuits.analysis.finite_key.variable_key_length`.
        single_photon: weak-coherent pulses: ``(κ, e_1)`` from the decoy analysis (the lower
            bound on the key's single-photon fraction and the upper bound on its error rate),
            agreed from the public decoy statistics before post-processing; the key length is
            then :func:`~qkd_circuits.analysis.finite_key.decoy_key_length`.  ``None``
            (default): a single-photon source, the TLGR formula.
        decoy: weak-coherent pulses with decoy states: the agreed
            :class:`~qkd_circuits.postprocessing.decoy_rounds.DecoyProtocol`.  The round then
            follows :mod:`~qkd_circuits.postprocessing.decoy_rounds` (intensity labels and every
            test-basis bit exchanged as messages, the key from the key basis of all intensities)
            and ℓ is the composable bound of
            :func:`~qkd_circuits.analysis.finite_decoy.decoy_key_length` on the round's counts.
        leak_budget_efficiency: f_budget of the leak budget (module docstring): Alice discloses
            at most ``ceil(f_budget · n · h(Q_upper)) + LEAK_BUDGET_SLACK_BITS`` parity bits
            (and never more than would leave a key).  Finite and at least 1.0 (Cascade cannot
            beat the Shannon limit n·h(Q)).  The default 1.5 is measured: over 37 112 honest
            rounds (all four Cascade presets, QBER 0–10%, 10^3–10^6 sifted bits, defaults
            otherwise) the largest leaked/(n·h(Q_upper)) was 1.176 (``original`` at 10^6
            bits; p99 0.977, p99.9 1.089; ``yanetal`` ≤ 1.074, ``option7``/``option8``
            ≤ 1.025), growing with n towards each preset's asymptotic f (``original`` 1.21 at
            10%, the worst), so 1.5 leaves about 25% headroom at any size and no measured round
            came near it (with f = 1.2 none tripped either; with 1.1, 27 did).  A much larger
            ``qber_epsilon`` than the default makes Q_upper a weaker bound and the budget
            tighter (at 0.05, about 1 small round in 1000 trips it).
        protocol: the agreed protocol's name (:data:`qkd_circuits.protocols.PROTOCOLS`):
            ``"bb84"`` (default), ``"bbm92"`` or ``"six-state"``.  It fixes the sift request's
            basis encoding and the key-length bound (module docstring); its default abort
            threshold is :attr:`~qkd_circuits.protocols.Protocol.abort_qber` (set
            ``abort_qber`` to it: :func:`qkd_circuits.session.run_round` does).

    Every ε (``eps_sec``, ``eps_cor``, ``qber_epsilon``) must be in (0, 0.5]: NaN, ±inf, 0,
    negatives and anything above 1/2 raise :class:`~qkd_circuits.ConfigurationError` (a
    ``ValueError``), as does every other invalid field.  Why 1/2 and not 1: the Clopper–Pearson
    "upper" bound on the QBER lies above the measured rate only for ε ≤ 1/2 (with ε = 0.6 and 7
    errors in 100 it is 6.99%), and ε_sec, ε_cor ≥ 1 are vacuous claims although the TLGR
    terms ln(2/ε_sec) and log2(2/(ε_sec² ε_cor)) stay positive up to ε_sec < 2 — so ε_sec = 2.0
    used to "give" a longer key than 0.5; see :mod:`~qkd_circuits.analysis.finite_key`.
    """

    sample_fraction: float = default("sample_fraction")
    abort_qber: float = default("abort_qber")
    qber_epsilon: float = 1e-10
    cascade: str = default("cascade")
    eps_sec: float = default("eps_sec")
    eps_cor: float = default("eps_cor")
    qber_tolerance: float | None = None
    single_photon: tuple[float, float] | None = None
    leak_budget_efficiency: float = 1.5
    decoy: DecoyProtocol | None = None
    protocol: str = "bb84"

    def __post_init__(self) -> None:
        if not isinstance(self.protocol, str) or self.protocol not in PROTOCOLS:
            raise ConfigurationError(f"unknown protocol {self.protocol!r}; known: {', '.join(PROTOCOLS)}")
        if self.protocol != "bb84" and (self.decoy is not None or self.single_photon is not None):
            raise ConfigurationError(f"decoy states and single_photon bounds are BB84's weak-coherent analysis; "
                                     f"the {self.protocol} round has neither")
        if self.decoy is not None:
            if not isinstance(self.decoy, DecoyProtocol):
                raise ConfigurationError(f"decoy must be a DecoyProtocol, got {type(self.decoy).__name__}")
            if self.single_photon is not None:
                raise ConfigurationError("give decoy (the composable analysis) or single_photon (the estimate), not both")
        if self.single_photon is not None:
            kappa, e1 = self.single_photon
            if not (0.0 <= kappa <= 1.0 and 0.0 <= e1 <= 0.5):
                raise ConfigurationError(
                    f"single_photon must be (fraction in [0, 1], e1 in [0, 0.5]), got {self.single_photon}")
        if not 0.0 < self.sample_fraction < 1.0:
            raise ConfigurationError(f"sample_fraction must be in (0, 1), got {self.sample_fraction}")
        if not 0.0 < self.abort_qber <= 0.5:
            raise ConfigurationError(f"abort_qber must be in (0, 0.5], got {self.abort_qber}")
        for name in ("qber_epsilon", "eps_sec", "eps_cor"):
            check_epsilon(name, getattr(self, name))
        if self.cascade not in PRESETS:
            raise ConfigurationError(f"unknown Cascade preset {self.cascade!r}; known: {', '.join(PRESETS)}")
        if self.qber_tolerance is not None and not 0.0 <= self.qber_tolerance < 0.5:
            raise ConfigurationError(f"qber_tolerance must be in [0, 0.5), got {self.qber_tolerance}")
        f = self.leak_budget_efficiency
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            raise TypeError(f"leak_budget_efficiency must be a real number, got {type(f).__name__} {f!r}")
        if not (math.isfinite(f) and f >= 1.0):
            raise ConfigurationError(f"leak_budget_efficiency must be finite and >= 1.0 (Cascade cannot "
                                     f"disclose less than n·h(Q)), got {f!r}")


@dataclass(frozen=True, eq=False)
class FinalKey:
    """A final key: bits (uint8 0/1, read-only).  Its repr and str never show the bits.

    The bits given are copied (as uint8) and the copy made read-only; the caller's array stays writable.
    """

    bits: np.ndarray

    def __post_init__(self) -> None:
        bits = np.array(self.bits, dtype=np.uint8)  # a copy: never freeze the caller's array
        bits.setflags(write=False)
        object.__setattr__(self, "bits", bits)

    def __len__(self) -> int:
        return int(self.bits.size)

    def __repr__(self) -> str:
        return f"FinalKey(bits={len(self)}, sha256={self.sha256()[:16]}…)"

    def to_bytes(self) -> bytes:
        """The key packed big-endian, first bit = MSB of the first byte (last byte zero-padded)."""
        return np.packbits(self.bits).tobytes()

    def sha256(self) -> str:
        """Fingerprint: SHA-256 of the bit count (u64 BE) and the packed bits, hex."""
        return hashlib.sha256(len(self).to_bytes(8, "big") + self.to_bytes()).hexdigest()

    def matches(self, other: FinalKey) -> bool:
        """Constant-time comparison with another key."""
        return len(self) == len(other) and hmac.compare_digest(self.to_bytes(), other.to_bytes())


@dataclass(frozen=True)
class LeakBudget:
    """The most error-correction parity bits Alice discloses in one round (module docstring).

    Attributes:
        bits: the budget, ``max(0, min(efficiency_bits, key_limit_bits))``.
        efficiency_bits: ``ceil(efficiency · n · h(qber_upper)) + slack_bits``.
        key_limit_bits: the most Cascade may disclose and leave a key of at least one bit,
            ``ℓ(leak_EC = 0) − 1 − 128`` (negative when no leak at all leaves a key).
        n: the bits being reconciled; qber_upper: the sample's QBER upper bound.
        efficiency, slack_bits: f_budget and :data:`LEAK_BUDGET_SLACK_BITS`.
        top_level_bits: what Cascade's top-level parities alone cost (every pass's blocks),
            the least any honest reconciliation discloses.
    """

    bits: int
    efficiency_bits: int
    key_limit_bits: int
    n: int
    qber_upper: float
    efficiency: float
    slack_bits: int
    top_level_bits: int

    def reason(self, total: int) -> AbortReason:
        """The abort reason when Cascade would disclose ``total`` bits, more than :attr:`bits`."""
        return AbortReason.LEAK_BUDGET_EXCEEDED if total > self.efficiency_bits else AbortReason.KEY_TOO_SHORT

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def leak_budget(config: PostProcessingConfig, n: int, k: int, qber: QBEREstimate,
                decoy_counts: DecoyCounts | None = None) -> LeakBudget:
    """The round's leak budget, from public values only: both parties compute the same one.

    ``n`` is the number of bits to reconcile (the sifted key without the sample), ``k`` the
    sample size, ``qber`` the sample's estimate (its ``upper`` bound and, for the key-length
    term, the rule of :func:`_decide_length`); ``decoy_counts`` the round's decoy counts (decoy
    rounds; key-basis errors not yet known count as none, which only makes the limit looser).
    """
    f = config.leak_budget_efficiency
    efficiency_bits = math.ceil(f * n * binary_entropy(qber.upper)) + LEAK_BUDGET_SLACK_BITS
    key_limit = _decide_length(config, n, k, qber, 0, decoy_counts).length - 1 - TAG_BITS
    top = sum(parities_asked(m.TopParitiesRequest(p), preset=config.cascade, qber=qber.estimate, n=n)
              for p in range(1, PRESETS[config.cascade].passes + 1))
    return LeakBudget(max(0, min(efficiency_bits, key_limit)), efficiency_bits, key_limit, n, qber.upper, f,
                      LEAK_BUDGET_SLACK_BITS, top)


@dataclass
class PartyOutcome:
    """What one party ends with.  ``key`` is ``None`` unless the round completed.

    ``abort_reason`` is one of :data:`ABORT_REASONS` (:class:`~qkd_circuits.AbortReason`
    members, each equal to its string): ``too_few_sifted_bits``,
    ``qber_too_high``, ``key_too_short``, ``leak_budget_exceeded`` (Cascade would disclose more
    than the round's :class:`LeakBudget`; on Alice's side: the peer asked for more), or
    ``verification_failed``.  ``leak_budget`` is the round's budget once the QBER is known;
    ``cascade["leak_budget_bits"]`` repeats its bits beside ``cascade["leaked_bits"]``, the
    parity bits disclosed (on Alice's side: answered so far); after a budget abort
    ``cascade["blocked_request_bits"]`` is what the request that was not answered (Alice) or
    not sent (Bob) asked for.
    """

    role: str
    key: FinalKey | None = None
    aborted: bool = False
    abort_reason: AbortReason | None = None
    sifted_bits: int = 0
    qber: QBEREstimate | None = None
    key_length: KeyLength | None = None
    ledger: LeakageLedger = field(default_factory=LeakageLedger)
    cascade: dict | None = None
    verification: dict | None = None
    leak_budget: LeakBudget | None = None
    timings_s: dict = field(default_factory=dict)
    reconciled_key: np.ndarray | None = field(default=None, repr=False)
    key_before_reconciliation: np.ndarray | None = field(default=None, repr=False)
    decoy_counts: DecoyCounts | None = None
    decoy_key_length: DecoyKeyLength | None = None

    def _abort(self, reason: AbortReason) -> None:
        self.aborted, self.abort_reason, self.key = True, reason, None


def _sample_positions(seed: bytes, n: int, k: int) -> np.ndarray:
    return np.sort(derive_permutation(seed, SAMPLE_LABEL, n)[:k])


def _sample_size(config: PostProcessingConfig, n: int) -> int:
    return min(n - 1, max(1, math.ceil(config.sample_fraction * n)))


def _decoy_length(config: PostProcessingConfig, counts: DecoyCounts, leak_ec: int) -> DecoyKeyLength:
    """The composable bound on the round's counts; ``leak_ec`` already holds the verification tag."""
    if counts.key.errors is None and config.decoy.method == "rusca2018":
        counts = replace(counts, key=replace(counts.key, errors=dict.fromkeys(counts.key.detections, 0)))
    return composable_decoy_length(counts, config.decoy.method, leak_ec=leak_ec, eps_sec=config.eps_sec,
                                   eps_cor=config.eps_cor, verification_bits=0, sampling=config.decoy.sampling)


def _as_key_length(dk: DecoyKeyLength, k: int) -> KeyLength:
    """A decoy key length as the report's :class:`KeyLength` (the full bound is beside it)."""
    n = int(round(dk.key_bits))
    private = dk.s_key_0 + dk.s_key_1 * (1.0 - binary_entropy(dk.phase_error))
    return KeyLength(dk.length, n, k, dk.phase_error, dk.phase_error - dk.phase_error_observed, int(dk.leak_ec),
                     dk.eps_sec, dk.eps_cor, n - private, dk.security_bits,
                     "single-photon phase error bounded from the round's decoy counts", dk.formula,
                     dk.s_key_1 / n if n else 0.0)


def _decide_length(config: PostProcessingConfig, n: int, k: int, qber: QBEREstimate, leak_ec: int,
                   decoy_counts: DecoyCounts | None = None) -> KeyLength:
    if config.decoy is not None:
        return _as_key_length(_decoy_length(config, decoy_counts, leak_ec), k)
    if config.single_photon is not None:
        kappa, e1 = config.single_photon
        return decoy_key_length(n, k, kappa, e1, leak_ec, eps_sec=config.eps_sec, eps_cor=config.eps_cor)
    proto = get_protocol(config.protocol)  # BB84, BBM92: TLGR as in analysis.finite_key; six-state: its own term
    if config.qber_tolerance is None:
        return proto.variable_key_length(n, k, qber.estimate, leak_ec, eps_sec=config.eps_sec, eps_cor=config.eps_cor)
    if qber.estimate > config.qber_tolerance:
        return KeyLength(0, n, k, config.qber_tolerance, math.nan, leak_ec, config.eps_sec, config.eps_cor,
                         math.nan, math.nan, "fixed in advance; the sample exceeded it")
    return proto.finite_key_length(n, k, config.qber_tolerance, leak_ec, eps_sec=config.eps_sec, eps_cor=config.eps_cor)


#: The error-correction efficiency :func:`explain_abort` assumes for its size estimates.
DESIGN_F_EC = 1.2


def explain_abort(config: PostProcessingConfig, reason, *, sifted: int, qber: QBEREstimate | None = None,
                  sifted_per_pulse: float | None = None) -> str | None:
    """A sentence on why a round of ``sifted`` bits gave no key, and how large a round would.

    For the aborts that a small round causes (``too_few_sifted_bits``; ``qber_too_high`` when the
    sample's *bound*, not its rate, is past ``abort_qber``; ``key_too_short``) it names the
    smallest round that could succeed: the sample size a QBER bound below ``abort_qber`` needs
    even with no errors, ``ln ε / ln(1 − abort_qber)`` bits, and the sifted bits a key needs at the
    measured QBER (the protocol's :meth:`~qkd_circuits.protocols.Protocol.minimum_sifted_bits`, error correction
    at f = :data:`DESIGN_F_EC`).  With ``sifted_per_pulse`` (the round's sifted bits per pulse sent)
    it converts to pulses.  ``None`` for other reasons.

    Examples:
        >>> cfg = PostProcessingConfig()
        >>> from qkd_circuits.postprocessing.estimation import estimate_qber
        >>> print(explain_abort(cfg, "qber_too_high", sifted=1_000, qber=estimate_qber(0, 100)))  # doctest: +NORMALIZE_WHITESPACE
        the sample of 100 bits had 0 errors (0.00%), but at qber_epsilon=1e-10 its upper bound is 20.6%,
        above abort_qber=11.0%: with no errors a sample needs at least 198 bits, i.e. about 1,980 sifted
        bits at sample_fraction=0.1; and at 0.00% QBER a key needs at least 3,251 sifted bits
    """
    reason = None if reason is None else AbortReason(reason)
    if config.decoy is not None:  # a decoy round's sizes are set by its decoy bounds, not by a sample
        if reason is AbortReason.DECOY_CHECK_FAILED:
            return ("the decoy bounds of this round's counts certify no single-photon detections: too few pulses for "
                    "the finite-size terms (qkd keyrate --finite N shows the block a link needs), or an attack "
                    "such as photon-number splitting")
        return None

    def pulses(bits: int) -> str:
        return f" (about {math.ceil(bits / sifted_per_pulse):,} pulses at this round's sifting rate)" \
            if sifted_per_pulse else ""

    def needed(q: float) -> str:
        n = get_protocol(config.protocol).minimum_sifted_bits(
            min(q, 0.499), sample_fraction=config.sample_fraction, f_ec=DESIGN_F_EC, extra_leak=TAG_BITS,
            eps_sec=config.eps_sec, eps_cor=config.eps_cor)
        if n is None:
            return f"no round size gives a key at {q:.2%} QBER"
        return f"at {q:.2%} QBER a key needs at least {n:,} sifted bits{pulses(n)}"

    k_min = math.ceil(math.log(config.qber_epsilon) / math.log1p(-config.abort_qber))
    sifted_min = math.ceil(k_min / config.sample_fraction)
    if reason is AbortReason.TOO_FEW_SIFTED_BITS:
        return (f"only {sifted} sifted bits; even at 0% QBER a round needs at least {sifted_min:,} sifted bits for "
                f"its QBER sample and {needed(0.0).split('needs at least ')[1]} for a key")
    if reason is AbortReason.QBER_TOO_HIGH and qber is not None and qber.n:
        if qber.estimate > config.abort_qber:
            return (f"the sample's QBER {qber.estimate:.2%} ({qber.errors}/{qber.n}) is above abort_qber="
                    f"{config.abort_qber:.1%}: the channel is too noisy or someone is listening")
        if qber.n >= k_min:  # the sample was large enough for a clean channel: the rate is near the threshold
            return (f"the sample of {qber.n:,} bits had {qber.errors:,} errors ({qber.estimate:.2%}); at qber_epsilon="
                    f"{config.qber_epsilon:g} its upper bound is {qber.upper:.1%}, above abort_qber="
                    f"{config.abort_qber:.1%}: {needed(qber.estimate)}")
        return (f"the sample of {qber.n} bits had {qber.errors} errors ({qber.estimate:.2%}), but at qber_epsilon="
                f"{config.qber_epsilon:g} its upper bound is {qber.upper:.1%}, above abort_qber="
                f"{config.abort_qber:.1%}: with no errors a sample needs at least {k_min} bits, i.e. about "
                f"{sifted_min:,} sifted bits at sample_fraction={config.sample_fraction:g}{pulses(sifted_min)}; "
                f"and {needed(qber.estimate)}")
    if reason is AbortReason.KEY_TOO_SHORT and qber is not None and qber.n:
        return f"this round had {sifted:,} sifted bits; {needed(qber.estimate)}"
    return None


def _tag(key_bits: np.ndarray, hash_key: bytes) -> bytes:
    return PolyHash128(hash_key).digest(np.packbits(key_bits).tobytes())


def _with_key_errors(counts: DecoyCounts, labels, errors) -> DecoyCounts:
    return replace(counts, key=replace(counts.key, errors={k: int(e) for k, e in zip(labels, errors)}))


def _final_length(config: PostProcessingConfig, o: PartyOutcome, key_bits: int) -> None:
    """Set ``o.key_length`` (and, in decoy rounds, ``o.decoy_key_length``) from the ledger."""
    if config.decoy is not None:
        o.decoy_key_length = _decoy_length(config, o.decoy_counts, o.ledger.leak_ec)
        o.key_length = _as_key_length(o.decoy_key_length, o.ledger.sample_bits)
    else:
        o.key_length = _decide_length(config, key_bits, o.ledger.sample_bits, o.qber, o.ledger.leak_ec)


def _decoy_check(config: PostProcessingConfig, o: PartyOutcome, key_bits: int) -> AbortReason | None:
    """After the test bits: the abort (if any) both parties reach from the same public counts."""
    if key_bits < 2 or o.qber.n == 0:
        return AbortReason.TOO_FEW_SIFTED_BITS
    # The decoy check first: under photon-number splitting it is the informative verdict.
    pre = _decoy_length(config, o.decoy_counts, 0)
    if pre.s_key_1 <= 0 or pre.s_test_1 <= 0 or pre.phase_error >= 0.5:
        o.decoy_key_length = pre
        return AbortReason.DECOY_CHECK_FAILED
    if o.qber.upper > config.abort_qber:
        return AbortReason.QBER_TOO_HIGH
    budget = o.leak_budget = leak_budget(config, key_bits, o.qber.n, o.qber, o.decoy_counts)
    if budget.top_level_bits > budget.bits:
        return budget.reason(budget.top_level_bits)
    return None


RandomBytes = Callable[[int], bytes]


class AliceParty:
    """Alice's state machine; feed it frames with :meth:`handle`.

    ``random_bytes`` draws her public random choices (the Toeplitz seed); the default is
    :func:`secrets.token_bytes`.  Pass a seeded source only for reproducible simulations.
    """

    def __init__(self, view: AliceView, config: PostProcessingConfig = PostProcessingConfig(), *,
                 random_bytes: RandomBytes = secrets.token_bytes) -> None:
        get_protocol(config.protocol).check_bases("Alice's bases", view.bases)  # e.g. a six-state view, bb84 agreed
        self._view = view
        self.config = config
        self._random_bytes = random_bytes
        self.outcome = PartyOutcome("alice")
        self._phase = "sift"
        self._key: np.ndarray | None = None
        self._cascade: CascadeAlice | None = None
        if config.decoy is not None and view.intensity is None:
            raise ConfigurationError("a decoy-state round needs Alice's intensity labels (view.intensity)")
        self._codes: np.ndarray | None = None  # decoy rounds: intensity codes of the key bits

    def __repr__(self) -> str:
        return f"AliceParty(phase={self._phase!r})"

    @property
    def finished(self) -> bool:
        return self._phase in ("done", "aborted")

    def handle(self, frame: bytes) -> bytes:
        if self.finished:
            raise ProtocolError(f"Alice's round is over ({self._phase}); no more messages")
        expect = {
            "sift": m.SiftRequest, "estimate": m.EstimateRequest, "reconcile_start": m.ReconcileStart,
            "intensity": m.IntensityRequest, "test_bits": m.TestBitsRequest, "key_errors": m.KeyErrorsRequest,
            "reconcile": (m.TopParitiesRequest, m.RangeParitiesRequest, m.VerifyRequest),
            "amplify": m.AmplifyRequest,
        }[self._phase]
        msg = m.decode(frame, expect=expect)
        return m.encode(getattr(self, f"_on_{type(msg).__name__}")(msg))

    def _on_SiftRequest(self, msg: m.SiftRequest):
        n = self._view.bits.size
        proto = get_protocol(self.config.protocol)
        if msg.detected.size != n:
            raise ProtocolError(f"sift request covers {msg.detected.size} pulses, Alice sent {n}")
        try:
            bob_bases = proto.decode_bases(msg.bases, n)
        except ValueError as exc:
            raise ProtocolError(f"sift request covers {msg.bases.size // proto.basis_bits} pulses, Alice sent {n}: "
                                f"{exc}") from None
        keep = proto.sift(self._view.bases, bob_bases, msg.detected.astype(bool))
        self._key = self._view.bits[keep].astype(np.uint8)
        self.outcome.sifted_bits = int(keep.sum())
        self._phase = "estimate"
        if self.config.decoy is not None:
            self._codes, self._bases = self._view.intensity[keep], self._view.bases[keep]
            self._phase = "intensity"
        if self._key.size < 2:  # Bob sees the same count and stops here too
            self.outcome._abort(AbortReason.TOO_FEW_SIFTED_BITS)
            self._phase = "aborted"
        return m.SiftReply(keep)

    def _on_EstimateRequest(self, msg: m.EstimateRequest):
        n = self._key.size
        k = _sample_size(self.config, n) if n >= 2 else 0
        if n < 2 or msg.sample_size != k or msg.bob_bits.size != k:
            raise ProtocolError(f"estimate request: sample of {msg.sample_size} from {n} sifted bits, expected {k}")
        positions = _sample_positions(msg.seed, n, k)
        mine = self._key[positions]
        self.outcome.qber = estimate_qber(int((mine != msg.bob_bits).sum()), k, epsilon=self.config.qber_epsilon)
        self.outcome.ledger.record("sample", k)
        self._key = np.delete(self._key, positions)
        if self.outcome.qber.upper > self.config.abort_qber:
            self.outcome._abort(AbortReason.QBER_TOO_HIGH)
            self._phase = "aborted"
        else:
            budget = self.outcome.leak_budget = leak_budget(self.config, self._key.size, k, self.outcome.qber)
            if budget.top_level_bits > budget.bits:  # Bob sees the same and stops here too
                self.outcome._abort(budget.reason(budget.top_level_bits))
                self._phase = "aborted"
            else:
                self._phase = "reconcile_start"
        return m.EstimateReply(mine)

    def _on_IntensityRequest(self, msg: m.IntensityRequest):
        self._phase = "test_bits"
        return m.IntensityReply(self._codes.astype(np.uint16))

    def _on_TestBitsRequest(self, msg: m.TestBitsRequest):
        o, test = self.outcome, self._bases == TEST_BASIS
        if msg.bob_bits.size != int(test.sum()):
            raise ProtocolError(f"test bits request holds {msg.bob_bits.size} bits, Alice has {int(test.sum())} "
                                "sifted test-basis pulses")
        mine = self._key[test]
        errors = mine != msg.bob_bits
        o.qber = estimate_qber(int(errors.sum()), mine.size, epsilon=self.config.qber_epsilon)
        o.ledger.record("sample", mine.size)
        o.decoy_counts = self.config.decoy.counts(self._codes[~test], self._codes[test], errors)
        self._key, self._codes = self._key[~test], self._codes[~test]
        reason = _decoy_check(self.config, o, self._key.size)
        if reason is not None:
            o._abort(reason)
            self._phase = "aborted"
        else:
            self._phase = "reconcile_start"
        return m.TestBitsReply(mine)

    def _on_KeyErrorsRequest(self, msg: m.KeyErrorsRequest):
        o = self.outcome
        detections = o.decoy_counts.key.detections
        labels = self.config.decoy.labels
        if msg.errors.size != len(labels) or any(int(e) > detections[k] for e, k in zip(msg.errors, labels)):
            raise ProtocolError(f"key-basis error counts {msg.errors.tolist()} do not fit the detections "
                                f"{[detections[k] for k in labels]}")
        o.ledger.record("statistics", sum(count_bits(detections[k]) for k in labels))
        o.decoy_counts = _with_key_errors(o.decoy_counts, labels, msg.errors)
        self._settle_length()
        return m.KeyErrorsAck()

    def _settle_length(self) -> None:
        o = self.outcome
        _final_length(self.config, o, self._key.size)
        if o.key_length.length == 0:
            o._abort(AbortReason.KEY_TOO_SHORT)
            self._phase = "aborted"
        else:
            self._phase = "amplify"

    def _on_ReconcileStart(self, msg: m.ReconcileStart):
        if msg.preset != self.config.cascade:
            raise ProtocolError(f"Bob proposes Cascade preset {msg.preset!r}, agreed was {self.config.cascade!r}")
        self._cascade = CascadeAlice(self._key, seed=msg.seed, preset=msg.preset, qber=self.outcome.qber.estimate)
        self.outcome.cascade = {"variant": msg.preset, "leaked_bits": 0,
                                "leak_budget_bits": self.outcome.leak_budget.bits}
        self._phase = "reconcile"
        return m.ReconcileAck()

    def _on_TopParitiesRequest(self, msg):
        # Count what the answer would disclose before computing any of it.
        o, asked, disclosed = self.outcome, self._cascade.parities_asked(msg), self._cascade.leaked_bits
        budget = o.leak_budget.bits
        if disclosed + asked > budget:
            o.cascade["blocked_request_bits"] = asked
            o.ledger.record("cascade_parity", disclosed)
            o._abort(AbortReason.LEAK_BUDGET_EXCEEDED)
            self._phase = "aborted"
            raise ProtocolError(f"leak budget exceeded: {type(msg).__name__} asks for {asked} parity bits after "
                                f"{disclosed} disclosed; the round's budget is {budget} bits")
        reply = self._cascade.handle(msg)
        o.cascade["leaked_bits"] = self._cascade.leaked_bits
        return reply

    _on_RangeParitiesRequest = _on_TopParitiesRequest

    def _on_VerifyRequest(self, msg: m.VerifyRequest):
        if len(msg.hash_key) != 16 or len(msg.tag) != 16:
            raise ProtocolError("verify request needs a 16-byte hash key and a 16-byte tag")
        o = self.outcome
        o.ledger.record("cascade_parity", self._cascade.leaked_bits)
        o.ledger.record("verification", TAG_BITS)
        mine = _tag(self._key, msg.hash_key)
        match = hmac.compare_digest(mine, msg.tag)
        o.verification = {"ok": match, "tag_bits": TAG_BITS}
        o.reconciled_key = self._key
        if not match:
            o._abort(AbortReason.VERIFICATION_FAILED)
            self._phase = "aborted"
        elif self.config.decoy is not None and self.config.decoy.method == "rusca2018":
            self._phase = "key_errors"  # ℓ needs Bob's key-basis error counts
        else:
            self._settle_length()
        return m.VerifyReply(int(match), mine)

    def _on_AmplifyRequest(self, msg: m.AmplifyRequest):
        ell = self.outcome.key_length.length
        if msg.final_length != ell:
            raise ProtocolError(f"Bob asks for a {msg.final_length}-bit key, Alice computed {ell}")
        raw = np.frombuffer(self._random_bytes((self._key.size + ell - 1 + 7) // 8), dtype=np.uint8)
        seed = np.unpackbits(raw)[: self._key.size + ell - 1]
        self.outcome.key = FinalKey(toeplitz_hash(self._key, seed, ell).astype(np.uint8))
        self._phase = "done"
        return m.AmplifyReply(seed)


class BobParty:
    """Bob's side: :meth:`run` yields request frames and receives Alice's reply frames.

    ``random_bytes`` draws his public random choices (sample seed, Cascade seed, hash key).
    """

    def __init__(self, view: BobView, config: PostProcessingConfig = PostProcessingConfig(), *,
                 random_bytes: RandomBytes = secrets.token_bytes) -> None:
        get_protocol(config.protocol).check_bases("Bob's bases", view.bases)
        self._view = view
        self.config = config
        self._random_bytes = random_bytes
        self.outcome = PartyOutcome("bob")

    def __repr__(self) -> str:
        return "BobParty()"

    def run(self) -> Generator[bytes, bytes, PartyOutcome]:
        o, cfg, clock = self.outcome, self.config, time.perf_counter
        t0 = clock()
        bases = get_protocol(cfg.protocol).encode_bases(self._view.bases)
        reply = m.decode((yield m.encode(m.SiftRequest(self._view.detected, bases))), expect=m.SiftReply)
        if reply.keep.size != self._view.detected.size or (reply.keep.astype(bool) & ~self._view.detected).any():
            raise ProtocolError("Alice's sift reply keeps pulses Bob never detected")
        key = self._view.results[reply.keep.astype(bool)].astype(np.uint8)
        o.sifted_bits = n = key.size
        o.timings_s["sifting"], t0 = clock() - t0, clock()
        if n < 2:
            o._abort(AbortReason.TOO_FEW_SIFTED_BITS)
            return o

        if cfg.decoy is not None:
            codes = m.decode((yield m.encode(m.IntensityRequest())), expect=m.IntensityReply).codes
            if codes.size != n:
                raise ProtocolError(f"Alice announced {codes.size} intensity codes for {n} sifted pulses")
            try:
                cfg.decoy.check_codes(codes)
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
            test = self._view.bases[reply.keep.astype(bool)] == TEST_BASIS
            reply = m.decode((yield m.encode(m.TestBitsRequest(key[test]))), expect=m.TestBitsReply)
            if reply.alice_bits.size != int(test.sum()):
                raise ProtocolError(f"Alice returned {reply.alice_bits.size} test bits, expected {int(test.sum())}")
            errors = reply.alice_bits != key[test]
            o.qber = estimate_qber(int(errors.sum()), errors.size, epsilon=cfg.qber_epsilon)
            o.ledger.record("sample", errors.size)
            o.decoy_counts = cfg.decoy.counts(codes[~test], codes[test], errors)
            key, codes = key[~test], codes[~test]
            o.timings_s["estimation"], t0 = clock() - t0, clock()
            reason = _decoy_check(cfg, o, key.size)
            if reason is not None:  # Alice reaches the same verdict from the same counts
                o._abort(reason)
                return o
            budget = o.leak_budget
        else:
            k = _sample_size(cfg, n)
            seed = self._random_bytes(32)
            positions = _sample_positions(seed, n, k)
            frame = yield m.encode(m.EstimateRequest(seed, k, key[positions]))
            reply = m.decode(frame, expect=m.EstimateReply)
            if reply.alice_bits.size != k:
                raise ProtocolError(f"Alice returned {reply.alice_bits.size} sample bits, expected {k}")
            o.qber = estimate_qber(int((reply.alice_bits != key[positions]).sum()), k, epsilon=cfg.qber_epsilon)
            o.ledger.record("sample", k)
            key = np.delete(key, positions)
            o.timings_s["estimation"], t0 = clock() - t0, clock()
            if o.qber.upper > cfg.abort_qber:
                o._abort(AbortReason.QBER_TOO_HIGH)
                return o
            budget = o.leak_budget = leak_budget(cfg, key.size, k, o.qber)
            if budget.top_level_bits > budget.bits:  # Alice computes the same and stops too
                o._abort(budget.reason(budget.top_level_bits))
                return o

        o.key_before_reconciliation = key
        cascade_seed = self._random_bytes(16)
        m.decode((yield m.encode(m.ReconcileStart(cfg.cascade, cascade_seed))), expect=m.ReconcileAck)
        bob = CascadeBob(key, seed=cascade_seed, preset=cfg.cascade, qber=o.qber.estimate)
        s, gen, over = bob.stats, bob.run(), None
        try:
            request = next(gen)
            while True:
                # Alice refuses a request past the budget; an honest Bob never sends one.
                want = s.leaked_bits + parities_asked(request, preset=bob.preset, qber=bob.qber, n=bob.n)
                if want > budget.bits:
                    over = want
                    gen.close()
                    break
                expect = m.TopParitiesReply if isinstance(request, m.TopParitiesRequest) else m.RangeParitiesReply
                request = gen.send(m.decode((yield m.encode(request)), expect=expect))
        except StopIteration as stop:
            key = stop.value
        o.cascade = {"variant": s.preset, "passes": s.passes_run, "channel_uses": s.channel_uses,
                     "leaked_bits": s.leaked_bits, "corrected_bits": s.corrected_bits, "block_sizes": s.block_sizes,
                     "qber_estimate": s.qber_estimate, "leak_budget_bits": budget.bits}
        o.ledger.record("cascade_parity", s.leaked_bits)
        o.timings_s["reconciliation"], t0 = clock() - t0, clock()
        if over is not None:
            o.cascade["blocked_request_bits"] = over - s.leaked_bits
            o._abort(budget.reason(over))
            return o

        hash_key = self._random_bytes(16)
        mine = _tag(key, hash_key)
        reply = m.decode((yield m.encode(m.VerifyRequest(hash_key, mine))), expect=m.VerifyReply)
        o.ledger.record("verification", TAG_BITS)
        match = bool(reply.match) and hmac.compare_digest(mine, reply.tag)
        if bool(reply.match) != hmac.compare_digest(mine, reply.tag):
            raise ProtocolError("Alice's verification verdict contradicts her tag")
        blocks = math.ceil(key.size / 128) + 1
        o.verification = {"ok": match, "tag_bits": TAG_BITS, "collision_bound": blocks / 2.0 ** 128}
        o.reconciled_key = key
        o.timings_s["verification"], t0 = clock() - t0, clock()
        if not match:
            o._abort(AbortReason.VERIFICATION_FAILED)
            return o

        if cfg.decoy is not None and cfg.decoy.method == "rusca2018":
            # One decoy: the key-basis errors per intensity, known now that the key is corrected.
            wrong = key != o.key_before_reconciliation
            counts = np.bincount(codes[wrong].astype(np.int64), minlength=len(cfg.decoy.labels))
            m.decode((yield m.encode(m.KeyErrorsRequest(counts))), expect=m.KeyErrorsAck)
            det = o.decoy_counts.key.detections
            o.ledger.record("statistics", sum(count_bits(det[k]) for k in cfg.decoy.labels))
            o.decoy_counts = _with_key_errors(o.decoy_counts, cfg.decoy.labels, counts)
        _final_length(cfg, o, key.size)
        ell = o.key_length.length
        if ell == 0:
            o._abort(AbortReason.KEY_TOO_SHORT)
            return o
        reply = m.decode((yield m.encode(m.AmplifyRequest(ell))), expect=m.AmplifyReply)
        if reply.seed.size != key.size + ell - 1:
            raise ProtocolError(f"Toeplitz seed of {reply.seed.size} bits, expected {key.size + ell - 1}")
        o.key = FinalKey(toeplitz_hash(key, reply.seed, ell).astype(np.uint8))
        o.timings_s["amplification"] = clock() - t0
        return o


def drive(bob: BobParty, carry: Callable[[bytes], bytes]) -> PartyOutcome:
    """Run Bob's protocol, handing every frame to ``carry`` (e.g. ``alice.handle``)."""
    gen = bob.run()
    try:
        frame = next(gen)
        while True:
            frame = gen.send(carry(frame))
    except StopIteration as stop:
        return stop.value
