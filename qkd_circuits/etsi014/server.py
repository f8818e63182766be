"""The ETSI GS QKD 014 V1.1.1 key-delivery API of one site's KME (aiohttp, mutual TLS 1.3).

Endpoints (the caller's SAE ID is the CN of its verified client certificate, or on a Unix
socket the SAE mapped to the caller's uid)::

    GET        /api/v1/keys/{slave_SAE_ID}/status
    GET|POST   /api/v1/keys/{slave_SAE_ID}/enc_keys       the caller is the master
    GET|POST   /api/v1/keys/{master_SAE_ID}/dec_keys      the caller is a slave
    POST       /peer/v1/assign | assign_batch | unassign | purge    the peer KME only (its certificate's CN)

and, on the separate plain-HTTP metrics listener (``start_kme(metrics_listen=...)``, off by
default), ``GET /health`` and ``GET /metrics`` (Prometheus text format).

Only 200, 400, 401 and 503 are answered on the API, always with a JSON body (an Error object
``{"message": ..., "details": [...]}`` on errors) — also for requests aiohttp's HTTP parser
refuses (a request line or header over 8,190 bytes, a malformed request line).  A Get key request
reserves keys in the store, has the peer KME record the assignment for slaves attached there,
and only then delivers: a key a slave cannot fetch is never handed to a master, and none is
handed out twice (see :mod:`qkd_circuits.keystore`).  Peer calls are idempotent (each names its
reservation) and retried within ``peer_timeout``; a reservation the peer did not confirm in time
stays *unsettled* — its keys are never reserved again — until a background task settles it
(undone at the peer and released, or finalized as orphaned if a slave there fetched it).

Keys of any multiple of 8 bits from 8 to ``max_key_size`` are cut from the stock of
``key_size``-bit units: a key of ``s`` bits takes ``ceil(s / key_size)`` units in stock order,
truncated to ``s`` bits (the rest is wasted), and its key_ID is the first unit's; the peer
records the same composite, so both sites derive the same bytes under the same key_ID.

One log line per request goes to the ``qkd_circuits.kme`` logger (method, path, caller, status,
keys, key_IDs, latency; never key bytes): :class:`JsonLogFormatter` writes it as JSON.

Wrapped delivery (``KmeConfig.wrap_keys``, :mod:`.wrap`): an SAE configured with a wrapping
public key gets every key it is handed (enc_keys as master, dec_keys as slave) wrapped to that
key, in a worker thread off the event loop, with ``key_extension {"qkd_circuits_wrap": SUITE}``;
its Status carries ``status_extension {"qkd_circuits_wrap": SUITE}``.  The choice is the KME's
configuration per receiving SAE, never the request's: no request can ask for plain keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import socket
import ssl
import struct
import time
import uuid
import threading
from dataclasses import dataclass, field
from functools import partial

from aiohttp import ClientConnectionError, ClientError, ClientSession, ClientTimeout, TCPConnector, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..exceptions import ConfigurationError, KeyStoreError
from ..keystore import (AlreadyDelivered, KeyStore, KeysNotFound, NotARecipient, NotEnoughKeys, ReservationCancelled,
                        StoreUnavailable)
from . import wrap
from .tls import peer_identity

__all__ = ["KmeConfig", "make_app", "make_metrics_app", "purge_expired", "recover", "settle", "JsonLogFormatter",
           "KmeRunner", "MIN_KEY_SIZE"]

log = logging.getLogger("qkd_circuits.kme")

MIN_KEY_SIZE = 8

# Typed storage keys (plain strings on an aiohttp without them).
_RequestKey = getattr(web, "RequestKey", None)
_CALLER = _RequestKey("kme_caller", object) if _RequestKey else "kme_caller"
_KEYS = _RequestKey("kme_keys", int) if _RequestKey else "kme_keys"
_KEY_IDS = _RequestKey("kme_key_IDs", int) if _RequestKey else "kme_key_IDs"
KME_APP_KEY = web.AppKey("kme", object) if hasattr(web, "AppKey") else "kme"


@dataclass(frozen=True)
class KmeConfig:
    """One site's KME.

    Attributes:
        KME_ID: this KME (``source_KME_ID`` in Status).
        local_SAEs: SAE IDs attached to this site (allowed to call it).
        peer_KME_ID: the KME at the other end of the QKD link (``target_KME_ID``).
        remote_SAEs: SAE IDs attached to the peer site.
        peer_url: ``https://host:port`` of the peer KME (``None``: no peer to tell).
        key_size: the stock unit and default key size, in bits (a positive multiple of 8).
        max_key_size: the largest key served (a multiple of 8, at least 8); ``None``:
            ``8 * key_size``.  Status reports ``min_key_size`` = 8 and this.
        max_key_per_request: the most keys (or key_IDs) in one request.
        max_key_count: the most keys the store holds (applied to a store that has no limit).
        max_SAE_ID_count: the most ``additional_slave_SAE_IDs`` in one request (ETSI 014).
        peer_timeout: seconds A waits for the peer to record an assignment (all retries
            included) before answering 503 and leaving the reservation to be settled; the
            peer's store busy timeout should be shorter.
        settle_interval, settle_max_interval: the settling task's first and longest pause
            between attempts (doubling while the peer does not answer).
        uid_SAEs: on a Unix socket, the SAE ID of each local user id (from the kernel's peer
            credentials, SO_PEERCRED); the socket file's permissions are the outer fence.
        wrap_keys: SAE ID -> wrapping public key (:func:`.wrap.generate_wrapping_keypair`):
            every key handed to that SAE (as master or slave) is wrapped to it
            (:func:`.wrap.wrap_for_sae`).  Each SAE must be a local SAE and each key must parse;
            with any set, ``max_key_size`` is at most ``8 * wrap.MAX_KEY_BYTES`` bits.
    """

    KME_ID: str
    local_SAEs: frozenset
    peer_KME_ID: str | None = None
    remote_SAEs: frozenset = frozenset()
    peer_url: str | None = None
    key_size: int = 256
    max_key_per_request: int = 128
    max_key_count: int = 100_000
    max_SAE_ID_count: int = 8
    peer_ssl: ssl.SSLContext | None = field(default=None, repr=False)
    uid_SAEs: dict = field(default_factory=dict)  # Unix-socket mode: peer uid -> SAE ID
    max_key_size: int | None = None
    peer_timeout: float = 10.0
    settle_interval: float = 0.5
    settle_max_interval: float = 30.0
    wrap_keys: dict = field(default_factory=dict, repr=False)  # SAE ID -> wrapping public key

    def __post_init__(self) -> None:
        def positive(name, value, *, zero=False):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
                raise ConfigurationError(f"{name} must be a {'non-negative' if zero else 'positive'} integer, "
                                         f"got {value!r}")
        positive("key_size", self.key_size)
        if self.key_size % 8:
            raise ConfigurationError(f"key_size must be a positive multiple of 8 bits, got {self.key_size}")
        if self.max_key_size is None:
            object.__setattr__(self, "max_key_size", 8 * self.key_size)
        positive("max_key_size", self.max_key_size)
        if self.max_key_size % 8:
            raise ConfigurationError(f"max_key_size must be a positive multiple of 8 bits, got {self.max_key_size}")
        positive("max_key_per_request", self.max_key_per_request)
        positive("max_key_count", self.max_key_count, zero=True)
        positive("max_SAE_ID_count", self.max_SAE_ID_count, zero=True)
        for name in ("peer_timeout", "settle_interval", "settle_max_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        self._check_wrap_keys()

    def _check_wrap_keys(self) -> None:
        if not isinstance(self.wrap_keys, dict):
            raise ConfigurationError(f"wrap_keys must be a dict of SAE ID -> wrapping public key, got "
                                     f"{type(self.wrap_keys).__name__}")
        checked = {}
        for sae, public in self.wrap_keys.items():
            if not isinstance(sae, str) or sae not in self.local_SAEs:
                raise ConfigurationError(f"wrap_keys names {sae!r}, which is not a local SAE of this KME "
                                         f"(one of {sorted(self.local_SAEs)})")
            if not isinstance(public, (bytes, bytearray, memoryview)):
                raise ConfigurationError(f"the wrapping public key of {sae!r} must be bytes, got "
                                         f"{type(public).__name__}")
            public = bytes(public)
            try:
                # One trial wrap: parses both parts and also catches a low-order X25519 key, which
                # parses but would fail every delivery after its keys were spent.
                wrap.wrap_key(b"\0", key_ID="config-check", recipient_public=public)
            except ConfigurationError as exc:
                raise ConfigurationError(f"the wrapping public key of {sae!r}: {exc}") from None
            checked[sae] = public
        if checked and self.max_key_size > 8 * wrap.MAX_KEY_BYTES:
            raise ConfigurationError(f"max_key_size {self.max_key_size} is too large for wrapped delivery "
                                     f"(at most {8 * wrap.MAX_KEY_BYTES} bits)")
        object.__setattr__(self, "wrap_keys", checked)


class _Error(Exception):
    def __init__(self, status: int, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.details = status, message, details


def _error(status: int, message: str, details: list | None = None) -> web.Response:
    body = {"message": message}
    if details:
        body["details"] = details
    return web.json_response(body, status=status)


def _caller(request: web.Request, config: KmeConfig) -> str | None:
    """The caller's SAE ID: the CN of its verified TLS certificate, or, on a Unix socket, the
    SAE mapped to the connecting process's uid.  ``None`` when neither identifies it."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is not None:
        return peer_identity(ssl_object.getpeercert())
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_UNIX and config.uid_SAEs:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return config.uid_SAEs.get(uid)
    return None


