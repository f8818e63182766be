"""A site's durable key store: SQLite, transactional, every key delivered at most once per SAE.

One store per site (each site's KME holds its own party's final keys).  Keys enter as fixed-size
*units*, pieces of QKD final keys (:func:`cut_key`, whose key IDs both sites derive alike), by
:meth:`KeyStore.add_round` (idempotent per round: a round already stored is skipped) or
:meth:`KeyStore.add`, and leave by one of two doors, each a single atomic step:

* :meth:`KeyStore.reserve` → (the peer site records the assignment) → :meth:`KeyStore.finalize`
  — a master SAE asks for ``number`` keys for a set of slaves (ETSI GS QKD 014 "Get key"):
  free units are set aside, handed out once the peer knows, and kept only for the slaves attached
  to this site (:meth:`KeyStore.take_for_master` does both steps for a site with no peer).  A key
  of ``size`` bits larger than a unit is made of ``ceil(size / unit)`` units in stock order,
  concatenated and truncated to ``size`` bits; its key_ID is its first unit's (a *composite*);
* :meth:`KeyStore.take_for_slave` — a slave fetches keys by ID ("Get key with key IDs"); a key
  whose last local recipient has it is deleted.

Keys assigned at the other site reach this one through :meth:`KeyStore.assign` (and
:meth:`KeyStore.unassign` if that site's master never received them; both idempotent per peer
reservation, and an unassigned reservation stays cancelled, so a late assign cannot resurrect
it).  A reservation left unsettled (a crash, or a peer that did not answer in time;
:meth:`KeyStore.pending_reservations`) is undone at the peer and released here, or, if a slave
already fetched its keys there, finalized as orphaned: never handed out twice.  A request either
succeeds whole or changes nothing.  SQLite's atomic commit (WAL, ``synchronous=FULL``) means a
crash at any instant leaves every key either undelivered and still stored, or delivered and
gone — never both, never twice.  The audit table records deliveries (key_ID, SAE, time, action)
and never key bytes.

The store holds one SQLite connection (guarded by a lock; usable from any thread).  Writes from
concurrent threads are *group-committed*: each operation runs in its own savepoint inside one
``BEGIN IMMEDIATE`` transaction shared with the operations queued meanwhile, and returns only
once that transaction is committed (one ``fsync`` for the group instead of one per operation).
An operation that fails is rolled back to its savepoint and changes nothing.

The connection sets ``PRAGMA secure_delete=ON`` (some SQLite builds default to it, others do
not): a deleted key's bytes are overwritten with zeros in the database file, not left in a free
page or cell for anyone who later copies the file.  Older page images in the write-ahead log
can hold a delivered key until the log restarts; :meth:`KeyStore.checkpoint` copies the log
into the database and truncates it (run it when the store is idle, e.g. after :meth:`KeyStore.purge`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..exceptions import ConfigurationError, KeyStoreError

__all__ = ["KeyStore", "StoredKey", "cut_key", "store_final_key", "NotEnoughKeys", "KeysNotFound", "NotARecipient",
           "StoreFull", "AlreadyDelivered", "ReservationCancelled", "StoreUnavailable"]


class NotEnoughKeys(KeyStoreError):
    """Fewer free keys of the requested size than asked for (ETSI 014: 503)."""


class KeysNotFound(KeyStoreError):
    """One or more requested key IDs are not (or no longer) stored here (ETSI 014: 400).

    ``missing`` lists the IDs not found (public identifiers, never key bytes)."""

    def __init__(self, message: str = "one or more keys specified are not found on KME",
                 missing: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing)


class NotARecipient(KeyStoreError):
    """The caller is not a (remaining) recipient of every requested key (ETSI 014: 401)."""


class StoreFull(KeyStoreError):
    """Storing these keys would exceed the store's ``max_key_count`` (nothing was stored)."""


class AlreadyDelivered(KeyStoreError):
    """A key of the reservation to undo was already fetched by a slave here (it is orphaned)."""


class ReservationCancelled(KeyStoreError):
    """The peer reservation was already undone here (a late assign is refused)."""


class StoreUnavailable(KeyStoreError):
    """The database could not start or commit a transaction (busy past the timeout, I/O error):
    nothing changed, and the same request may succeed later."""


@dataclass(frozen=True, eq=False)
class StoredKey:
    """A key handed out: its ID and bytes.  The repr never shows the bytes."""

    key_ID: str
    key: bytes

    def __repr__(self) -> str:
        return f"StoredKey(key_ID={self.key_ID!r}, bits={8 * len(self.key)})"


