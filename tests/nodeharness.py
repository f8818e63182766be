"""Two real ``qkd node run`` processes (Alice's site, Bob's site) on loopback, optionally through
fault-injecting proxies on the classical and the quantum connection.

:class:`Sites` writes both sites' directories (one real PSK copied to both, ``node.toml`` with
small fast rounds), starts and stops the nodes (SIGTERM, or kill -9), and reads both key stores.
Every process it starts is killed in :meth:`Sites.close` (a fixture's finally), also when a test
fails.  Output goes to files (``DIR/node.out`` / ``node.err``), never to unread pipes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from faultproxy import FaultProxy

import qkd_circuits as qkd
from qkd_circuits.etsi014 import init_tls_pki
from qkd_circuits.keystore import KeyStore
from qkd_circuits.node.config import default_config_text

QKD = str(Path(sys.executable).with_name("qkd"))
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
#: Fast rounds: 20,000 pulses, a little noise, original Cascade; about a second a round here.
ROUND = {"exchanges": 20000, "noise": ["depolarizing:0.02"], "cascade": "original"}


def read_events(path: Path) -> list[dict]:
    """The JSON log lines of a node (its stderr file), skipping any other line."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value) -> str:
    return json.dumps(value)


class Sites:
    """Both sites of one link under ``root``: ``root/a`` (Alice) and ``root/b`` (Bob)."""

    def __init__(self, root: Path, *, kme: bool = False, stock: dict | None = None, proxies: bool = False,
                 timeout_s: float = 3.0, extra: dict | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.dirs = {"alice": root / "a", "bob": root / "b"}
        self.ports = {"classical": free_port(), "quantum": free_port()}
        self.kme_ports = {"alice": free_port(), "bob": free_port()}
        self.procs: dict[str, subprocess.Popen] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self._all: list[subprocess.Popen] = []
        if kme:
            init_tls_pki(root / "tls", kmes=("kme-a", "kme-b"), saes=("sae-a", "sae-b"))
        psk = root / "link.psk"
        qkd.create_psk_file(psk, pad_bits=1 << 15)
        for role, d in self.dirs.items():
            d.mkdir(parents=True)
            (d / "pool.psk").write_bytes(psk.read_bytes())
            os.chmod(d / "pool.psk", 0o600)
            text = default_config_text(role, kme=kme)
            (d / "node.toml").write_text(text)
        self.settings = {"round": dict(ROUND), "stock": {"low": 50, "high": 100000, "max_key_count": 200000,
                                                          **(stock or {})},
                         "link": {"timeout_s": timeout_s, "retry_s": 0.2, "retry_max_s": 2.0}}
        for table, values in (extra or {}).items():
            self.settings.setdefault(table, {}).update(values)
        if kme:
            self.settings["kme"] = {"tls": str(root / "tls")}
        if proxies:
            for name in ("classical", "quantum"):
                self.proxies[name] = FaultProxy(("127.0.0.1", self.ports[name])).start()

    def _overrides(self, role: str) -> list[str]:
        out = []
        for table, values in self.settings.items():
            for key, value in values.items():
                out += ["--set", f"{table}.{key}={_toml(value)}"]
        if "kme" in self.settings:
            mine, theirs = (self.kme_ports[role], self.kme_ports["bob" if role == "alice" else "alice"])
            out += ["--set", f'kme.listen="127.0.0.1:{mine}"', "--set", f'kme.peer_url="https://127.0.0.1:{theirs}"']
        return out

    def start(self, role: str, *, rounds: int | None = None, args: list[str] = ()) -> subprocess.Popen:
        """Start ``role``'s node (``args``: more ``qkd node run`` options for this role only)."""
        d = self.dirs[role]
        if role == "alice" or not self.proxies:
            classical, quantum = (f"127.0.0.1:{self.ports[n]}" for n in ("classical", "quantum"))
        else:
            classical, quantum = ("%s:%d" % self.proxies[n].address for n in ("classical", "quantum"))
        argv = [QKD, "node", "run", str(d), "--classical", classical, "--quantum", quantum,
                *self._overrides(role), *args]
        if rounds is not None:
            argv += ["--rounds", str(rounds)]
        with open(d / "node.out", "a") as out, open(d / "node.err", "a") as err:
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=ENV)
        self.procs[role] = proc
        self._all.append(proc)
        if role == "alice":
            self.wait_log("alice", "listening", timeout=120)
        return proc

    # -- observing -------------------------------------------------------------------------------
    def events(self, role: str) -> list[dict]:
        return read_events(self.dirs[role] / "node.err")

    def rounds_logged(self, role: str) -> int:
        return sum(1 for e in self.events(role) if e.get("event") == "round")

    def wait_log(self, role: str, event: str, *, count: int = 1, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while sum(1 for e in self.events(role) if e.get("event") == event) < count:
            proc = self.procs.get(role)
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{role} exited ({proc.returncode}) before {count}× {event!r}:\n"
                                     + (self.dirs[role] / "node.err").read_text()[-3000:])
            if time.monotonic() > end:
                raise TimeoutError(f"{role}: fewer than {count}× {event!r} within {timeout} s")
            time.sleep(0.05)

    def store(self, role: str) -> KeyStore:
        return KeyStore(self.dirs[role] / "keys.db")

    def pool(self, role: str) -> qkd.AuthKeyPool:
        return qkd.AuthKeyPool.load(self.dirs[role] / "pool.psk")

    # -- stopping --------------------------------------------------------------------------------
    def wait(self, role: str, timeout: float = 300.0) -> int:
        return self.procs[role].wait(timeout=timeout)

    def terminate(self, role: str, timeout: float = 60.0) -> int:
        proc = self.procs[role]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def kill9(self, role: str) -> None:
        proc = self.procs[role]
        proc.kill()
        proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self._all:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for proxy in self.proxies.values():
            proxy.stop()

    def check_stores(self) -> dict:
        """Both sites hold the same keys under the same key_IDs; returns counts for reports.

        Also asserts: nothing left in either outbox, Alice holds nothing pending, and the
        pools are in step.
        """
        a, b = self.store("alice"), self.store("bob")
        ids_a, ids_b = a.key_IDs(), b.key_IDs()
        assert len(ids_a) == len(set(ids_a)) and len(ids_b) == len(set(ids_b))
        assert ids_a == ids_b, f"one-sided keys: {len(set(ids_a) - set(ids_b))} only at A, " \
                               f"{len(set(ids_b) - set(ids_a))} only at B"
        assert a.fingerprint() == b.fingerprint(), "the same key_IDs hold different key bytes"
        pa, pb = self.pool("alice"), self.pool("bob")
        assert pa.link.outbox == {} and pb.link.outbox == {}, (pa.link.outbox.keys(), pb.link.outbox.keys())
        assert pa.link.pending == {}, sorted(pa.link.pending)
        assert pa.state_digest() == pb.state_digest()
        return {"keys": len(ids_a), "next_round": pb.link.next_round}


