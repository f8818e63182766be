"""A fault-injecting TCP proxy for tests of two real processes talking length-prefixed frames.

The wire format is the one of :mod:`qkd_circuits.channel.tcp`: ``u32 big-endian length | payload``.
:class:`FaultProxy` listens on loopback, opens one upstream connection per accepted client and
relays whole frames in both directions (``"c2s"`` client → server, ``"s2c"`` server → client),
one thread per direction.  A peer that announces a frame over :data:`MAX_FRAME` is not framed
any more: its bytes are relayed raw until the connection closes (logged once, action ``"raw"``).

Faults are :class:`Fault` rules keyed by (connection index, direction, frame index), all 0-based
(or, with ``kind`` set, by the index among frames whose payload byte 5 — the envelope kind — is ``kind``);
the frame index counts the frames *received* in that direction (injected or duplicated copies
do not count).  Actions:

``drop``         the frame is not forwarded; the connection stays open.
``duplicate``    the frame is forwarded twice.
``delay``        the frame is forwarded after ``delay_s`` s; later frames of that direction wait
                 behind it (the relay thread sleeps, so order is kept).
``flip_header``  one bit is flipped in the first ``header_bytes`` bytes of the payload (the whole
                 payload if shorter).  ``flip_payload``: one bit after the first ``header_bytes``
                 bytes, or in the last payload byte if there are none.  Bit ``i`` of a region is
                 byte ``i // 8``, mask ``0x80 >> i % 8``; ``i`` is ``bit`` (modulo the region's
                 size) or, when ``bit`` is None, ``7 * frame + 3`` (modulo the size).  An empty
                 payload is forwarded unchanged and logged with action None.
``reorder``      the frame is held and forwarded right after the next frame of that direction
                 (after that frame's own fault), so the two arrive swapped.  If no next frame
                 arrives within :attr:`FaultProxy.reorder_timeout` (1 s) or the sender closes,
                 the held frame is forwarded then, late but not lost.
``cut``          instead of forwarding, both sockets of the connection are closed abruptly:
                 ``SO_LINGER`` 0, so the kernel sends RST and the peers see ECONNRESET (or EOF).
``inject``       an extra frame (``payload``, default 27 junk bytes) is sent in the same direction
                 just before the frame.

Observability: :attr:`FaultProxy.log` is a snapshot (taken under a lock) of :class:`LogEntry`
tuples ``(connection, direction, frame, length, action or None)``, one per frame received, in
the order they were received; :meth:`~FaultProxy.frames` counts received frames per direction,
:attr:`~FaultProxy.connections` the connections accepted, :meth:`~FaultProxy.wait_idle` waits
until none is open.  Rules can be given as ``faults=[...]`` or added with ``add_fault``.

:meth:`FaultProxy.partition` resets (RST) every open connection and, for its window, every newly
accepted one (those still count as accepted connections); :meth:`FaultProxy.heal` ends it early.
A reset or error on one side is passed on as a reset of the other; a clean EOF is passed on as
a half-close (``shutdown(SHUT_WR)``), and an unfinished frame at EOF is forwarded as it stands.
Sockets are non-blocking and every wait polls (50 ms), so :meth:`FaultProxy.stop` closes
everything and joins every thread within a bounded time; the threads are daemons too.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Fault", "FaultProxy", "LogEntry", "MAX_FRAME", "ACTIONS", "JUNK"]

MAX_FRAME = (64 << 20) + 4096
ACTIONS = ("drop", "duplicate", "delay", "flip_header", "flip_payload", "reorder", "cut", "inject")
DIRECTIONS = ("c2s", "s2c")
JUNK = b"\xde\xad\xbe\xef injected junk frame!\x00\xff"  # 27 bytes
_LEN = struct.Struct(">I")
_POLL = 0.05
_RST = struct.pack("ii", 1, 0)


@dataclass(frozen=True)
class Fault:
    connection: int
    direction: str
    frame: int
    action: str
    delay_s: float = 0.0
    bit: int | None = None
    payload: bytes = JUNK
    kind: int | None = None  # if set, ``frame`` counts only frames whose payload byte 5 is ``kind``

    def __post_init__(self) -> None:
        if self.action not in ACTIONS or self.direction not in DIRECTIONS:
            raise ValueError(f"bad fault {self!r}: action in {ACTIONS}, direction in {DIRECTIONS}")


class LogEntry(NamedTuple):
    connection: int
    direction: str
    frame: int
    length: int
    action: str | None


class _Closed(Exception):
    """The connection was closed under the relay thread."""


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _flip(payload: bytes, start: int, end: int, bit: int | None, frame: int) -> bytes:
    i = (7 * frame + 3 if bit is None else bit) % ((end - start) * 8)
    out = bytearray(payload)
    out[start + i // 8] ^= 0x80 >> (i % 8)
    return bytes(out)


class _Conn:
    def __init__(self, index: int, client: socket.socket, server: socket.socket) -> None:
        self.index, self.socks = index, {"c2s": (client, server), "s2c": (server, client)}
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"c2s": 0, "s2c": 0}
        self.kind_counts: dict = {}
        self.pumps, self.eof = 2, set()

    def abort(self, abrupt: bool = True) -> None:
        """Ask both relay threads to stop; the last one out closes the sockets (RST if abrupt)."""
        if abrupt:
            for s in self.socks["c2s"]:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                except OSError:
                    pass
        self.closed.set()

    def close_sockets(self) -> None:
        for s in self.socks["c2s"]:
            s.close()


class FaultProxy:
    reorder_timeout = 1.0

    def __init__(self, upstream: tuple[str, int], *, header_bytes: int = 34,
                 listen_host: str = "127.0.0.1", faults=()) -> None:
        if not (_loopback(upstream[0]) and _loopback(listen_host)):
            raise ValueError("FaultProxy only talks to loopback addresses")
        self.upstream, self.header_bytes, self.listen_host = tuple(upstream), header_bytes, listen_host
        self._lock = threading.Condition()
        self._faults: dict[tuple[int, str, int, int | None], Fault] = {}
        self._log: list[LogEntry] = []
        self._conns: dict[int, _Conn] = {}  # index -> every connection ever relayed
        self._open: set[int] = set()
        self._accepted = 0
        self._partition_until = 0.0
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        for f in faults:
            self.add_fault(f)

    # --- configuration and observation -------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        key = (fault.connection, fault.direction, fault.frame, fault.kind)
        with self._lock:
            if key in self._faults:
                raise ValueError(f"a fault is already scripted for {key}")
            self._faults[key] = fault

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("the proxy is not started")
        return self._listener.getsockname()[:2]

    @property
    def log(self) -> list[LogEntry]:
        with self._lock:
            return list(self._log)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._accepted

    def frames(self, connection: int) -> dict[str, int]:
        with self._lock:
            conn = self._conns.get(connection)
            return dict(conn.counts) if conn else {"c2s": 0, "s2c": 0}

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._open, timeout)

    def partition(self, seconds: float) -> None:
        with self._lock:
            self._partition_until = time.monotonic() + seconds
            victims = [self._conns[i] for i in self._open]
        for conn in victims:
            conn.abort()

    def heal(self) -> None:
        with self._lock:
            self._partition_until = 0.0

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._listener = socket.create_server((self.listen_host, 0))
        self._listener.setblocking(False)
        self._spawn(self._accept_loop, "faultproxy-accept")
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Close every socket and join every thread (each join bounded by ``timeout`` in all)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        if threads:  # the accept thread first: after it no connection can appear
            threads[0].join(timeout)
        with self._lock:
            conns, threads = list(self._conns.values()), list(self._threads)
        for conn in conns:
            conn.abort(abrupt=False)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for conn in conns:  # normally already closed by their relay threads
            conn.close_sockets()
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------------
    def _spawn(self, target, name: str, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:  # the accept thread stays first
            self._threads = self._threads[:1] + [x for x in self._threads[1:] if x.is_alive()] + [t]
        t.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            if not select.select([self._listener], [], [], _POLL)[0]:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                index, self._accepted = self._accepted, self._accepted + 1
                partitioned = time.monotonic() < self._partition_until
            try:
                if partitioned:
                    raise OSError("partitioned")
                server = socket.create_connection(self.upstream, timeout=2.0)
            except OSError:
                try:
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                except OSError:
                    pass
                client.close()
                continue
            client.setblocking(False)
            server.setblocking(False)
            conn = _Conn(index, client, server)
            with self._lock:
                self._conns[index] = conn
                self._open.add(index)
                if time.monotonic() < self._partition_until or self._stopping.is_set():
                    conn.abort()  # partitioned (or stopped) while connecting upstream
            for d in DIRECTIONS:
                self._spawn(self._pump, f"faultproxy-c{index}-{d}", conn, d)

    def _send(self, conn: _Conn, sock: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if conn.closed.is_set():
                raise _Closed
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                select.select([], [sock], [], _POLL)

    def _frame(self, conn: _Conn, dst: socket.socket, payload: bytes) -> None:
        self._send(conn, dst, _LEN.pack(len(payload)) + payload)

    def _pump(self, conn: _Conn, direction: str) -> None:
        src, dst = conn.socks[direction]
        buf, raw = bytearray(), False
        held, held_until = None, 0.0
        try:
            while not conn.closed.is_set():
                wait = _POLL if held is None else max(0.0, min(_POLL, held_until - time.monotonic()))
                if not select.select([src], [], [], wait)[0]:
                    if held is not None and time.monotonic() >= held_until:
                        self._frame(conn, dst, held)
                        held = None
                    continue
                try:
                    chunk = src.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:  # clean EOF: flush what we have and pass on a half-close
                    if held is not None:
                        self._frame(conn, dst, held)
                    self._send(conn, dst, bytes(buf))
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    with conn.lock:
                        conn.eof.add(direction)
                        if len(conn.eof) == 2:
                            conn.abort(abrupt=False)
                    return
                if raw:
                    self._send(conn, dst, chunk)
                    continue
                buf += chunk
                while len(buf) >= 4:
                    (length,) = _LEN.unpack_from(buf)
                    if length > MAX_FRAME:
                        self._record(conn, direction, length, "raw")
                        self._send(conn, dst, bytes(buf))
                        buf, raw = bytearray(), True
                        break
                    if len(buf) < 4 + length:
                        break
                    payload = bytes(buf[4:4 + length])
                    del buf[:4 + length]
                    previous, held = held, None
                    held = self._relay(conn, direction, dst, payload)
                    if held is not None:
                        held_until = time.monotonic() + self.reorder_timeout
                    if previous is not None:
                        self._frame(conn, dst, previous)
        except (_Closed, OSError, ValueError):
            if not conn.closed.is_set():
                conn.abort()  # a reset or error on one side is passed on as a reset
        finally:
            with conn.lock:
                conn.pumps -= 1
                last = conn.pumps == 0
            if last:
                conn.close_sockets()
                with self._lock:
                    self._open.discard(conn.index)
                    self._lock.notify_all()

    def _record(self, conn: _Conn, direction: str, length: int, action: str | None) -> None:
        with self._lock:
            self._log.append(LogEntry(conn.index, direction, conn.counts[direction], length, action))
            conn.counts[direction] += 1

    def _relay(self, conn: _Conn, direction: str, dst: socket.socket, payload: bytes) -> bytes | None:
        """Forward one received frame through its fault; returns the frame if it is held."""
        kind = payload[5] if len(payload) > 5 else None
        with self._lock:
            index = conn.counts[direction]
            kind_index = conn.kind_counts.get((direction, kind), 0)
            conn.kind_counts[(direction, kind)] = kind_index + 1
            fault = (self._faults.get((conn.index, direction, index, None))
                     or self._faults.get((conn.index, direction, kind_index, kind)))
        action = fault.action if fault else None
        h = min(self.header_bytes, len(payload))
        if action in ("flip_header", "flip_payload") and not payload:
            action = None
        self._record(conn, direction, len(payload), action)
        if action == "drop":
            return None
        if action == "reorder":
            return payload
        if action == "cut":
            conn.abort()
            raise _Closed
        if action == "delay" and conn.closed.wait(fault.delay_s):
            raise _Closed
        if action == "flip_header":
            payload = _flip(payload, 0, h, fault.bit, index)
        elif action == "flip_payload":
            start = h if len(payload) > h else len(payload) - 1
            payload = _flip(payload, start, len(payload), fault.bit, index)
        elif action == "inject":
            self._frame(conn, dst, fault.payload)
        self._frame(conn, dst, payload)
        if action == "duplicate":
            self._frame(conn, dst, payload)
        return None
