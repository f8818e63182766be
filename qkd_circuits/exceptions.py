"""The exceptions raised by qkd_circuits.

Every error the package raises on purpose derives from :class:`QKDError`::

    QKDError
    ├── ConfigurationError      a bad parameter, spec string or combination (also a ValueError)
    ├── BackendError            a quantum backend could not be found, reached or used
    │   └── MissingExtraError   an optional dependency is not installed (names the extra)
    ├── RecordError             a measurement record or job handle file is corrupt or foreign
    ├── ProtocolError           a peer's message is malformed, oversized or out of order, or
    │                           asks for more parity bits than the round's leak budget
    ├── AuthenticationError     a tag, signature or certificate did not verify (opaque on purpose)
    ├── KeyPoolExhausted        the authentication key pool ran dry: bootstrap again
    ├── KeyStoreError           the key store refused a request (not enough keys, unknown IDs...)
    └── ProtocolAborted         the protocol stopped on purpose; carries the measured values
        └── QBERTooHigh         the QBER upper bound exceeds the abort threshold

Programmer errors (wrong types) stay plain ``TypeError``.  Messages name the offending value and,
where there is one, the fix.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["AbortReason", "AuthenticationError", "BackendError", "ConfigurationError", "KeyPoolExhausted",
           "KeyStoreError", "LinkHalted", "MissingExtraError", "ProtocolAborted", "ProtocolError", "QBERTooHigh",
           "QKDError", "RecordError"]


class QKDError(Exception):
    """Base class of every error raised on purpose by qkd_circuits."""


class ConfigurationError(QKDError, ValueError):
    """A parameter, spec string or combination of options is invalid."""


class BackendError(QKDError):
    """A quantum backend could not be found, reached or used."""


class MissingExtraError(BackendError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""

    def __init__(self, extra: str, module: str, purpose: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"{purpose} needs the optional package {module!r}, which is not installed; "
            f"install it with: pip install 'qkd_circuits[{extra}]'"
        )


class RecordError(QKDError):
    """A saved measurement record or job handle is corrupt, truncated or from another version."""


class ProtocolError(QKDError):
    """A message from the peer is malformed, truncated, oversized or arrives out of order, or
    asks Alice for parity bits past the round's leak budget (her round then aborts with
    ``leak_budget_exceeded``)."""


class AuthenticationError(QKDError):
    """Authentication failed.  Deliberately says nothing about what or where: an attacker who
    can tell a bad tag from a bad certificate learns something."""

    def __init__(self, message: str = "authentication failed") -> None:
        super().__init__(message)


class KeyPoolExhausted(QKDError):
    """The authentication key pool has too few unused bits for the next tag."""


class KeyStoreError(QKDError):
    """The key store refused a request; subclasses say why (see :mod:`qkd_circuits.keystore`)."""


class AbortReason(str, Enum):
    """Why a round output no key: the ``abort_reason`` of every report.

    The values are the strings scripts read in ``--json`` reports (a contract: add, never
    rename); a member compares equal to its value (``AbortReason.QBER_TOO_HIGH == "qber_too_high"``)
    and serialises as it.

    A party's reasons: ``too_few_sifted_bits``, ``qber_too_high``, ``key_too_short``,
    ``leak_budget_exceeded`` (Cascade would disclose more parity bits than the round's leak
    budget; Alice also raises :class:`ProtocolError` at a peer that asks past it),
    ``verification_failed``.  A round's: ``authentication_failed`` (a tag or signature did not
    verify), ``no_key_left_after_replenishment`` (the pool refill took the whole key),
    ``no_key_released`` (the link stopped before the decision).  A decoy-state round's:
    ``decoy_check_failed`` (the bounds certify no single-photon detections).  A party over the
    network (:mod:`qkd_circuits.network`, the link node) whose round the channel ended reports
    ``authentication_failed`` for an :class:`AuthenticationError` and otherwise the channel
    error's class name: ``ProtocolError`` (a malformed or out-of-order message, or a peer that
    asked past the leak budget), ``TimeoutError`` (the peer went silent), ``ConnectionError``
    (the connection broke, or the peer went away before the tags); see
    :meth:`for_channel_failure`.  ``classroom_round``: ``qkd run --classroom`` compared every
    sifted bit in public, as a lesson does, so no key is left by design.  An E91 round's:
    ``chsh_not_violated`` (the test rounds' S is not above 2 at confidence: S_lower <= 2).

    >>> AbortReason("qber_too_high") is AbortReason.QBER_TOO_HIGH, str(AbortReason.KEY_TOO_SHORT)
    (True, 'key_too_short')
    """

    TOO_FEW_SIFTED_BITS = "too_few_sifted_bits"
    QBER_TOO_HIGH = "qber_too_high"
    KEY_TOO_SHORT = "key_too_short"
    LEAK_BUDGET_EXCEEDED = "leak_budget_exceeded"
    VERIFICATION_FAILED = "verification_failed"
    AUTHENTICATION_FAILED = "authentication_failed"
    NO_KEY_LEFT_AFTER_REPLENISHMENT = "no_key_left_after_replenishment"
    NO_KEY_RELEASED = "no_key_released"
    DECOY_CHECK_FAILED = "decoy_check_failed"
    PROTOCOL_ERROR = "ProtocolError"
    TIMEOUT_ERROR = "TimeoutError"
    CONNECTION_ERROR = "ConnectionError"
    CLASSROOM_ROUND = "classroom_round"
    CHSH_NOT_VIOLATED = "chsh_not_violated"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def for_channel_failure(cls, failure: str) -> AbortReason:
        """The reason of a network party's round that a channel error ended.

        ``failure`` is the error's kind as a round reports it (``auth["failure"]``:
        ``"AuthenticationError"``, ``"ProtocolError"``, ``"TimeoutError"`` or ``"ConnectionError"``).

        >>> AbortReason.for_channel_failure("AuthenticationError"), AbortReason.for_channel_failure("TimeoutError")
        (<AbortReason.AUTHENTICATION_FAILED: 'authentication_failed'>, <AbortReason.TIMEOUT_ERROR: 'TimeoutError'>)
        """
        if failure == "AuthenticationError":
            return cls.AUTHENTICATION_FAILED
        if failure not in (cls.PROTOCOL_ERROR, cls.TIMEOUT_ERROR, cls.CONNECTION_ERROR):
            raise ValueError(f"not a channel failure: {failure!r}")
        return cls(failure)


class ProtocolAborted(QKDError):
    """The protocol stopped on purpose; ``reason`` is an :class:`AbortReason` (a ``str``)."""

    reason = "aborted"


class QBERTooHigh(ProtocolAborted):
    """The upper confidence bound on the QBER is above the abort threshold."""

    reason = AbortReason.QBER_TOO_HIGH

    def __init__(self, upper: float, threshold: float, estimate: float) -> None:
        self.upper = upper
        self.threshold = threshold
        self.estimate = estimate
        super().__init__(
            f"QBER upper bound {upper:.4f} (estimate {estimate:.4f}) exceeds the abort "
            f"threshold {threshold:.4f}"
        )


class LinkHalted(AuthenticationError):
    """The link stopped after too many consecutive authentication failures; an operator must look.

    A single failed tag is what any active attacker (or a flipped bit) can cause, so it only
    fails its round; ``halt_after`` in a row (default 5) stop the link until an operator inspects
    the site and resumes it (``qkd psk resume FILE``).  What an attacker still has: denial of service.
    """

    def __init__(self, message: str = "the link halted after repeated authentication failures") -> None:
        QKDError.__init__(self, message)
