"""The KME as real processes: filled by `qkd run`, served by `qkd kme serve`, killed with -9."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the kme extra is not installed")

from qkd_circuits.etsi014 import Etsi014Error, KmeClient, client_context  # noqa: E402

QKD = str(Path(sys.executable).with_name("qkd"))
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def _serve(tmp_path, name, sae, *extra):
    proc = subprocess.Popen([QKD, "kme", "serve", "--id", name, "--store", str(tmp_path / f"{name}.db"),
                             "--tls", str(tmp_path / "tls"), "--listen", "127.0.0.1:0", "--sae", sae, *extra],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    line = proc.stderr.readline()
    assert "serving ETSI GS QKD 014 on https://" in line, line
    return proc, line.split(" on ")[1].split()[0]


@pytest.fixture
def sites(tmp_path):
    assert subprocess.run([QKD, "kme", "tls-init", str(tmp_path / "tls")], env=ENV).returncode == 0
    # Unseeded: a seeded round's key is public and never goes into a key store.
    proc = subprocess.run([QKD, "run", "--json", "-n", "300000", "--noise", "depolarizing:0.04",
                           "--store-a", str(tmp_path / "kme-a.db"), "--store-b", str(tmp_path / "kme-b.db")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    b, b_url = _serve(tmp_path, "kme-b", "sae-b", "--peer-id", "kme-a", "--peer-sae", "sae-a")
    a, a_url = _serve(tmp_path, "kme-a", "sae-a", "--peer-id", "kme-b", "--peer-url", b_url, "--peer-sae", "sae-b")
    site = {"tmp": tmp_path, "a": a, "a_url": a_url, "b": b, "b_url": b_url}
    yield site
    for p in {a, b, site["a"], site["b"]}:  # a test may have replaced one (a restarted KME)
        p.kill()
        p.wait()


def _cli(*args):
    return subprocess.run([QKD, "kme", *args], capture_output=True, text=True, env=ENV, timeout=60)


def test_command_line_clients_fetch_the_same_key_at_both_sites(sites):
    tls = str(sites["tmp"] / "tls")
    got = _cli("get-key", "--kme", sites["a_url"], "--tls", tls, "--sae", "sae-a", "--slave", "sae-b", "--number", "2")
    keys = json.loads(got.stdout)["keys"]
    back = _cli("get-key-with-ids", "--kme", sites["b_url"], "--tls", tls, "--sae", "sae-b", "--master", "sae-a",
                *[k["key_ID"] for k in keys])
    assert json.loads(back.stdout)["keys"] == keys
    again = _cli("get-key-with-ids", "--kme", sites["b_url"], "--tls", tls, "--sae", "sae-b", "--master", "sae-a",
                 keys[0]["key_ID"])
    assert again.returncode == 3 and json.loads(again.stdout)["status"] == 400


def test_kill_9_under_load_then_restart_loses_nothing_and_duplicates_nothing(sites):
    tmp = sites["tmp"]
    with sqlite3.connect(tmp / "kme-a.db") as db:
        initial = {r[0] for r in db.execute("SELECT key_ID FROM keys")}
    host, port = sites["a_url"][8:].split(":")
    tls = client_context(tmp / "tls/sae-a.pem", tmp / "tls/sae-a.key", tmp / "tls/ca.pem")
    received, stop = [], threading.Event()

    def load():
        client = KmeClient(host, int(port), tls, timeout=10)  # a client (connection) per thread
        while not stop.is_set():
            try:
                received.extend(k for k, _ in client.get_key("sae-b", number=1))
            except (Etsi014Error, OSError, ConnectionError, http.client.HTTPException):
                return

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(3000):  # at most 30 s
        if len(received) >= 20:
            break
        threading.Event().wait(0.01)
    assert len(received) >= 20, "the load never got going"
    os.kill(sites["a"].pid, signal.SIGKILL)
    sites["a"].wait()
    stop.set()
    for t in threads:
        t.join(10)
    # Restart A: it settles any reservation the crash left with B, then serves again.
    sites["a"], _ = _serve(tmp, "kme-a", "sae-a", "--peer-id", "kme-b", "--peer-url", sites["b_url"],
                           "--peer-sae", "sae-b")
    with sqlite3.connect(tmp / "kme-a.db") as db:
        remaining = {r[0] for r in db.execute("SELECT key_ID FROM keys")}
        delivered = [r[0] for r in db.execute("SELECT key_ID FROM audit WHERE action = 'enc_keys'")]
        reserved = db.execute("SELECT COUNT(*) FROM keys WHERE reservation IS NOT NULL").fetchone()[0]
    assert reserved == 0
    assert len(delivered) == len(set(delivered)), "a key was delivered twice"
    assert set(received) <= set(delivered)  # everything a client got is on record
    assert set(delivered) | remaining == initial and not set(delivered) & remaining


def test_pki_init_can_also_write_the_site_tls_material(tmp_path):
    proc = subprocess.run([QKD, "pki", "init", str(tmp_path / "pki"), "--site-tls"], capture_output=True,
                          text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    for name in ("ca.pem", "kme-a.pem", "kme-b.pem", "sae-a.pem", "sae-b.pem", "kme-a.key"):
        assert (tmp_path / "pki" / "tls" / name).exists()
    assert oct((tmp_path / "pki" / "tls" / "kme-a.key").stat().st_mode & 0o777) == "0o600"
