"""The authenticated classical channel: key pool and link state, Wegman–Carter envelopes, attacks."""

from .admission import admit, view_digest
from .authenticated import (DEFAULT_REPLENISH_BITS, ENVELOPE_HEADER_BYTES, PAD_BYTES_PER_ROUND, TAG_BYTES,
                            AuthenticatedAlice, AuthenticatedBob, AuthSummary, Settlement)
from .pool import AuthKeyPool, EpsilonLedger, LinkState, create_psk_file

__all__ = ["AuthKeyPool", "AuthSummary", "AuthenticatedAlice", "AuthenticatedBob", "DEFAULT_REPLENISH_BITS",
           "ENVELOPE_HEADER_BYTES", "EpsilonLedger", "LinkState", "PAD_BYTES_PER_ROUND", "Settlement", "TAG_BYTES",
           "admit", "create_psk_file", "view_digest"]