def node_made_stores(root: Path, a: Path, b: Path, *, rounds: int = 4, exchanges: int = 60000) -> dict:
    """Run two real nodes for ``rounds`` rounds and copy the two sites' key stores to ``a`` and
    ``b`` (after both nodes stopped cleanly, and after checking the stores are identical)."""
    import shutil

    s = Sites(root, extra={"round": {"exchanges": exchanges}})
    try:
        s.start("alice")
        s.start("bob", rounds=rounds)
        assert s.wait("bob", timeout=300) == 0, (s.dirs["bob"] / "node.err").read_text()[-3000:]
        assert s.terminate("alice") == 0
        counts = s.check_stores()
    finally:
        s.close()
    shutil.copy2(s.dirs["alice"] / "keys.db", a)
    shutil.copy2(s.dirs["bob"] / "keys.db", b)
    return counts


def serve_kme(tmp: Path, name: str, sae: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """Start ``qkd kme serve`` for one site (store ``tmp/NAME.db``, TLS ``tmp/tls``); returns the
    process and its https URL.  Its log goes to ``tmp/NAME.err`` (a file, never an unread pipe:
    one line per request would fill a pipe and block the KME)."""
    err_path = tmp / f"{name}.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([QKD, "kme", "serve", "--id", name, "--store", str(tmp / f"{name}.db"),
                                 "--tls", str(tmp / "tls"), "--listen", "127.0.0.1:0", "--sae", sae, *extra],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    deadline = time.monotonic() + 60
    while True:
        for line in err_path.read_text().splitlines():
            if "serving ETSI GS QKD 014 on https://" in line:
                return proc, line.split(" on ")[1].split()[0]
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"{name} did not start: {err_path.read_text()[-2000:]!r}")
        time.sleep(0.05)


def synthetic_stores(a: Path, b: Path, *, keys: int = 64, link_id: str = "A-B") -> int:
    """Fill the key stores ``a`` and ``b`` (the two sites of one link) with the same ``keys``
    random 256-bit keys under the same key_IDs, as a link's rounds would (no rounds run: for
    tests whose point is what serves the keys, not what makes them).  Returns the key count."""
    from conftest import synthetic_final_key
    from qkd_circuits.keystore import store_final_key

    epoch = os.urandom(8)
    for round_number in range(keys // 16):
        key = synthetic_final_key(16 * 256)
        for path in (a, b):
            store_final_key(KeyStore(path), key, link_id=link_id, round_number=round_number, epoch=epoch)
    return 16 * (keys // 16)


@contextlib.contextmanager
def kme_sites_with_node_keys(tmp: Path, *, synthetic: bool = False):
    """Two ``qkd kme serve`` processes (site A: sae-a, peer B; site B: sae-b) over key stores two
    real link nodes filled (or, ``synthetic``, :func:`synthetic_stores`); yields
    ``{"tmp", "tls", "url": {"a", "b"}}`` and kills both after."""
    assert subprocess.run([QKD, "kme", "tls-init", str(tmp / "tls")], env=ENV, capture_output=True,
                          timeout=60).returncode == 0
    if synthetic:
        counts = {"keys": synthetic_stores(tmp / "kme-a.db", tmp / "kme-b.db")}
    else:
        counts = node_made_stores(tmp / "nodes", tmp / "kme-a.db", tmp / "kme-b.db")
    assert counts["keys"] >= 20, counts
    procs = []
    try:
        b, b_url = serve_kme(tmp, "kme-b", "sae-b", "--peer-id", "kme-a", "--peer-sae", "sae-a")
        procs.append(b)
        a, a_url = serve_kme(tmp, "kme-a", "sae-a", "--peer-id", "kme-b", "--peer-url", b_url, "--peer-sae", "sae-b")
        procs.append(a)
        yield {"tmp": tmp, "tls": tmp / "tls", "url": {"a": a_url, "b": b_url}}
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
