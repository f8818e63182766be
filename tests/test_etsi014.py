"""Two real KMEs on loopback with mutual TLS, filled from a real QKD round (ETSI GS QKD 014).

The tests that start KMEs of their own fill them with synthetic keys (random bits stored as a
round's final key is): their point is the KME, not the round.
"""

from __future__ import annotations

import json
import socket
import ssl

import pytest

import qkd_circuits as qkd
from conftest import synthetic_final_key
from qkd_circuits.etsi014 import Etsi014Error, KmeClient, client_context, init_tls_pki, server_context
from qkd_circuits.keystore import KeyStore, store_final_key

pytest.importorskip("aiohttp", reason="the kme extra is not installed")
from qkd_circuits.etsi014 import KmeConfig, start_kme  # noqa: E402


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sites")
    certs = init_tls_pki(tmp / "tls", kmes=("kme-a", "kme-b"), saes=("sae-a", "sae-b", "sae-b2", "sae-a2"))
    result = qkd.run_bb84(200_000, channel=qkd.Channel(depolarizing=0.04), seed=17)
    stores = {"a": KeyStore(tmp / "a.db"), "b": KeyStore(tmp / "b.db")}
    store_final_key(stores["a"], result.alice_key, link_id="A-B", round_number=0)
    store_final_key(stores["b"], result.bob_key, link_id="A-B", round_number=0)

    def ctx(name):
        return client_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    local = {"a": frozenset({"sae-a", "sae-a2"}), "b": frozenset({"sae-b", "sae-b2"})}
    kmes = {}
    # B starts first and needs no peer URL: its SAEs are only slaves here (A tells B, never the
    # other way round); then A starts with B's URL.
    for me, other in (("b", "a"), ("a", "b")):
        config = KmeConfig(KME_ID=f"kme-{me}", local_SAEs=local[me], peer_KME_ID=f"kme-{other}",
                           remote_SAEs=local[other], peer_url=kmes[other].url if other in kmes else None,
                           peer_ssl=ctx(f"kme-{me}"))
        kmes[me] = start_kme(config, stores[me], ssl_context=server_context(
            certs / f"kme-{me}.pem", certs / f"kme-{me}.key", certs / "ca.pem"))
    clients = {sae: KmeClient("127.0.0.1", kmes[sae[4]].port, ctx(sae)) for sae in ("sae-a", "sae-a2", "sae-b", "sae-b2")}
    yield {"kmes": kmes, "clients": clients, "certs": certs, "stores": stores, "ctx": ctx}
    for kme in kmes.values():
        kme.stop()


def test_status_reports_the_spec_fields(sites):
    status = sites["clients"]["sae-a"].status("sae-b")
    assert status["source_KME_ID"] == "kme-a" and status["target_KME_ID"] == "kme-b"
    assert status["master_SAE_ID"] == "sae-a" and status["slave_SAE_ID"] == "sae-b"
    assert status["key_size"] == 256 and status["min_key_size"] == 8 and status["max_key_size"] == 2048
    assert 100 < status["stored_key_count"] <= status["max_key_count"]
    assert {"max_key_count", "max_key_per_request", "max_SAE_ID_count"} <= set(status)


def test_master_at_a_and_slave_at_b_get_the_same_keys_exactly_once(sites):
    a, b = sites["clients"]["sae-a"], sites["clients"]["sae-b"]
    keys = a.get_key("sae-b", number=3)
    assert len(keys) == 3 and all(len(k) == 32 for _, k in keys)
    got = b.get_key_with_ids("sae-a", [k for k, _ in keys])
    assert got == keys
    with pytest.raises(Etsi014Error) as err:
        b.get_key_with_ids("sae-a", [keys[0][0]])
    assert err.value.status == 400 and err.value.body["message"] == "one or more keys specified are not found on KME"


def test_a_wrong_sae_gets_401_and_consumes_nothing(sites):
    a, b, b2 = (sites["clients"][s] for s in ("sae-a", "sae-b", "sae-b2"))
    keys = a.get_key("sae-b", number=1)
    with pytest.raises(Etsi014Error) as err:
        b2.get_key_with_ids("sae-a", [keys[0][0]])  # sae-b2 was not named as a slave
    assert err.value.status == 401 and "message" in err.value.body
    assert b.get_key_with_ids("sae-a", [keys[0][0]]) == keys


