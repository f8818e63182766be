"""The simulated quantum channel between two link nodes: its own TCP connection, Alice → Bob.

A real link carries photons from Alice's source to Bob's detectors; here a frame carries what
those photons are, Alice's preparation settings (bit and basis per pulse), and the circuit runs
on the Qiskit sampler **at Bob's node**, as his detectors would: Bob draws his bases from
:mod:`secrets`, runs Alice's preparation, the fibre (loss, noise), the eavesdropper if one is
configured, and his measurement as one circuit per pulse batch
(:func:`~qkd_circuits.quantum.execution.run_exchanges`, prepared mode), keeps only his own view
(bases, results, clicks) and wipes Alice's settings at once.  Why at Bob's end: the measurement
is where the quantum state is turned into classical data, so Bob's bases never leave his site
before sifting and Alice never sees his results; and the circuit's eavesdropper sits where Eve
does, on the fibre between the sites.

What the simulation does not give: the frame is not a quantum state.  Whoever reads the
quantum connection (or runs Bob's node) can read Alice's settings, which no photon would allow;
keep the connection on loopback or inside a trusted network.  A key made this way is known to
whoever runs the simulation.

Frame (big-endian)::

    request  = "QKDQ" | version u8 (1) | kind u8 (1: ready)
    pulses   = "QKDQ" | version u8 (1) | kind u8 (2) | block 16 B | n u32
               | bits (ceil(n/8) bytes, MSB first) | bases (ceil(n/8) bytes)

The block is a random 16-byte name Alice gives the batch; Bob names it in his SETTLE (public,
authenticated with the round), which is how Alice finds her settings for the round.
"""

from __future__ import annotations

import secrets
import struct
import threading
from collections import OrderedDict

import numpy as np

from ..exceptions import ProtocolError
from ..records import AliceView, BobView

__all__ = ["PulseSource", "measure_pulses", "encode_pulses", "decode_pulses", "READY", "MAX_PULSES"]

MAGIC = b"QKDQ"
VERSION = 1
KIND_READY, KIND_PULSES = 1, 2
READY = MAGIC + bytes([VERSION, KIND_READY])
BLOCK_BYTES = 16
#: The most pulses one frame may carry (2 × 8 MiB of settings, under the transport's frame limit).
MAX_PULSES = 1 << 26
_HEAD = struct.Struct(">4sBB16sI")


def _random_bits(n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(secrets.token_bytes((n + 7) // 8), dtype=np.uint8))[:n].astype(bool)


def encode_pulses(block: bytes, bits: np.ndarray, bases: np.ndarray) -> bytes:
    n = len(bits)
    return (_HEAD.pack(MAGIC, VERSION, KIND_PULSES, block, n) + np.packbits(bits).tobytes()
            + np.packbits(bases).tobytes())


def decode_pulses(frame: bytes) -> tuple[bytes, np.ndarray, np.ndarray]:
    """``(block, alice_bits, alice_bases)``; a malformed frame raises :class:`ProtocolError`."""
    if len(frame) < _HEAD.size:
        raise ProtocolError("the quantum frame is truncated")
    magic, version, kind, block, n = _HEAD.unpack_from(frame)
    if (magic, version, kind) != (MAGIC, VERSION, KIND_PULSES):
        raise ProtocolError("not a pulse frame of this version")
    packed = (n + 7) // 8
    if not 0 < n <= MAX_PULSES or len(frame) != _HEAD.size + 2 * packed:
        raise ProtocolError(f"a pulse frame of {len(frame)} bytes cannot hold {n} pulses")
    body = np.frombuffer(frame, dtype=np.uint8, offset=_HEAD.size)
    bits = np.unpackbits(body[:packed])[:n].astype(bool)
    bases = np.unpackbits(body[packed:])[:n].astype(bool)
    return block, bits, bases


class PulseSource:
    """Alice's source: a fresh batch of random settings for each request; she keeps her view of the
    last few batches until a round names one (:meth:`view`), then forgets it."""

    def __init__(self, exchanges: int, *, keep: int = 4) -> None:
        if not 0 < exchanges <= MAX_PULSES:
            raise ValueError(f"exchanges must be in 1..{MAX_PULSES}, got {exchanges}")
        self.exchanges, self._keep = exchanges, keep
        self._views: OrderedDict[bytes, AliceView] = OrderedDict()
        self._lock = threading.Lock()

    def answer(self, request: bytes) -> bytes:
        """The pulse frame for one ready request."""
        if request != READY:
            raise ProtocolError("the quantum connection expects a ready request")
        block = secrets.token_bytes(BLOCK_BYTES)
        bits, bases = _random_bits(self.exchanges), _random_bits(self.exchanges)
        with self._lock:
            self._views[block] = AliceView(bits, bases)
            while len(self._views) > self._keep:
                _, old = self._views.popitem(last=False)
                _wipe_view(old)
        return encode_pulses(block, bits, bases)

    def view(self, block: bytes) -> AliceView:
        """Her settings for ``block``, once (a block is used for one round at most)."""
        with self._lock:
            view = self._views.pop(bytes(block), None)
        if view is None:
            raise ProtocolError("Alice sent no pulses under this block (or it was used or dropped)")
        return view

    def forget(self) -> None:
        with self._lock:
            for view in self._views.values():
                _wipe_view(view)
            self._views.clear()


def _wipe_view(view) -> None:
    for array in vars(view).values():
        if isinstance(array, np.ndarray) and array.flags.writeable:
            array.fill(False)


def measure_pulses(frame: bytes, **exchange_options) -> tuple[bytes, BobView]:
    """Bob's detectors: run the pulses of ``frame`` through the circuit, return ``(block, his view)``.

    ``exchange_options`` go to :func:`~qkd_circuits.quantum.execution.run_exchanges` (backend,
    channel, detector, eve, lanes, schedule); the mode is ``prepared`` and Bob's bases come from
    :mod:`secrets`.  Alice's settings are wiped before this returns.
    """
    from ..quantum.execution import PartyChoices, run_exchanges

    block, bits, bases = decode_pulses(frame)
    choices = PartyChoices(bits, bases, _random_bits(len(bits)))
    try:
        record = run_exchanges(len(bits), mode="prepared", choices=choices, **exchange_options)
        view = record.bob_view()
        view = BobView(view.bases.copy(), view.results.copy(), view.detected.copy())
    finally:  # best effort: the record freezes its arrays, and Python may hold other copies
        for array in (bits, bases):
            if array.flags.writeable:
                array.fill(False)
    return block, view
