"""ETSI GS QKD 014 key delivery: the KME server (aiohttp, mutual TLS), a client, TLS material.

Needs the ``kme`` extra (aiohttp) for the server; the client uses only the standard library.
"""

from .client import Etsi014Error, KmeClient
from .tls import client_context, init_tls_pki, server_context

__all__ = ["Etsi014Error", "KmeClient", "client_context", "init_tls_pki", "server_context", "KmeConfig", "start_kme"]


def __getattr__(name: str):
    if name in ("KmeConfig", "start_kme"):
        try:
            from . import runner, server
        except ImportError:
            from ..exceptions import MissingExtraError

            raise MissingExtraError("kme", "aiohttp", "The ETSI 014 key-management server") from None
        return {"KmeConfig": server.KmeConfig, "start_kme": runner.start_kme}[name]
    raise AttributeError(name)