def test_multicast_and_master_equal_to_slave(sites):
    a, b, b2 = (sites["clients"][s] for s in ("sae-a", "sae-b", "sae-b2"))
    keys = a.get_key("sae-b", number=2, additional_slave_SAE_IDs=["sae-b2"])
    assert b.get_key_with_ids("sae-a", [k for k, _ in keys]) == keys
    assert b2.get_key_with_ids("sae-a", [k for k, _ in keys]) == keys
    own = a.get_key("sae-a", number=1)
    assert a.get_key_with_ids("sae-a", [own[0][0]]) == own


def _raw(sites, sae, method, path, body=None):
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", sites["kmes"][sae[4]].port, context=sites["ctx"](sae), timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data)


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"size": 12}', 400, "size shall be a multiple of 8"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"size": 2056}', 400, "requested key size is not supported"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"size": 0}', 400, "size shall be a positive integer"),
    ("GET", "/api/v1/keys/sae-b/enc_keys?size=4", None, 400, "size shall be a multiple of 8"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"number": 100000}', 400, "exceeds max_key_per_request"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"number": 0}', 400, "number shall be a positive integer"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"number": "3"}', 400, "number shall be a positive integer"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"number": 1e999}', 400, "number shall be a positive integer"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"extension_mandatory": [{"abc_route_type": "direct"}]}', 400,
     "not all extension_mandatory parameters are supported"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"colour": "blue"}', 400, "unknown parameter(s): colour"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", "[1, 2]", 400, "must be a JSON object"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", "{not json", 400, "not valid JSON"),
    ("GET", "/api/v1/keys/sae-b/enc_keys?number=1&colour=blue", None, 400, "unknown query parameter(s): colour"),
    ("GET", "/api/v1/keys/sae-b/enc_keys?number=99999999999", None, 400, "number shall be a positive integer"),
    ("POST", "/api/v1/keys/nobody/enc_keys", "{}", 400, "is not known to this KME"),
    ("POST", "/api/v1/keys/sae-b/enc_keys", '{"additional_slave_SAE_IDs": "sae-b2"}', 400, "shall be an array"),
    ("POST", "/api/v1/keys/sae-a/dec_keys", '{"key_IDs": []}', 400, "non-empty array"),
    ("POST", "/api/v1/keys/sae-a/dec_keys", '{"key_IDs": [{"key_ID": 5}]}', 400, "key_ID shall be a UUID string"),
    ("POST", "/api/v1/keys/sae-a/dec_keys", '{"key_IDs": [{"kid": "x"}]}', 400, "object with a key_ID"),
    ("GET", "/api/v1/keys/sae-a/dec_keys", None, 400, "key_ID is required"),
    ("GET", "/api/v1/keys/sae-a/dec_keys?key_ID=" + "x" * 5000, None, 400, "key_ID shall be a UUID string"),
])
def test_spec_errors_are_json_and_consume_nothing(sites, method, path, body, status, message):
    before = sites["stores"]["a"].count_free() + sites["stores"]["b"].count_free()
    code, data = _raw(sites, "sae-a" if "enc_keys" in path else "sae-b", method, path, body)
    assert code == status and message in data["message"]
    assert sites["stores"]["a"].count_free() + sites["stores"]["b"].count_free() == before


def test_percent_encoded_sae_ids(sites):
    code, data = _raw(sites, "sae-a", "GET", "/api/v1/keys/sae%2Db/status")
    assert code == 200 and data["slave_SAE_ID"] == "sae-b"


def test_no_client_certificate_or_a_foreign_ca_fail_at_the_handshake(sites, tmp_path):
    port = sites["kmes"]["a"].port
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(sites["certs"] / "ca.pem")
    foreign = init_tls_pki(tmp_path / "other", kmes=("kme-x",), saes=("sae-a",))
    for ctx in (bare, client_context(foreign / "sae-a.pem", foreign / "sae-a.key", sites["certs"] / "ca.pem")):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\nHost: x\r\n\r\n")
                    if not tls.recv(1):
                        raise ConnectionError("closed")


