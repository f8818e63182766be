"""The site key store: exactly-once delivery under concurrency and crashes, and a clean audit."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest

import qkd_circuits as qkd
from qkd_circuits.keystore import KeysNotFound, KeyStore, NotARecipient, NotEnoughKeys, cut_key


def keys(n=64, round_number=0, size=256):
    bits = np.random.default_rng(round_number).integers(0, 2, n * size, dtype=np.uint8)
    return cut_key(bits, link_id="A-B", round_number=round_number, size=size)


@pytest.fixture
def store(tmp_path):
    s = KeyStore(tmp_path / "site.db")
    s.add(keys(), link_id="A-B", round_number=0)
    return s


def test_cut_key_gives_both_sites_the_same_ids():
    bits = np.random.default_rng(1).integers(0, 2, 1000, dtype=np.uint8)
    a = cut_key(bits, link_id="A-B", round_number=3)
    b = cut_key(bits.copy(), link_id="A-B", round_number=3)
    assert [k.key_ID for k in a] == [k.key_ID for k in b] and len(a) == 3  # 1000 // 256
    assert all(uuid.UUID(k.key_ID).version == 4 for k in a)
    assert a[0].key == np.packbits(bits[:256]).tobytes()
    assert cut_key(bits, link_id="A-B", round_number=4)[0].key_ID != a[0].key_ID
    assert "key=" not in repr(a[0]) and a[0].key.hex() not in repr(a[0])
    with pytest.raises(qkd.ConfigurationError, match="multiple of 8"):
        cut_key(bits, link_id="x", round_number=0, size=12)


def test_master_then_slave_each_get_a_key_once(tmp_path):
    site_a, site_b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    ks = keys()
    site_a.add(ks, link_id="A-B", round_number=0)
    site_b.add(ks, link_id="A-B", round_number=0)
    got = site_a.take_for_master("sae-a", ["sae-b"], number=2, size=256, local_SAEs=["sae-a"])
    assert site_a.count_free() == 62  # handed to the master, nothing kept at A for sae-b
    site_b.assign([k.key_ID for k in got], master="sae-a", slaves=["sae-b"], local_SAEs=["sae-b"])
    back = site_b.take_for_slave("sae-b", "sae-a", [k.key_ID for k in got])
    assert [k.key for k in back] == [k.key for k in got]
    with pytest.raises(KeysNotFound, match="not found on KME"):
        site_b.take_for_slave("sae-b", "sae-a", [got[0].key_ID])


def test_wrong_callers_and_unknown_ids_consume_nothing(store):
    got = store.take_for_master("m", ["s1", "s2"], number=2, size=256, local_SAEs=["s1", "s2"])
    ids = [k.key_ID for k in got]
    with pytest.raises(NotARecipient, match="not a slave of every requested key"):
        store.take_for_slave("intruder", "m", ids)
    with pytest.raises(NotARecipient):
        store.take_for_slave("s1", "another-master", ids)
    with pytest.raises(KeysNotFound):
        store.take_for_slave("s1", "m", [ids[0], str(uuid.uuid4())])  # all or nothing
    assert len(store.take_for_slave("s1", "m", ids)) == 2
    assert len(store.take_for_slave("s2", "m", ids)) == 2  # multicast: each slave once
    with pytest.raises(KeysNotFound):
        store.take_for_slave("s2", "m", ids)


def test_master_equal_to_slave_is_allowed(store):
    got = store.take_for_master("me", ["me"], number=1, size=256, local_SAEs=["me"])
    assert store.take_for_slave("me", "me", [got[0].key_ID])[0].key == got[0].key


def test_not_enough_keys_changes_nothing(store):
    with pytest.raises(NotEnoughKeys, match="64 keys of 256 bits are available, 65"):
        store.take_for_master("m", ["s"], number=65, size=256)
    with pytest.raises(NotEnoughKeys):
        store.take_for_master("m", ["s"], number=1, size=512)
    assert store.count_free() == 64 and store.audit() == []


def test_fifty_parallel_clients_never_get_the_same_key(tmp_path):
    store = KeyStore(tmp_path / "busy.db")
    store.add(keys(400), link_id="A-B", round_number=0)
    seen, errors = [], []

    def client():
        while True:
            try:
                seen.extend(k.key_ID for k in store.take_for_master("m", ["s"], number=3, size=256))
            except NotEnoughKeys:
                return
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=client) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(seen) == len(set(seen)) == 399  # 133 requests of 3; one key is left over
    assert store.count_free() == 1


DRAINER = textwrap.dedent("""
    import sys
    from qkd_circuits.keystore import KeyStore, NotEnoughKeys
    store = KeyStore(sys.argv[1])
    print("ready", flush=True)
    while True:
        try:
            store.take_for_master("m", ["s"], number=2, size=256)
        except NotEnoughKeys:
            break
