"""Wrap each delivered key for an off-host SAE with ML-KEM-768 + X25519 (hybrid, post-quantum).

The SAE interface is TLS 1.3, whose key exchange here is classical (the OpenSSL 3.0 of this
system has no hybrid ML-KEM group): someone who records the session today and breaks its
ECDHE later (harvest now, decrypt later) would read every key in it.  With wrapping, the KME
encrypts each key to the SAE's long-term wrapping public key before it goes into the response,
so the recording alone reveals nothing unless ML-KEM-768 *and* X25519 both fall, or the SAE's
private wrapping key leaks (see docs/threat-model.md for the limits).

Keys (``lp(x)`` is ``u32 len(x) | x``, big-endian; every integer big-endian)::

    private = "QKWK" | version u8 (= 1) | type u8 (= 1) | ML-KEM-768 seed d||z (64) | X25519 private (32)
    public  = "QKWK" | version u8 (= 1) | type u8 (= 2) | ML-KEM-768 encapsulation key (1184)
              | X25519 public (32)

The private form holds the FIPS 203 seed (cryptography's ``private_bytes_raw``), from which the
decapsulation key is re-expanded; 102 bytes private, 1222 public.

One wrapped key::

    blob    = header | mlkem_ciphertext (1088) | ephemeral X25519 public (32) | AES-256-GCM(key) | tag (16)
    header  = "QKWR" | version u8 (= 1) | suite u8 (= 1: SUITE)
    ss_kem, mlkem_ciphertext = ML-KEM-768.Encaps(recipient ML-KEM key)
    ss_x    = X25519(ephemeral private, recipient X25519 public)
    context = lp(LABEL) | lp(key_ID, UTF-8) | lp(SUITE) | lp(recipient ML-KEM key) | lp(recipient X25519)
              | lp(mlkem_ciphertext) | lp(ephemeral X25519 public)
    okm     = HKDF-SHA-256(salt = none, IKM = lp(ss_kem) | lp(ss_x), info = SHA-256(context), 44 bytes)
    aes_key, nonce = okm[:32], okm[32:]
    sealed  = AES-256-GCM(aes_key, nonce, key, AAD = header | key_ID UTF-8)

Each wrap draws a fresh encapsulation and a fresh ephemeral X25519 key, so each AES key and
nonce is used once.  The key_ID is bound twice (HKDF context and AAD): a blob moved to another
key_ID does not open.  Errors: a blob whose length, magic, version or suite is wrong is
malformed and raises :class:`~qkd_circuits.ProtocolError`; a well-formed blob that does not open
(any byte changed, another key_ID, another recipient) raises the opaque
:class:`~qkd_circuits.AuthenticationError`; a bad key pair (bytes or file) raises
:class:`~qkd_circuits.ConfigurationError`.  No message carries key bytes.

Examples:
    >>> private, public = generate_wrapping_keypair()
    >>> len(private), len(public)
    (102, 1222)
    >>> blob = wrap_key(bytes(32), key_ID="550e8400-e29b-41d4-a716-446655440000", recipient_public=public)
    >>> len(blob)
    1174
    >>> unwrap_key(blob, key_ID="550e8400-e29b-41d4-a716-446655440000", private=private) == bytes(32)
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..exceptions import AuthenticationError, ConfigurationError, ProtocolError
from ..secretfile import read_secret_file, wipe, write_secret_file

__all__ = ["SUITE", "EXTENSION", "generate_wrapping_keypair", "public_key_of", "save_wrapping_key",
           "load_wrapping_key", "save_wrapping_public", "load_wrapping_public", "wrap_key", "unwrap_key",
           "wrap_for_sae", "unwrap_delivered", "MIN_KEY_BYTES", "MAX_KEY_BYTES"]

#: The suite's name, in the HKDF context and in every delivered Key object's key_extension.
SUITE = "mlkem768-x25519-hkdf-aesgcm/v1"
#: The key_extension member that marks a wrapped key in an ETSI 014 Key object.
EXTENSION = "qkd_circuits_wrap"
LABEL = b"qkd_circuits wrapped key delivery v1"

KEY_MAGIC, WRAP_MAGIC, VERSION, SUITE_ID = b"QKWK", b"QKWR", 1, 1
_PRIVATE, _PUBLIC = 1, 2
_SEED, _EK, _CT, _X, _TAG, _NONCE = 64, 1184, 1088, 32, 16, 12  # FIPS 203 Table 3 (ML-KEM-768), X25519, GCM
_KEY_HEADER = len(KEY_MAGIC) + 2
PRIVATE_BYTES, PUBLIC_BYTES = _KEY_HEADER + _SEED + _X, _KEY_HEADER + _EK + _X
_HEADER = WRAP_MAGIC + bytes([VERSION, SUITE_ID])
#: Sizes of a key that can be wrapped (a KME's keys are 256 bits; ETSI 014 sizes are multiples of 8 bits).
MIN_KEY_BYTES, MAX_KEY_BYTES = 1, 1024
_FIXED = len(_HEADER) + _CT + _X + _TAG
MIN_BLOB_BYTES, MAX_BLOB_BYTES = _FIXED + MIN_KEY_BYTES, _FIXED + MAX_KEY_BYTES
MAX_KEY_ID_BYTES = 255


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _bytes(value, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def _key_ID(key_ID) -> bytes:
    if not isinstance(key_ID, str):
        raise TypeError(f"key_ID must be a str, got {type(key_ID).__name__}")
    try:
        raw = key_ID.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError("key_ID is not valid UTF-8 text") from None
    if not 1 <= len(raw) <= MAX_KEY_ID_BYTES:
        raise ConfigurationError(f"key_ID must be 1 to {MAX_KEY_ID_BYTES} UTF-8 bytes, got {len(raw)}")
    return raw


def _split_key(data, kind: int) -> tuple[bytes, bytes]:
    name = "private" if kind == _PRIVATE else "public"
    data = _bytes(data, f"the wrapping {name} key")
    want = PRIVATE_BYTES if kind == _PRIVATE else PUBLIC_BYTES
    if len(data) != want or data[:4] != KEY_MAGIC or data[4] != VERSION or data[5] != kind:
        raise ConfigurationError(f"not a qkd_circuits v{VERSION} wrapping {name} key ({len(data)} bytes; a "
                                 f"{name} key is {want} bytes starting with {KEY_MAGIC!r}, version {VERSION}, "
                                 f"type {kind})")
    body = data[_KEY_HEADER:]
    return body[:-_X], body[-_X:]


def _private_parts(private) -> tuple[MLKEM768PrivateKey, X25519PrivateKey]:
    seed, x = _split_key(private, _PRIVATE)
    try:
        return MLKEM768PrivateKey.from_seed_bytes(seed), X25519PrivateKey.from_private_bytes(x)
    except ValueError:
        raise ConfigurationError("the wrapping private key does not load") from None


def _public_parts(public) -> tuple[bytes, bytes, MLKEM768PublicKey, X25519PublicKey]:
    ek, x = _split_key(public, _PUBLIC)
    try:  # FIPS 203 §7.2 modulus check on the encapsulation key
        return ek, x, MLKEM768PublicKey.from_public_bytes(ek), X25519PublicKey.from_public_bytes(x)
    except ValueError:
        raise ConfigurationError("the wrapping public key is invalid (ML-KEM-768 or X25519 part)") from None


def _encode_public(mlkem: MLKEM768PrivateKey, x: X25519PrivateKey) -> bytes:
    return (KEY_MAGIC + bytes([VERSION, _PUBLIC]) + mlkem.public_key().public_bytes_raw()
            + x.public_key().public_bytes_raw())


def generate_wrapping_keypair() -> tuple[bytes, bytes]:
    """A fresh SAE wrapping key pair ``(private, public)`` in the formats of the module docstring.

    The SAE keeps ``private`` (:func:`save_wrapping_key`, mode 0600) and gives ``public`` to its KME.
    """
    mlkem, x = MLKEM768PrivateKey.generate(), X25519PrivateKey.generate()
    private = KEY_MAGIC + bytes([VERSION, _PRIVATE]) + mlkem.private_bytes_raw() + x.private_bytes_raw()
    return private, _encode_public(mlkem, x)


def public_key_of(private) -> bytes:
    """The public key that belongs to a wrapping private key."""
    return _encode_public(*_private_parts(private))


def save_wrapping_key(path: str | os.PathLike, private, *, overwrite: bool = False) -> Path:
    """Write a wrapping private key with :func:`~qkd_circuits.secretfile.write_secret_file`
    (mode 0600, atomic, no symlink followed; an existing file is kept unless ``overwrite``)."""
    _private_parts(private)  # refuse to save something that will not load
    return write_secret_file(path, _bytes(private, "the wrapping private key"), overwrite=overwrite)


def load_wrapping_key(path: str | os.PathLike) -> bytes:
    """Read and check a wrapping private key file (RecordError: no file, a symlink; ConfigurationError:
    not a wrapping private key)."""
    buffer = read_secret_file(path)
    try:
        _private_parts(buffer)
        return bytes(buffer)
    finally:
        wipe(buffer)


def save_wrapping_public(path: str | os.PathLike, public, *, overwrite: bool = False) -> Path:
    """Write a wrapping public key (for the KME's ``--wrap-for SAE=PUBFILE``); same file rules."""
    _public_parts(public)
    return write_secret_file(path, _bytes(public, "the wrapping public key"), overwrite=overwrite)


def load_wrapping_public(path: str | os.PathLike) -> bytes:
    """Read and check a wrapping public key file."""
    data = bytes(read_secret_file(path))
    _public_parts(data)
    return data


def _derive(ss_kem: bytes, ss_x: bytes, key_ID: bytes, ek: bytes, x_pub: bytes, ct: bytes,
            epk: bytes) -> tuple[bytes, bytes]:
    context = (_lp(LABEL) + _lp(key_ID) + _lp(SUITE.encode()) + _lp(ek) + _lp(x_pub) + _lp(ct) + _lp(epk))
    okm = HKDF(SHA256(), 32 + _NONCE, salt=None, info=hashlib.sha256(context).digest()).derive(
        _lp(ss_kem) + _lp(ss_x))
    return okm[:32], okm[32:]


def _seal(key: bytes, key_ID: bytes, ek: bytes, x_pub: bytes, x_public: X25519PublicKey, ss_kem: bytes, ct: bytes,
          ephemeral: X25519PrivateKey) -> bytes:
    """The blob from an explicit encapsulation and ephemeral key: the seam tests/test_wrap.py pins."""
    epk = ephemeral.public_key().public_bytes_raw()
    try:
        ss_x = ephemeral.exchange(x_public)
    except ValueError:  # a low-order X25519 point: an all-zero shared secret
        raise ConfigurationError("the wrapping public key's X25519 part is invalid (low order)") from None
    aes_key, nonce = _derive(ss_kem, ss_x, key_ID, ek, x_pub, ct, epk)
    return _HEADER + ct + epk + AESGCM(aes_key).encrypt(nonce, key, _HEADER + key_ID)


def wrap_key(key: bytes, *, key_ID: str, recipient_public: bytes) -> bytes:
    """Encrypt ``key`` (1 to 1024 bytes) under key_ID to the holder of ``recipient_public``."""
    key = _bytes(key, "key")
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ConfigurationError(f"a wrapped key has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {len(key)}")
    raw_id = _key_ID(key_ID)
    ek, x_pub, mlkem_pub, x_public = _public_parts(recipient_public)
    ss_kem, ct = mlkem_pub.encapsulate()
    return _seal(key, raw_id, ek, x_pub, x_public, ss_kem, ct, X25519PrivateKey.generate())


def unwrap_key(blob: bytes, *, key_ID: str, private: bytes) -> bytes:
    """The key inside ``blob``, if it was wrapped under ``key_ID`` to this ``private`` key.

    Raises:
        ProtocolError: ``blob`` is truncated, oversized, or not a v1 wrapped key of this suite.
        AuthenticationError: it is well formed but does not open (tampered, another key_ID or
            another recipient); deliberately says nothing more.
        ConfigurationError: ``private`` is not a wrapping private key, or a bad ``key_ID``.
    """
    blob = _bytes(blob, "a wrapped key")
    if len(blob) > MAX_BLOB_BYTES:
        raise ProtocolError(f"wrapped key of {len(blob)} bytes exceeds the largest possible, {MAX_BLOB_BYTES}")
    if len(blob) < MIN_BLOB_BYTES:
        raise ProtocolError(f"wrapped key truncated: {len(blob)} bytes, at least {MIN_BLOB_BYTES} needed")
    if blob[:4] != WRAP_MAGIC:
        raise ProtocolError("not a qkd_circuits wrapped key (bad magic)")
    if blob[4] != VERSION or blob[5] != SUITE_ID:
        raise ProtocolError(f"wrapped key of version {blob[4]}, suite {blob[5]}; this reads version {VERSION}, "
                            f"suite {SUITE_ID} ({SUITE})")
    raw_id = _key_ID(key_ID)
    mlkem, x = _private_parts(private)
    pos = len(_HEADER)
    ct, epk, sealed = blob[pos:pos + _CT], blob[pos + _CT:pos + _CT + _X], blob[pos + _CT + _X:]
    ss_kem = mlkem.decapsulate(ct)  # never fails on a well-sized ciphertext (implicit rejection)
    try:
        ss_x = x.exchange(X25519PublicKey.from_public_bytes(epk))
    except ValueError:  # a low-order point put there by a tamperer
        raise AuthenticationError() from None
    public = _encode_public(mlkem, x)
    aes_key, nonce = _derive(ss_kem, ss_x, raw_id, public[_KEY_HEADER:_KEY_HEADER + _EK], public[-_X:], ct, epk)
    try:
        return AESGCM(aes_key).decrypt(nonce, sealed, _HEADER + raw_id)
    except InvalidTag:
        raise AuthenticationError() from None


def wrap_for_sae(keys: list[tuple[str, bytes]], public: bytes) -> list[dict]:
    """ETSI GS QKD 014 Key objects for one SAE, each key wrapped to its ``public`` key::

        {"key_ID": ..., "key": base64(blob), "key_extension": {"qkd_circuits_wrap": SUITE}}

    ``keys`` is what the store hands out, ``[(key_ID, key bytes)]``.
    """
    ek, x_pub, mlkem_pub, x_public = _public_parts(public)  # parsed once for the batch
    out = []
    for key_ID, key in keys:
        key = _bytes(key, "key")
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise ConfigurationError(f"a wrapped key has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, got {len(key)}")
        ss_kem, ct = mlkem_pub.encapsulate()
        blob = _seal(key, _key_ID(key_ID), ek, x_pub, x_public, ss_kem, ct, X25519PrivateKey.generate())
        out.append({"key_ID": key_ID, "key": base64.b64encode(blob).decode("ascii"),
                    "key_extension": {EXTENSION: SUITE}})
    return out


def unwrap_delivered(key_object: dict, private: bytes) -> bytes:
    """The key inside one Key object of an enc_keys/dec_keys answer made by :func:`wrap_for_sae`.

    Raises ProtocolError if the object is not a wrapped Key object of this suite (no or another
    ``key_extension``, bad base64), and what :func:`unwrap_key` raises.
    """
    if not isinstance(key_object, dict):
        raise ProtocolError(f"a Key object is a JSON object, got {type(key_object).__name__}")
    key_ID, encoded, extension = key_object.get("key_ID"), key_object.get("key"), key_object.get("key_extension")
    if not isinstance(extension, dict) or EXTENSION not in extension:
        raise ProtocolError(f"the Key object is not wrapped (no key_extension {EXTENSION!r}); ask the KME to wrap "
                            f"for this SAE, or read it as a plain key")
    if extension[EXTENSION] != SUITE:
        raise ProtocolError(f"the Key object is wrapped with {extension[EXTENSION]!r}; this reads {SUITE!r}")
    if not isinstance(key_ID, str) or not isinstance(encoded, str):
        raise ProtocolError("the Key object needs a string key_ID and a string key")
    try:
        _key_ID(key_ID)
    except ConfigurationError:
        raise ProtocolError("the Key object's key_ID is not 1 to 255 UTF-8 bytes") from None
    if len(encoded) > 4 * -(-MAX_BLOB_BYTES // 3):
        raise ProtocolError(f"wrapped key of {len(encoded)} base64 characters exceeds the largest possible")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("the Key object's key is not valid base64") from None
    return unwrap_key(blob, key_ID=key_ID, private=private)
