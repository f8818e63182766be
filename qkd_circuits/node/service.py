"""A QKD link node: one long-running process per site that keeps its own key store stocked.

Alice's node listens on two ports, the authenticated classical channel and the simulated quantum
channel (:mod:`.quantum`); Bob's node connects to both and drives the rounds.  Each node holds
only its own view of every round, its own pool / link state file, its own SQLite key store and
(optionally) its own ETSI GS QKD 014 KME in the same process.

How a key gets into both stores, and only when both ends settled its round:

1. The round runs the authenticated protocol (``docs/link-protocol.md``): Bob commits when
   Alice's tag verifies; Alice settles when Bob's authenticated CONFIRM arrives (now, or in the
   SETTLE that opens a later connection).
2. The release step puts the key into the link state's *outbox* in the same atomic save as the
   decision that releases it (:attr:`~qkd_circuits.channel.pool.LinkState.outbox`).
3. The node cuts the outbox key into ``key_size``-bit keys with key_IDs derived from the link
   id, the bootstrap epoch, the round and the index (the same at both sites, unique across
   re-bootstraps), stores them in one transaction that also records the round as stored, and
   only then drops the outbox entry.  A crash anywhere re-runs step 3 at start-up; the store
   ignores a round it already holds, so nothing is stored twice, nothing is lost.

Pacing: Bob runs rounds while his stock of free keys is below ``stock.high``, pauses there and
resumes below ``stock.low``.  Neither store ever exceeds ``stock.max_key_count``: a round whose
keys would not fit stays in the outbox until keys are consumed, and while a node's outbox is not
empty it starts (Bob) or accepts (Alice) no new round; a refused round stops before the tags, so
it spends no pool material.  A failed round (network, timeout, forgery) is retried with a
doubling back-off; the halt policy of the link still applies.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..channel.admission import admit_view
from ..channel.authenticated import AuthenticatedAlice, AuthenticatedBob
from ..channel.pool import AuthKeyPool
from ..channel.rounds import CHANNEL_ERRORS, channel_failure, drive_authenticated, random_sources
from ..channel.tcp import TcpClient, TcpServer, parse_address, serve_connection
from ..exceptions import ConfigurationError, LinkHalted, ProtocolError, QKDError
from ..keystore import KeyStore, StoreFull, cut_key
from ..network import PartyResult, party_result
from ..postprocessing.protocol import AliceParty, BobParty, PostProcessingConfig
from ..secretfile import write_secret_file
from .config import NodeConfig
from .quantum import READY, PulseSource, measure_pulses

__all__ = ["Node", "STATUS_NAME"]

STATUS_NAME = "status.json"
#: While idle (paused, or waiting for Bob), the status file and gauges are refreshed this often.
STATUS_EVERY_S = 2.0
log = logging.getLogger("qkd_circuits.node")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body = {"time": round(record.created, 3), "level": record.levelname.lower(), "event": record.getMessage()}
        body.update(getattr(record, "fields", {}))
        return json.dumps(body, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in getattr(record, "fields", {}).items())
        return f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.getMessage()} {fields}".rstrip()


def configure_logging(fmt: str, stream=None) -> None:
    """One line per event on ``stream`` (stderr): JSON or ``key=value`` text; never key bytes."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    for name in ("qkd_circuits.node", "qkd_circuits.kme"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _event(event: str, level: int = logging.INFO, **fields) -> None:
    log.log(level, event, extra={"fields": fields})


def _round_settings(table: dict) -> tuple[dict, PostProcessingConfig]:
    """The [round] table → (options for the quantum stage, post-processing config)."""
    from ..quantum.models import Channel, Detector, parse_eve, parse_noise

    try:
        channel_kw, detector_kw = parse_noise(tuple(table["noise"]))
        channel = Channel(distance_km=float(table["distance_km"]), alpha_db_per_km=float(table["alpha_db_per_km"]),
                          **channel_kw)
        detector = Detector(efficiency=float(table["detector_efficiency"]),
                            dark_count_probability=float(table["dark_count"]), **detector_kw)
        eve = parse_eve(table["eve"])
        config = PostProcessingConfig(sample_fraction=table["sample_fraction"], abort_qber=table["abort_qber"],
                                      cascade=table["cascade"], eps_sec=table["eps_sec"], eps_cor=table["eps_cor"])
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"round: {exc}") from None
    options = dict(backend=table["backend"], channel=channel, detector=detector, eve=eve,
                   lanes=table["lanes"], schedule=table["schedule"])
    return options, config


