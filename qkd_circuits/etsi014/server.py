"""The ETSI GS QKD 014 V1.1.1 key-delivery API of one site's KME (aiohttp, mutual TLS).

Endpoints (the caller's SAE ID is the CN of its verified client certificate, or on a Unix
socket the SAE mapped to the caller's uid)::

    GET        /api/v1/keys/{slave_SAE_ID}/status
    GET|POST   /api/v1/keys/{slave_SAE_ID}/enc_keys       the caller is the master
    GET|POST   /api/v1/keys/{master_SAE_ID}/dec_keys      the caller is a slave
    POST       /peer/v1/assign | /peer/v1/unassign        the peer KME only (its certificate's CN)

Only 200, 400, 401 and 503 are answered on the API, always with a JSON body (an Error object
``{"message": ..., "details": [...]}`` on errors).  A Get key request reserves keys in the store,
has the peer KME record the assignment for slaves attached there, and only then delivers: a key
a slave cannot fetch is never handed to a master, and none is handed out twice (see
:mod:`qkd_circuits.keystore`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import ssl
import struct
from dataclasses import dataclass, field
from functools import partial

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from ..exceptions import KeyStoreError
from ..keystore import KeyStore, KeysNotFound, NotARecipient, NotEnoughKeys
from .tls import peer_identity

__all__ = ["KmeConfig", "make_app"]

log = logging.getLogger("qkd_circuits.kme")


@dataclass(frozen=True)
class KmeConfig:
    """One site's KME.

    Attributes:
        KME_ID: this KME (``source_KME_ID`` in Status).
        local_SAEs: SAE IDs attached to this site (allowed to call it).
        peer_KME_ID: the KME at the other end of the QKD link (``target_KME_ID``).
        remote_SAEs: SAE IDs attached to the peer site.
        peer_url: ``https://host:port`` of the peer KME (``None``: no peer to tell).
        key_size: the size of every stored key, in bits (min = max = default size).
        max_key_per_request, max_key_count, max_SAE_ID_count: the limits Status reports.
        uid_SAEs: on a Unix socket, the SAE ID of each local user id (from the kernel's peer
            credentials, SO_PEERCRED); the socket file's permissions are the outer fence.
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


class _PeerLink:
    """One kept-alive HTTPS session to the peer KME for the app's lifetime (made on first use)."""

    def __init__(self, config: KmeConfig) -> None:
        self._config, self._session = config, None

    def session(self) -> ClientSession | None:
        if self._config.peer_url is None or self._config.peer_ssl is None:
            return None
        if self._session is None:
            self._session = ClientSession(connector=TCPConnector(ssl=self._config.peer_ssl),
                                          timeout=ClientTimeout(total=10))
        return self._session

    async def close(self, _app=None) -> None:
        if self._session is not None:
            await self._session.close()