""")


def test_kill_9_during_a_load_loses_nothing_and_duplicates_nothing(tmp_path):
    path = tmp_path / "crash.db"
    store = KeyStore(path)
    all_ids = set()
    for r in range(20):
        batch = keys(500, round_number=r)
        store.add(batch, link_id="A-B", round_number=r)
        all_ids |= {k.key_ID for k in batch}
    procs = [subprocess.Popen([sys.executable, "-c", DRAINER, str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    time.sleep(0.4)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    store = KeyStore(path)  # "restart"
    delivered = [key_ID for _, key_ID, _, action in store.audit() if action == "enc_keys"]
    with sqlite3.connect(path) as db:
        remaining = {r[0] for r in db.execute("SELECT key_ID FROM keys")}
    assert len(delivered) == len(set(delivered)), "a key was delivered twice"
    assert 0 < len(delivered) < len(all_ids), "the load should have been interrupted mid-way"
    assert set(delivered) | remaining == all_ids and not set(delivered) & remaining


def test_audit_holds_no_key_bytes_and_ttl_purges(store, tmp_path):
    got = store.take_for_master("m", ["s"], number=3, size=256)
    with sqlite3.connect(store.path) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(audit)")]
        dump = "\n".join(map(str, db.execute("SELECT * FROM audit")))
    assert "key" not in [c.lower() for c in columns]
    assert all(k.key.hex() not in dump and repr(k.key) not in dump for k in got)
    assert store.purge(older_than_s=3600) == 0
    assert store.purge(older_than_s=0) == 61 and store.count_free() == 0


def test_the_same_round_cannot_be_stored_twice(store):
    with pytest.raises(qkd.KeyStoreError, match="already in the store"):
        store.add(keys(), link_id="A-B", round_number=0)


def test_a_memory_store_is_refused():
    with pytest.raises(qkd.ConfigurationError, match="must be a file"):
        KeyStore(":memory:")


def test_a_qkd_round_fills_both_sites_with_the_same_keys(tmp_path):
    from qkd_circuits.keystore import store_final_key

    result = qkd.run_bb84(150_000, channel=qkd.Channel(depolarizing=0.04), seed=8)
    site_a, site_b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    n = store_final_key(site_a, result.alice_key, link_id="A-B", round_number=0)
    assert n == store_final_key(site_b, result.bob_key, link_id="A-B", round_number=0) == len(result.alice_key) // 256
    got = site_a.take_for_master("sae-a", ["sae-b"], number=4, size=256, local_SAEs=["sae-a"])
    site_b.assign([k.key_ID for k in got], master="sae-a", slaves=["sae-b"], local_SAEs=["sae-b"])
    assert [k.key for k in site_b.take_for_slave("sae-b", "sae-a", [k.key_ID for k in got])] == [k.key for k in got]


def test_the_store_file_is_readable_by_its_owner_only(tmp_path):
    import stat

    KeyStore(tmp_path / "mode.db")
    assert stat.S_IMODE(os.stat(tmp_path / "mode.db").st_mode) == 0o600


# -- the API a long-running link node relies on ----------------------------------------------------

EPOCH = bytes(range(8))


def test_key_ID_v2_known_answer_and_v1_unchanged():
    bits = np.zeros(512, dtype=np.uint8)
    # SHA-256("qkd_circuits/key_ID/v2|A-B|0001020304050607|" || u64be(5) || u64be(1))[:16] as a v4 UUID
    assert cut_key(bits, link_id="A-B", round_number=5, epoch=EPOCH)[1].key_ID == "1d59eda1-32b7-4d96-b54c-cab0a2fd67ca"
    assert cut_key(bits, link_id="A-B", round_number=5)[1].key_ID == "1a9e91bd-98cb-4f20-8267-4eb7fd854957"  # v1
    other = cut_key(bits, link_id="A-B", round_number=5, epoch=b"\x00" * 8)[1].key_ID
    assert other not in ("1d59eda1-32b7-4d96-b54c-cab0a2fd67ca", "1a9e91bd-98cb-4f20-8267-4eb7fd854957")


def test_add_round_is_idempotent_per_link_epoch_and_round(tmp_path):
    store = KeyStore(tmp_path / "s.db")
    batch = keys(8)
    assert store.add_round(batch, link_id="A-B", epoch=EPOCH, round_number=0) == 8
    assert store.has_round("A-B", EPOCH, 0) and not store.has_round("A-B", b"\x01" * 8, 0)
    got = store.take_for_master("m", ["s"], number=3, size=256)
    assert store.add_round(batch, link_id="A-B", epoch=EPOCH, round_number=0) == 0  # a replay: nothing resurrected
    assert store.count() == 5 and not {k.key_ID for k in got} & set(store.key_IDs())
    assert store.key_IDs() == sorted(store.key_IDs())


def test_max_key_count_refuses_and_changes_nothing(tmp_path):
    from qkd_circuits.keystore import StoreFull

    store = KeyStore(tmp_path / "s.db", max_key_count=10)
    assert store.add_round(keys(8), link_id="A-B", epoch=EPOCH, round_number=0) == 8
    assert store.capacity_left() == 2
    with pytest.raises(StoreFull, match="exceed max_key_count"):
        store.add_round(keys(3, round_number=1), link_id="A-B", epoch=EPOCH, round_number=1)
    with pytest.raises(StoreFull, match="exceed max_key_count"):
        store.add(keys(3, round_number=2), link_id="A-B", round_number=2)
    assert store.count() == 8 and not store.has_round("A-B", EPOCH, 1)
    assert store.add(keys(2, round_number=3), link_id="A-B", round_number=3) == 2 and store.capacity_left() == 0
    with pytest.raises(qkd.ConfigurationError, match="max_key_count"):
        KeyStore(tmp_path / "t.db", max_key_count=-1)


def test_fingerprint_compares_two_sites_without_the_bytes(tmp_path):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    batch = keys(6)
    a.add(batch, link_id="A-B", round_number=0)
    b.add(batch, link_id="A-B", round_number=0)
    assert a.fingerprint() == b.fingerprint() and a.key_IDs() == b.key_IDs()
    assert all(k.key.hex() not in a.fingerprint() for k in batch)
    a.take_for_master("m", ["s"], number=1, size=256)
    assert a.fingerprint() != b.fingerprint()


def test_coordinated_ttl_drops_only_free_keys(tmp_path):
    store = KeyStore(tmp_path / "s.db")
    store.add(keys(5), link_id="A-B", round_number=0)
    reservation = store.reserve("m", ["s"], number=2, size=256)
    assert store.expired(3600) == []
    old = store.expired(-1)
    assert len(old) == 3 and set(old).isdisjoint(store.reserved_keys(reservation))
    assert store.drop(old + ["nope"] + store.reserved_keys(reservation), notify_peer=True) == 3  # missing/reserved skipped
    assert store.count() == 2 and [a[3] for a in store.audit()] == ["purged"] * 3
    assert set(old) <= set(store.purge_outbox())
    store.clear_purge_outbox(store.purge_outbox())
    assert store.purge_outbox() == []


def test_keys_larger_than_a_unit_are_the_same_at_both_sites(tmp_path):
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    batch = keys(16)
    a.add(batch, link_id="A-B", round_number=0)
    b.add(batch, link_id="A-B", round_number=0)
    for size in (8, 136, 256, 1024):
        reservation, groups = a.reserve_groups("m", ["s"], number=1, size=size, unit=256, local_SAEs=["m"])
        assert len(groups[0][1]) == -(-size // 256) and groups[0][0] == groups[0][1][0]
        b.assign([], master="m", slaves=["s"], local_SAEs=["s"], groups=groups, reservation=reservation)
        b.assign([], master="m", slaves=["s"], local_SAEs=["s"], groups=groups, reservation=reservation)  # replay
        (got,) = a.finalize(reservation)
        assert len(got.key) == size // 8
        with pytest.raises(KeysNotFound):  # a unit inside a key is not a key
            b.take_for_slave("s", "m", groups[0][1][1:2] or ["none"])
        assert b.take_for_slave("s", "m", [got.key_ID])[0].key == got.key
    assert a.fingerprint() == b.fingerprint()  # 1 + 1 + 1 + 4 units gone at both


def test_an_unassigned_peer_reservation_stays_cancelled(tmp_path):
    from qkd_circuits.keystore import AlreadyDelivered, ReservationCancelled

    b = KeyStore(tmp_path / "b.db")
    batch = keys(4)
    b.add(batch, link_id="A-B", round_number=0)
    ids = [batch[0].key_ID]
    assert b.unassign(ids, master="m", reservation="r1") == 0  # before the (late) assign: a tombstone
    with pytest.raises(ReservationCancelled, match="already undone"):
        b.assign(ids, master="m", slaves=["s"], local_SAEs=["s"], reservation="r1")
    b.assign(ids, master="m", slaves=["s"], local_SAEs=["s"], reservation="r2")
    assert b.unassign(ids, master="m", reservation="r1") == 0  # a stale unassign leaves r2 alone
    b.take_for_slave("s", "m", ids)
    with pytest.raises(AlreadyDelivered, match="already delivered"):
        b.unassign(ids, master="m", reservation="r2")
    with pytest.raises(KeysNotFound) as err:
        b.assign([batch[0].key_ID, batch[1].key_ID], master="m", slaves=["s"], local_SAEs=["s"], reservation="r3")
    assert err.value.missing == [batch[0].key_ID]


def test_one_held_connection_serves_many_threads_with_group_commits(tmp_path):
    store = KeyStore(tmp_path / "g.db")
    store.add(keys(300), link_id="A-B", round_number=0)
    with store._connect() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    seen = []

    def client():
        while True:
            try:
                seen.extend(k.key_ID for k in store.take_for_master("m", ["s"], number=1, size=256))
            except NotEnoughKeys:
                return

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen) == len(set(seen)) == 300
    store.close()
    with pytest.raises(qkd.KeyStoreError, match="closed"):
        store.count()


def test_a_batch_is_one_transaction_of_savepoints(tmp_path):
    store = KeyStore(tmp_path / "b.db")
    store.add(keys(4), link_id="A-B", round_number=0)
    with store.batch():
        got = store.take_for_master("m", ["s"], number=2, size=256)
        with pytest.raises(NotEnoughKeys):
            store.take_for_master("m", ["s"], number=5, size=256)  # fails alone, the batch goes on
        assert store.count_free() == 2  # this thread sees its own uncommitted work
    assert store.count_free() == 2 and len(got) == 2
    with pytest.raises(RuntimeError):
        with store.batch():
            store.take_for_master("m", ["s"], number=1, size=256)
            raise RuntimeError("the caller gives up")
    assert store.count_free() == 2  # the whole block was rolled back
    with pytest.raises(qkd.KeyStoreError, match="do not nest"):
        with store.batch():
            with store.batch():
                pass