class _NodeMetrics:
    """The node's Prometheus metrics (prometheus_client), on its own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = r = CollectorRegistry()
        self.rounds = Counter("qkd_node_rounds", "Rounds run, by outcome", ["outcome"], registry=r)
        self.failures = Counter("qkd_node_round_failures", "Rounds lost to the channel, by reason", ["reason"],
                                registry=r)
        self.key_bits = Counter("qkd_node_key_bits", "Secret key bits put into this site's store", registry=r)
        self.keys = Counter("qkd_node_keys_stored", "Keys put into this site's store", registry=r)
        self.qber = Gauge("qkd_node_qber", "QBER estimate of the last round that measured one", registry=r)
        self.rate = Gauge("qkd_node_secret_key_rate_bits_per_second",
                          "Secret key bits stored per second since the node started", registry=r)
        self.stock = Gauge("qkd_node_stock_keys", "Free keys in this site's store", registry=r)
        self.stored = Gauge("qkd_node_stored_keys", "All keys in this site's store", registry=r)
        self.pool = Gauge("qkd_node_pool_bits", "Authentication pool bits available", registry=r)
        self.outbox = Gauge("qkd_node_outbox_rounds", "Released rounds not yet in the store", registry=r)
        self.paused = Gauge("qkd_node_paused", "1 while pacing holds rounds back", registry=r)


class _HttpEndpoints:
    """``/metrics`` (Prometheus text format) and ``/health`` (JSON) on a plain-HTTP listener.

    Bind it to loopback or a monitoring network: it shows counts and rates, never key bytes.
    """

    def __init__(self, address: str, registry, health) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/health":
                    state = health()
                    body, ctype = json.dumps(state).encode(), "application/json"
                    code = 200 if state["status"] == "ok" else 503
                else:
                    body, ctype, code = b'{"message": "not found"}', "application/json", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the node logs its own events
                pass

        host, port = parse_address(address)
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = "%s:%d" % self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="node-http")
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Node:
    """One site's link node.  :meth:`run` until :meth:`stop` (SIGTERM / SIGINT) or ``rounds``.

    Args:
        config: the validated configuration (:func:`~qkd_circuits.node.config.load_config`).
        rounds: stop after this many rounds (Bob: attempts; Alice: connections); ``None``: run on.
    """

    def __init__(self, config: NodeConfig, *, rounds: int | None = None) -> None:
        self.config, self.role, self._rounds = config, config.role, rounds
        self.pool_path = config.path(config["pool"])
        self.pool = AuthKeyPool.load(self.pool_path)
        if self.pool.simulation:
            raise ConfigurationError(
                "this is a simulation pool (qkd psk init --simulation): its keys may be known, so a node never "
                "stores them; create a real pool with 'qkd psk init' and copy it to both sites")
        if self.pool.link.outbox is None:
            self.pool.link.outbox = {}
        stock = config["stock"]
        self.key_size, self.low, self.high = stock["key_size"], stock["low"], stock["high"]
        self.store = KeyStore(config.path(config["store"]), max_key_count=stock["max_key_count"])
        self.exchange_options, self.pp_config = _round_settings(config["round"])
        self.exchanges = config["round"]["exchanges"]
        self.replenish_bits = config["round"]["replenish_bits"]
        link = config["link"]
        self.timeout = float(link["timeout_s"])
        self.classical = parse_address(link["classical"])
        self.quantum = parse_address(link["quantum"])
        self._stop = threading.Event()
        self._paused = False
        self.metrics = _NodeMetrics()
        self.counts = {"rounds": 0, "keys_made": 0, "pending": 0, "aborted": 0, "failed": 0, "stored_keys": 0,
                       "stored_bits": 0}
        self.last: dict | None = None
        self.addresses: dict = {}
        self.kme = None
        self._http = None
        self._started = time.monotonic()
        self._last_purge = 0.0
        self._last_status = 0.0

    # -- state -----------------------------------------------------------------------------------
    def persist(self) -> None:
        self.pool.save(self.pool_path)

    def stop(self, *_args) -> None:
        """Finish the round in progress, then stop (safe from a signal handler)."""
        self._stop.set()

    def drain_outbox(self) -> bool:
        """Store every released round still in the outbox; returns whether the outbox is empty."""
        outbox, link_id = self.pool.link.outbox, self.config["link_id"]
        for r in sorted(outbox):
            entry = outbox[r]
            bits = np.unpackbits(np.frombuffer(bytes(entry["key"]), dtype=np.uint8))[:entry["key_bits"]]
            pieces = cut_key(bits, link_id=link_id, round_number=r, size=self.key_size, epoch=self.pool.epoch)
            bits.fill(0)
            try:
                added = self.store.add_round(pieces, link_id=link_id, epoch=self.pool.epoch, round_number=r)
            except StoreFull:
                _event("store_full", logging.WARNING, round=r, keys=len(pieces),
                       capacity_left=self.store.capacity_left())
                return False
            entry["key"][:] = bytes(len(entry["key"]))
            del outbox[r]
            self.persist()
            self.counts["stored_keys"] += added
            self.counts["stored_bits"] += added * self.key_size
            self.metrics.keys.inc(added)
            self.metrics.key_bits.inc(added * self.key_size)
            _event("stored", round=r, keys=added, key_bits=added * self.key_size,
                   replayed=added == 0 and len(pieces) > 0)
        return True

    def health(self) -> dict:
        halted = self.pool.link.halted
        status = "halted" if halted else ("degraded" if self.pool.link.outbox else "ok")
        return {"status": status, "role": self.role, "link_id": self.config["link_id"],
                "next_round": self.pool.link.next_round, "stock": self._free(), "paused": self._paused,
                "outbox_rounds": len(self.pool.link.outbox), "failures": self.pool.link.failures}

    def _free(self) -> int:
        try:
            return self.store.count_free()
        except QKDError:
            return -1

    def status(self) -> dict:
        pool, link = self.pool, self.pool.link
        elapsed = time.monotonic() - self._started
        return {
            "role": self.role, "link_id": self.config["link_id"], "pid": os.getpid(), "time": time.time(),
            "addresses": self.addresses, "epoch": pool.epoch.hex(), "next_round": link.next_round,
            "pool_bits_available": pool.available_bits, "pending_rounds": sorted(link.pending),
            "unconfirmed_rounds": sorted(link.unconfirmed), "outbox_rounds": sorted(link.outbox),
            "halted": link.halted, "failures": link.failures, "paused": self._paused,
            "stock": {"free": self._free(), "stored": self.store.count(), "low": self.low, "high": self.high,
                      "max_key_count": self.config["stock"]["max_key_count"], "key_size": self.key_size},
            "counts": dict(self.counts), "secret_key_rate_bits_per_s": self.counts["stored_bits"] / elapsed
            if elapsed > 0 else 0.0, "last_round": self.last,
        }

    def _write_status(self) -> None:
        body = json.dumps(self.status(), sort_keys=True).encode()
        write_secret_file(self.config.directory / STATUS_NAME, body, overwrite=True)

    def _observe(self, result: PartyResult | None, reason: str | None = None) -> None:
        self.counts["rounds"] += 1
        if result is None:
            outcome = "failed"
        elif result.key is not None or result.pending:
            outcome = "key" if result.key is not None else "pending"
        elif result.auth.get("failure"):
            outcome = "failed"
            reason = result.auth["failure"]
        else:
            outcome = "aborted"
            reason = result.abort_reason
        self.counts["keys_made" if outcome == "key" else outcome] += 1
        self.metrics.rounds.labels(outcome).inc()
        if outcome == "failed":
            self.metrics.failures.labels(reason or "unknown").inc()
        qber = result.qber.get("estimate") if result is not None and result.qber else None
        if qber is not None:
            self.metrics.qber.set(qber)
        self.last = {"round": None if result is None else result.auth.get("round"), "outcome": outcome,
                     "reason": reason, "final_key_bits": 0 if result is None or result.key is None else len(result.key),
                     "qber": qber, "settled": [] if result is None else [
                         {"round": s.round, "decision": s.decision} for s in result.settled]}
        _event("round", **self.last)

    def _refresh_gauges(self) -> None:
        m = self.metrics
        m.stock.set(self._free())
        m.stored.set(self.store.count())
        m.pool.set(self.pool.available_bits)
        m.outbox.set(len(self.pool.link.outbox))
        m.paused.set(1 if self._paused else 0)
        elapsed = time.monotonic() - self._started
        m.rate.set(self.counts["stored_bits"] / elapsed if elapsed > 0 else 0.0)

    def _periodic(self, *, after_round: bool = False) -> None:
        """Between rounds: store what waits in the outbox, lead the TTL purge, and refresh the
        gauges and the status file (after a round, else at most every STATUS_EVERY_S)."""
        self.drain_outbox()
        ttl = float(self.config["stock"]["ttl_s"])
        now = time.monotonic()
        if ttl > 0 and self.role == "alice" and now - self._last_purge >= self.config["stock"]["purge_every_s"]:
            self._last_purge = now
            self._purge(ttl)
        if after_round or now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            self._refresh_gauges()
            self._write_status()

    def _purge(self, ttl: float) -> None:
        """Alice's node leads the TTL purge: the KME drops expired free keys here and at the peer."""
        if self.kme is None:
            _event("purge_skipped", logging.WARNING, reason="the TTL purge needs the KME peer link (kme.enabled)")
            return
        try:
            dropped = self.kme.purge(ttl)
        except (QKDError, OSError, RuntimeError) as exc:
            _event("purge_failed", logging.WARNING, error=type(exc).__name__)
            return
        if dropped:
            _event("purged", keys=dropped, ttl_s=ttl)

    # -- running ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; returns the CLI exit code (0, or 3 when the link halted)."""
        self._start_services()
        try:
            self.drain_outbox()
            if self.role == "alice":
                self._run_alice()
            else:
                self._run_bob()
        except LinkHalted as exc:
            _event("halted", logging.ERROR, message=str(exc))
            return 3
        finally:
            self.persist()
            self._write_status()
            self._stop_services()
            _event("stopped", rounds=self.counts["rounds"], stored_keys=self.counts["stored_keys"])
        return 3 if self.pool.link.halted else 0

    def _start_services(self) -> None:
        kme = self.config["kme"]
        if kme["enabled"]:
            self.kme = self._start_kme(kme)
            self.addresses["kme"] = self.kme.url
        listen = self.config["metrics"]["listen"]
        if listen:
            self._http = _HttpEndpoints(listen, self.metrics.registry, self.health)
            self.addresses["metrics"] = self._http.address

    def _start_kme(self, kme: dict):
        from ..etsi014 import KmeConfig, client_context, server_context, start_kme

        tls = self.config.path(kme["tls"])
        cert = self.config.path(kme["cert"]) or tls / f"{kme['id']}.pem"
        key = self.config.path(kme["key"]) or tls / f"{kme['id']}.key"
        ca = self.config.path(kme["ca"]) or tls / "ca.pem"
        missing = [str(p) for p in (cert, key, ca) if not p.exists()]
        if missing:
            raise ConfigurationError(f"kme: missing TLS files {missing} (qkd kme tls-init {tls})")
        from ..etsi014.wrap import load_wrapping_public

        wrap_keys = {sae: load_wrapping_public(self.config.path(path)) for sae, path in kme["wrap_for"].items()}
        config = KmeConfig(KME_ID=kme["id"], local_SAEs=frozenset(kme["saes"]), peer_KME_ID=kme["peer_id"],
                           wrap_keys=wrap_keys,
                           remote_SAEs=frozenset(kme["peer_saes"]), peer_url=kme["peer_url"],
                           key_size=self.key_size, max_key_count=self.config["stock"]["max_key_count"],
                           peer_ssl=client_context(cert, key, ca) if kme["peer_url"] else None)
        host, port = parse_address(kme["listen"])
        return start_kme(config, self.store, host=host, port=port, ssl_context=server_context(cert, key, ca),
                         registry=self.metrics.registry)

    def _stop_services(self) -> None:
        if self._http is not None:
            self._http.close()
        if self.kme is not None:
            self.kme.stop()
        self.store.close()

    def _done(self) -> bool:
        return self._stop.is_set() or (self._rounds is not None and self.counts["rounds"] >= self._rounds)

    # -- Alice -----------------------------------------------------------------------------------
    def _run_alice(self) -> None:
        source = PulseSource(self.exchanges)
        with TcpServer(*self.classical) as classical, TcpServer(*self.quantum) as quantum:
            self.addresses.update(classical="%s:%d" % classical.address, quantum="%s:%d" % quantum.address)
            _event("listening", **self.addresses)
            self._write_status()
            pulses = threading.Thread(target=self._serve_pulses, args=(quantum, source), daemon=True,
                                      name="node-quantum")
            pulses.start()
            try:
                while not self._done():
                    conn = classical.accept(0.5)
                    if conn is not None:
                        result = self._alice_round(conn, source)
                        if result is not None:
                            self._observe(result)
                    self._periodic(after_round=conn is not None)
            finally:
                self._stop.set()
                pulses.join(5)
                source.forget()

    def _serve_pulses(self, server: TcpServer, source: PulseSource) -> None:
        while not self._stop.is_set():
            try:
                conn = server.accept(0.5)
            except ConnectionError:
                return
            if conn is None:
                continue
            try:
                serve_connection(conn, source.answer, timeout=self.timeout)
            except (ConnectionError, TimeoutError, ProtocolError) as exc:
                _event("quantum_connection_failed", logging.WARNING, error=type(exc).__name__)

    def _alice_round(self, conn, source: PulseSource) -> PartyResult | None:
        pool, state = self.pool, {}

        def handler(frame: bytes) -> bytes:
            if "party" not in state:
                if not self.drain_outbox():
                    raise ProtocolError("Alice's key store is full: round refused before anything was spent")
                view = source.view(end.block or b"")
                try:
                    admit_view(pool, view, seeded=False)
                except QKDError as exc:
                    raise ProtocolError(f"Alice refused the round: {exc}") from None
                self.persist()
                state["party"] = AliceParty(view, self.pp_config, random_bytes=random_sources(None)[0])
            return state["party"].handle(frame)

        def outcome():
            return state["party"].outcome if "party" in state else None

        end = AuthenticatedAlice(pool, handler, outcome=outcome,
                                 key_epsilon=(self.pp_config.eps_sec, self.pp_config.eps_cor),
                                 replenish_bits=self.replenish_bits, persist=self.persist)
        failure = None
        try:
            serve_connection(conn, end.handle, timeout=self.timeout)
        except CHANNEL_ERRORS as exc:
            failure = channel_failure(exc)
        if failure is None and not end.summary.verified and not end.summary.pending and outcome() is not None \
                and not outcome().aborted:
            failure = channel_failure(ConnectionError())  # Bob went away before the tags
        self.drain_outbox()
        result = party_result("alice", outcome(), end, failure, pool)
        if failure is None and "party" not in state and not end.summary.verified:
            # Bob's SETTLE-only connection (before he stops): decisions, no round.
            _event("settled", rounds=[{"round": x.round, "decision": x.decision} for x in result.settled])
            return None
        return result

    # -- Bob -------------------------------------------------------------------------------------
    def _room(self) -> bool:
        """Pacing: whether Bob may start a round now (hysteresis between low and high)."""
        if not self.drain_outbox():
            return False
        free = self._free()
        if not self._paused and free >= self.high:
            self._paused = True
            _event("paused", stock=free, high=self.high)
        elif self._paused and free < self.low:
            self._paused = False
            _event("resumed", stock=free, low=self.low)
        return not self._paused

    def _run_bob(self) -> None:
        backoff = float(self.config["link"]["retry_s"])
        wait = backoff
        self.addresses.update(classical="%s:%d" % self.classical, quantum="%s:%d" % self.quantum)
        _event("connecting", **self.addresses)
        self._write_status()
        while not self._done():
            if not self._room():
                self._periodic()
                self._stop.wait(0.5)
                continue
            result = self._bob_round()
            self._observe(result)
            self._periodic(after_round=True)
            ok = result is not None and not result.auth.get("failure")
            if ok:
                wait = backoff
            else:
                self._stop.wait(wait)
                wait = min(2 * wait, float(self.config["link"]["retry_max_s"]))
        self._settle_before_stop()

    def _bob_round(self) -> PartyResult | None:
        pool = self.pool
        try:
            with TcpClient(*self.quantum, timeout=self.timeout, connect_timeout=self.timeout) as q:
                frame = q.request(READY)
            block, view = measure_pulses(frame, **self.exchange_options)
        except (ConnectionError, TimeoutError, ProtocolError) as exc:
            _event("quantum_channel_failed", logging.WARNING, error=type(exc).__name__)
            self.metrics.failures.labels("quantum_channel").inc()
            return None
        admit_view(pool, view, seeded=False)
        self.persist()
        bob = BobParty(view, self.pp_config, random_bytes=random_sources(None)[1])
        eps = (self.pp_config.eps_sec, self.pp_config.eps_cor)
        try:
            client = TcpClient(*self.classical, timeout=self.timeout, connect_timeout=self.timeout)
        except ConnectionError as exc:
            end = AuthenticatedBob(pool, lambda env: b"", outcome=lambda: bob.outcome, key_epsilon=eps)
            return party_result("bob", None, end, channel_failure(exc), pool)
        with client:
            end = AuthenticatedBob(pool, client.request, outcome=lambda: bob.outcome, key_epsilon=eps,
                                   replenish_bits=self.replenish_bits, persist=self.persist, block=block)
            _, failure = drive_authenticated(bob, end)
        self.drain_outbox()
        return party_result("bob", bob.outcome, end, failure, pool)

    def _settle_before_stop(self) -> None:
        """Hand Alice Bob's decisions before stopping (a SETTLE-only connection spends nothing), so a
        round whose CONFIRM was lost is stored at her site too."""
        if not self.pool.link.unconfirmed:
            return
        try:
            with TcpClient(*self.classical, timeout=self.timeout, connect_timeout=self.timeout) as client:
                end = AuthenticatedBob(self.pool, client.request, outcome=lambda: None,
                                       key_epsilon=(self.pp_config.eps_sec, self.pp_config.eps_cor),
                                       persist=self.persist)
                pending = end.settle_only()
            _event("settled_before_stop", alice_pending=pending)
        except CHANNEL_ERRORS as exc:
            _event("settle_before_stop_failed", logging.WARNING, error=type(exc).__name__)


def install_signal_handlers(node: Node) -> None:
    """SIGTERM and SIGINT stop the node gracefully (the round in progress finishes first)."""
    signal.signal(signal.SIGTERM, node.stop)
    signal.signal(signal.SIGINT, node.stop)


def read_status(directory: str | Path) -> dict:
    """The status file a node writes after every round (no secrets in it)."""
    path = Path(directory) / STATUS_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"no readable node status at {path}: {exc}; has the node run?") from None
