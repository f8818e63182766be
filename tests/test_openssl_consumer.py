"""A real key consumer: a QKD key delivered by two `qkd kme serve` processes becomes the external
TLS 1.3 PSK of `openssl s_server` and `openssl s_client` (programs nobody here wrote).

The chain under test, all real processes on loopback:

    qkd node run (site A)  <-classical + quantum TCP->  qkd node run (site B)   -> A.db, B.db
    qkd kme serve (site A: SAE sae-a, peer B)    qkd kme serve (site B: SAE sae-b)
    sae-a: enc_keys at A (master)  ->  key_ID  ->  sae-b: dec_keys at B (slave)
    openssl s_server -psk <key at B> -psk_identity <key_ID>  <-TLS 1.3->  openssl s_client -psk <key at A>

OpenSSL 3.0 notes (found by trying, see the module's tests): ``-psk`` builds the PSK's session
with TLS_AES_128_GCM_SHA256, so only a SHA-256 suite can use it (``-ciphersuites
TLS_AES_256_GCM_SHA384`` falls back to certificates and, with ``-nocert``, fails with "no
suitable signature algorithm").  The handshake is psk_dhe_ke (PSK plus an X25519 exchange).
``-nocert`` leaves the server no certificate, so a handshake that succeeds used the PSK.
``-quiet`` keeps both programs from printing session secrets; ``-no_ign_eof`` makes the server
close when its standard input closes; ``-naccept 1`` makes it exit after one connection.

The PSK goes on the openssl command line, where other local users can read it in the process
table: fine for a loopback test, not for production (see docs/threat-model.md).  So no
assertion message, exception or log here carries an argv, and a timeout is re-raised without it.
"""

from __future__ import annotations

import os
import secrets
import selectors
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from nodeharness import kme_sites_with_node_keys

pytest.importorskip("aiohttp", reason="the kme extra is not installed")

from qkd_circuits.etsi014 import KmeClient, client_context  # noqa: E402

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="no `openssl` binary on PATH (the third-party TLS 1.3 "
                                                        "PSK consumer this test drives)")

QKD = str(Path(sys.executable).with_name("qkd"))
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
SUITE = "TLS_AES_128_GCM_SHA256"  # the one suite OpenSSL 3.0's -psk session can use (see above)
DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    with kme_sites_with_node_keys(tmp_path_factory.mktemp("sites")) as s:
        yield {"tmp": s["tmp"], "a_url": s["url"]["a"], "b_url": s["url"]["b"]}


def sae_client(sites, sae: str) -> KmeClient:
    url = sites["a_url"] if sae == "sae-a" else sites["b_url"]
    host, port = url.removeprefix("https://").rsplit(":", 1)
    tls = sites["tmp"] / "tls"
    return KmeClient(host, int(port), client_context(tls / f"{sae}.pem", tls / f"{sae}.key", tls / "ca.pem"),
                     timeout=DEADLINE_S)


@pytest.fixture
def delivered(sites):
    """One key, fetched by sae-a at site A as master and by sae-b at site B as slave."""
    master, slave = sae_client(sites, "sae-a"), sae_client(sites, "sae-b")
    try:
        [(key_ID, key_a)] = master.get_key("sae-b", number=1)
        [(got_ID, key_b)] = slave.get_key_with_ids("sae-a", [key_ID])
    finally:
        master.close()
        slave.close()
    # No key in an assertion's expression: pytest would print its bytes on a failure.
    size, same = len(key_a), secrets.compare_digest(key_a, key_b)
    assert got_ID == key_ID and size == 32
    assert same, "the two sites delivered different keys"
    return key_ID, key_a, key_b


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, without connecting (a probe connection would
    use up the server's one accept)."""
    want = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            return any(f[1] == want and f[3] == "0A" for f in (line.split() for line in table) if len(f) > 3)
    except OSError:  # no /proc: fall back to a pause
        time.sleep(0.5)
        return True


@contextmanager
def openssl(*args: str):
    """An openssl process with piped stdin/stdout/stderr; always killed and reaped on exit."""
    proc = subprocess.Popen([OPENSSL, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OPENSSL_CONF": os.devnull})
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:  # re-raised without the argv (it holds the PSK)
            raise AssertionError("an openssl process would not die") from None
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            pipe.close()


def read_until(proc: subprocess.Popen, wanted: bytes, timeout: float = DEADLINE_S) -> bytes:
    """Read proc's stdout until ``wanted`` appears, EOF, or the timeout; returns what was read."""
    got, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while wanted not in got and (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            got += chunk
    return got


def wait(proc: subprocess.Popen, timeout: float = DEADLINE_S) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"openssl did not exit within {timeout} s") from None


def s_server(psk: bytes, identity: str, port: int):
    return openssl("s_server", "-tls1_3", "-ciphersuites", SUITE, "-psk", psk.hex(), "-psk_identity", identity,
                   "-nocert", "-accept", f"127.0.0.1:{port}", "-naccept", "1", "-quiet", "-no_ign_eof")


def s_client(psk: bytes, identity: str, port: int):
    return openssl("s_client", "-tls1_3", "-ciphersuites", SUITE, "-psk", psk.hex(), "-psk_identity", identity,
                   "-connect", f"127.0.0.1:{port}", "-quiet")


def _await_listen(server, port: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not _listening(port):
        assert server.poll() is None, f"s_server exited: {server.stderr.read()[-500:]!r}"
        assert time.monotonic() < deadline, "s_server never listened"
        time.sleep(0.02)


def test_a_delivered_qkd_key_is_the_tls13_psk_of_openssl_server_and_client(delivered):
    key_ID, key_a, key_b = delivered
    port = _free_port()
    ping, pong = f"ping over {key_ID}\n".encode(), b"pong from the server at site B\n"
    with s_server(key_b, key_ID, port) as server:  # site B's SAE holds the slave's copy
        _await_listen(server, port)
        with s_client(key_a, key_ID, port) as client:  # site A's SAE the master's
            client.stdin.write(ping)
            client.stdin.flush()
            assert ping in read_until(server, ping), "the client's message never reached the server"
            server.stdin.write(pong)
            server.stdin.flush()
            assert pong in read_until(client, pong), "the server's answer never reached the client"
            server.stdin.close()  # -no_ign_eof: the server closes the connection and exits
            assert wait(server) == 0
            assert wait(client) == 0


def test_a_wrong_psk_fails_the_handshake_and_carries_nothing(delivered):
    key_ID, _, key_b = delivered
    wrong = secrets.token_bytes(len(key_b))
    port = _free_port()
    with s_server(key_b, key_ID, port) as server:
        _await_listen(server, port)
        with s_client(wrong, key_ID, port) as client:
            client.stdin.write(b"this must never arrive\n")
            client.stdin.flush()
            assert wait(client) != 0, "a client with the wrong PSK completed the handshake"
            assert b"never arrive" not in read_until(server, b"never arrive", timeout=1.0)
            err = client.stderr.read()
        wait(server)  # -naccept 1: it exits after the failed connection
        server_err = server.stderr.read()
    assert b"binder does not verify" in server_err  # RFC 8446 §4.2.11: the PSK binder is wrong
    assert b"alert" in err
