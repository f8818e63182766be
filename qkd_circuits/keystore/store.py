"""A site's durable key store: SQLite, transactional, every key delivered at most once per SAE.

One store per site (each site's KME holds its own party's final keys).  Keys enter as fixed-size
pieces of QKD final keys (:func:`cut_key`, whose key IDs both sites derive alike), and leave by
one of two doors, each a single ``BEGIN IMMEDIATE`` transaction:

* :meth:`KeyStore.reserve` → (the peer site records the assignment) → :meth:`KeyStore.finalize`
  — a master SAE asks for ``number`` keys for a set of slaves (ETSI GS QKD 014 "Get key"):
  free keys are set aside, handed out once the peer knows, and kept only for the slaves attached
  to this site (:meth:`KeyStore.take_for_master` does both steps for a site with no peer);
* :meth:`KeyStore.take_for_slave` — a slave fetches keys by ID ("Get key with key IDs"); a key
  whose last local recipient has it is deleted.

Keys assigned at the other site reach this one through :meth:`KeyStore.assign` (and
:meth:`KeyStore.unassign` if that site's master never received them).  A reservation found after
a crash (:meth:`KeyStore.pending_reservations`) is undone at the peer and released here, or, if a
slave already fetched its keys, finalized as delivered: never handed out twice.  A request either
succeeds whole or changes nothing.  SQLite's atomic commit (WAL, ``synchronous=FULL``) means a
crash at any instant leaves every key either undelivered and still stored, or delivered and
gone — never both, never twice.  The audit table records deliveries (key_ID, SAE, time, action)
and never key bytes.

Every connection sets ``PRAGMA secure_delete=ON`` (some SQLite builds default to it, others do
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
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..exceptions import ConfigurationError, KeyStoreError

__all__ = ["KeyStore", "StoredKey", "cut_key", "store_final_key", "NotEnoughKeys", "KeysNotFound", "NotARecipient"]


class NotEnoughKeys(KeyStoreError):
    """Fewer free keys of the requested size than asked for (ETSI 014: 503)."""


class KeysNotFound(KeyStoreError):
    """One or more requested key IDs are not (or no longer) stored here (ETSI 014: 400)."""


class NotARecipient(KeyStoreError):
    """The caller is not a (remaining) recipient of every requested key (ETSI 014: 401)."""


@dataclass(frozen=True, eq=False)
class StoredKey:
    """A key handed out: its ID and bytes.  The repr never shows the bytes."""

    key_ID: str
    key: bytes

    def __repr__(self) -> str:
        return f"StoredKey(key_ID={self.key_ID!r}, bits={8 * len(self.key)})"


def cut_key(bits: np.ndarray, *, link_id: str, round_number: int, size: int = 256) -> list[StoredKey]:
    """Cut a final key (uint8 0/1 bits) into ``size``-bit keys with IDs both sites derive alike.

    key_ID = the UUID (version 4 layout) of the first 16 bytes of
    SHA-256("qkd_circuits/key_ID/v1" | link_id | round | index): public inputs only, so the IDs
    say nothing about the key.  Trailing bits that do not fill a key are dropped.
    """
    if size <= 0 or size % 8:
        raise ConfigurationError(f"key size must be a positive multiple of 8 bits, got {size}")
    bits = np.asarray(bits, dtype=np.uint8)
    out = []
    for index in range(bits.size // size):
        digest = hashlib.sha256(b"qkd_circuits/key_ID/v1|" + link_id.encode() + b"|"
                                + round_number.to_bytes(8, "big") + index.to_bytes(8, "big")).digest()
        key_ID = str(uuid.UUID(bytes=digest[:16], version=4))
        out.append(StoredKey(key_ID, np.packbits(bits[index * size:(index + 1) * size]).tobytes()))
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
CREATE INDEX IF NOT EXISTS keys_free ON keys (size, created) WHERE master_SAE_ID IS NULL;
CREATE INDEX IF NOT EXISTS keys_reserved ON keys (reservation) WHERE reservation IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    key_ID TEXT NOT NULL,
    SAE_ID TEXT NOT NULL,
    action TEXT NOT NULL
);
"""


