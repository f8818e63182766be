"""ETSI GS QKD 014 key delivery: the KME server (aiohttp, mutual TLS 1.3), a client, TLS material.

Needs the ``kme`` extra (aiohttp, prometheus-client) for the server; the client uses only the
standard library.  See ``docs/kme.md``.
"""

from .client import Etsi014Error, KeyIsWrapped, KeyNotWrapped, KmeClient, WrapMismatch
from .tls import client_context, init_tls_pki, server_context

__all__ = ["Etsi014Error", "KmeClient", "WrapMismatch", "KeyNotWrapped", "KeyIsWrapped", "client_context", "init_tls_pki", "server_context", "KmeConfig", "start_kme",
           "RunningKme", "KmeMetrics", "purge_expired"]


def __getattr__(name: str):
    if name in ("KmeConfig", "start_kme", "RunningKme", "purge_expired", "KmeMetrics"):
        try:
            from . import runner, server
        except ImportError:
            from ..exceptions import MissingExtraError

            raise MissingExtraError("kme", "aiohttp", "The ETSI 014 key-management server") from None
        if name == "KmeMetrics":
            try:
                from .metrics import KmeMetrics
            except ImportError:
                from ..exceptions import MissingExtraError

                raise MissingExtraError("kme", "prometheus-client", "The KME's metrics") from None
            return KmeMetrics
        return {"KmeConfig": server.KmeConfig, "start_kme": runner.start_kme, "RunningKme": runner.RunningKme,
                "purge_expired": server.purge_expired}[name]
    raise AttributeError(name)