async def _body(request: web.Request, allowed: set[str]) -> dict:
    if request.method == "GET":
        params = dict(request.query)
        if len(params) != len(request.query):
            raise _Error(400, "a query parameter is repeated")
        unknown = set(params) - allowed
        if unknown:
            raise _Error(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        return params
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise _Error(400, "the request body is too large") from None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, RecursionError, LookupError):
        # RecursionError: absurdly deep nesting; LookupError: an unknown declared charset.
        raise _Error(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _Error(400, "the request body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise _Error(400, f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return body


def _integer(value, name: str, *, from_query: bool) -> int:
    if isinstance(value, str) and from_query:
        if not (value.isascii() and value.isdigit()) or len(value) > 9:  # no "²" or full-width digits
            raise _Error(400, f"{name} shall be a positive integer")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 1 << 31:
        raise _Error(400, f"{name} shall be a positive integer")
    return value


def _text(value) -> bool:
    """A string that UTF-8 can carry (JSON allows lone surrogates, which it cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sae_id(value, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not _text(value):
        raise _Error(400, f"{what} shall be a string of 1 to 256 characters")
    return value


@web.middleware
async def _only_spec_errors(request: web.Request, handler):
    """On the API, answer with the spec's codes and a JSON Error object, never aiohttp's pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status in (200, 400, 401, 503):
            raise
        return _error(400, f"bad request: {exc.reason}")


# -- HTTP parser errors: a JSON Error object instead of aiohttp's text/plain page ------------------

class _JsonErrorHandler(RequestHandler):
    """aiohttp answers what its HTTP parser refuses (and unexpected handler failures) from
    ``handle_error``, which no middleware sees: answer with a JSON Error object instead."""

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            log.debug("refused an unparsable request (%s)", type(exc).__name__ if exc else status)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        if status >= 500:
            response = _error(503, "the KME could not serve this request")
        else:
            response = _error(400, f"bad request: {type(exc).__name__ if exc else 'unparsable request'}")
        response.force_close()
        return response


class _JsonErrorServer(Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class KmeRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections answer parser errors with JSON."""

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        return _JsonErrorServer(server.request_handler, request_factory=server.request_factory,
                                handler_cancellation=server.handler_cancellation, loop=server._loop,
                                **server._kwargs)


# -- logging --------------------------------------------------------------------------------------

class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        out.update(getattr(record, "kme", {}) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _endpoint(request: web.Request) -> str:
    path = request.path
    if path.startswith("/api/"):
        for leaf in ("status", "enc_keys", "dec_keys"):
            if path.endswith("/" + leaf):
                return leaf
        return "api"
    if path.startswith("/peer/"):
        return "peer_" + path.rsplit("/", 1)[-1][:16]
    return "other"


# -- the KME's shared state -------------------------------------------------------------------------

class _PeerUnreachable(Exception):
    pass


class _StoreThread:
    """The KME's one store thread: it runs the store operations queued by the event loop in
    batches, each batch one transaction (:meth:`KeyStore.batch`: one commit for every request
    waiting meanwhile), and hands the results back only once the batch is committed.  One
    thread instead of a pool: no GIL convoy between many threads that would only queue for the
    store's lock anyway."""

    def __init__(self, store: KeyStore, name: str) -> None:
        self._store = store
        self._items: list = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn, loop: asyncio.AbstractEventLoop) -> asyncio.Future:
        future = loop.create_future()
        with self._wake:
            if self._closed:
                raise KeyStoreError("the KME is stopping")
            self._items.append((fn, future, loop))
            self._wake.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._items and not self._closed:
                    self._wake.wait()
                if not self._items and self._closed:
                    return
                items, self._items = self._items, []
            outcomes = []
            batch = getattr(self._store, "batch", None)
            try:
                if batch is None or len(items) == 1:  # nothing to share a commit with
                    outcomes = [self._call(fn) for fn, _, _ in items]
                else:
                    with batch():
                        outcomes = [self._call(fn) for fn, _, _ in items]
            except BaseException as exc:  # noqa: BLE001 - the batch is void: every caller hears it
                error = exc if isinstance(exc, KeyStoreError) else StoreUnavailable(str(exc))
                outcomes = [(None, error)] * len(items)
            by_loop: dict = {}
            for (fn, future, loop), outcome in zip(items, outcomes):
                by_loop.setdefault(loop, []).append((future, outcome))
            for loop, done in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:  # the loop is closed
                    pass

    @staticmethod
    def _call(fn):
        try:
            return fn(), None
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting request
            return None, exc

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(30)


def _resolve(done) -> None:
    for future, (result, error) in done:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _Kme:
    """What one KME's handlers and background tasks share: config, store, metrics, the peer
    link, the reservations being handled right now, and the store thread."""

    def __init__(self, config: KmeConfig, store: KeyStore, metrics=None) -> None:
        self.config, self.store, self.metrics = config, store, metrics
        self.in_flight: set[str] = set()
        self.worker = _StoreThread(store, f"kme-{config.KME_ID}-store")
        self._session: ClientSession | None = None
        self.peer_ok = True
        self._assignments: list = []  # (payload, future, deadline) made in this turn of the event loop
        self._assigners: set = set()

    async def blocking(self, fn, *args, **kwargs):
        return await self.worker.submit(partial(fn, *args, **kwargs), asyncio.get_running_loop())

    def session(self) -> ClientSession | None:
        if self.config.peer_url is None or self.config.peer_ssl is None:
            return None
        if self._session is None:
            self._session = ClientSession(connector=TCPConnector(ssl=self.config.peer_ssl, limit=64))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.worker.close()

    async def assign(self, payload: dict) -> tuple[int, dict]:
        """Have the peer record one assignment.  Assignments made in the same turn of the event
        loop (requests woken together by one store commit) go in one call
        (``/peer/v1/assign_batch``: one request, one commit there); calls do not wait for each other.

        Returns the peer's ``(status, body)`` for this assignment; raises :class:`_PeerUnreachable`
        if no answer came within ``peer_timeout``."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "never retrieved"
        deadline = loop.time() + self.config.peer_timeout
        self._assignments.append((payload, future, deadline))
        if len(self._assignments) == 1:
            loop.call_soon(self._flush_assignments)
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise _PeerUnreachable("the peer KME did not answer assign in time") from None

    def _flush_assignments(self) -> None:
        items, self._assignments = self._assignments, []
        if items:
            task = asyncio.get_running_loop().create_task(self._send_assignments(items))
            self._assigners.add(task)
            task.add_done_callback(self._assigners.discard)

    async def _send_assignments(self, items: list) -> None:
        loop = asyncio.get_running_loop()
        budget = max(d for _, _, d in items) - loop.time()
        try:
            if len(items) == 1:
                answers = [await self.peer("assign", items[0][0], budget=budget)]
            else:
                status, body = await self.peer("assign_batch", {"assignments": [p for p, _, _ in items]},
                                               budget=budget)
                results = body.get("results") if status == 200 else None
                if isinstance(results, list) and len(results) == len(items):
                    answers = [(int(r.get("status", 500)), r) if isinstance(r, dict) else (500, {}) for r in results]
                else:
                    answers = [(status if status != 200 else 500, body)] * len(items)
        except Exception as exc:  # noqa: BLE001 - every waiting request hears it (_PeerUnreachable mostly)
            for _, future, _ in items:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, _PeerUnreachable) else _PeerUnreachable(str(exc)))
            return
        for (_, future, _), answer in zip(items, answers):
            if not future.done():
                future.set_result(answer)

    async def peer(self, action: str, payload: dict, *, budget: float | None = None) -> tuple[int, dict]:
        """POST to the peer KME; retried (the calls are idempotent) with a short backoff while
        the connection fails, within ``budget`` seconds (default ``peer_timeout``).

        Returns ``(status, JSON body)`` of the peer's answer.  Raises :class:`_PeerUnreachable`
        if none came in time."""
        session = self.session()
        if session is None:
            raise _PeerUnreachable("no peer KME is configured")
        deadline = time.monotonic() + (self.config.peer_timeout if budget is None else budget)
        pause = 0.05
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                async with session.post(f"{self.config.peer_url}/peer/v1/{action}", json=payload,
                                        timeout=ClientTimeout(total=left)) as response:
                    try:
                        body = await response.json(content_type=None)
                    except (ValueError, ClientError):
                        body = {}
                    if response.status < 500:
                        self.peer_ok = True
                        return response.status, body if isinstance(body, dict) else {}
            except asyncio.TimeoutError:
                break
            except (ClientConnectionError, ClientError, OSError):
                pass
            if self.metrics is not None:
                self.metrics.peer_failures.labels(action).inc()
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 1.0)
        self.peer_ok = False
        if self.metrics is not None:
            self.metrics.peer_failures.labels(action).inc()
        raise _PeerUnreachable(f"the peer KME did not answer {action} in time")


def make_app(config: KmeConfig, store: KeyStore, *, metrics=None) -> web.Application:
    """The aiohttp application of one KME (``metrics``: a :class:`~.metrics.KmeMetrics`)."""
    if store.max_key_count is None:
        store.max_key_count = config.max_key_count
    kme = _Kme(config, store, metrics)
    app = web.Application(client_max_size=1 << 20, middlewares=[_log_requests, _only_spec_errors])
    app[KME_APP_KEY] = kme
    blocking = kme.blocking

    async def background(app_):
        task = asyncio.get_running_loop().create_task(_settle_forever(kme))
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await kme.close()
    app.cleanup_ctx.append(background)

    def api(handler):
        async def wrapped(request: web.Request) -> web.Response:
            caller = _caller(request, config)
            request[_CALLER] = caller
            if caller is None or caller not in config.local_SAEs:
                return _error(401, "the caller is not an SAE of this KME")
            try:
                return await handler(request, caller)
            except _Error as exc:
                return _error(exc.status, exc.message, exc.details)
            except NotEnoughKeys:
                return _error(503, "not enough key material on KME for this request")
            except NotARecipient:
                return _error(401, "the caller is not a slave of every requested key")
            except KeysNotFound:
                return _error(400, "one or more keys specified are not found on KME")
            except KeyStoreError:
                return _error(503, "the key store could not serve this request")
        return wrapped

    async def key_objects(caller: str, keys) -> list[dict]:
        """The Key objects for ``caller``: wrapped to its public key if the configuration says so
        (CPU work: in a worker thread, not on the event loop nor the store thread), else plain."""
        public = config.wrap_keys.get(caller)
        if public is None:
            return [{"key_ID": k.key_ID, "key": base64.b64encode(k.key).decode()} for k in keys]
        pairs = [(k.key_ID, k.key) for k in keys]
        try:
            return await asyncio.get_running_loop().run_in_executor(None, wrap.wrap_for_sae, pairs, public)
        except ConfigurationError:  # cannot happen for a checked config; the message never holds key bytes
            log.exception("wrapping keys for %s failed", caller)
            raise _Error(503, "the KME could not wrap the keys for this SAE") from None

    def known_slave(slave: str) -> None:
        if not _text(slave) or (slave not in config.local_SAEs and slave not in config.remote_SAEs):
            raise _Error(400, f"slave SAE {slave!r} is not known to this KME")

    @api
    async def status(request: web.Request, caller: str) -> web.Response:
        slave = request.match_info["slave_SAE_ID"]
        known_slave(slave)
        if request.query:
            raise _Error(400, f"unknown query parameter(s): {', '.join(sorted(request.query))}")
        stored = await blocking(store.count_free, config.key_size)
        target = config.KME_ID if slave in config.local_SAEs else config.peer_KME_ID
        return web.json_response({
            "source_KME_ID": config.KME_ID, "target_KME_ID": target, "master_SAE_ID": caller,
            "slave_SAE_ID": slave, "key_size": config.key_size, "stored_key_count": stored,
            "max_key_count": store.max_key_count, "max_key_per_request": config.max_key_per_request,
            "max_key_size": config.max_key_size, "min_key_size": MIN_KEY_SIZE,
            "max_SAE_ID_count": config.max_SAE_ID_count,
            **({"status_extension": {wrap.EXTENSION: wrap.SUITE}} if caller in config.wrap_keys else {}),
        })

    @api
    async def enc_keys(request: web.Request, caller: str) -> web.Response:
        slave = request.match_info["slave_SAE_ID"]
        body = await _body(request, {"number", "size", "additional_slave_SAE_IDs", "extension_mandatory",
                                     "extension_optional"} if request.method == "POST" else {"number", "size"})
        query = request.method == "GET"
        number = _integer(body.get("number", 1), "number", from_query=query)
        size = _integer(body.get("size", config.key_size), "size", from_query=query)
        if size % 8:
            raise _Error(400, "size shall be a multiple of 8")
        if not MIN_KEY_SIZE <= size <= config.max_key_size:
            raise _Error(400, f"requested key size is not supported: this KME serves keys of {MIN_KEY_SIZE} to "
                              f"{config.max_key_size} bits")
        if number > config.max_key_per_request:
            raise _Error(400, f"number of requested keys exceeds max_key_per_request ({config.max_key_per_request})")
        mandatory = body.get("extension_mandatory", [])
        if not isinstance(mandatory, list) or not all(isinstance(e, dict) for e in mandatory):
            raise _Error(400, "extension_mandatory shall be an array of objects")
        if mandatory:
            raise _Error(400, "not all extension_mandatory parameters are supported",
                         [{"extension_mandatory_unsupported": mandatory}])
        optional = body.get("extension_optional", [])
        if not isinstance(optional, list) or not all(isinstance(e, dict) for e in optional):
            raise _Error(400, "extension_optional shall be an array of objects")
        extra = body.get("additional_slave_SAE_IDs", [])
        if not isinstance(extra, list):
            raise _Error(400, "additional_slave_SAE_IDs shall be an array of strings")
        extra = [_sae_id(s, "additional_slave_SAE_IDs entry") for s in extra]
        if len(set(extra) - {slave}) > config.max_SAE_ID_count:  # ETSI 014: additional slaves only
            raise _Error(400, f"more additional slave SAEs than max_SAE_ID_count ({config.max_SAE_ID_count})")
        slaves = [slave] + extra
        for s in slaves:
            known_slave(s)
        reservation = str(uuid.uuid4())
        kme.in_flight.add(reservation)  # before the keys are set aside: the settling task keeps off
        try:
            _, groups = await blocking(store.reserve_groups, caller, slaves, number=number, size=size,
                                       local_SAEs=config.local_SAEs, unit=config.key_size, reservation=reservation)
            remote = sorted(set(slaves) & config.remote_SAEs)
            if remote:
                await _assign_at_peer(kme, reservation, caller, sorted(set(slaves)), groups)
            keys = await blocking(store.finalize, reservation)
        finally:
            kme.in_flight.discard(reservation)
        request[_KEYS] = len(keys)
        body = {"keys": await key_objects(caller, keys)}
        if optional:
            body["key_container_extension"] = {"extension_optional_unsupported": optional}
        return web.json_response(body)

    @api
    async def dec_keys(request: web.Request, caller: str) -> web.Response:
        master = _sae_id(request.match_info["master_SAE_ID"], "master_SAE_ID")
        if request.method == "GET":
            body = await _body(request, {"key_ID"})
            if "key_ID" not in body:
                raise _Error(400, "key_ID is required")
            key_IDs = [body["key_ID"]]
        else:
            body = await _body(request, {"key_IDs", "key_IDs_extension"})
            entries = body.get("key_IDs")
            if not isinstance(entries, list) or not entries:
                raise _Error(400, "key_IDs shall be a non-empty array of objects")
            if len(entries) > config.max_key_per_request:
                raise _Error(400, f"number of requested keys exceeds max_key_per_request ({config.max_key_per_request})")
            key_IDs = []
            for entry in entries:
                if not isinstance(entry, dict) or set(entry) - {"key_ID", "key_ID_extension"} or "key_ID" not in entry:
                    raise _Error(400, "each key_IDs entry shall be an object with a key_ID")
                key_IDs.append(entry["key_ID"])
        request[_KEY_IDS] = len(key_IDs)
        for key_ID in key_IDs:
            if not isinstance(key_ID, str) or not 0 < len(key_ID) <= 64 or not key_ID.isascii():
                raise _Error(400, "key_ID shall be a UUID string")
        keys = await blocking(store.take_for_slave, caller, master, key_IDs)
        request[_KEYS] = len(keys)
        return web.json_response({"keys": await key_objects(caller, keys)})

    async def peer_operation(action: str, body) -> tuple[int, dict, int]:
        """One peer operation: (HTTP status, JSON body, number of key IDs)."""
        try:
            if not isinstance(body, dict):
                raise TypeError
            if action == "purge":
                key_IDs = [str(k) for k in body["key_IDs"]]
                return 200, {"dropped": await blocking(store.drop, key_IDs, "purged")}, len(key_IDs)
            master = str(body["master_SAE_ID"])
            reservation = body.get("reservation")
            reservation = None if reservation is None else str(reservation)
            if action == "assign":
                if "keys" in body:
                    groups = [(str(k["key_ID"]), [str(u) for u in k["units"]], int(k["size"])) for k in body["keys"]]
                else:
                    groups = [(str(k), [str(k)], None) for k in body["key_IDs"]]
                await blocking(store.assign, [], master=master, slaves=[str(s) for s in body["slave_SAE_IDs"]],
                               local_SAEs=config.local_SAEs, groups=groups, reservation=reservation)
                return 200, {}, len(groups)
            key_IDs = [str(k) for k in body["key_IDs"]]
            await blocking(store.unassign, key_IDs, master=master, reservation=reservation)
            return 200, {}, len(key_IDs)
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"message": "malformed peer request"}, 0
        except KeysNotFound as exc:
            return 409, {"message": str(exc), "reason": "not_found", "missing": exc.missing[:1000]}, 0
        except ReservationCancelled as exc:
            return 409, {"message": str(exc), "reason": "cancelled"}, 0
        except AlreadyDelivered as exc:
            return 409, {"message": str(exc), "reason": "delivered"}, 0
        except StoreUnavailable:
            return 503, {"message": "the key store is busy"}, 0
        except KeyStoreError as exc:
            return 409, {"message": str(exc), "reason": "conflict"}, 0

    async def peer(request: web.Request) -> web.Response:
        caller = _caller(request, config)
        request[_CALLER] = caller
        if config.peer_KME_ID is None or caller != config.peer_KME_ID:
            return _error(401, "the caller is not the peer KME")
        action = request.match_info["action"]
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError, LookupError):
            return _error(400, "malformed peer request")
        if action == "assign_batch":  # several assignments in one call (and one commit at this site)
            items = body.get("assignments") if isinstance(body, dict) else None
            if not isinstance(items, list) or not 0 < len(items) <= 1024:
                return _error(400, "malformed peer request")
            done = await asyncio.gather(*(peer_operation("assign", item) for item in items))
            request[_KEY_IDS] = sum(n for _, _, n in done)
            return web.json_response({"results": [{"status": code, **answer} for code, answer, _ in done]})
        code, answer, count = await peer_operation(action, body)
        request[_KEY_IDS] = count
        return web.json_response(answer, status=code)

    base = "/api/v1/keys/{%s:[^/]*}/"  # any segment (even empty or with braces) reaches a handler
    app.router.add_get(base % "slave_SAE_ID" + "status", status)
    app.router.add_route("GET", base % "slave_SAE_ID" + "enc_keys", enc_keys)
    app.router.add_route("POST", base % "slave_SAE_ID" + "enc_keys", enc_keys)
    app.router.add_route("GET", base % "master_SAE_ID" + "dec_keys", dec_keys)
    app.router.add_route("POST", base % "master_SAE_ID" + "dec_keys", dec_keys)
    app.router.add_post("/peer/v1/{action:assign|assign_batch|unassign|purge}", peer)
    return app


@web.middleware
async def _log_requests(request: web.Request, handler):
    """One structured log line and the metrics of every request; never key bytes."""
    t0 = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = time.perf_counter() - t0
        endpoint = _endpoint(request)
        kme = request.app.get(KME_APP_KEY)
        metrics = kme.metrics if kme is not None else None
        keys = request.get(_KEYS, 0)
        if metrics is not None:
            metrics.latency.labels(endpoint).observe(elapsed)
            if status != 200:
                metrics.errors.labels(str(status)).inc()
            elif keys and endpoint in ("enc_keys", "dec_keys"):
                metrics.deliveries.labels(endpoint).inc(keys)
        if log.isEnabledFor(logging.INFO):
            fields = {"method": request.method, "path": request.path[:300], "caller": request.get(_CALLER),
                      "status": status, "keys": keys, "key_IDs": request.get(_KEY_IDS, 0),
                      "latency_ms": round(elapsed * 1e3, 2)}
            log.info("request " + " ".join(f"{k}={v}" for k, v in fields.items()), extra={"kme": fields})


async def _assign_at_peer(kme: _Kme, reservation: str, master: str, slaves: list[str], groups: list) -> None:
    """Have the peer record a reservation's keys; on a refusal release them, on no answer leave
    the reservation unsettled (its keys stay out of the free pool until it is settled)."""
    payload = {"reservation": reservation, "master_SAE_ID": master, "slave_SAE_IDs": slaves,
               "key_IDs": [u for _, units, _ in groups for u in units],
               "keys": [{"key_ID": head, "units": units, "size": bits} for head, units, bits in groups]}
    if kme.config.peer_url is None or kme.config.peer_ssl is None:
        # Nothing was sent anywhere: free the keys now (holding them would block them for good,
        # since no settlement can ever reach a peer that is not configured).
        await kme.blocking(kme.store.release, reservation)
        raise _Error(503, "no peer KME is configured to serve slaves at the other site")
    try:
        status, body = await kme.assign(payload)
    except _PeerUnreachable:
        log.warning("the peer did not confirm reservation %s in time: it stays unsettled", reservation)
        if kme.metrics is not None:
            kme.metrics.unsettled.inc()
        raise _Error(503, "the peer KME did not answer in time; the keys are held until it is settled") from None
    if status == 200:
        return
    await kme.blocking(kme.store.release, reservation)
    if status == 409 and body.get("reason") == "not_found":
        # The peer lacks these keys (dropped there): drop them here too, or they would be
        # reserved first, and refused, on every later request.
        ours = {u for _, units, _ in groups for u in units}
        missing = [k for k in body.get("missing", []) if isinstance(k, str) and k in ours]
        if missing:
            await kme.blocking(kme.store.drop, missing, "missing_at_peer")
    raise _Error(503, "the peer KME refused to record the keys")


async def settle(kme: _Kme) -> dict:
    """One pass over the reservations not being handled right now: undo each at the peer and
    release it here, or, if a slave there already fetched its keys, finalize it as orphaned
    (never handed out again).  Then send the peer the keys dropped here by the TTL."""
    config, store = kme.config, kme.store
    outcome = {"released": 0, "orphaned": 0, "pending": 0}
    pending = await kme.blocking(store.pending_reservations)
    for reservation, (master, slaves, key_IDs) in pending.items():
        if reservation in kme.in_flight:
            continue
        if not set(slaves) & config.remote_SAEs:
            outcome["released"] += await kme.blocking(store.release, reservation)
            continue
        try:
            status, body = await kme.peer("unassign", {"reservation": reservation, "key_IDs": key_IDs,
                                                       "master_SAE_ID": master})
        except _PeerUnreachable:
            outcome["pending"] += len(key_IDs)
            continue
        if reservation in kme.in_flight:  # cannot happen (in flight is added before reserving)
            continue
        if status == 200:
            outcome["released"] += await kme.blocking(store.release, reservation)
        elif status == 409 and (body.get("reason") == "delivered" or (  # or an older peer's bare message
                body.get("reason") is None and "delivered" in str(body.get("message", "")))):
            try:
                outcome["orphaned"] += len(await kme.blocking(store.reservation_groups, reservation))
                await kme.blocking(store.finalize, reservation, action="orphaned")
            except KeyStoreError:
                pass
        else:
            log.warning("the peer refused to undo reservation %s (%s): left pending", reservation, status)
            outcome["pending"] += len(key_IDs)
    await _flush_purges(kme)
    if kme.metrics is not None:
        left = await kme.blocking(store.pending_reservations)
        kme.metrics.unsettled.set(len([r for r in left if r not in kme.in_flight]))
    return outcome


async def _flush_purges(kme: _Kme) -> int:
    """Tell the peer the keys dropped here by the TTL (idempotent); returns how many it confirmed."""
    if kme.session() is None:
        return 0
    outbox = await kme.blocking(kme.store.purge_outbox)
    done = 0
    for i in range(0, len(outbox), 1000):
        chunk = outbox[i:i + 1000]
        try:
            status, _ = await kme.peer("purge", {"key_IDs": chunk})
        except _PeerUnreachable:
            return done
        if status != 200:
            return done
        await kme.blocking(kme.store.clear_purge_outbox, chunk)
        done += len(chunk)
    return done


async def _settle_forever(kme: _Kme) -> None:
    pause = kme.config.settle_interval
    while True:
        await asyncio.sleep(pause * (0.75 + secrets.randbelow(501) / 1000))  # jitter: ±25 %
        try:
            outcome = await settle(kme)
            pause = (kme.config.settle_interval if not outcome["pending"]
                     else min(pause * 2, kme.config.settle_max_interval))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep settling; say why
            log.exception("settling reservations failed")
            pause = min(pause * 2, kme.config.settle_max_interval)


async def recover(config: KmeConfig, store: KeyStore) -> dict:
    """Settle reservations left by a crash (before serving): see :func:`settle`."""
    kme = _Kme(config, store)
    try:
        return await settle(kme)
    finally:
        await kme.close()


async def purge_expired(config: KmeConfig, store: KeyStore, ttl_s: float, *, kme: _Kme | None = None) -> int:
    """The TTL for a linked pair of sites (run it at the leader site): drop the free keys stored
    more than ``ttl_s`` seconds ago here, and have the peer drop the same key IDs (queued in the
    store first, so a crash or an unreachable peer only delays it: retried by the settling task).
    Returns how many keys were dropped here."""
    own = kme is None
    if own:
        kme = _Kme(config, store)
    try:
        ids = await kme.blocking(store.expired, ttl_s)
        dropped = await kme.blocking(store.drop, ids, "purged", notify_peer=kme.session() is not None)
        await _flush_purges(kme)
        return dropped
    finally:
        if own:
            await kme.close()


def make_metrics_app(kme_app: web.Application) -> web.Application:
    """The plain-HTTP ``/health`` and ``/metrics`` of a KME app (serve it on loopback only)."""
    kme: _Kme = kme_app[KME_APP_KEY]
    app = web.Application()

    async def health(request: web.Request) -> web.Response:
        body = {"status": "ok", "KME_ID": kme.config.KME_ID, "store": "ok"}
        try:
            body["stock"] = await kme.blocking(kme.store.count_free, kme.config.key_size)
            body["stored"] = await kme.blocking(kme.store.count)
            pending = await kme.blocking(kme.store.pending_reservations)
            body["unsettled"] = len([r for r in pending if r not in kme.in_flight])
        except (KeyStoreError, RuntimeError):
            body.update(status="degraded", store="unreachable")
        if kme.config.peer_url is not None:
            body["peer"] = "ok" if kme.peer_ok else "unreachable"
            if not kme.peer_ok:
                body["status"] = "degraded"
        if body.get("unsettled"):
            body["status"] = "degraded"
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def metrics(request: web.Request) -> web.Response:
        if kme.metrics is None:
            return web.json_response({"message": "no metrics"}, status=404)
        from .metrics import CONTENT_TYPE_LATEST

        try:
            kme.metrics.stored_keys.set(await kme.blocking(kme.store.count))
            kme.metrics.free_keys.set(await kme.blocking(kme.store.count_free, kme.config.key_size))
        except (KeyStoreError, RuntimeError):
            pass
        response = web.Response(body=kme.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app
