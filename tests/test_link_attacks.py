"""Attacks on the two-process link, each written before its fix and now failing for the attacker.

Real ``qkd alice`` processes on loopback; the attacker speaks raw TCP.  What each shows:
* unauthenticated input moves nothing: junk frames, a well-formed opening that claims a
  far-ahead round, and a forged tag cost Alice's pool 0 bits, and the next honest round works;
* a record is post-processed at most once per pool, over the network too;
* a seeded simulation cannot refill a real pool from the command line.
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess

import pytest
from linkharness import ENV, QKD, ROUND

import qkd_circuits as qkd
from qkd_circuits.channel import ENVELOPE_HEADER_BYTES

_ENVELOPE = struct.Struct(">4sBB8sQQI")


def _start_alice(psk, rounds, *extra):
    proc = subprocess.Popen([QKD, "alice", "--listen", "127.0.0.1:0", "--psk", str(psk), *ROUND,
                             "--rounds", str(rounds), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    line = proc.stderr.readline()
    assert line.startswith("listening on"), line
    return proc, int(line.strip().rsplit(":", 1)[1])


def _send_frames(port, frames):
    """Connect, send each frame and read Alice's reply (if any) until she hangs up."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for frame in frames:
            try:
                sock.sendall(struct.pack(">I", len(frame)) + frame)
                head = sock.recv(4)
            except OSError:
                break
            if len(head) < 4:
                break
            (n,) = struct.unpack(">I", head)
            body = b""
            while len(body) < n:
                chunk = sock.recv(n - len(body))
                if not chunk:
                    break
                body += chunk
            replies.append(body)
    return replies


def test_unauthenticated_frames_move_nothing_and_the_next_round_succeeds(tmp_path):
    psk_a, psk_b = tmp_path / "alice.psk", tmp_path / "bob.psk"
    qkd.create_psk_file(psk_a, pad_bits=8192, simulation=True)
    shutil.copy(psk_a, psk_b)
    pool = qkd.AuthKeyPool.load(psk_a)
    epoch, before = pool.epoch, pool.state_digest()
    settle = struct.pack(">H", 0) + struct.pack(">H", 0)  # empty block id, no decisions
    ahead = 3  # a claimed round three slices ahead: inside the catch-up bound, but unauthenticated
    opening = _ENVELOPE.pack(b"QKDA", 2, 4, epoch, ahead, 64 * ahead, 0) + settle
    forged_tag = _ENVELOPE.pack(b"QKDA", 2, 2, epoch, ahead, 64 * ahead, 1) + bytes(16)
    too_far = _ENVELOPE.pack(b"QKDA", 2, 4, epoch, 1000, 64 * 1000, 0) + settle
    alice, port = _start_alice(psk_a, 4)
    try:
        assert _send_frames(port, [b"\x00" * 27]) == []  # 27 junk bytes: Alice hangs up
        replies = _send_frames(port, [opening, forged_tag])  # she answers the opening, then refuses the tag
        assert len(replies) == 1 and replies[0][5] == 5  # her ACK; the forged tag got nothing
        assert _send_frames(port, [too_far]) == []  # beyond the catch-up bound: refused at once
        bob = subprocess.run([QKD, "bob", "--connect", f"127.0.0.1:{port}", "--psk", str(psk_b), *ROUND],
                             capture_output=True, text=True, timeout=300, env=ENV)
        out, _ = alice.communicate(timeout=120)
    finally:
        alice.kill()
        alice.wait(timeout=10)
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["key_sha256"] for x in lines[:3]] == [None, None, None]
    assert all(x["auth"]["pad_position"] is None and x["auth"]["pool_position"] == 0 for x in lines[:3])
    assert lines[1]["auth"]["failures"] == 1  # the forged tag counted towards the halt...
    honest = json.loads(bob.stdout)
    assert bob.returncode == 0 and lines[3]["key_sha256"] == honest["key_sha256"] is not None
    assert lines[3]["auth"]["failures"] == 0  # ...and the honest round reset the count
    assert honest["auth"]["pad_position"] == 0  # the attacker's three connections cost 0 pad bits
    a, b = qkd.AuthKeyPool.load(psk_a), qkd.AuthKeyPool.load(psk_b)
    assert a.state_digest() == b.state_digest() != before


def test_a_record_is_post_processed_once_per_pool_over_the_network(tmp_path):
    record = tmp_path / "round.npz"
    proc = subprocess.run([QKD, "run", "--json", "-n", "30000", "--noise", "depolarizing:0.02",
                           "--save-record", str(record)], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    psk_a, psk_b = tmp_path / "alice.psk", tmp_path / "bob.psk"
    qkd.create_psk_file(psk_a, pad_bits=8192)  # a real pool: the record is unseeded
    shutil.copy(psk_a, psk_b)
    args = ["-n", "30000", "--record", str(record), "--timeout", "20", "--json"]
    for attempt in range(2):
        alice = subprocess.Popen([QKD, "alice", "--listen", "127.0.0.1:0", "--psk", str(psk_a), *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            line = alice.stderr.readline()
            if attempt == 1:  # Alice refuses the reused record before she listens
                assert alice.wait(timeout=60) == 2 and "post-processed with this pool before" in line + alice.stderr.read()
                break
            port = int(line.strip().rsplit(":", 1)[1])
            bob = subprocess.run([QKD, "bob", "--connect", f"127.0.0.1:{port}", "--psk", str(psk_b), *args],
                                 capture_output=True, text=True, timeout=300, env=ENV)
            out, _ = alice.communicate(timeout=60)
            assert bob.returncode == 0 and json.loads(out)["key_sha256"] == json.loads(bob.stdout)["key_sha256"]
        finally:
            alice.kill()
            alice.wait(timeout=10)
    again = subprocess.run([QKD, "bob", "--connect", "127.0.0.1:9", "--psk", str(psk_b), *args],
                           capture_output=True, text=True, timeout=120, env=ENV)
    assert again.returncode == 2 and "post-processed with this pool before" in again.stderr


@pytest.mark.parametrize("role", ["alice", "bob"])
def test_a_seeded_simulation_with_a_real_pool_is_refused(tmp_path, role):
    psk = tmp_path / "real.psk"
    qkd.create_psk_file(psk, pad_bits=4096)
    flag = ["--listen", "127.0.0.1:0"] if role == "alice" else ["--connect", "127.0.0.1:9"]
    proc = subprocess.run([QKD, role, *flag, "--psk", str(psk), *ROUND], capture_output=True, text=True,
                          timeout=120, env=ENV)
    assert proc.returncode == 2 and "simulation pool" in proc.stderr
    assert qkd.AuthKeyPool.load(psk).position == 0


def test_envelope_header_size_is_documented():
    assert ENVELOPE_HEADER_BYTES == _ENVELOPE.size == 34
