"""Two link nodes as two real processes (``qkd node run``) on loopback: both stores end identical.

Every test asserts the invariants of :meth:`nodeharness.Sites.check_stores`: the same key_IDs
with the same bytes at both sites (no one-sided key, none lost, none twice), no released round
left outside a store, nothing left pending at Alice, and both pools in step.  The long versions
(hundreds of rounds, a 60 s partition) are marked slow; the default suite runs short ones.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import time
import urllib.request

import pytest
from nodeharness import QKD, ENV, Sites

import qkd_circuits as qkd


@pytest.fixture
def sites(tmp_path):
    made = []

    def make(**kwargs) -> Sites:
        s = Sites(tmp_path / f"link{len(made)}", **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _run_link(s: Sites, rounds: int, alice_checks=None) -> dict:
    s.start("alice")
    s.start("bob", rounds=rounds)
    assert s.wait("bob", timeout=600) == 0, (s.dirs["bob"] / "node.err").read_text()[-3000:]
    if alice_checks is not None:
        alice_checks(s)
    assert s.terminate("alice") == 0
    return s.check_stores()


def _check_metrics_and_health(s: Sites) -> None:
    listening = next(e for e in s.events("alice") if e["event"] == "listening")
    base = f"http://{listening['metrics']}"
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    assert "qkd_node_rounds_total" in text and "qkd_node_stock_keys" in text and "qkd_node_qber" in text
    health = json.loads(urllib.request.urlopen(base + "/health", timeout=10).read())
    assert health["status"] == "ok" and health["role"] == "alice"


def test_two_nodes_fill_both_stores_with_the_same_keys(sites):
    s = sites(extra={"metrics": {"listen": "127.0.0.1:0"}})
    counts = _run_link(s, 6, alice_checks=_check_metrics_and_health)
    # A 20,000-pulse round at 2 % noise leaves ~1,500 bits, 1,024 of which refill the pool: 1 or 2 keys.
    stored = {role: sum(e["keys"] for e in s.events(role) if e["event"] == "stored") for role in ("alice", "bob")}
    assert counts["keys"] == stored["alice"] == stored["bob"] >= 4
    ids = s.store("bob").key_IDs()
    # Globally unique IDs: derived from (link, epoch, round, index), so a fresh epoch never collides.
    assert all(len(i) == 36 for i in ids)
    events = [e for e in s.events("bob") if e["event"] == "round"]
    assert len(events) == 6 and sum(e["outcome"] == "key" for e in events) >= 5
    logs = (s.dirs["alice"] / "node.err").read_text() + (s.dirs["bob"] / "node.err").read_text()
    for (key,) in sqlite3.connect(s.dirs["bob"] / "keys.db").execute("SELECT key FROM keys"):
        assert key.hex() not in logs and base64.b64encode(key).decode() not in logs  # no key bytes logged
    status = json.loads(subprocess.run([QKD, "node", "status", str(s.dirs["alice"]), "--json"], env=ENV,
                                       capture_output=True, text=True, check=True).stdout)
    assert status["role"] == "alice" and status["stock"]["stored_now"] == counts["keys"]
    assert status["pending_rounds"] == [] and status["halted"] is False


@pytest.mark.slow
def test_hundreds_of_rounds_leave_identical_stores(sites):
    s = sites()
    counts = _run_link(s, 300)
    assert counts["keys"] >= 300


@pytest.mark.parametrize("victim", ["alice", "bob"])
def test_kill_9_of_either_node_mid_round_then_restart_loses_nothing(sites, victim):
    s = sites()
    s.start("alice")
    s.start("bob")
    s.wait_log("bob", "round", count=2, timeout=300)
    time.sleep(0.3)  # rounds run back to back: this lands inside the next one
    s.kill9(victim)
    time.sleep(0.5)
    s.start(victim)
    # Two more rounds after the restart: the first settles the interrupted one, both must agree.
    if victim == "alice":
        s.wait_log("bob", "round", count=s.rounds_logged("bob") + 2, timeout=300)
    else:
        s.wait_log("bob", "round", count=2 + 2, timeout=300)
    s.terminate("bob")
    s.terminate("alice")
    counts = s.check_stores()
    assert counts["keys"] > 0


def test_partition_of_either_connection_then_the_link_recovers(sites):
    s = sites(proxies=True)
    s.start("alice")
    s.start("bob")
    s.wait_log("bob", "round", count=1, timeout=300)
    marks = []

    def outcomes_since(before):
        return [e["outcome"] for e in s.events("bob") if e["event"] == "round"][before:]

    for name in ("classical", "quantum"):
        before = s.rounds_logged("bob")
        # The partition lasts until a round has failed on it (at most 60 s), then heals: its
        # length is what it takes to cut a round, on a loaded machine too, and no longer.
        s.proxies[name].partition(60.0)
        deadline = time.monotonic() + 60
        while "failed" not in outcomes_since(before):
            assert time.monotonic() < deadline, "no round failed during the partition"
            time.sleep(0.05)
        s.proxies[name].heal()
        failed_at = before + outcomes_since(before).index("failed")
        deadline = time.monotonic() + 300
        while "key" not in outcomes_since(failed_at + 1):
            assert time.monotonic() < deadline, "the link did not recover after the partition"
            time.sleep(0.1)
        marks.append(before)
    s.terminate("bob")
    s.terminate("alice")
    s.check_stores()
    outcomes = [e["outcome"] for e in s.events("bob") if e["event"] == "round"]
    assert "failed" in outcomes[marks[0]:marks[1]] and "failed" in outcomes[marks[1]:], outcomes
    assert "key" in outcomes[marks[1]:], outcomes  # the link recovered after the second partition too


@pytest.mark.slow
def test_sixty_second_partition_of_either_connection(sites):
    s = sites(proxies=True)
    s.start("alice")
    s.start("bob")
    s.wait_log("bob", "round", count=2, timeout=300)
    for name in ("classical", "quantum"):
        before = s.rounds_logged("bob")
        s.proxies[name].partition(60.0)
        time.sleep(60.0)
        s.wait_log("bob", "round", count=before + 3, timeout=300)
    s.terminate("bob")
    s.terminate("alice")
    s.check_stores()


def test_a_re_bootstrap_gives_new_key_ids_and_keeps_the_old_keys(sites):
    s = sites()
    _run_link(s, 2)
    first = set(s.store("alice").key_IDs())
    old_epoch = s.pool("alice").epoch
    psk = s.root / "second.psk"
    qkd.create_psk_file(psk, pad_bits=1 << 15)
    for role in ("alice", "bob"):
        (s.dirs[role] / "pool.psk").write_bytes(psk.read_bytes())
    assert s.pool("alice").epoch != old_epoch
    counts = _run_link(s, 2)
    ids = set(s.store("alice").key_IDs())
    assert first < ids and counts["keys"] > len(first)  # new rounds 0.. again, new IDs: no collision


def test_pacing_stops_at_the_high_watermark_and_resumes_when_keys_are_consumed(sites):
    # A 60,000-pulse round makes about 36 keys: one round reaches the high watermark.
    s = sites(stock={"low": 20, "high": 30, "max_key_count": 60}, extra={"round": {"exchanges": 60000}})
    s.start("alice")
    s.start("bob")
    s.wait_log("bob", "paused", timeout=300)
    # Bob logs a round before he checks the stock and pauses: every round he ran is logged now.
    rounds = s.rounds_logged("bob")
    time.sleep(1.5)  # three of his idle checks (every 0.5 s)
    assert s.rounds_logged("bob") == rounds  # paused: no new rounds
    a, b = s.store("alice"), s.store("bob")
    assert 30 <= b.count() <= 60 and a.count() <= 60
    # Consume keys at both sites (the same ones, as the KMEs would), then the node resumes.
    ids = b.key_IDs()[: b.count() - 10]
    for store in (a, b):
        store.drop(ids, action="consumed")
    s.wait_log("bob", "resumed", timeout=60)
    s.wait_log("bob", "paused", count=2, timeout=300)
    s.terminate("bob")
    s.terminate("alice")
    assert s.store("alice").count() <= 60 and s.store("bob").count() <= 60
    s.check_stores()


def test_bad_configuration_is_refused_with_a_clear_error(tmp_path, sites):
    s = sites()
    bad = subprocess.run([QKD, "node", "run", str(s.dirs["alice"]), "--set", "stock.hgih=3"], env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown configuration key 'stock.hgih'" in bad.stderr
    bad = subprocess.run([QKD, "node", "run", str(s.dirs["alice"]), "--set", "stock.low=900",
                          "--set", "stock.high=100"], env=ENV, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "low < high" in bad.stderr
    qkd.create_psk_file(s.dirs["bob"] / "pool.psk", pad_bits=4096, simulation=True, overwrite=True)
    bad = subprocess.run([QKD, "node", "run", str(s.dirs["bob"])], env=ENV, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "simulation pool" in bad.stderr


def test_the_nodes_own_kmes_deliver_the_same_key_to_an_sae_at_each_site_wrapped_for_an_off_host_one(sites):
    from qkd_circuits.etsi014 import KmeClient, client_context

    from qkd_circuits.etsi014 import wrap

    s = sites(kme=True)
    private, public = wrap.generate_wrapping_keypair()  # sae-b is off-host: its keys come wrapped
    wrap.save_wrapping_public(s.root / "sae-b.pub", public)
    s.start("alice")
    s.start("bob", args=["--set", f'kme.wrap_for.sae-b="{s.root / "sae-b.pub"}"'])
    deadline = time.monotonic() + 300
    while min(s.store("alice").count_free(), s.store("bob").count_free()) < 6:  # 3 keys are taken below
        assert time.monotonic() < deadline and s.procs["bob"].poll() is None, (s.dirs["bob"] / "node.err").read_text()[-2000:]
        time.sleep(0.1)
    tls = s.root / "tls"
    ctx = {sae: client_context(tls / f"{sae}.pem", tls / f"{sae}.key", tls / "ca.pem") for sae in ("sae-a", "sae-b")}
    master = KmeClient("127.0.0.1", s.kme_ports["alice"], ctx["sae-a"])
    slave = KmeClient("127.0.0.1", s.kme_ports["bob"], ctx["sae-b"], unwrap_with=private)
    keys = master.get_key("sae-b", number=2)
    assert slave.get_key_with_ids("sae-a", [k for k, _ in keys]) == keys
    # And the other way round: Bob's site as master.
    back = slave.get_key("sae-a", number=1)
    assert KmeClient("127.0.0.1", s.kme_ports["alice"], ctx["sae-a"]).get_key_with_ids("sae-b", [back[0][0]]) == back
    s.terminate("bob")
    s.terminate("alice")
    a, b = s.store("alice"), s.store("bob")
    assert a.key_IDs() == b.key_IDs() and a.fingerprint() == b.fingerprint()  # delivered keys left both
    assert not {k for k, _ in keys + back} & set(a.key_IDs())


def test_the_ttl_purge_drops_the_same_keys_at_both_sites(sites):
    # low=0: once Bob's stock reaches high he pauses for good, so the stores only shrink after that.
    s = sites(kme=True, stock={"ttl_s": 2.0, "purge_every_s": 0.5, "low": 0, "high": 3},
              extra={"metrics": {"listen": "127.0.0.1:0"}})
    s.start("alice")
    s.start("bob")
    s.wait_log("bob", "paused", timeout=300)
    s.wait_log("alice", "purged", timeout=60)
    deadline = time.monotonic() + 30
    while s.store("alice").count() or s.store("bob").count():  # every key is older than the TTL now
        assert time.monotonic() < deadline, (s.store("alice").count(), s.store("bob").count())
        time.sleep(0.2)
    listening = next(e for e in s.events("alice") if e["event"] == "listening")
    text = urllib.request.urlopen(f"http://{listening['metrics']}/metrics", timeout=10).read().decode()
    assert "qkd_node_rounds_total" in text and "qkd_kme_free_keys" in text  # the KME's metrics share the node's registry
    s.terminate("bob")
    assert s.terminate("alice") == 0
    s.check_stores()


def test_eve_on_the_fibre_gets_no_key_into_either_store(sites):
    s = sites(extra={"round": {"eve": "intercept-resend:1.0"}})
    s.start("alice")
    s.start("bob", rounds=2)
    assert s.wait("bob", timeout=300) == 0
    assert s.terminate("alice") == 0
    rounds = [e for e in s.events("bob") if e["event"] == "round"]
    assert [e["outcome"] for e in rounds] == ["aborted"] * 2 and {e["reason"] for e in rounds} == {"qber_too_high"}
    assert s.check_stores()["keys"] == 0


def test_tampered_or_lost_pulse_frames_cost_a_round_and_no_key(sites):
    from faultproxy import Fault

    s = sites(proxies=True)
    # Connection 1 of the quantum channel: the block name flipped (Alice knows no such block);
    # connection 2: the settings flipped (Bob measures other states: errors, caught or corrected);
    # connection 3: the frame dropped (Bob times out).  Then honest rounds.
    s.proxies["quantum"].add_fault(Fault(1, "s2c", 0, "flip_header", bit=8 * 10))
    s.proxies["quantum"].add_fault(Fault(2, "s2c", 0, "flip_payload"))
    s.proxies["quantum"].add_fault(Fault(3, "s2c", 0, "drop"))
    s.start("alice")
    s.start("bob", rounds=7)
    assert s.wait("bob", timeout=300) == 0
    assert s.terminate("alice") == 0
    assert all(e.action for e in s.proxies["quantum"].log if e.connection in (1, 2, 3) and e.direction == "s2c")
    outcomes = [e["outcome"] for e in s.events("bob") if e["event"] == "round"]
    assert outcomes[1] == "failed" and outcomes[3] == "failed" and outcomes[-1] == "key", outcomes
    s.check_stores()
