"""Run a KME in a background thread (tests, notebooks, a link node) or in the foreground (``qkd kme serve``)."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading

from aiohttp import web

from ..exceptions import ConfigurationError
from ..keystore import KeyStore
from .server import KME_APP_KEY, KmeConfig, KmeRunner, make_app, make_metrics_app, purge_expired, recover

__all__ = ["RunningKme", "start_kme"]


class RunningKme:
    """A KME serving on ``host:port`` from its own event-loop thread; :meth:`stop` shuts it down
    (in-flight requests finish first, up to ``shutdown_timeout`` seconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, runners: list, thread: threading.Thread,
                 host: str, port: int, recovery: dict, app: web.Application, metrics=None,
                 metrics_port: int | None = None) -> None:
        self._loop, self._runners, self._thread, self._app = loop, runners, thread, app
        self.host, self.port, self.recovery = host, port, recovery
        self.metrics, self.metrics_port = metrics, metrics_port
        self._stopped = False

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def purge(self, ttl_s: float) -> int:
        """Drop the free keys older than ``ttl_s`` seconds here and at the peer (the leader
        site calls it); returns how many were dropped here."""
        kme = self._app[KME_APP_KEY]
        return asyncio.run_coroutine_threadsafe(purge_expired(kme.config, kme.store, ttl_s, kme=kme),
                                                self._loop).result(60)

    def settle(self) -> dict:
        """Settle pending reservations with the peer now (the background task does it anyway)."""
        from .server import settle

        return asyncio.run_coroutine_threadsafe(settle(self._app[KME_APP_KEY]), self._loop).result(60)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True

        async def cleanup():
            for runner in reversed(self._runners):
                await runner.cleanup()
        try:
            asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(90)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> RunningKme:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _address(value) -> tuple[str, int]:
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"metrics_listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def start_kme(config: KmeConfig, store: KeyStore, *, host: str = "127.0.0.1", port: int = 0,
              ssl_context: ssl.SSLContext | None = None, unix_path: str | None = None,
              unix_mode: int = 0o600, registry=None, metrics_listen: str | tuple | None = None,
              shutdown_timeout: float = 30.0) -> RunningKme:
    """Settle any reservations a crash left, then serve; returns once the sockets listen.

    TCP with mutual TLS (``ssl_context``), a Unix domain socket at ``unix_path`` (no network:
    the caller's uid names its SAE, ``config.uid_SAEs``, and the socket file's mode
    ``unix_mode`` decides who may connect at all; 0o660 with a shared group lets another user's
    application in), or both (the TLS listener then also takes the peer KME's assignments).

    Metrics: the KME's Prometheus metrics go into ``registry`` (a
    ``prometheus_client.CollectorRegistry``; a new one if ``None``), available as
    ``running.metrics``; ``metrics_listen="127.0.0.1:9100"`` (or ``(host, port)``, port 0 for
    any) also serves ``/health`` and ``/metrics`` there over plain HTTP, without client
    certificates — keep it on loopback.  A background task settles unsettled reservations with
    the peer until :meth:`RunningKme.stop`.
    """
    if ssl_context is None and unix_path is None:
        raise ValueError("serve over TLS (ssl_context), on a Unix socket (unix_path), or both")
    try:
        from .metrics import KmeMetrics

        metrics = KmeMetrics(registry)
    except ImportError:  # prometheus_client missing: serve without metrics
        if registry is not None or metrics_listen is not None:
            raise
        metrics = None
    metrics_address = _address(metrics_listen) if metrics_listen is not None else None
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name=f"kme-{config.KME_ID}")
    thread.start()

    async def setup():
        recovery = await recover(config, store)
        app = make_app(config, store, metrics=metrics)
        runner = KmeRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        runners = [runner]
        bound = 0
        try:
            if unix_path is not None:
                site = web.UnixSite(runner, unix_path)
                await site.start()
                os.chmod(unix_path, unix_mode)
            if ssl_context is not None:  # also the door for the peer KME's assignments
                site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
                await site.start()
                bound = site._server.sockets[0].getsockname()[1]  # the real port when port == 0
            metrics_port = None
            if metrics_address is not None:
                side = web.AppRunner(make_metrics_app(app), access_log=None)
                await side.setup()
                runners.append(side)
                msite = web.TCPSite(side, *metrics_address)
                await msite.start()
                metrics_port = msite._server.sockets[0].getsockname()[1]
        except BaseException:
            for r in reversed(runners):
                await r.cleanup()
            raise
        return runners, bound, recovery, app, metrics_port

    try:
        runners, bound, recovery, app, metrics_port = asyncio.run_coroutine_threadsafe(setup(), loop).result(60)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        raise
    return RunningKme(loop, runners, thread, host, bound, recovery, app, metrics, metrics_port)
