"""A small synchronous ETSI GS QKD 014 client (standard library only), for SAEs and tests.

With ``unwrap_with=`` (a wrapping private key, :mod:`.wrap`) it opens the keys a KME wraps for
this SAE.  Wrapping is all or nothing per client, never a silent fallback: a client with
``unwrap_with`` that receives a plain Key object raises :class:`KeyNotWrapped`, and one without
it that receives a wrapped Key object raises :class:`KeyIsWrapped` (the blob is not the key).
Either way the keys of that request were already delivered and are spent at the KME; nothing
is returned.  A master can check first: the KME's Status carries ``status_extension
{"qkd_circuits_wrap": SUITE}`` when it wraps for the caller.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from urllib.parse import quote, urlencode

from ..exceptions import ProtocolError, QKDError

__all__ = ["KmeClient", "Etsi014Error", "WrapMismatch", "KeyNotWrapped", "KeyIsWrapped"]

_WRAP_EXTENSION = "qkd_circuits_wrap"  # wrap.EXTENSION (wrap needs cryptography: imported only to unwrap)


class Etsi014Error(QKDError):
    """The KME answered with an error: ``status`` and its JSON Error object in ``body``."""

    def __init__(self, status: int, body: dict) -> None:
        self.status, self.body = status, body
        super().__init__(f"KME answered {status}: {body.get('message', body)}")


class WrapMismatch(ProtocolError):
    """The KME's answer and this client disagree on wrapped delivery (see the module docstring).
    ``key_ID`` is the first Key object at fault; no message carries key bytes."""

    def __init__(self, message: str, key_ID: str | None = None) -> None:
        self.key_ID = key_ID
        super().__init__(message)


class KeyNotWrapped(WrapMismatch):
    """This client unwraps (``unwrap_with``) but the KME sent a plain key: it is not configured
    to wrap for this SAE (``--wrap-for``), so the key crossed TLS in the clear."""


class KeyIsWrapped(WrapMismatch):
    """The KME sent a wrapped key but this client has no ``unwrap_with`` private key."""


def _is_wrapped(key_object) -> bool:
    extension = key_object.get("key_extension") if isinstance(key_object, dict) else None
    return isinstance(extension, dict) and _WRAP_EXTENSION in extension


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class KmeClient:
    """Talks to one KME over mutual TLS as the SAE whose certificate ``ssl_context`` presents,
    or (``unix_path=``) over the KME's Unix socket as the SAE its uid maps to."""

    def __init__(self, host: str | None = None, port: int | None = None, ssl_context: ssl.SSLContext | None = None,
                 *, unix_path: str | None = None, timeout: float = 30.0, unwrap_with: bytes | None = None) -> None:
        if (unix_path is None) == (ssl_context is None):
            raise ValueError("connect over TLS (host, port, ssl_context) or a Unix socket (unix_path)")
        if unwrap_with is not None:
            from . import wrap

            wrap.public_key_of(unwrap_with)  # ConfigurationError now, not at the first delivery
            unwrap_with = bytes(unwrap_with)
        self._unwrap_with = unwrap_with
        self.host, self.port, self._ctx, self._timeout, self._unix = host, port, ssl_context, timeout, unix_path
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"KmeClient({self._unix or f'{self.host}:{self.port}'})"

    def _connection(self) -> http.client.HTTPConnection:
        if self._unix:
            return _UnixConnection(self._unix, self._timeout)
        return http.client.HTTPSConnection(self.host, self.port, context=self._ctx, timeout=self._timeout)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        # One kept-alive connection per client (one TLS handshake, not one per call); a
        # connection the server closed meanwhile is reopened once.  Not for use by two threads.
        headers = {"Content-Type": "application/json"} if body is not None else {}
        payload = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connection()
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                data = json.loads(response.read() or b"{}")
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
            except BaseException:
                self.close()
                raise
        if response.status != 200:
            raise Etsi014Error(response.status, data)
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _path(sae: str, leaf: str, query: dict | None = None) -> str:
        path = f"/api/v1/keys/{quote(sae, safe='')}/{leaf}"
        return path + ("?" + urlencode(query) if query else "")

    def status(self, slave_SAE_ID: str) -> dict:
        return self._call("GET", self._path(slave_SAE_ID, "status"))

    def get_key(self, slave_SAE_ID: str, *, number: int = 1, size: int | None = None,
                additional_slave_SAE_IDs: list[str] | None = None) -> list[tuple[str, bytes]]:
        """Get key (enc_keys) as master; returns ``[(key_ID, key bytes)]``."""
        body = {"number": number}
        if size is not None:
            body["size"] = size
        if additional_slave_SAE_IDs:
            body["additional_slave_SAE_IDs"] = additional_slave_SAE_IDs
        data = self._call("POST", self._path(slave_SAE_ID, "enc_keys"), body)
        return self._keys(data)

    def get_key_with_ids(self, master_SAE_ID: str, key_IDs: list[str]) -> list[tuple[str, bytes]]:
        """Get key with key IDs (dec_keys) as slave."""
        data = self._call("POST", self._path(master_SAE_ID, "dec_keys"),
                          {"key_IDs": [{"key_ID": k} for k in key_IDs]})
        return self._keys(data)

    def _keys(self, data: dict) -> list[tuple[str, bytes]]:
        """``[(key_ID, key bytes)]`` from a Key container, unwrapped with ``unwrap_with``; all
        Key objects are checked before any is opened."""
        objects = data["keys"]
        wanted = self._unwrap_with is not None
        for k in objects:
            if _is_wrapped(k) != wanted:
                key_ID = k.get("key_ID") if isinstance(k, dict) else None
                key_ID = key_ID if isinstance(key_ID, str) else None
                if wanted:
                    raise KeyNotWrapped(f"the KME sent key {key_ID!r} unwrapped, but this client expects wrapped "
                                        f"keys (is the KME configured to wrap for this SAE?); not used", key_ID)
                raise KeyIsWrapped(f"the KME sent key {key_ID!r} wrapped for this SAE; give the client its "
                                   f"wrapping private key (unwrap_with=) to open it", key_ID)
        if not wanted:
            return [(k["key_ID"], base64.b64decode(k["key"])) for k in objects]
        from . import wrap

        return [(k["key_ID"], wrap.unwrap_delivered(k, self._unwrap_with)) for k in objects]
