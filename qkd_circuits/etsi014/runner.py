"""Run a KME in a background thread (tests, notebooks) or in the foreground (``qkd kme serve``)."""

from __future__ import annotations

import asyncio
import os
import ssl
import threading

from aiohttp import web

from ..keystore import KeyStore
from .server import KmeConfig, make_app, recover

__all__ = ["RunningKme", "start_kme"]


class RunningKme:
    """A KME serving on ``host:port`` from its own event-loop thread; :meth:`stop` shuts it down."""

    def __init__(self, loop: asyncio.AbstractEventLoop, runner: web.AppRunner, thread: threading.Thread,
                 host: str, port: int, recovery: dict) -> None:
        self._loop, self._runner, self._thread = loop, runner, thread
        self.host, self.port, self.recovery = host, port, recovery

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> RunningKme:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_kme(config: KmeConfig, store: KeyStore, *, host: str = "127.0.0.1", port: int = 0,
              ssl_context: ssl.SSLContext | None = None, unix_path: str | None = None,
              unix_mode: int = 0o600) -> RunningKme:
    """Settle any reservations a crash left, then serve; returns once the socket listens.

    TCP with mutual TLS (``ssl_context``), a Unix domain socket at ``unix_path`` (no network:
    the caller's uid names its SAE, ``config.uid_SAEs``, and the socket file's mode
    ``unix_mode`` decides who may connect at all; 0o660 with a shared group lets another user's
    application in), or both (the TLS listener then also takes the peer KME's assignments).
    """
    if ssl_context is None and unix_path is None:
        raise ValueError("serve over TLS (ssl_context), on a Unix socket (unix_path), or both")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name=f"kme-{config.KME_ID}")
    thread.start()

    async def setup():
        recovery = await recover(config, store)
        runner = web.AppRunner(make_app(config, store), access_log=None)
        await runner.setup()
        bound = 0
        if unix_path is not None:
            site = web.UnixSite(runner, unix_path)
            await site.start()
            os.chmod(unix_path, unix_mode)
        if ssl_context is not None:  # also the door for the peer KME's assignments
            site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
            await site.start()
            bound = site._server.sockets[0].getsockname()[1]  # the real port when port == 0
        return runner, bound, recovery

    runner, bound, recovery = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)
    return RunningKme(loop, runner, thread, host, bound, recovery)