def test_an_sae_of_the_other_site_gets_401(sites):
    wrong = KmeClient("127.0.0.1", sites["kmes"]["a"].port, sites["ctx"]("sae-b"))
    with pytest.raises(Etsi014Error) as err:
        wrong.status("sae-a")
    assert err.value.status == 401


def test_fifty_parallel_http_clients_never_get_a_duplicate(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    certs = init_tls_pki(tmp_path / "tls", kmes=("kme-a",), saes=("sae-a", "sae-z"))
    store = KeyStore(tmp_path / "a.db")
    bits = synthetic_final_key(310 * 256)  # the 310 keys a 300,000-pulse round at 2 % noise makes
    total = store_final_key(store, bits, link_id="A-B", round_number=0)
    config = KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a", "sae-z"}))
    with start_kme(config, store, ssl_context=server_context(certs / "kme-a.pem", certs / "kme-a.key",
                                                             certs / "ca.pem")) as kme:
        tls = client_context(certs / "sae-a.pem", certs / "sae-a.key", certs / "ca.pem")

        def drain(_):
            client = KmeClient("127.0.0.1", kme.port, tls)  # one kept-alive connection per thread
            got = []
            while True:
                try:
                    got += [k for k, _ in client.get_key("sae-z", number=2)]
                except Etsi014Error as exc:
                    assert exc.status == 503
                    return got

        with ThreadPoolExecutor(50) as pool:
            ids = [k for batch in pool.map(drain, range(50)) for k in batch]
    assert len(ids) == len(set(ids)) and len(ids) >= total - 1


def test_a_crash_between_reserve_and_deliver_is_settled_at_restart(tmp_path):
    certs = init_tls_pki(tmp_path / "tls", kmes=("kme-a", "kme-b"), saes=("sae-a", "sae-b"))
    key = synthetic_final_key(131 * 256)  # both sites hold the same keys, as after a round
    a, b = KeyStore(tmp_path / "a.db"), KeyStore(tmp_path / "b.db")
    store_final_key(a, key, link_id="A-B", round_number=0)
    store_final_key(b, key, link_id="A-B", round_number=0)
    free = a.count_free()
    # "Crash": A reserved 3 keys and B recorded them, but A never delivered.
    reservation = a.reserve("sae-a", ["sae-b"], number=3, size=256, local_SAEs={"sae-a"})
    b.assign(a.reserved_keys(reservation), master="sae-a", slaves=["sae-b"], local_SAEs={"sae-b"})

    def ctx(name):
        return client_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    def srv(name):
        return server_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    with start_kme(KmeConfig(KME_ID="kme-b", local_SAEs=frozenset({"sae-b"}), peer_KME_ID="kme-a",
                             remote_SAEs=frozenset({"sae-a"})), b, ssl_context=srv("kme-b")) as kme_b:
        config_a = KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a"}), peer_KME_ID="kme-b",
                             remote_SAEs=frozenset({"sae-b"}), peer_url=kme_b.url, peer_ssl=ctx("kme-a"))
        with start_kme(config_a, a, ssl_context=srv("kme-a")) as kme_a:
            assert kme_a.recovery == {"released": 3, "orphaned": 0, "pending": 0}
    assert a.count_free() == b.count_free() == free  # nothing lost, nothing handed out
    assert a.pending_reservations() == {}


def test_the_third_party_etsi_client_works_against_our_kmes(sites):
    # etsi-qkd-014-client (PyPI), a real client written against the spec, not by us.
    from etsi_qkd_014_client import QKD014Client

    certs = sites["certs"]

    def client(sae, site):
        return QKD014Client(f"127.0.0.1:{sites['kmes'][site].port}", str(certs / f"{sae}.pem"),
                            str(certs / f"{sae}.key"), str(certs / "ca.pem"))

    master, slave = client("sae-a", "a"), client("sae-b", "b")
    code, status = master.get_status("sae-b")
    assert code == 200 and status.key_size == 256 and status.target_kme_id == "kme-b"
    code, container = master.get_key("sae-b", number=2, size=256)
    assert code == 200 and len(container.keys) == 2
    ids = [k.key_id for k in container.keys]
    code, back = slave.get_key_with_key_IDs("sae-a", ids)
    assert code == 200 and [k.key for k in back.keys] == [k.key for k in container.keys]
    code, error = slave.get_key_with_key_IDs("sae-a", ids)
    assert code == 400 and error.message == "one or more keys specified are not found on KME"
    code, error = master.get_key("sae-b", number=1, size=12)
    assert code == 400 and error.message == "size shall be a multiple of 8"
    code, simple = master.get_key("sae-b")  # the client's plain GET form
    assert code == 200 and len(simple.keys) == 1


