"""A delivered or deleted key leaves no copy of its bytes in the key store's files."""

from __future__ import annotations

import secrets
import sqlite3

import pytest

from qkd_circuits.keystore import KeyStore, StoredKey

SIZE = 256


def fresh_keys(n: int, prefix: str) -> list[StoredKey]:
    """Keys of random bytes (from secrets: no accidental match with anything else in the file)."""
    return [StoredKey(f"{prefix}-{i:04d}", secrets.token_bytes(SIZE // 8)) for i in range(n)]


def on_disk(store: KeyStore) -> bytes:
    """Every byte SQLite keeps for the store: the database file and, if present, its WAL."""
    data = store.path.read_bytes()
    wal = store.path.with_name(store.path.name + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_every_connection_has_secure_delete_on(tmp_path):
    store = KeyStore(tmp_path / "site.db")
    with store._connect() as db:
        assert db.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_delivered_and_deleted_keys_leave_no_bytes_in_the_file(tmp_path):
    store = KeyStore(tmp_path / "site.db")
    master_keys, slave_keys, purged_keys, kept_keys = (fresh_keys(6, p) for p in ("m", "s", "p", "k"))
    store.add(master_keys + slave_keys, link_id="A-B", round_number=0)
    assert store.checkpoint()
    before = on_disk(store)
    assert all(k.key in before for k in master_keys + slave_keys)  # the check below can see keys

    # door 1: a master takes keys nobody else here needs -> deleted at once
    got = store.take_for_master("sae-a", ["sae-b"], number=6, size=SIZE, local_SAEs=["sae-a"])
    assert {k.key for k in got} <= {k.key for k in master_keys + slave_keys}
    # door 2: keys assigned by the peer to a local slave, then fetched by it -> deleted
    rest = [k for k in master_keys + slave_keys if k.key not in {g.key for g in got}]
    store.assign([k.key_ID for k in rest], master="sae-b", slaves=["sae-a"], local_SAEs=["sae-a"])
    assert [k.key for k in store.take_for_slave("sae-a", "sae-b", [k.key_ID for k in rest])] == [k.key for k in rest]
    # the TTL: purged keys are deleted too; keys still stored stay
    store.add(purged_keys, link_id="A-B", round_number=1)
    assert store.purge(older_than_s=-1.0) == len(purged_keys)
    store.add(kept_keys, link_id="A-B", round_number=2)

    assert store.count_free() == len(kept_keys)
    assert store.checkpoint()
    wal = store.path.with_name("site.db-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # truncated (or removed by the last close)
    after = on_disk(store)
    gone = master_keys + slave_keys + purged_keys
    assert not [k.key_ID for k in gone if k.key in after], "deleted key bytes are still in the file"
    assert all(k.key in after for k in kept_keys)


def test_without_secure_delete_the_bytes_would_stay(tmp_path):
    """Control: the same raw-byte check does see a deleted key when secure_delete is off, so the
    test above is not passing vacuously (some SQLite builds default to on, some to off)."""
    path = tmp_path / "plain.db"
    key = secrets.token_bytes(SIZE // 8)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA secure_delete=OFF")
        db.execute("CREATE TABLE keys (key_ID TEXT PRIMARY KEY, key BLOB NOT NULL)")
        db.executemany("INSERT INTO keys VALUES (?, ?)", [(f"k{i}", secrets.token_bytes(32)) for i in range(20)]
                       + [("target", key)])
        db.execute("DELETE FROM keys WHERE key_ID = 'target'")
    finally:
        db.close()
    if key not in path.read_bytes():
        pytest.skip("this SQLite build zeroes deleted cells even with secure_delete=OFF")
    assert key in path.read_bytes()
