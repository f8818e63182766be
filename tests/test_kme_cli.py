"""The KME as real processes: filled by `qkd run`, served by `qkd kme serve`, killed with -9."""

from __future__ import annotations

import base64
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


STARTED: list[subprocess.Popen] = []  # every KME process a test started: the fixture kills them all


def _drain(stream) -> None:
    for _ in iter(stream.readline, ""):  # the KME logs a line per request: never let the pipe fill
        pass


def _serve(tmp_path, name, sae, *extra):
    proc = subprocess.Popen([QKD, "kme", "serve", "--id", name, "--store", str(tmp_path / f"{name}.db"),
                             "--tls", str(tmp_path / "tls"), "--listen", "127.0.0.1:0", "--sae", sae, *extra],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    STARTED.append(proc)
    line = proc.stderr.readline()
    assert "serving ETSI GS QKD 014 on https://" in line, line
    threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
    return proc, line.split(" on ")[1].split()[0]


def _kill_started() -> None:
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """The TLS files and the two sites' key stores one `qkd run` filled, made once for the module
    (each test serves its own copy: what a test delivers or kills is not seen by the next)."""
    tmp = tmp_path_factory.mktemp("filled")
    assert subprocess.run([QKD, "kme", "tls-init", str(tmp / "tls")], env=ENV).returncode == 0
    # Unseeded: a seeded round's key is public and never goes into a key store.
    proc = subprocess.run([QKD, "run", "--json", "-n", "300000", "--noise", "depolarizing:0.04",
                           "--store-a", str(tmp / "kme-a.db"), "--store-b", str(tmp / "kme-b.db")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return tmp


@pytest.fixture
def sites(tmp_path, filled):
    import shutil

    shutil.copytree(filled / "tls", tmp_path / "tls")
    for path in filled.glob("kme-*.db*"):  # the store and any SQLite side files: a consistent copy
        shutil.copy2(path, tmp_path / path.name)
    try:
        b, b_url = _serve(tmp_path, "kme-b", "sae-b", "--peer-id", "kme-a", "--peer-sae", "sae-a")
        a, a_url = _serve(tmp_path, "kme-a", "sae-a", "--peer-id", "kme-b", "--peer-url", b_url, "--peer-sae", "sae-b")
    except BaseException:
        _kill_started()
        raise
    site = {"tmp": tmp_path, "a": a, "a_url": a_url, "b": b, "b_url": b_url}
    try:
        yield site
    finally:
        _kill_started()  # also a KME a test restarted, even if its start failed half-way


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


def _in_process(*args):
    """``qkd ARGS`` through CliRunner; the KME logger's handlers are put back afterwards (no handler
    on the runner's closed stream outlives the call)."""
    import logging

    from click.testing import CliRunner

    from qkd_circuits.cli import main

    kme_log = logging.getLogger("qkd_circuits.kme")
    handlers, level, propagate = list(kme_log.handlers), kme_log.level, kme_log.propagate
    try:
        return CliRunner().invoke(main, list(args))
    finally:
        kme_log.handlers[:] = handlers
        kme_log.setLevel(level)
        kme_log.propagate = propagate


def test_pki_init_can_also_write_the_site_tls_material(tmp_path):
    result = _in_process("pki", "init", str(tmp_path / "pki"), "--site-tls")
    assert result.exit_code == 0, result.output
    for name in ("ca.pem", "kme-a.pem", "kme-b.pem", "sae-a.pem", "sae-b.pem", "kme-a.key"):
        assert (tmp_path / "pki" / "tls" / name).exists()
    assert oct((tmp_path / "pki" / "tls" / "kme-a.key").stat().st_mode & 0o777) == "0o600"


# -- one light site (no QKD run): the serve command's options, signals and logs ------------------------

@pytest.fixture
def site(tmp_path):
    import numpy as np

    from qkd_circuits.etsi014 import init_tls_pki
    from qkd_circuits.keystore import KeyStore, cut_key

    init_tls_pki(tmp_path / "tls", kmes=("kme-a", "kme-b"), saes=("sae-a", "sae-b"))
    bits = np.frombuffer(os.urandom(200 * 32), dtype=np.uint8)
    with KeyStore(tmp_path / "kme-a.db") as store:
        store.add(cut_key(np.unpackbits(bits), link_id="A-B", round_number=0), link_id="A-B", round_number=0)
    try:
        yield tmp_path
    finally:
        _kill_started()


def _sae(tmp, url, sae="sae-a"):
    host, port = url[8:].split(":")
    return KmeClient(host, int(port), client_context(tmp / f"tls/{sae}.pem", tmp / f"tls/{sae}.key",
                                                     tmp / "tls/ca.pem"), timeout=10)


@pytest.mark.parametrize("option, value", [("--key-size", "12"), ("--key-size", "0"), ("--max-key-size", "100"),
                                           ("--max-key-count", "-1"), ("--max-keys-per-request", "0")])
def test_bad_limits_exit_2(site, option, value, monkeypatch):
    import qkd_circuits.etsi014

    def start_kme(*args, **kwargs):  # in-process, a KME that started would serve until a signal
        raise AssertionError(f"the KME started with {option} {value}")

    monkeypatch.setattr(qkd_circuits.etsi014, "start_kme", start_kme)
    result = _in_process("kme", "serve", "--id", "kme-a", "--store", str(site / "kme-a.db"), "--tls",
                         str(site / "tls"), "--listen", "127.0.0.1:0", "--sae", "sae-a", option, value)
    assert result.exit_code == 2 and "must be" in result.stderr, result.output


def test_sigterm_and_sigint_stop_gracefully_and_close_the_store(site):
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([QKD, "kme", "serve", "--id", "kme-a", "--store", str(site / "kme-a.db"), "--tls",
                                 str(site / "tls"), "--listen", "127.0.0.1:0", "--sae", "sae-a", "--log-format",
                                 "json"], stderr=subprocess.PIPE, text=True, env=ENV)
        STARTED.append(proc)
        line = proc.stderr.readline()
        assert "serving" in line, line
        client = _sae(site, line.split(" on ")[1].split()[0])
        got, errors, stop = [], [], threading.Event()

        def load():
            while not stop.is_set():
                try:
                    got.extend(client.get_key("sae-a", number=1))
                except (Etsi014Error, OSError, http.client.HTTPException) as exc:
                    errors.append(exc)
                    return

        thread = threading.Thread(target=load)
        thread.start()
        while len(got) < 5 and thread.is_alive():
            threading.Event().wait(0.01)
        proc.send_signal(signum)
        out = proc.stderr.read()
        assert proc.wait(30) == 0, out
        stop.set()
        thread.join(10)
        assert "kme-a stopped" in out
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        served = [x for x in lines if x.get("path") == "/api/v1/keys/sae-a/enc_keys" and x["status"] == 200]
        assert len(served) >= len(got) >= 5  # every answer a client read was served whole
        assert all(set(x) >= {"method", "path", "caller", "status", "keys", "key_IDs", "latency_ms"} for x in served)
        assert not (site / "kme-a.db-wal").exists()  # the store was closed (SQLite removes the log)
    from qkd_circuits.keystore import KeyStore

    delivered = [a for a in KeyStore(site / "kme-a.db").audit() if a[3] == "enc_keys"]
    assert len(delivered) == len({a[1] for a in delivered})


def test_foreign_pki_files_metrics_listener_and_text_logs(site):
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    tls = site / "tls"
    proc = subprocess.Popen([QKD, "kme", "serve", "--id", "kme-a", "--store", str(site / "kme-a.db"),
                             "--cert", str(tls / "kme-a.pem"), "--key", str(tls / "kme-a.key"), "--ca",
                             str(tls / "ca.pem"), "--listen", "127.0.0.1:0", "--sae", "sae-a",
                             "--metrics-listen", f"127.0.0.1:{free}", "--max-key-count", "250"],
                            stderr=subprocess.PIPE, text=True, env=ENV)
    STARTED.append(proc)
    line = proc.stderr.readline()
    assert "serving" in line and f":{free}" in line, line
    client = _sae(site, line.split(" on ")[1].split()[0])
    status = client.status("sae-a")
    assert status["max_key_count"] == 250 and status["stored_key_count"] == 200
    keys = client.get_key("sae-a", number=2)
    log_line = proc.stderr.readline()
    assert "method=GET" in log_line and "status=200" in log_line and "caller=sae-a" in log_line
    enc_line = proc.stderr.readline()
    assert "keys=2" in enc_line and all(base64.b64encode(k).decode() not in enc_line for _, k in keys)
    with urllib.request.urlopen(f"http://127.0.0.1:{free}/health", timeout=10) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["stock"] == 198
    with urllib.request.urlopen(f"http://127.0.0.1:{free}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'qkd_kme_deliveries_total{endpoint="enc_keys"} 2.0' in text and "qkd_kme_free_keys 198.0" in text
    proc.terminate()
    assert proc.wait(30) == 0