class KeyStore:
    """The key store of one site (a SQLite file; ``":memory:"`` is refused: it would not be durable).

    Args:
        path: the database file (created if missing).
        timeout: seconds a writer waits for another's transaction (SQLite busy timeout).
    """

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        if str(path) == ":memory:":
            raise ConfigurationError("the key store must be a file: ':memory:' would lose keys on a crash")
        self.path = Path(path)
        self._timeout = timeout
        if not self.path.exists():  # key material: readable by this user only (SQLite keeps the mode)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"KeyStore({str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")  # zero deleted keys' bytes in the file
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

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
    def add(self, keys: Iterable[StoredKey], *, link_id: str, round_number: int) -> int:
        """Store new keys (all free); returns how many.  A key_ID seen before is refused."""
        rows = [(k.key_ID, 8 * len(k.key), k.key, time.time(), link_id, round_number) for k in keys]
        try:
            with self._transaction() as db:
                db.executemany("INSERT INTO keys (key_ID, size, key, created, link_id, round) VALUES (?,?,?,?,?,?)", rows)
        except sqlite3.IntegrityError:
            raise KeyStoreError("a key_ID is already in the store: the same round was stored twice") from None
        return len(rows)

    # -- reading ----------------------------------------------------------------------------------
    def count_free(self, size: int | None = None) -> int:
        with self._connect() as db:
            if size is None:
                return db.execute("SELECT COUNT(*) FROM keys WHERE master_SAE_ID IS NULL").fetchone()[0]
            return db.execute("SELECT COUNT(*) FROM keys WHERE master_SAE_ID IS NULL AND size = ?",
                              (size,)).fetchone()[0]

    def audit(self) -> list[tuple[float, str, str, str]]:
        """Every delivery so far: (time, key_ID, SAE_ID, action)."""
        with self._connect() as db:
            return db.execute("SELECT time, key_ID, SAE_ID, action FROM audit ORDER BY seq").fetchall()

    # -- the two doors ------------------------------------------------------------------------------
    def take_for_master(self, master: str, slaves: list[str], *, number: int, size: int,
                        local_SAEs: Iterable[str] = ()) -> list[StoredKey]:
        """Assign ``number`` free keys to ``master`` for ``slaves`` and hand them to the master
        (:meth:`reserve` then :meth:`finalize`, for a site with no peer to tell).

        Only the slaves in ``local_SAEs`` (attached to this site) are remembered as recipients;
        a key nobody here still needs is deleted at once.

        Raises:
            NotEnoughKeys: fewer than ``number`` free keys of ``size`` bits (nothing changes).
        """
        reservation = self.reserve(master, slaves, number=number, size=size, local_SAEs=local_SAEs)
        return self.finalize(reservation)

    def reserve(self, master: str, slaves: list[str], *, number: int, size: int,
                local_SAEs: Iterable[str] = ()) -> str:
        """Set ``number`` free keys aside for ``master`` (not yet delivered); returns the reservation.

        A site reserves, has the peer site record the assignment (:meth:`assign` there), then
        :meth:`finalize` delivers; if the peer refuses, :meth:`release` frees the keys again.
        """
        keep_for = sorted(set(slaves) & set(local_SAEs))  # master == slave is allowed (ETSI 014)
        reservation = str(uuid.uuid4())
        with self._transaction() as db:
            rows = db.execute("SELECT key_ID FROM keys WHERE master_SAE_ID IS NULL AND size = ? "
                              "ORDER BY created, key_ID LIMIT ?", (size, number)).fetchall()
            if len(rows) < number:
                raise NotEnoughKeys(f"{len(rows)} keys of {size} bits are available, {number} were asked for")
            db.executemany("UPDATE keys SET master_SAE_ID = ?, recipients = ?, assigned_to = ?, reservation = ? "
                           "WHERE key_ID = ?",
                           [(master, json.dumps(keep_for), json.dumps(sorted(set(slaves))), reservation, r[0])
                            for r in rows])
        return reservation

    def reserved_keys(self, reservation: str) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT key_ID FROM keys WHERE reservation = ? ORDER BY created, key_ID",
                                             (reservation,))]

    def pending_reservations(self) -> dict[str, tuple[str, list[str], list[str]]]:
        """Reservations neither finalized nor released (after a crash): id → (master, slaves, key_IDs)."""
        out: dict = {}
        with self._connect() as db:
            for key_ID, master, slaves, reservation in db.execute(
                    "SELECT key_ID, master_SAE_ID, assigned_to, reservation FROM keys "
                    "WHERE reservation IS NOT NULL ORDER BY created, key_ID"):
                out.setdefault(reservation, (master, json.loads(slaves), []))[2].append(key_ID)
        return out

    def finalize(self, reservation: str, *, action: str = "enc_keys") -> list[StoredKey]:
        """Deliver a reservation's keys to its master (audited); keep them only for local slaves."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute("SELECT key_ID, key, master_SAE_ID, recipients FROM keys WHERE reservation = ? "
                              "ORDER BY created, key_ID", (reservation,)).fetchall()
            if not rows:
                raise KeyStoreError("no such reservation (already finalized or released)")
            gone = [(r[0],) for r in rows if not json.loads(r[3])]
            db.executemany("DELETE FROM keys WHERE key_ID = ?", gone)
            db.execute("UPDATE keys SET reservation = NULL WHERE reservation = ?", (reservation,))
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(now, r[0], r[2], action) for r in rows])
        return [StoredKey(r[0], bytes(r[1])) for r in rows]

    def release(self, reservation: str) -> int:
        """Return a reservation's keys to the free pool (the peer never recorded them)."""
        with self._transaction() as db:
            cur = db.execute("UPDATE keys SET master_SAE_ID = NULL, recipients = NULL, assigned_to = NULL, "
                             "reservation = NULL WHERE reservation = ?", (reservation,))
            return cur.rowcount

    def assign(self, key_IDs: list[str], *, master: str, slaves: list[str], local_SAEs: Iterable[str]) -> None:
        """Record that the other site handed these keys to ``master`` for ``slaves``.

        Idempotent for the same assignment; a key that is missing or assigned otherwise raises.
        """
        keep_for = sorted(set(slaves) & set(local_SAEs))
        with self._transaction() as db:
            for key_ID in key_IDs:
                row = db.execute("SELECT master_SAE_ID, recipients FROM keys WHERE key_ID = ?", (key_ID,)).fetchone()
                if row is None:
                    raise KeysNotFound("one or more keys specified are not found on KME")
                if row[0] is not None and (row[0], json.loads(row[1])) != (master, keep_for):
                    raise KeyStoreError("a key is already assigned to another master or slave set")
            if keep_for:
                db.executemany("UPDATE keys SET master_SAE_ID = ?, recipients = ?, assigned_to = ? WHERE key_ID = ?",
                               [(master, json.dumps(keep_for), json.dumps(sorted(set(slaves))), k) for k in key_IDs])
            else:
                db.executemany("DELETE FROM keys WHERE key_ID = ?", [(k,) for k in key_IDs])

    def unassign(self, key_IDs: list[str], *, master: str) -> None:
        """Undo :meth:`assign` for keys no slave has fetched here (the peer's master never got them).

        Raises:
            KeyStoreError: a key was already fetched by a slave here (it can never be reused), or
                it is assigned to another master.  Keys not stored or not assigned are skipped.
        """
        with self._transaction() as db:
            free = []
            for key_ID in key_IDs:
                fetched = db.execute("SELECT COUNT(*) FROM audit WHERE key_ID = ? AND action = 'dec_keys'",
                                     (key_ID,)).fetchone()[0]
                if fetched:
                    raise KeyStoreError("a key was already delivered to a slave")
                row = db.execute("SELECT master_SAE_ID FROM keys WHERE key_ID = ?", (key_ID,)).fetchone()
                if row is None or row[0] is None:
                    continue
                if row[0] != master:
                    raise KeyStoreError("a key is assigned to another master")
                free.append((key_ID,))
            db.executemany("UPDATE keys SET master_SAE_ID = NULL, recipients = NULL, assigned_to = NULL "
                           "WHERE key_ID = ?", free)

    def take_for_slave(self, caller: str, master: str, key_IDs: list[str]) -> list[StoredKey]:
        """Hand ``caller`` the keys ``key_IDs`` that ``master`` obtained for it (all or nothing).

        Raises:
            KeysNotFound: a key is not stored here (never existed, or already gone).
            NotARecipient: the caller is not a remaining recipient of every key, or the key was
                assigned to another master.
        """
        if len(set(key_IDs)) != len(key_IDs):
            raise KeysNotFound("a key_ID is requested twice")
        now = time.time()
        with self._transaction() as db:
            rows = []
            for key_ID in key_IDs:
                row = db.execute("SELECT key, master_SAE_ID, recipients FROM keys WHERE key_ID = ? "
                                 "AND reservation IS NULL", (key_ID,)).fetchone()
                if row is None:
                    raise KeysNotFound("one or more keys specified are not found on KME")
                rows.append((key_ID, *row))
            for key_ID, _, owner, recipients in rows:
                if owner != master or caller not in json.loads(recipients or "[]"):
                    raise NotARecipient("the caller is not a slave of every requested key")
            for key_ID, _, _, recipients in rows:
                left = [s for s in json.loads(recipients) if s != caller]
                if left:
                    db.execute("UPDATE keys SET recipients = ? WHERE key_ID = ?", (json.dumps(left), key_ID))
                else:
                    db.execute("DELETE FROM keys WHERE key_ID = ?", (key_ID,))
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(now, r[0], caller, "dec_keys") for r in rows])
        return [StoredKey(r[0], bytes(r[1])) for r in rows]

    def purge(self, *, older_than_s: float) -> int:
        """Delete keys stored more than ``older_than_s`` seconds ago (the TTL); returns how many."""
        cutoff = time.time() - older_than_s
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT key_ID FROM keys WHERE created < ?", (cutoff,))]
            db.executemany("DELETE FROM keys WHERE key_ID = ?", [(k,) for k in ids])
            db.executemany("INSERT INTO audit (time, key_ID, SAE_ID, action) VALUES (?,?,?,?)",
                           [(time.time(), k, "-", "purged") for k in ids])
        return len(ids)


def store_final_key(store: KeyStore, key, *, link_id: str, round_number: int, size: int = 256) -> int:
    """Cut one party's final key (a :class:`~qkd_circuits.FinalKey`) and store the pieces.

    Alice's site stores Alice's key and Bob's site Bob's; with the same ``link_id`` and round
    both derive the same key IDs.  Returns the number of keys stored.
    """
    pieces = cut_key(key.bits, link_id=link_id, round_number=round_number, size=size)
    return store.add(pieces, link_id=link_id, round_number=round_number)