def make_app(config: KmeConfig, store: KeyStore) -> web.Application:
    """The aiohttp application of one KME."""
    app = web.Application(client_max_size=1 << 20, middlewares=[_only_spec_errors])
    peer_link = _PeerLink(config)
    app.on_cleanup.append(peer_link.close)
    run = partial(asyncio.get_running_loop)

    async def blocking(fn, *args, **kwargs):
        return await run().run_in_executor(None, partial(fn, *args, **kwargs))

    def api(handler):
        async def wrapped(request: web.Request) -> web.Response:
            caller = _caller(request, config)
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
            "max_key_count": config.max_key_count, "max_key_per_request": config.max_key_per_request,
            "max_key_size": config.key_size, "min_key_size": config.key_size,
            "max_SAE_ID_count": config.max_SAE_ID_count,
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
        if size != config.key_size:
            raise _Error(400, f"requested key size is not supported: this KME serves {config.key_size}-bit keys")
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
        slaves = [slave] + [_sae_id(s, "additional_slave_SAE_IDs entry") for s in extra]
        if len(set(slaves)) > config.max_SAE_ID_count:
            raise _Error(400, f"more slave SAEs than max_SAE_ID_count ({config.max_SAE_ID_count})")
        for s in slaves:
            known_slave(s)
        reservation = await blocking(store.reserve, caller, slaves, number=number, size=size,
                                     local_SAEs=config.local_SAEs)
        remote = sorted(set(slaves) & config.remote_SAEs)
        if remote:
            key_IDs = await blocking(store.reserved_keys, reservation)
            try:
                await _peer_call(config, "assign", {"key_IDs": key_IDs, "master_SAE_ID": caller,
                                                    "slave_SAE_IDs": sorted(set(slaves))}, peer_link.session())
            except _Error:
                await blocking(store.release, reservation)
                raise
        keys = await blocking(store.finalize, reservation)
        log.info("enc_keys: %d keys to %s for %s", len(keys), caller, ",".join(slaves))
        body = {"keys": [{"key_ID": k.key_ID, "key": base64.b64encode(k.key).decode()} for k in keys]}
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
        for key_ID in key_IDs:
            if not isinstance(key_ID, str) or not 0 < len(key_ID) <= 64 or not key_ID.isascii():
                raise _Error(400, "key_ID shall be a UUID string")
        keys = await blocking(store.take_for_slave, caller, master, key_IDs)
        log.info("dec_keys: %d keys to %s (master %s)", len(keys), caller, master)
        return web.json_response({"keys": [{"key_ID": k.key_ID, "key": base64.b64encode(k.key).decode()}
                                           for k in keys]})

    async def peer(request: web.Request) -> web.Response:
        if config.peer_KME_ID is None or _caller(request, config) != config.peer_KME_ID:
            return _error(401, "the caller is not the peer KME")
        try:
            body = await request.json()
            key_IDs, master = list(body["key_IDs"]), str(body["master_SAE_ID"])
            if request.match_info["action"] == "assign":
                await blocking(store.assign, key_IDs, master=master, slaves=list(body["slave_SAE_IDs"]),
                               local_SAEs=config.local_SAEs)
            else:
                await blocking(store.unassign, key_IDs, master=master)
        except (ValueError, KeyError, TypeError):
            return _error(400, "malformed peer request")
        except KeyStoreError as exc:
            return _error(409, str(exc))
        return web.json_response({})

    base = "/api/v1/keys/{%s:[^/]*}/"  # any segment (even empty or with braces) reaches a handler
    app.router.add_get(base % "slave_SAE_ID" + "status", status)
    app.router.add_route("GET", base % "slave_SAE_ID" + "enc_keys", enc_keys)
    app.router.add_route("POST", base % "slave_SAE_ID" + "enc_keys", enc_keys)
    app.router.add_route("GET", base % "master_SAE_ID" + "dec_keys", dec_keys)
    app.router.add_route("POST", base % "master_SAE_ID" + "dec_keys", dec_keys)
    app.router.add_post("/peer/v1/{action:assign|unassign}", peer)
    return app


async def _peer_call(config: KmeConfig, action: str, payload: dict, session: ClientSession | None = None) -> None:
    if config.peer_url is None or config.peer_ssl is None:
        raise _Error(503, "no peer KME is configured to serve slaves at the other site")
    own = session is None
    if own:
        session = ClientSession(connector=TCPConnector(ssl=config.peer_ssl), timeout=ClientTimeout(total=10))
    try:
        async with session.post(f"{config.peer_url}/peer/v1/{action}", json=payload) as response:
            if response.status != 200:
                raise _Error(503, "the peer KME refused to record the keys")
    except (ClientError, asyncio.TimeoutError, OSError):
        raise _Error(503, "the peer KME is unreachable") from None
    finally:
        if own:
            await session.close()


async def recover(config: KmeConfig, store: KeyStore) -> dict:
    """Settle reservations left by a crash: undo them at the peer and free them here, or, if a
    slave already fetched them there, record them as delivered (never hand them out again)."""
    outcome = {"released": 0, "orphaned": 0, "pending": 0}
    for reservation, (master, slaves, key_IDs) in store.pending_reservations().items():
        remote = set(slaves) & config.remote_SAEs
        try:
            if remote:
                await _peer_call(config, "unassign", {"key_IDs": key_IDs, "master_SAE_ID": master})
            outcome["released"] += store.release(reservation)
        except _Error as exc:
            if "refused" in exc.message:
                outcome["orphaned"] += len(store.finalize(reservation, action="orphaned"))
            else:
                outcome["pending"] += len(key_IDs)
    return outcome
