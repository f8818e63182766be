"""TCP transport: Alice and Bob as two processes.

Frames are length-prefixed (u32 big-endian, at most :data:`MAX_FRAME` bytes); every socket
operation has a timeout; either side closes cleanly at the end of a round.  Bob is the client
(:class:`TcpClient`, whose :meth:`~TcpClient.request` is the carrier the authenticated channel
uses); Alice serves one round (:func:`serve_round`).  The transport only moves bytes: integrity
and authenticity come from the envelopes of :mod:`qkd_circuits.channel.authenticated`.
"""

from __future__ import annotations

import socket
import struct
from typing import Callable

from ..exceptions import ConfigurationError, ProtocolError

__all__ = ["TcpClient", "TcpServer", "serve_connection", "serve_round", "parse_address", "MAX_FRAME"]

#: The largest frame either side accepts (post-processing frames are at most 64 MiB + headers).
MAX_FRAME = (64 << 20) + 4096
_LENGTH = struct.Struct(">I")


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:7000"`` → ``("127.0.0.1", 7000)``; port 0 asks the system for a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigurationError(f"address must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _send(sock: socket.socket, data: bytes) -> None:
    if len(data) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME}-byte limit")
    sock.sendall(_LENGTH.pack(len(data)) + data)


class _PeerClosed(ConnectionError):
    """The peer closed the connection at a frame boundary."""


def _recv_exact(sock: socket.socket, n: int, *, boundary: bool = False) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got == 0 and boundary:
                raise _PeerClosed("the peer closed the connection")
            raise ConnectionError("the peer closed the connection mid-frame")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_recv_exact(sock, _LENGTH.size, boundary=True))
    if length > MAX_FRAME:
        raise ProtocolError(f"the peer announced a {length}-byte frame; the limit is {MAX_FRAME}")
    return _recv_exact(sock, length)


class TcpClient:
    """Bob's end of the connection: :meth:`request` sends a frame and waits for the reply."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, connect_timeout: float = 10.0) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {host}:{port}: {exc}") from None
        self._sock.settimeout(timeout)

    def __repr__(self) -> str:
        return f"TcpClient(peer={self._sock.getpeername() if self._sock.fileno() >= 0 else None})"

    def request(self, frame: bytes) -> bytes:
        try:
            _send(self._sock, frame)
            return _recv(self._sock)
        except socket.timeout:
            raise TimeoutError("no reply from the peer within the timeout") from None
        except OSError as exc:
            raise ConnectionError(f"the connection broke: {exc}") from None

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> TcpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TcpServer:
    """Alice's listening socket, kept open across rounds: :meth:`serve_one` answers one connection.

    ``on_listening(host, port)`` is called once the socket listens (with the real port when
    ``port`` is 0).
    """

    def __init__(self, host: str, port: int, *, on_listening: Callable[[str, int], None] | None = None) -> None:
        try:
            self._sock = socket.create_server((host, port))
        except OSError as exc:
            raise ConnectionError(f"cannot listen on {host}:{port}: {exc}") from None
        self.address = self._sock.getsockname()[:2]
        if on_listening is not None:
            on_listening(*self.address)

    def __repr__(self) -> str:
        return f"TcpServer(address={self.address})"

    def serve_one(self, handler: Callable[[bytes], bytes], *, timeout: float = 30.0,
                  accept_timeout: float = 120.0) -> None:
        """Accept one connection and answer its frames with ``handler`` until the peer closes.

        An exception from ``handler`` closes the connection and propagates; so does a peer that
        goes silent for ``timeout`` seconds (:class:`TimeoutError`) or breaks a frame.
        """
        conn = self.accept(accept_timeout)
        if conn is None:
            raise TimeoutError(f"no peer connected within {accept_timeout} s")
        serve_connection(conn, handler, timeout=timeout)

    def accept(self, timeout: float) -> socket.socket | None:
        """The next connection, or ``None`` if nobody connected within ``timeout`` seconds."""
        self._sock.settimeout(timeout)
        try:
            conn, _ = self._sock.accept()
        except socket.timeout:
            return None
        except OSError as exc:
            raise ConnectionError(f"the listening socket failed: {exc}") from None
        return conn

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_connection(conn: socket.socket, handler: Callable[[bytes], bytes], *, timeout: float = 30.0) -> None:
    """Answer the frames of an accepted connection with ``handler`` until the peer closes it
    (then close it); see :meth:`TcpServer.serve_one`."""
    with conn:
        conn.settimeout(timeout)
        while True:
            try:
                frame = _recv(conn)
            except _PeerClosed:
                return  # the peer is done: the round's outcome decides the rest
            except socket.timeout:
                raise TimeoutError("the peer went silent mid-round") from None
            except OSError as exc:
                raise ConnectionError(f"the connection broke: {exc}") from None
            try:
                _send(conn, handler(frame))
            except OSError as exc:
                raise ConnectionError(f"the connection broke: {exc}") from None


def serve_round(host: str, port: int, handler: Callable[[bytes], bytes], *, timeout: float = 30.0,
                accept_timeout: float = 120.0, on_listening: Callable[[str, int], None] | None = None) -> None:
    """Accept one connection on ``host:port`` and answer it with ``handler`` (see :class:`TcpServer`)."""
    with TcpServer(host, port, on_listening=on_listening) as server:
        server.serve_one(handler, timeout=timeout, accept_timeout=accept_timeout)