def _key_ID(link_id: str, epoch: bytes, round_number: int, index: int) -> str:
    if epoch:
        label = b"qkd_circuits/key_ID/v2|" + link_id.encode() + b"|" + epoch.hex().encode() + b"|"
    else:
        label = b"qkd_circuits/key_ID/v1|" + link_id.encode() + b"|"
    digest = hashlib.sha256(label + round_number.to_bytes(8, "big") + index.to_bytes(8, "big")).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def cut_key(bits: np.ndarray, *, link_id: str, round_number: int, size: int = 256,
            epoch: bytes = b"") -> list[StoredKey]:
    """Cut a final key (uint8 0/1 bits) into ``size``-bit keys with IDs both sites derive alike.

    key_ID = the UUID (version 4 layout) of the first 16 bytes of
    SHA-256("qkd_circuits/key_ID/v2|" link_id "|" epoch.hex() "|" round index) with round and
    index as 8-byte big-endian integers — or, when ``epoch`` is empty, of
    SHA-256("qkd_circuits/key_ID/v1|" link_id "|" round index) (the IDs of earlier versions).
    Pass the link's pool epoch (8 bytes) so that IDs stay unique across PSK re-bootstraps,
    which restart the round numbers.  Public inputs only: the IDs say nothing about the key.
    Trailing bits that do not fill a key are dropped.
    """
    if size <= 0 or size % 8:
        raise ConfigurationError(f"key size must be a positive multiple of 8 bits, got {size}")
    if not isinstance(epoch, (bytes, bytearray)):
        raise ConfigurationError("epoch must be bytes")
    bits = np.asarray(bits, dtype=np.uint8)
    out = []
    for index in range(bits.size // size):
        out.append(StoredKey(_key_ID(link_id, bytes(epoch), round_number, index),
                             np.packbits(bits[index * size:(index + 1) * size]).tobytes()))
    return out


_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    key_ID TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    key BLOB NOT NULL,
    created REAL NOT NULL,
    link_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    master_SAE_ID TEXT,
    recipients TEXT,
    assigned_to TEXT,
    reservation TEXT
);
DROP INDEX IF EXISTS keys_free;
CREATE INDEX IF NOT EXISTS keys_stock ON keys (size, created, key_ID) WHERE master_SAE_ID IS NULL;
CREATE INDEX IF NOT EXISTS keys_reserved ON keys (reservation) WHERE reservation IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    key_ID TEXT NOT NULL,
    SAE_ID TEXT NOT NULL,
    action TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_key ON audit (key_ID);