# Runs last on the shared sites: it drains site A.
def test_running_out_of_keys_gives_503(sites):
    code, data = _raw(sites, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys", '{"number": 128}')
    while code == 200:
        code, data = _raw(sites, "sae-a", "POST", "/api/v1/keys/sae-b/enc_keys", '{"number": 128}')
    assert code == 503 and "not enough key material" in data["message"]


def test_the_smallest_secure_site_a_unix_socket_with_uid_identities(tmp_path):
    import os
    import stat

    store = KeyStore(tmp_path / "box.db")
    store_final_key(store, synthetic_final_key(64 * 256), link_id="A-B", round_number=0)
    path = str(tmp_path / "kme.sock")
    config = KmeConfig(KME_ID="kme-box", local_SAEs=frozenset({"sae-app"}), uid_SAEs={os.getuid(): "sae-app"})
    with start_kme(config, store, unix_path=path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the outer fence: only this user
        client = KmeClient(unix_path=path)
        assert client.status("sae-app")["master_SAE_ID"] == "sae-app"
        keys = client.get_key("sae-app", number=1)
        assert client.get_key_with_ids("sae-app", [keys[0][0]]) == keys
    stranger = KmeConfig(KME_ID="kme-box", local_SAEs=frozenset({"sae-app"}), uid_SAEs={os.getuid() + 1: "sae-app"})
    with start_kme(stranger, store, unix_path=path):
        with pytest.raises(Etsi014Error) as err:
            KmeClient(unix_path=path).status("sae-app")
        assert err.value.status == 401


def test_logs_and_the_audit_trail_hold_no_key_bytes(tmp_path, caplog):
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    certs = init_tls_pki(tmp_path / "tls", kmes=("kme-a",), saes=("sae-a",))
    store = KeyStore(tmp_path / "a.db")
    store_final_key(store, synthetic_final_key(64 * 256), link_id="A-B", round_number=0)
    config = KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a"}))
    with start_kme(config, store, ssl_context=server_context(certs / "kme-a.pem", certs / "kme-a.key",
                                                             certs / "ca.pem")) as kme:
        client = KmeClient("127.0.0.1", kme.port, client_context(certs / "sae-a.pem", certs / "sae-a.key",
                                                                certs / "ca.pem"))
        keys = client.get_key("sae-a", number=3)
        client.get_key_with_ids("sae-a", [k for k, _ in keys])
    trail = "\n".join(map(str, store.audit())) + caplog.text
    assert "enc_keys" in trail and "dec_keys" in trail
    for _, key in keys:
        assert base64.b64encode(key).decode() not in trail and key.hex() not in trail


def test_a_master_request_at_a_kme_without_a_peer_url_frees_its_keys_at_once(sites):
    # KME B has no peer URL: it cannot have KME A record a key for sae-a, so it refuses (503) and
    # holds nothing back.  It used to keep the oldest free key reserved, and every later request
    # of sae-a at A then picked that same key and was refused by B (the notebook-04 wedge).
    b_store, before = sites["stores"]["b"], sites["stores"]["b"].count_free()
    with pytest.raises(Etsi014Error, match="no peer KME is configured") as err:
        sites["clients"]["sae-b"].get_key("sae-a", number=1)
    assert err.value.status == 503 and b_store.pending_reservations() == {} and b_store.count_free() == before
    keys = sites["clients"]["sae-a"].get_key("sae-b", number=2)  # A's oldest keys are fine at B
    assert sites["clients"]["sae-b"].get_key_with_ids("sae-a", [k for k, _ in keys]) == keys
