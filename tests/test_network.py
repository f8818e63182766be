"""Alice and Bob as two processes over TCP on loopback, and the transport's framing rules."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import qkd_circuits as qkd
from qkd_circuits.channel.tcp import MAX_FRAME, TcpClient, parse_address, serve_round

QKD = str(Path(sys.executable).with_name("qkd"))
ROUND = ["-n", "120000", "--seed", "9", "--noise", "depolarizing:0.04", "--json"]


def _run_pair(tmp_path, bob_psk):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    alice = subprocess.Popen([QKD, "alice", "--listen", "127.0.0.1:0", "--psk", str(tmp_path / "alice.psk"), *ROUND],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = alice.stderr.readline()  # "listening on 127.0.0.1:PORT"
        assert line.startswith("listening on"), line
        port = line.strip().rsplit(":", 1)[1]
        bob = subprocess.run([QKD, "bob", "--connect", f"127.0.0.1:{port}", "--psk", str(bob_psk), *ROUND],
                             capture_output=True, text=True, timeout=300, env=env)
        out, _ = alice.communicate(timeout=120)
    finally:
        alice.kill()
    return alice.returncode, json.loads(out), bob.returncode, json.loads(bob.stdout)


def test_two_processes_make_the_same_key(tmp_path):
    qkd.create_psk_file(tmp_path / "alice.psk", pad_bits=4096, simulation=True)
    shutil.copy(tmp_path / "alice.psk", tmp_path / "bob.psk")
    a_rc, a, b_rc, b = _run_pair(tmp_path, tmp_path / "bob.psk")
    assert (a_rc, b_rc) == (0, 0)
    assert a["key_sha256"] == b["key_sha256"] and a["final_key_bits"] == b["final_key_bits"] > 0
    assert a["auth"]["verified"] and b["auth"]["verified"]
    pools = [qkd.AuthKeyPool.load(tmp_path / f"{r}.psk") for r in ("alice", "bob")]
    assert pools[0].position == pools[1].position == 64
    assert pools[0].available_bits == pools[1].available_bits == 4096 - 512 + 1024
    assert pools[0].state_digest() == pools[1].state_digest() and a["auth"]["pool_state_sha256"] == pools[0].state_digest()


def test_a_bob_with_another_psk_gets_no_key_and_neither_does_alice(tmp_path):
    qkd.create_psk_file(tmp_path / "alice.psk", pad_bits=4096, simulation=True)
    qkd.create_psk_file(tmp_path / "other.psk", pad_bits=4096, simulation=True)
    before = qkd.AuthKeyPool.load(tmp_path / "alice.psk").state_digest()
    a_rc, a, b_rc, b = _run_pair(tmp_path, tmp_path / "other.psk")
    assert (a_rc, b_rc) == (3, 3)
    assert a["key_sha256"] is None and b["key_sha256"] is None
    assert a["abort_reason"] == "authentication_failed"  # Bob's envelopes are for another link
    assert b["abort_reason"] in ("authentication_failed", "ConnectionError")  # Alice just hung up on him
    assert qkd.AuthKeyPool.load(tmp_path / "alice.psk").state_digest() == before  # nothing moved her pool


def test_parties_need_a_shared_simulation(tmp_path):
    qkd.create_psk_file(tmp_path / "p.psk", pad_bits=4096)
    proc = subprocess.run([QKD, "bob", "--connect", "127.0.0.1:9", "--psk", str(tmp_path / "p.psk"), "-n", "100"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--seed" in proc.stderr


@pytest.mark.parametrize("text, match", [("localhost", "HOST:PORT"), ("h:99999", "HOST:PORT"), (":80", "HOST:PORT")])
def test_bad_addresses(text, match):
    with pytest.raises(qkd.ConfigurationError, match=match):
        parse_address(text)


def _server(handler, **kwargs):
    ready, errors, port = threading.Event(), [], {}

    def run():
        try:
            serve_round("127.0.0.1", 0, handler, on_listening=lambda h, p: (port.update(p=p), ready.set()), **kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    return port["p"], thread, errors


def test_framing_round_trip_and_clean_close():
    port, thread, errors = _server(lambda frame: frame[::-1])
    with TcpClient("127.0.0.1", port, timeout=5) as client:
        assert client.request(b"abc") == b"cba"
        assert client.request(b"") == b""
    thread.join(5)
    assert not thread.is_alive() and errors == []


def test_oversized_and_truncated_frames_are_refused():
    port, thread, errors = _server(lambda frame: frame)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(struct.pack(">I", MAX_FRAME + 1))
    thread.join(5)
    assert isinstance(errors[0], qkd.ProtocolError) and "limit" in str(errors[0])
    port, thread, errors = _server(lambda frame: frame)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.sendall(struct.pack(">I", 100) + b"short")
    thread.join(5)
    assert isinstance(errors[0], ConnectionError) and "mid-frame" in str(errors[0])


def test_a_silent_peer_times_out():
    port, thread, errors = _server(lambda frame: frame, timeout=0.5)
    with socket.create_connection(("127.0.0.1", port)):
        thread.join(5)
    assert isinstance(errors[0], TimeoutError)
