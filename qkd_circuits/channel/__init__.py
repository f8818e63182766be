"""The authenticated classical channel: key pool, Wegman–Carter envelopes, attacks."""

from .authenticated import PAD_BYTES_PER_ROUND, TAG_BYTES, AuthenticatedAlice, AuthenticatedBob, AuthSummary
from .pool import AuthKeyPool, create_psk_file

__all__ = ["AuthKeyPool", "AuthSummary", "AuthenticatedAlice", "AuthenticatedBob", "PAD_BYTES_PER_ROUND",
           "TAG_BYTES", "create_psk_file"]
