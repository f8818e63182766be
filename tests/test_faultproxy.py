"""The fault-injecting proxy of tests/faultproxy.py, against a tiny framed echo server on loopback."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from faultproxy import JUNK, MAX_FRAME, Fault, FaultProxy
from qkd_circuits.channel.tcp import TcpClient

LEN = struct.Struct(">I")


# --- a request/response server speaking the same framing: it replies with the reversed payload --
class EchoServer:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()[:2]
        self.conns: list[dict] = []  # per accepted connection: {"frames": [...], "end": None|"eof"|"reset"|"raw"}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            state = {"frames": [], "end": None, "raw": b""}
            self.conns.append(state)
            t = threading.Thread(target=self._serve, args=(conn, state), daemon=True)
            self._threads.append(t)
            t.start()

    def _read(self, conn: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n and not self._stop.is_set():
            try:
                chunk = conn.recv(n - len(data))
            except socket.timeout:
                continue
            if not chunk:
                return None
            data += chunk
        return data if len(data) == n else None

    def _serve(self, conn: socket.socket, state: dict) -> None:
        conn.settimeout(0.05)
        with conn:
            try:
                while True:
                    head = self._read(conn, 4)
                    if head is None:
                        state["end"] = "eof"
                        return
                    (n,) = LEN.unpack(head)
                    if n > MAX_FRAME:  # not a frame: keep the raw bytes up to EOF
                        raw = head
                        while (more := self._read(conn, 1)) is not None:
                            raw += more
                        state["raw"], state["end"] = raw, "raw"
                        return
                    payload = self._read(conn, n)
                    if payload is None:
                        state["end"] = "eof"
                        return
                    state["frames"].append(payload)
                    conn.sendall(LEN.pack(n) + payload[::-1])
            except OSError:
                state["end"] = "reset"

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.sock.close()


@pytest.fixture
def server():
    s = EchoServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_leaked_threads():
    yield
    assert not [t.name for t in threading.enumerate() if t.name.startswith("faultproxy")]


def connect(proxy: FaultProxy, timeout: float = 0.5) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(LEN.pack(len(payload)) + payload)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("EOF")
        data += chunk
    return data


def recv(sock: socket.socket) -> bytes:
    (n,) = LEN.unpack(recv_exact(sock, 4))
    return recv_exact(sock, n)


def request(sock: socket.socket, payload: bytes) -> bytes:
    send(sock, payload)
    return recv(sock)


def wait_until(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def diff_bits(a: bytes, b: bytes) -> list[int]:
    assert len(a) == len(b)
    return [8 * i + j for i, (x, y) in enumerate(zip(a, b)) for j in range(8) if (x ^ y) & (0x80 >> j)]


# --- plain relaying ---------------------------------------------------------------------------------
def test_relays_sequential_and_concurrent_connections(server):
    with FaultProxy(server.address) as proxy:
        assert proxy.address[0] == "127.0.0.1" and proxy.address[1] > 0
        with TcpClient(*proxy.address, timeout=0.5) as bob:  # the package's own client
            assert bob.request(b"hello") == b"olleh"
            assert bob.request(b"") == b""
        a, b = connect(proxy), connect(proxy)
        with a, b:
            assert request(b, b"from b") == b"b morf"
            assert request(a, b"from a") == b"a morf"
            big = bytes(range(256)) * 4096  # 1 MiB: split over many segments
            assert request(a, big) == big[::-1]
        assert proxy.wait_idle(2)
        assert proxy.connections == 3
        assert proxy.frames(0) == {"c2s": 2, "s2c": 2}
        assert proxy.frames(1) == {"c2s": 2, "s2c": 2} and proxy.frames(2) == {"c2s": 1, "s2c": 1}
        assert (0, "c2s", 0, 5, None) in proxy.log and (0, "s2c", 1, 0, None) in proxy.log
        assert all(entry.action is None for entry in proxy.log)
        assert wait_until(lambda: [c["end"] for c in server.conns] == ["eof"] * 3)


def test_non_frame_is_relayed_raw(server):
    with FaultProxy(server.address) as proxy:
        junk = LEN.pack(0xFFFFFFFF) + b"not a frame at all"
        with connect(proxy) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            assert wait_until(lambda: server.conns and server.conns[0]["end"] == "raw")
        assert server.conns[0]["raw"] == junk
        assert proxy.log == [(0, "c2s", 0, 0xFFFFFFFF, "raw")]
        assert proxy.wait_idle(2)
        with connect(proxy) as s:  # the proxy still works
            assert request(s, b"ok") == b"ko"


def test_rejects_bad_rules_and_non_loopback():
    with pytest.raises(ValueError):
        Fault(0, "c2s", 0, "explode")
    with pytest.raises(ValueError):
        Fault(0, "up", 0, "drop")
    with pytest.raises(ValueError):
        FaultProxy(("192.0.2.1", 1))
    with pytest.raises(ValueError):
        FaultProxy(("127.0.0.1", 1), faults=[Fault(0, "c2s", 0, "drop"), Fault(0, "c2s", 0, "cut")])


# --- the actions ------------------------------------------------------------------------------------
def test_drop(server):
    faults = [Fault(0, "c2s", 0, "drop"), Fault(0, "s2c", 0, "drop")]
    with FaultProxy(server.address, faults=faults) as proxy, TcpClient(*proxy.address, timeout=0.25) as bob:
        with pytest.raises(TimeoutError):
            bob.request(b"lost")  # never reaches the server
        with pytest.raises(TimeoutError):
            bob.request(b"seen")  # reaches the server, its reply is dropped
        assert bob.request(b"again") == b"niaga"  # the connection stayed open
        assert server.conns[0]["frames"] == [b"seen", b"again"]
        assert proxy.log == [(0, "c2s", 0, 4, "drop"), (0, "c2s", 1, 4, None), (0, "s2c", 0, 4, "drop"),
                             (0, "c2s", 2, 5, None), (0, "s2c", 1, 5, None)]


def test_duplicate(server):
    with FaultProxy(server.address, faults=[Fault(0, "c2s", 0, "duplicate")]) as proxy:
        with connect(proxy) as s:
            assert request(s, b"twice") == b"eciwt"
            assert recv(s) == b"eciwt"  # the server answered both copies
            assert request(s, b"once") == b"ecno"
        assert server.conns[0]["frames"] == [b"twice", b"twice", b"once"]
        assert proxy.log[0] == (0, "c2s", 0, 5, "duplicate")
        assert proxy.frames(0) == {"c2s": 2, "s2c": 3}


def test_delay_keeps_order(server):
    faults = [Fault(0, "s2c", 0, "delay", delay_s=0.3), Fault(1, "c2s", 0, "delay", delay_s=0.3)]
    with FaultProxy(server.address, faults=faults) as proxy:
        with connect(proxy) as s:
            t0 = time.monotonic()
            assert request(s, b"slow") == b"wols"
            assert time.monotonic() - t0 >= 0.3
            t0 = time.monotonic()
            assert request(s, b"fast") == b"tsaf"
            assert time.monotonic() - t0 < 0.25
        with connect(proxy) as s:  # pipelined: the second frame waits behind the delayed first
            t0 = time.monotonic()
            send(s, b"first")
            send(s, b"second")
            assert recv(s) == b"tsrif" and recv(s) == b"dnoces"
            assert time.monotonic() - t0 >= 0.3
        assert server.conns[1]["frames"] == [b"first", b"second"]
        assert (0, "s2c", 0, 4, "delay") in proxy.log and (1, "c2s", 0, 5, "delay") in proxy.log


def test_flip_header(server):
    payload = bytes(range(100))
    faults = [Fault(0, "c2s", 0, "flip_header"), Fault(0, "c2s", 1, "flip_header", bit=5),
              Fault(0, "c2s", 2, "flip_header", bit=3), Fault(0, "s2c", 3, "flip_header", bit=9)]
    with FaultProxy(server.address, faults=faults) as proxy, connect(proxy) as s:
        for _ in range(2):
            request(s, payload)
        request(s, b"short")  # shorter than the header: the flip stays inside the payload
        reply = request(s, payload)
        got = server.conns[0]["frames"]
        first = diff_bits(payload, got[0])
        assert len(first) == 1 and first[0] < 34 * 8 and first[0] == (7 * 0 + 3)  # deterministic default
        assert diff_bits(payload, got[1]) == [5]  # byte 0, mask 0x04
        assert got[1][0] == payload[0] ^ 0x04
        assert diff_bits(b"short", got[2]) == [3]
        assert got[3] == payload and diff_bits(payload[::-1], reply) == [9]  # server→client too
        assert [e.action for e in proxy.log if e.direction == "c2s"] == ["flip_header"] * 3 + [None]


def test_flip_payload(server):
    payload = bytes(100)
    faults = [Fault(0, "c2s", 0, "flip_payload"), Fault(0, "c2s", 1, "flip_payload", bit=0),
              Fault(0, "c2s", 2, "flip_payload"), Fault(0, "c2s", 3, "flip_payload")]
    with FaultProxy(server.address, header_bytes=40, faults=faults) as proxy, connect(proxy) as s:
        request(s, payload)
        request(s, payload)
        request(s, b"tiny")  # no bytes after the header: the last payload byte is flipped
        assert request(s, b"") == b""  # nothing to flip: forwarded as is
        got = server.conns[0]["frames"]
        bits = diff_bits(payload, got[0])
        assert len(bits) == 1 and 40 * 8 <= bits[0] < 100 * 8
        assert diff_bits(payload, got[1]) == [40 * 8]
        bits = diff_bits(b"tiny", got[2])
        assert len(bits) == 1 and bits[0] >= 3 * 8
        assert got[3] == b""
        assert [e.action for e in proxy.log if e.direction == "c2s"] == ["flip_payload"] * 3 + [None]


def test_reorder(server):
    faults = [Fault(0, "c2s", 0, "reorder"), Fault(1, "c2s", 0, "reorder"), Fault(2, "c2s", 0, "reorder")]
    with FaultProxy(server.address, faults=faults) as proxy:
        proxy.reorder_timeout = 0.3
        with connect(proxy) as s:  # a client that pipelines two requests
            send(s, b"AAAA")
            send(s, b"BB")
            assert recv(s) == b"BB" and recv(s) == b"AAAA"
        assert server.conns[0]["frames"] == [b"BB", b"AAAA"]
        with connect(proxy) as s:  # no next frame: released late, after the timeout
            t0 = time.monotonic()
            assert request(s, b"alone") == b"enola"
            assert time.monotonic() - t0 >= 0.3
        with connect(proxy) as s:  # the sender closes: released then
            send(s, b"last words")
            s.shutdown(socket.SHUT_WR)
            assert recv(s) == b"sdrow tsal"
        assert [e for e in proxy.log if e.action] == [(0, "c2s", 0, 4, "reorder"), (1, "c2s", 0, 5, "reorder"),
                                                       (2, "c2s", 0, 10, "reorder")]


def test_cut(server):
    with FaultProxy(server.address, faults=[Fault(0, "c2s", 1, "cut")]) as proxy:
        with connect(proxy) as s:
            assert request(s, b"fine") == b"enif"
            with pytest.raises(ConnectionError):  # reset (RST) or EOF
                request(s, b"doomed")
        assert proxy.wait_idle(1)
        assert wait_until(lambda: server.conns[0]["end"] in ("eof", "reset"))
        assert server.conns[0]["frames"] == [b"fine"]
        assert proxy.log[-1] == (0, "c2s", 1, 6, "cut")
        with connect(proxy) as s:  # the next connection is untouched
            assert request(s, b"new") == b"wen"


def test_inject(server):
    faults = [Fault(0, "c2s", 0, "inject"), Fault(0, "s2c", 2, "inject", payload=b"spoof")]
    with FaultProxy(server.address, faults=faults) as proxy, connect(proxy) as s:
        assert request(s, b"real") == JUNK[::-1]  # the injected frame is answered first
        assert recv(s) == b"laer"
        assert request(s, b"next") == b"spoof"  # injected before the third reply
        assert recv(s) == b"txen"
        assert server.conns[0]["frames"] == [JUNK, b"real", b"next"]
        assert len(JUNK) == 27
        assert proxy.frames(0) == {"c2s": 2, "s2c": 3}  # injected copies are not counted
        assert [e for e in proxy.log if e.action] == [(0, "c2s", 0, 4, "inject"), (0, "s2c", 2, 4, "inject")]


def test_partition_and_heal(server):
    with FaultProxy(server.address) as proxy:
        a = connect(proxy)
        with a:
            assert request(a, b"before") == b"erofeb"
            proxy.partition(5)
            with pytest.raises(ConnectionError):  # the open connection is reset
                request(a, b"during")
        assert proxy.wait_idle(1)
        with pytest.raises(ConnectionError):  # new ones are reset on accept (maybe during connect)
            with connect(proxy) as b:
                request(b, b"during")
        proxy.heal()
        with connect(proxy) as c:
            assert request(c, b"after") == b"retfa"
        proxy.partition(0.3)  # this time the window runs out by itself
        with pytest.raises(ConnectionError):
            with connect(proxy) as d:
                request(d, b"x")
        time.sleep(0.35)
        with connect(proxy) as e:
            assert request(e, b"healed") == b"delaeh"
        assert proxy.connections == 5
        assert [len(c["frames"]) for c in server.conns] == [1, 1, 1]  # b and d never reached it


# --- lifecycle ---------------------------------------------------------------------------------------
def test_stop_is_bounded_and_leaves_no_thread(server):
    proxy = FaultProxy(server.address, faults=[Fault(0, "c2s", 0, "delay", delay_s=30),
                                               Fault(1, "c2s", 0, "reorder")]).start()
    a, b, c = connect(proxy), connect(proxy), connect(proxy)
    send(a, b"stuck in a delay")
    send(b, b"held for reorder")
    assert request(c, b"idle") == b"eldi"
    assert wait_until(lambda: len(proxy.log) >= 4)
    assert len([t for t in threading.enumerate() if t.name.startswith("faultproxy")]) == 7
    t0 = time.monotonic()
    proxy.stop()
    assert time.monotonic() - t0 < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("faultproxy")]
    assert proxy.wait_idle(0)
    for s in (a, b, c):
        s.settimeout(0.5)
        with pytest.raises((ConnectionError, OSError)):
            recv(s)
        s.close()
    proxy.stop()  # idempotent


def test_context_manager_cleans_up_after_a_failure(server):
    with pytest.raises(RuntimeError):
        with FaultProxy(server.address) as proxy:
            s = connect(proxy)
            assert request(s, b"x") == b"x"
            raise RuntimeError("the test failed")
    s.close()
    # the autouse fixture checks that no proxy thread is left