CREATE TABLE IF NOT EXISTS rounds (
    link_id TEXT NOT NULL,
    epoch TEXT NOT NULL,
    round INTEGER NOT NULL,
    keys INTEGER NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (link_id, epoch, round)
);
CREATE TABLE IF NOT EXISTS peer_reservations (
    reservation TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS purge_outbox (
    key_ID TEXT PRIMARY KEY
);
"""
# Columns added since the first schema (ALTER TABLE on an older store).
_NEW_COLUMNS = {"part_of": "TEXT", "part": "INTEGER", "bits": "INTEGER", "peer_reservation": "TEXT"}


class _Op:
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn) -> None:
        self.fn, self.done, self.result, self.error = fn, False, None, None


def _group_key(row_key_ID: str, part_of: str | None) -> str:
    return part_of or row_key_ID


class KeyStore:
    """The key store of one site (a SQLite file; ``":memory:"`` is refused: it would not be durable).

    Args:
        path: the database file (created if missing, mode 0600).
        timeout: seconds a writer waits for another process's transaction (SQLite busy
            timeout).  A KME at the peer end of a link should use less than the other KME's
            peer timeout (``qkd kme serve`` uses 5 s against 10 s).
        max_key_count: the most keys (units, free or assigned) the store holds; :meth:`add`
            and :meth:`add_round` refuse more (:class:`StoreFull`).  ``None``: no limit.
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0, max_key_count: int | None = None) -> None:
        if str(path) == ":memory:":
            raise ConfigurationError("the key store must be a file: ':memory:' would lose keys on a crash")
        if max_key_count is not None and (isinstance(max_key_count, bool) or not isinstance(max_key_count, int)
                                          or max_key_count < 0):
            raise ConfigurationError(f"max_key_count must be a non-negative integer or None, got {max_key_count!r}")
        self.path = Path(path)
        self._timeout = timeout
        self.max_key_count = max_key_count
        if not self.path.exists():  # key material: readable by this user only (SQLite keeps the mode)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._lock = threading.RLock()       # the connection: one user (thread) at a time
        self._batch_owner: int | None = None  # the thread inside batch(), if any
        self._queue_lock = threading.Lock()  # the queue of operations waiting for a group commit
        self._queue: list[_Op] = []
        self._db: sqlite3.Connection | None = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                                              check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")  # zero deleted keys' bytes in the file
            self._db.executescript(_SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(keys)")}
            for name, kind in _NEW_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE keys ADD COLUMN {name} {kind}")
            self._db.execute("CREATE INDEX IF NOT EXISTS keys_parts ON keys (part_of) WHERE part_of IS NOT NULL")
            self._db.execute("CREATE INDEX IF NOT EXISTS keys_peer ON keys (peer_reservation) "
                             "WHERE peer_reservation IS NOT NULL")
        except BaseException:
            self._db.close()
            self._db = None
            raise

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"

    def close(self) -> None:
        """Close the connection (idempotent); later operations raise :class:`KeyStoreError`."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise KeyStoreError("the key store is closed")
        return self._db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The held connection, for reads (under the lock)."""
        with self._lock:
            yield self._conn()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run several operations of this thread in one transaction (one commit, one fsync).

        Inside, each operation still runs in its own savepoint (one that fails changes nothing
        and raises as usual) and returns at once; nothing is durable until the block ends.  A
        caller that hands results on (the KME's store thread) must do so only after the block,
        and treat every result as void if it raises (:class:`StoreUnavailable`: nothing of the
        block was stored).  Other threads wait until the block ends.
        """
        with self._lock:
            db = self._conn()
            if self._batch_owner is not None:
                raise KeyStoreError("batches do not nest")
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"the key store is unavailable: {exc}") from None
            self._batch_owner = threading.get_ident()
            try:
                yield
            except BaseException:
                self._batch_owner = None
                db.execute("ROLLBACK")
                raise
            self._batch_owner = None
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise StoreUnavailable(f"the key store could not commit: {exc}") from None

    def _write(self, fn: Callable[[sqlite3.Connection], object]):
        """Run ``fn(db)`` atomically and durably: in a savepoint of a group-committed transaction."""
        if self._batch_owner is not None and self._batch_owner == threading.get_ident():
            db = self._db
            db.execute("SAVEPOINT op")
            try:
                return fn(db)
            except BaseException:
                db.execute("ROLLBACK TO op")
                raise
            finally:
                db.execute("RELEASE op")
        op = _Op(fn)
        with self._queue_lock:
            self._queue.append(op)
        with self._lock:
            if not op.done:  # nobody took it into their group: lead a group of everything queued
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit_group(group)
        if op.error is not None:
            raise op.error
        return op.result

    def _commit_group(self, group: list[_Op]) -> None:
        try:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for op in group:
                op.error, op.done = (exc if isinstance(exc, KeyStoreError)
                                     else StoreUnavailable(f"the key store is unavailable: {exc}")), True
            return
        try:
            for op in group:
                db.execute("SAVEPOINT op")
                try:
                    op.result = op.fn(db)
                except BaseException as exc:  # noqa: BLE001 - handed to the op's caller
                    db.execute("ROLLBACK TO op")
                    op.error = exc
                db.execute("RELEASE op")
            db.execute("COMMIT")
        except BaseException as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for op in group:
                op.result, op.error = None, StoreUnavailable(f"the key store could not commit: {exc}")
        finally:
            for op in group:
                op.done = True

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database file and truncate the log, so that no old
        page image of a delivered key is left on disk; returns whether it completed.

        It waits (up to the busy timeout) for other connections' transactions; if one is still
        open it does what it can and returns ``False``: call it again when the store is idle.
        """
        with self._connect() as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    # -- filling ---------------------------------------------------------------------------------
    def _check_room(self, db: sqlite3.Connection, new: int) -> None:
        if self.max_key_count is not None:
            stored = db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]
            if stored + new > self.max_key_count:
                raise StoreFull(f"the store holds {stored} keys; {new} more would exceed max_key_count "
                                f"({self.max_key_count})")

    def _insert(self, db: sqlite3.Connection, rows: list) -> None:
        try:
            db.executemany("INSERT INTO keys (key_ID, size, key, created, link_id, round) VALUES (?,?,?,?,?,?)", rows)
        except sqlite3.IntegrityError:
            raise KeyStoreError("a key_ID is already in the store: the same round was stored twice") from None

    def add(self, keys: Iterable[StoredKey], *, link_id: str, round_number: int) -> int:
        """Store new keys (all free); returns how many.  A key_ID seen before is refused.

        Raises:
            StoreFull: more than ``max_key_count`` keys would be stored (nothing changes).
        """
        now = time.time()
        rows = [(k.key_ID, 8 * len(k.key), k.key, now, link_id, round_number) for k in keys]

        def op(db):
            self._check_room(db, len(rows))
            self._insert(db, rows)
            return len(rows)
        return self._write(op)

    def add_round(self, keys: Iterable[StoredKey], *, link_id: str, epoch: bytes, round_number: int) -> int:
        """Store one round's keys once: a round (link_id, epoch, round) already stored returns 0
        and changes nothing, so replaying an outbox after a crash never resurrects delivered keys.

        Raises:
            StoreFull: more than ``max_key_count`` keys would be stored (nothing changes).
        """
        now = time.time()
        rows = [(k.key_ID, 8 * len(k.key), k.key, now, link_id, round_number) for k in keys]
        tag = bytes(epoch).hex()

        def op(db):
            if db.execute("SELECT 1 FROM rounds WHERE link_id = ? AND epoch = ? AND round = ?",
                          (link_id, tag, round_number)).fetchone():
                return 0
            self._check_room(db, len(rows))
            self._insert(db, rows)
            db.execute("INSERT INTO rounds (link_id, epoch, round, keys, time) VALUES (?,?,?,?,?)",
                       (link_id, tag, round_number, len(rows), now))
            return len(rows)
        return self._write(op)

    def has_round(self, link_id: str, epoch: bytes, round_number: int) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM rounds WHERE link_id = ? AND epoch = ? AND round = ?",
                              (link_id, bytes(epoch).hex(), round_number)).fetchone() is not None

    # -- reading ----------------------------------------------------------------------------------
    def count_free(self, size: int | None = None) -> int:
        with self._connect() as db:
            if size is None:
                return db.execute("SELECT COUNT(*) FROM keys WHERE master_SAE_ID IS NULL").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM keys WHERE master_SAE_ID IS NULL AND size = ?",
                              (size,)).fetchone()[0]

    def count(self) -> int:
        """Every stored key (unit), free, reserved or assigned."""
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]

    def capacity_left(self) -> int | None:
        """How many more keys fit under ``max_key_count`` (``None``: no limit)."""
        if self.max_key_count is None:
            return None
        return max(0, self.max_key_count - self.count())

    def key_IDs(self) -> list[str]:
        """Every stored key_ID, sorted (public identifiers: lets tests compare two sites)."""
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT key_ID FROM keys ORDER BY key_ID")]

    def fingerprint(self) -> str:
        """SHA-256 (hex) over the sorted (key_ID, key bytes) of every stored key: two stores
        holding the same keys give the same fingerprint, and it reveals nothing about the bytes."""
        h = hashlib.sha256(b"qkd_circuits/keystore/fingerprint/v1")
        with self._connect() as db:
            for key_ID, key in db.execute("SELECT key_ID, key FROM keys ORDER BY key_ID"):
                ident = key_ID.encode()
                h.update(len(ident).to_bytes(4, "big") + ident + len(key).to_bytes(4, "big") + bytes(key))
        return h.hexdigest()

    def audit(self) -> list[tuple[float, str, str, str]]:
        """Every delivery so far: (time, key_ID, SAE_ID, action)."""
        with self._connect() as db:
            return db.execute("SELECT time, key_ID, SAE_ID, action FROM audit ORDER BY seq").fetchall()

    # -- the two doors ------------------------------------------------------------------------------
    def take_for_master(self, master: str, slaves: list[str], *, number: int, size: int,
                        local_SAEs: Iterable[str] = (), unit: int | None = None) -> list[StoredKey]:
        """Assign ``number`` free keys to ``master`` for ``slaves`` and hand them to the master
        (:meth:`reserve` then :meth:`finalize`, for a site with no peer to tell).

        Only the slaves in ``local_SAEs`` (attached to this site) are remembered as recipients;
        a key nobody here still needs is deleted at once.

        Raises:
            NotEnoughKeys: too few free keys (nothing changes).
        """
        reservation = self.reserve(master, slaves, number=number, size=size, local_SAEs=local_SAEs, unit=unit)
        return self.finalize(reservation)

    def reserve(self, master: str, slaves: list[str], *, number: int, size: int,
                local_SAEs: Iterable[str] = (), unit: int | None = None) -> str:
        """Set ``number`` free keys of ``size`` bits aside for ``master`` (not yet delivered);
        returns the reservation.  See :meth:`reserve_groups`."""
        return self.reserve_groups(master, slaves, number=number, size=size, local_SAEs=local_SAEs, unit=unit)[0]

    def reserve_groups(self, master: str, slaves: list[str], *, number: int, size: int,
                       local_SAEs: Iterable[str] = (), unit: int | None = None, reservation: str | None = None
                       ) -> tuple[str, list[tuple[str, list[str], int]]]:
        """Set ``number`` keys of ``size`` bits aside for ``master``; returns the reservation
        and its keys as ``(key_ID, unit key_IDs, size)``.

        ``unit=None``: keys are stored keys of exactly ``size`` bits.  ``unit=u``: each key is
        made of ``ceil(size / u)`` free ``u``-bit units taken in stock order (oldest first), its
        bytes their concatenation truncated to ``size`` bits, its key_ID the first unit's; the
        truncated bits are wasted.  A site reserves, has the peer site record the assignment
        (:meth:`assign` there, with these groups), then :meth:`finalize` delivers; if the peer
        refuses, :meth:`release` frees the keys again.  ``reservation``: the ID to use (a
        caller that must know it before the keys are set aside); default a fresh UUID.
        """
        if size <= 0 or size % 8:
            raise ConfigurationError(f"key size must be a positive multiple of 8 bits, got {size}")
        keep_for = json.dumps(sorted(set(slaves) & set(local_SAEs)))  # master == slave is allowed (ETSI 014)
        assigned_to = json.dumps(sorted(set(slaves)))
        unit_size = size if unit is None else unit
        per_key = -(-size // unit_size)
        composite = per_key > 1 or size != unit_size
        reservation = reservation or str(uuid.uuid4())

        def op(db):
            rows = db.execute("SELECT key_ID FROM keys WHERE master_SAE_ID IS NULL AND size = ? "
                              "ORDER BY created, key_ID LIMIT ?", (unit_size, number * per_key)).fetchall()
            if len(rows) < number * per_key:
                have = len(rows) // per_key
                raise NotEnoughKeys(f"{have} keys of {size} bits are available, {number} were asked for")
            groups, updates = [], []
            for g in range(number):
                units = [r[0] for r in rows[g * per_key:(g + 1) * per_key]]
                groups.append((units[0], units, size))
                for i, k in enumerate(units):
                    updates.append((master, keep_for, assigned_to, reservation, units[0] if composite else None,
                                    i if composite else None, size if composite else None, k))
            db.executemany("UPDATE keys SET master_SAE_ID = ?, recipients = ?, assigned_to = ?, reservation = ?, "
                           "part_of = ?, part = ?, bits = ? WHERE key_ID = ?", updates)
            return reservation, groups
        return self._write(op)

    def reserved_keys(self, reservation: str) -> list[str]:
        """The unit key_IDs of a reservation, in stock order."""
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT key_ID FROM keys WHERE reservation = ? ORDER BY created, key_ID",
                                             (reservation,))]

    def reservation_groups(self, reservation: str) -> list[tuple[str, list[str], int]]:
        """A reservation's keys as ``(key_ID, unit key_IDs, size in bits)``."""
        with self._connect() as db:
            rows = db.execute("SELECT key_ID, size, part_of, part, bits FROM keys WHERE reservation = ? "
                              "ORDER BY created, key_ID", (reservation,)).fetchall()
        return [(head, [u[0] for u in units], bits) for head, units, bits in self._groups(rows)]

    @staticmethod
    def _groups(rows) -> list[tuple[str, list, int]]:
        """Rows (key_ID, size, part_of, part, bits, ...) in stock order -> [(head, rows by part, bits)]."""
        order: dict[str, list] = {}
        for row in rows:
            order.setdefault(_group_key(row[0], row[2]), []).append(row)
        out = []
        for head, members in order.items():
            members.sort(key=lambda r: r[3] or 0)
            out.append((head, members, members[0][4] or members[0][1]))
        return out

    def pending_reservations(self) -> dict[str, tuple[str, list[str], list[str]]]:
        """Reservations neither finalized nor released (after a crash, or unsettled with the peer):
        id → (master, slaves, unit key_IDs)."""
        out: dict = {}
        with self._connect() as db:
            for key_ID, master, slaves, reservation in db.execute(
                    "SELECT key_ID, master_SAE_ID, assigned_to, reservation FROM keys "
                    "WHERE reservation IS NOT NULL ORDER BY created, key_ID"):
                out.setdefault(reservation, (master, json.loads(slaves), []))[2].append(key_ID)
        return out

    def finalize(self, reservation: str, *, action: str = "enc_keys") -> list[StoredKey]:
        """Deliver a reservation's keys to its master (audited); keep them only for local slaves.

        ``action="orphaned"`` (a slave at the peer site fetched keys the master never got):
        the keys are recorded as such and deleted here, kept for nobody; nothing is returned.
        """
        now = time.time()

        def op(db):
            rows = db.execute("SELECT key_ID, size, part_of, part, bits, key, master_SAE_ID, recipients FROM keys "
                              "WHERE reservation = ? ORDER BY created, key_ID", (reservation,)).fetchall()
            if not rows:
                raise KeyStoreError("no such reservation (already finalized or released)")
            orphaned = action == "orphaned"
            gone = [(r[0],) for r in rows if orphaned or not json.loads(r[7])]
            db.executemany("DELETE FROM keys WHERE key_ID = ?", gone)
            db.execute("UPDATE keys SET reservation = NULL WHERE reservation = ?", (reservation,))
            out = []
            for head, members, bits in self._groups(rows):
                out.append(StoredKey(head, b"".join(bytes(m[5]) for m in members)[:bits // 8]))
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(now, k.key_ID, rows[0][6], action) for k in out])
            return [] if orphaned else out
        return self._write(op)

    def release(self, reservation: str) -> int:
        """Return a reservation's keys to the free pool (the peer never recorded them)."""
        def op(db):
            return db.execute("UPDATE keys SET master_SAE_ID = NULL, recipients = NULL, assigned_to = NULL, "
                              "reservation = NULL, part_of = NULL, part = NULL, bits = NULL "
                              "WHERE reservation = ?", (reservation,)).rowcount
        return self._write(op)

    def assign(self, key_IDs: list[str], *, master: str, slaves: list[str], local_SAEs: Iterable[str],
               groups: list[tuple[str, list[str], int]] | None = None, reservation: str | None = None) -> None:
        """Record that the other site handed these keys to ``master`` for ``slaves``.

        ``groups`` (from the other site's :meth:`reserve_groups`): ``(key_ID, unit key_IDs,
        size)`` per key, for keys made of several units; default: every key_ID is one stored
        key.  ``reservation``: the other site's reservation ID — a repeated assign for it is a
        no-op, and one for a reservation already undone (:meth:`unassign`) is refused
        (:class:`ReservationCancelled`).  Without it: idempotent for the same assignment.

        Raises:
            KeysNotFound: a key is not stored here (``missing`` names them); nothing changes.
            KeyStoreError: a key is assigned otherwise, or a size does not fit its units.
        """
        keep_for = sorted(set(slaves) & set(local_SAEs))
        if groups is None:
            groups = [(k, [k], None) for k in key_IDs]
        units = [u for _, us, _ in groups for u in us]
        if len(set(units)) != len(units):
            raise KeyStoreError("a key_ID appears twice in the assignment")
        now = time.time()

        def op(db):
            if reservation is not None:
                state = db.execute("SELECT state FROM peer_reservations WHERE reservation = ?",
                                   (reservation,)).fetchone()
                if state is not None:
                    if state[0] == "cancelled":
                        raise ReservationCancelled("the reservation was already undone here")
                    return None  # already recorded
            rows = {}
            for u in units:
                row = db.execute("SELECT master_SAE_ID, recipients, size, part_of, peer_reservation FROM keys "
                                 "WHERE key_ID = ?", (u,)).fetchone()
                if row is not None:
                    rows[u] = row
            missing = [u for u in units if u not in rows]
            if missing:
                raise KeysNotFound(missing=missing)
            updates = []
            for head, us, bits in groups:
                composite = len(us) > 1 or (bits is not None and bits != rows[us[0]][2])
                if bits is not None and (bits <= 0 or bits % 8 or bits > sum(rows[u][2] for u in us)
                                         or bits <= sum(rows[u][2] for u in us[:-1])):
                    raise KeyStoreError("a key's size does not fit its units")
                if us[0] != head:
                    raise KeyStoreError("a key's ID must be its first unit's")
                for i, u in enumerate(us):
                    owner, recipients, _, part_of, _ = rows[u]
                    if owner is not None and ((owner, json.loads(recipients or "[]")) != (master, keep_for)
                                              or part_of != (head if composite else None)):
                        raise KeyStoreError("a key is already assigned to another master or slave set")
                    updates.append((master, json.dumps(keep_for), json.dumps(sorted(set(slaves))),
                                    head if composite else None, i if composite else None,
                                    bits if composite else None, reservation, u))
            if keep_for:
                db.executemany("UPDATE keys SET master_SAE_ID = ?, recipients = ?, assigned_to = ?, part_of = ?, "
                               "part = ?, bits = ?, peer_reservation = ? WHERE key_ID = ?", updates)
            else:
                db.executemany("DELETE FROM keys WHERE key_ID = ?", [(u,) for u in units])
            if reservation is not None:
                db.execute("INSERT INTO peer_reservations (reservation, state, time) VALUES (?, 'assigned', ?)",
                           (reservation, now))
            return None
        self._write(op)

    def unassign(self, key_IDs: list[str], *, master: str, reservation: str | None = None) -> int:
        """Undo :meth:`assign` for keys no slave has fetched here (the peer's master never got
        them); returns how many keys were freed.

        With ``reservation``: undoes that peer reservation only, idempotently, and marks it
        cancelled so that a late assign for it is refused.

        Raises:
            AlreadyDelivered: a key was already fetched by a slave here (it can never be reused).
            KeyStoreError: a key is assigned to another master.  Keys not stored or not assigned
                are skipped.
        """
        now = time.time()

        def op(db):
            legacy = True  # free keys assigned without a reservation (older peers, direct callers)
            if reservation is not None:
                state = db.execute("SELECT state FROM peer_reservations WHERE reservation = ?",
                                   (reservation,)).fetchone()
                if state is not None and state[0] == "cancelled":
                    return 0
                db.execute("INSERT OR REPLACE INTO peer_reservations (reservation, state, time) "
                           "VALUES (?, 'cancelled', ?)", (reservation, now))
                legacy = state is None  # never assigned under it: only legacy assignments to undo
            free, taken = [], False
            for key_ID in key_IDs:
                row = db.execute("SELECT master_SAE_ID, peer_reservation FROM keys WHERE key_ID = ?",
                                 (key_ID,)).fetchone()
                taken |= row is None or row[0] is not None
                if row is None or row[0] is None:
                    continue
                if row[1] != (None if legacy else reservation):
                    continue
                if row[0] != master:
                    raise KeyStoreError("a key is assigned to another master")
                free.append((key_ID,))
            if taken or not legacy:  # (all still free here: nothing was fetched)
                for key_ID in key_IDs:
                    fetched = db.execute("SELECT COUNT(*) FROM audit WHERE key_ID = ? AND action = 'dec_keys'",
                                         (key_ID,)).fetchone()[0]
                    if fetched:
                        raise AlreadyDelivered("a key was already delivered to a slave")
            db.executemany("UPDATE keys SET master_SAE_ID = NULL, recipients = NULL, assigned_to = NULL, "
                           "part_of = NULL, part = NULL, bits = NULL, peer_reservation = NULL WHERE key_ID = ?", free)
            return len(free)
        return self._write(op)

    def take_for_slave(self, caller: str, master: str, key_IDs: list[str]) -> list[StoredKey]:
        """Hand ``caller`` the keys ``key_IDs`` that ``master`` obtained for it (all or nothing).

        Raises:
            KeysNotFound: a key is not stored here (never existed, already gone, or a unit
                inside another key).
            NotARecipient: the caller is not a remaining recipient of every key, or the key was
                assigned to another master.
        """
        if len(set(key_IDs)) != len(key_IDs):
            raise KeysNotFound("a key_ID is requested twice")
        now = time.time()

        def op(db):
            found = []
            for key_ID in key_IDs:
                row = db.execute("SELECT key_ID, size, part_of, part, bits, key, master_SAE_ID, recipients FROM keys "
                                 "WHERE key_ID = ? AND reservation IS NULL", (key_ID,)).fetchone()
                if row is None or (row[2] is not None and row[2] != key_ID):
                    raise KeysNotFound("one or more keys specified are not found on KME")
                members = [row] if row[2] is None else db.execute(
                    "SELECT key_ID, size, part_of, part, bits, key, master_SAE_ID, recipients FROM keys "
                    "WHERE part_of = ? AND reservation IS NULL ORDER BY part", (key_ID,)).fetchall()
                found.append((key_ID, members))
            for key_ID, members in found:
                owner, recipients = members[0][6], members[0][7]
                if owner != master or caller not in json.loads(recipients or "[]"):
                    raise NotARecipient("the caller is not a slave of every requested key")
            out = []
            for key_ID, members in found:
                left = [s for s in json.loads(members[0][7]) if s != caller]
                ids = [(m[0],) for m in members]
                if left:
                    db.executemany("UPDATE keys SET recipients = ? WHERE key_ID = ?",
                                   [(json.dumps(left), m[0]) for m in ids])
                else:
                    db.executemany("DELETE FROM keys WHERE key_ID = ?", ids)
                bits = members[0][4] or members[0][1]
                out.append(StoredKey(key_ID, b"".join(bytes(m[5]) for m in members)[:bits // 8]))
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(now, k.key_ID, caller, "dec_keys") for k in out])
            return out
        return self._write(op)

    # -- the TTL --------------------------------------------------------------------------------------
    def purge(self, *, older_than_s: float) -> int:
        """Delete keys stored more than ``older_than_s`` seconds ago (the TTL); returns how many.

        This drops assigned keys too, at this site only; a linked pair of sites should use
        :meth:`expired` / :meth:`drop` instead (``purge_expired`` in the KME tells the peer)."""
        cutoff = time.time() - older_than_s

        def op(db):
            ids = [r[0] for r in db.execute("SELECT key_ID FROM keys WHERE created < ?", (cutoff,))]
            db.executemany("DELETE FROM keys WHERE key_ID = ?", [(k,) for k in ids])
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(time.time(), k, "-", "purged") for k in ids])
            return len(ids)
        return self._write(op)

    def expired(self, older_than_s: float) -> list[str]:
        """The free keys stored more than ``older_than_s`` seconds ago, sorted by key_ID."""
        cutoff = time.time() - older_than_s
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT key_ID FROM keys WHERE master_SAE_ID IS NULL AND created < ? "
                                             "ORDER BY key_ID", (cutoff,))]

    def drop(self, key_IDs: Iterable[str], action: str = "purged", *, notify_peer: bool = False) -> int:
        """Delete these keys if they are still free (audited as ``action``); missing or assigned
        ones are skipped.  Returns how many were deleted.

        ``notify_peer``: also queue the IDs for the peer site (:meth:`purge_outbox`), in the
        same transaction, so that a crash cannot leave the peer holding keys this site dropped.
        """
        ids = list(dict.fromkeys(key_IDs))
        now = time.time()

        def op(db):
            gone = []
            for k in ids:
                if db.execute("DELETE FROM keys WHERE key_ID = ? AND master_SAE_ID IS NULL", (k,)).rowcount:
                    gone.append(k)
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(now, k, "-", action) for k in gone])
            if notify_peer:
                db.executemany("INSERT OR IGNORE INTO purge_outbox (key_ID) VALUES (?)", [(k,) for k in ids])
            return len(gone)
        return self._write(op)

    def purge_outbox(self) -> list[str]:
        """Key IDs dropped here that the peer site has not yet confirmed dropping."""
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT key_ID FROM purge_outbox ORDER BY key_ID")]

    def clear_purge_outbox(self, key_IDs: Iterable[str]) -> None:
        ids = [(k,) for k in key_IDs]
        self._write(lambda db: db.executemany("DELETE FROM purge_outbox WHERE key_ID = ?", ids))


def store_final_key(store: KeyStore, key, *, link_id: str, round_number: int, size: int = 256,
                    epoch: bytes = b"") -> int:
    """Cut one party's final key (a :class:`~qkd_circuits.FinalKey`) and store the pieces.

    Alice's site stores Alice's key and Bob's site Bob's; with the same ``link_id``, ``epoch``
    (the pool's, so that a re-bootstrapped link never reuses a key_ID) and round both derive the
    same key IDs.  With an epoch the round is recorded as stored (:meth:`KeyStore.add_round`):
    storing it again adds nothing.  Returns the number of keys stored.
    """
    pieces = cut_key(key.bits, link_id=link_id, round_number=round_number, size=size, epoch=epoch)
    if epoch:
        return store.add_round(pieces, link_id=link_id, epoch=epoch, round_number=round_number)
    return store.add(pieces, link_id=link_id, round_number=round_number)
