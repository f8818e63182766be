"""The wedge: site B stalls past A's peer timeout while A assigns keys (two real KMEs on loopback).

Before the fix A freed the keys while B kept them assigned, and since A reserves the oldest free
keys first every later request for another master or slave set hit the same keys and got 503
forever.  Now A keeps such a reservation *unsettled* (out of the free pool) and a background task
settles it with B: undone at B and released at A, or — if B's slave fetched the key meanwhile —
finalized at A as orphaned.  Either way no slave stays blocked and no key is delivered twice.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
import time

import numpy as np
import pytest

from qkd_circuits.etsi014 import Etsi014Error, KmeClient, client_context, init_tls_pki, server_context
from qkd_circuits.keystore import KeyStore, cut_key

pytest.importorskip("aiohttp", reason="the kme extra is not installed")
from qkd_circuits.etsi014 import KmeConfig, start_kme  # noqa: E402


class StalledStore:
    """A key store whose peer-facing writes wait while a gate is closed (B's process "paused")."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self.gates = {"assign": threading.Event(), "unassign": threading.Event()}
        for gate in self.gates.values():
            gate.set()
        self.calls = {"assign": 0, "unassign": 0}

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _gated(self, name, *args, **kwargs):
        self.calls[name] += 1
        assert self.gates[name].wait(30), "the test never opened the gate"
        return getattr(self._store, name)(*args, **kwargs)

    def assign(self, *args, **kwargs):
        return self._gated("assign", *args, **kwargs)

    def unassign(self, *args, **kwargs):
        return self._gated("unassign", *args, **kwargs)


class HoldingProxy:
    """A TCP relay from A to B (TLS passes through untouched) that can hold back what A sends —
    a request delayed in the network — and deliver it later.

    ``hold_next()``: hold the next connection that carries data (from that chunk on);
    ``hold_new()``: hold every connection opened from now on (from its first byte);
    ``release()``: deliver everything held and stop holding."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._next = self._new = False
        self._held: list[list] = []  # per held connection: [upstream socket, chunks, still holding]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_next(self) -> None:
        with self._lock:
            self._next = True

    def hold_new(self) -> None:
        with self._lock:
            self._new = True

    def release(self) -> None:
        with self._lock:
            self._next = self._new = False
            for entry in self._held:
                upstream, chunks, _ = entry
                for chunk in chunks:
                    try:
                        upstream.sendall(chunk)
                    except OSError:
                        break
                chunks.clear()
                entry[2] = False

    def close(self) -> None:
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            self._sockets += [downstream, upstream]
            with self._lock:
                entry = [upstream, [], True] if self._new else None
                if entry is not None:
                    self._held.append(entry)
            threading.Thread(target=self._pump, args=(downstream, upstream, entry), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, downstream, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, entry) -> None:
        from_a = entry is not False
        try:
            while data := source.recv(65536):
                with self._lock:
                    if from_a and entry is None and self._next:
                        self._next = False
                        entry = [sink, [], True]
                        self._held.append(entry)
                    if from_a and entry is not None and entry[2]:
                        entry[1].append(data)
                        continue
                try:
                    sink.sendall(data)
                except OSError:
                    return
        except OSError:
            return


@pytest.fixture
def linked(tmp_path):
    saes = ("sae-a", "sae-a2", "sae-b", "sae-b2")
    certs = init_tls_pki(tmp_path / "tls", kmes=("kme-a", "kme-b"), saes=saes)
    bits = np.random.default_rng().integers(0, 2, 64 * 256, dtype=np.uint8)  # unseeded: key material
    pieces = cut_key(bits, link_id="A-B", round_number=0, epoch=b"\x07" * 8)
    stores = {site: KeyStore(tmp_path / f"{site}.db") for site in "ab"}
    for store in stores.values():
        store.add_round(pieces, link_id="A-B", epoch=b"\x07" * 8, round_number=0)
    stalled = StalledStore(stores["b"])

    def ctx(name):
        return client_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    def srv(name):
        return server_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    b = start_kme(KmeConfig(KME_ID="kme-b", local_SAEs=frozenset({"sae-b", "sae-b2"}), peer_KME_ID="kme-a",
                            remote_SAEs=frozenset({"sae-a", "sae-a2"})), stalled, ssl_context=srv("kme-b"))
    a = None
    proxy = HoldingProxy(b.port)
    try:
        a = start_kme(KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a", "sae-a2"}), peer_KME_ID="kme-b",
                                remote_SAEs=frozenset({"sae-b", "sae-b2"}), peer_url=f"https://127.0.0.1:{proxy.port}", peer_ssl=ctx("kme-a"),
                                peer_timeout=0.5, settle_interval=0.2, settle_max_interval=0.4),
                      stores["a"], ssl_context=srv("kme-a"))
        clients = {s: KmeClient("127.0.0.1", (a if s.startswith("sae-a") else b).port, ctx(s), timeout=10) for s in saes}
        yield {"a": stores["a"], "b": stores["b"], "stalled": stalled, "clients": clients, "tmp": tmp_path,
               "kme_a": a, "proxy": proxy}
    finally:
        for gate in stalled.gates.values():
            gate.set()
        proxy.release()
        if a is not None:
            a.stop()
        b.stop()
        proxy.close()


def _wait(predicate, what, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _assigned_at_b(tmp, key_ID) -> bool:
    with sqlite3.connect(tmp / "b.db") as db:
        row = db.execute("SELECT master_SAE_ID FROM keys WHERE key_ID = ?", (key_ID,)).fetchone()
    return row is not None and row[0] is not None


def _nobody_is_blocked(linked) -> None:
    c = linked["clients"]
    for master, slaves in (("sae-a", ["sae-b"]), ("sae-a2", ["sae-b2"]), ("sae-a", ["sae-b", "sae-b2"]),
                           ("sae-a2", ["sae-b"])):
        keys = c[master].get_key(slaves[0], number=2, additional_slave_SAE_IDs=slaves[1:])
        for slave in slaves:
            assert c[slave].get_key_with_ids(master, [k for k, _ in keys]) == keys


def _no_key_twice(linked) -> None:
    handed = [key_ID for _, key_ID, _, action in linked["a"].audit() if action == "enc_keys"]
    assert len(handed) == len(set(handed)), "a master got a key twice"
    fetched = [(key_ID, sae) for _, key_ID, sae, action in linked["b"].audit() if action == "dec_keys"]
    assert len(fetched) == len(set(fetched)), "a slave got a key twice"
    orphaned = {key_ID for _, key_ID, _, action in linked["a"].audit() if action == "orphaned"}
    assert not orphaned & set(handed), "an orphaned key was handed to a master"


def test_a_stalled_peer_whose_slave_fetched_the_key_leaves_it_orphaned_not_wedged(linked):
    stalled, c, proxy = linked["stalled"], linked["clients"], linked["proxy"]
    warm = c["sae-a"].get_key("sae-b", number=1)  # A keeps a TLS connection to B open
    assert c["sae-b"].get_key_with_ids("sae-a", [warm[0][0]]) == warm
    stalled.gates["assign"].clear()  # B stalls (its store busy) on the next assignment
    proxy.hold_new()  # and A's attempts to undo it, on new connections, are delayed in the network
    t0 = time.monotonic()
    with pytest.raises(Etsi014Error) as err:
        c["sae-a"].get_key("sae-b", number=1)
    assert err.value.status == 503 and "did not answer in time" in err.value.body["message"]
    assert time.monotonic() - t0 < 5
    (reservation, (_, _, (key_ID,))), = linked["a"].pending_reservations().items()  # unsettled, held at A
    stalled.gates["assign"].set()  # B resumes: the stalled assignment lands
    _wait(lambda: _assigned_at_b(linked["tmp"], key_ID), "B to record the assignment")
    (orphan,) = c["sae-b"].get_key_with_ids("sae-a", [key_ID])  # B's slave fetches a key its master never got
    assert orphan[0] == key_ID
    proxy.release()
    _wait(lambda: not linked["a"].pending_reservations(), "A to settle the reservation")
    assert ("orphaned", key_ID) in {(action, k) for _, k, _, action in linked["a"].audit()}
    _nobody_is_blocked(linked)
    _no_key_twice(linked)
    assert linked["a"].fingerprint() == linked["b"].fingerprint()  # both sites hold the same keys


def test_a_delayed_assignment_that_lands_after_the_undo_is_refused(linked):
    stalled, c = linked["stalled"], linked["clients"]
    warm = c["sae-a"].get_key("sae-b", number=1)  # A now keeps a TLS connection to B open
    assert c["sae-b"].get_key_with_ids("sae-a", [warm[0][0]]) == warm
    linked["proxy"].hold_next()  # the next assignment is delayed in the network, not at B
    with pytest.raises(Etsi014Error) as err:
        c["sae-a"].get_key("sae-b", number=3)
    assert err.value.status == 503
    _wait(lambda: not linked["a"].pending_reservations(), "A to settle the reservation")  # undone at B first
    assert stalled.calls == {"assign": 1, "unassign": 1}
    linked["proxy"].release()  # ...then the late assignment arrives: refused, B stays consistent
    _wait(lambda: stalled.calls["assign"] >= 2, "the late assignment")
    time.sleep(0.3)
    assert linked["a"].fingerprint() == linked["b"].fingerprint()
    _nobody_is_blocked(linked)
    _no_key_twice(linked)
    assert linked["a"].fingerprint() == linked["b"].fingerprint()


def test_a_peer_down_for_a_while_blocks_nobody_once_back(linked):
    stalled, c = linked["stalled"], linked["clients"]
    stalled.gates["assign"].clear()
    stalled.gates["unassign"].clear()
    for master in ("sae-a", "sae-a2", "sae-a"):
        with pytest.raises(Etsi014Error):
            c[master].get_key("sae-b" if master == "sae-a" else "sae-b2", number=1)
    assert len(linked["a"].pending_reservations()) == 3
    status = c["sae-a"].status("sae-b")
    assert status["stored_key_count"] == 61  # held keys are out of the free pool
    stalled.gates["assign"].set()
    stalled.gates["unassign"].set()
    _wait(lambda: not linked["a"].pending_reservations(), "A to settle every reservation")
    _nobody_is_blocked(linked)
    _no_key_twice(linked)
    assert linked["a"].fingerprint() == linked["b"].fingerprint()
    assert linked["a"].count_free() == 64 - 8  # the held keys came back; 4 requests of 2 since
