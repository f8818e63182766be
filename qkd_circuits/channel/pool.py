"""The authentication key pool: secret bits shared by Alice and Bob, each used exactly once.

Wegman–Carter authentication (Wegman & Carter 1981) tags a message with h_k(M) ⊕ r: the hash key
k may be reused across rounds, the one-time pad r may not (Portmann, IEEE Trans. IT 60, 4383
(2014), "Key recycling in authentication").  So the pool holds one long-lived 128-bit hash key
and a *stream* of pad bytes, consumed strictly forward:

* :meth:`AuthKeyPool.take` hands out the next pad bytes and erases them from the pool at once,
  whatever happens to the round afterwards (a failed round burns its pads too);
* :meth:`AuthKeyPool.replenish` appends bits from a new QKD key (never that round's own tags);
* running dry raises :class:`~qkd_circuits.KeyPoolExhausted`: bootstrap again.

``position`` counts the pad bytes consumed since bootstrap; both ends must agree on it, and the
round header carries it (authenticated) so a drift is caught, never papered over.

A PSK file holds the same material for both ends (``qkd psk init``)::

    "QKDPSK1\\n" | position u64 BE | hash key (16 bytes) | pad stream (the rest)

Keep it as secret as a key: it is one.
"""

from __future__ import annotations

import os
import secrets
import struct
from pathlib import Path

from ..exceptions import ConfigurationError, KeyPoolExhausted, RecordError

__all__ = ["AuthKeyPool", "HASH_KEY_BYTES", "create_psk_file"]

HASH_KEY_BYTES = 16
_MAGIC = b"QKDPSK1\n"
_HEADER = struct.Struct(">8sQ")


class AuthKeyPool:
    """Authentication key material for one party.

    Args:
        hash_key: the 16-byte polynomial-hash key (reused; Portmann 2014).
        pad: the one-time pad stream.
        position: pad bytes consumed before this stream starts (0 for a fresh bootstrap).
        bootstrap: a label for reports (``"psk"``, ``"demo-psk"``, ``"pki"``).
    """

    def __init__(self, hash_key: bytes, pad: bytes, *, position: int = 0, bootstrap: str = "psk") -> None:
        if len(hash_key) != HASH_KEY_BYTES:
            raise ConfigurationError(f"the hash key must be {HASH_KEY_BYTES} bytes, got {len(hash_key)}")
        self._hash_key = bytearray(hash_key)
        self._pad = bytearray(pad)
        self.position = int(position)
        self.bootstrap = bootstrap
        self.bytes_used = 0  # since this object was made
        self.bytes_added = 0

    def __repr__(self) -> str:
        return (f"AuthKeyPool(bootstrap={self.bootstrap!r}, position={self.position}, "
                f"available_bits={self.available_bits})")

    @property
    def available_bits(self) -> int:
        return 8 * len(self._pad)

    @property
    def hash_key(self) -> bytes:
        return bytes(self._hash_key)

    def take(self, nbytes: int) -> bytes:
        """The next ``nbytes`` pad bytes; they leave the pool (and are overwritten) now."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if nbytes > len(self._pad):
            raise KeyPoolExhausted(
                f"the authentication key pool holds {8 * len(self._pad)} bits, a round needs "
                f"{8 * nbytes}: bootstrap again (qkd psk init, or PKI)")
        out = bytes(self._pad[:nbytes])
        self._pad[:nbytes] = bytes(nbytes)  # zeroise before dropping the reference
        del self._pad[:nbytes]
        self.position += nbytes
        self.bytes_used += nbytes
        return out

    def skip_to(self, position: int) -> None:
        """Burn pad bytes up to ``position`` (forward only: nothing is ever handed out twice)."""
        if position < self.position:
            raise ValueError(f"cannot move the pool back from {self.position} to {position}")
        self.take(position - self.position)

    def replenish(self, material: bytes) -> None:
        """Append pad bytes taken from a new, verified final key (the same bytes at both ends)."""
        self._pad.extend(material)
        self.bytes_added += len(material)

    def erase(self) -> None:
        """Overwrite and drop all material (e.g. after a desynchronisation)."""
        self._pad[:] = bytes(len(self._pad))
        self._pad.clear()
        self._hash_key[:] = bytes(HASH_KEY_BYTES)

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the pool (position, hash key, unused pad) to ``path`` with mode 0600."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(_HEADER.pack(_MAGIC, self.position) + bytes(self._hash_key) + bytes(self._pad))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, bootstrap: str = "psk") -> AuthKeyPool:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RecordError(f"no PSK file at {path}: create one with 'qkd psk init {path}'") from None
        if len(data) < _HEADER.size + HASH_KEY_BYTES or data[:8] != _MAGIC:
            raise RecordError(f"{path} is not a qkd_circuits PSK file")
        _, position = _HEADER.unpack_from(data)
        key = data[_HEADER.size:_HEADER.size + HASH_KEY_BYTES]
        return cls(key, data[_HEADER.size + HASH_KEY_BYTES:], position=position, bootstrap=bootstrap)

    @classmethod
    def fresh(cls, pad_bytes: int = 4096, *, bootstrap: str = "demo-psk") -> AuthKeyPool:
        """A new random pool (from :mod:`secrets`); give a copy to each party."""
        return cls(secrets.token_bytes(HASH_KEY_BYTES), secrets.token_bytes(pad_bytes), bootstrap=bootstrap)

    def copy(self) -> AuthKeyPool:
        """An independent copy (for handing the same PSK to the other party in a simulation)."""
        other = AuthKeyPool(bytes(self._hash_key), bytes(self._pad), position=self.position, bootstrap=self.bootstrap)
        return other


def create_psk_file(path: str | Path, *, pad_bits: int = 1 << 16, overwrite: bool = False) -> Path:
    """Write a fresh PSK file for both ends (copy it to the other site over a trusted path)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigurationError(f"{path} exists; refusing to overwrite a PSK (pass overwrite=True)")
    if pad_bits < 256 or pad_bits % 8:
        raise ConfigurationError(f"pad_bits must be a multiple of 8 and at least 256, got {pad_bits}")
    return AuthKeyPool.fresh(pad_bits // 8, bootstrap="psk").save(path)
