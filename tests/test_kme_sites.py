"""Two real KMEs on loopback: key sizes, limits, the coordinated TTL, TLS 1.3, HTTP hygiene, metrics."""

from __future__ import annotations

import json
import logging
import socket
import ssl
import urllib.request

import numpy as np
import pytest

from qkd_circuits.etsi014 import Etsi014Error, KmeClient, client_context, init_tls_pki, server_context
from qkd_circuits.exceptions import ConfigurationError
from qkd_circuits.keystore import KeyStore, StoreFull, cut_key

pytest.importorskip("aiohttp", reason="the kme extra is not installed")
pytest.importorskip("prometheus_client", reason="the kme extra is not installed")
from prometheus_client import CollectorRegistry, Gauge  # noqa: E402

from qkd_circuits.etsi014 import KmeConfig, start_kme  # noqa: E402

EPOCH = b"\x01" * 8
SAES = ("sae-a", "sae-a2", "sae-b", "sae-b2", "sae-b3")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kme_sites")
    certs = init_tls_pki(tmp / "tls", kmes=("kme-a", "kme-b"), saes=SAES)
    bits = np.random.default_rng().integers(0, 2, 200 * 256, dtype=np.uint8)  # unseeded: key material
    pieces = cut_key(bits, link_id="A-B", round_number=0, epoch=EPOCH)
    stores = {s: KeyStore(tmp / f"{s}.db", max_key_count=300) for s in "ab"}
    for store in stores.values():
        assert store.add_round(pieces, link_id="A-B", epoch=EPOCH, round_number=0) == 200

    def ctx(name):
        return client_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    def srv(name):
        return server_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    registry = CollectorRegistry()
    node_gauge = Gauge("qkd_node_rounds", "a gauge the link node adds", registry=registry)
    node_gauge.set(7)
    common = dict(max_SAE_ID_count=1, max_key_size=1024)
    b = start_kme(KmeConfig(KME_ID="kme-b", local_SAEs=frozenset({"sae-b", "sae-b2", "sae-b3"}), peer_KME_ID="kme-a",
                            remote_SAEs=frozenset({"sae-a", "sae-a2"}), **common), stores["b"], ssl_context=srv("kme-b"))
    a = start_kme(KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a", "sae-a2"}), peer_KME_ID="kme-b",
                            remote_SAEs=frozenset({"sae-b", "sae-b2", "sae-b3"}), peer_url=b.url, peer_ssl=ctx("kme-a"),
                            **common), stores["a"], ssl_context=srv("kme-a"), registry=registry,
                  metrics_listen="127.0.0.1:0")
    clients = {s: KmeClient("127.0.0.1", (a if s.startswith("sae-a") else b).port, ctx(s)) for s in SAES}
    yield {"a": a, "b": b, "stores": stores, "clients": clients, "certs": certs, "ctx": ctx}
    a.stop()
    b.stop()
    for store in stores.values():
        store.close()


@pytest.mark.parametrize("size", [8, 136, 256, 1024])
def test_keys_of_any_multiple_of_8_bits_are_the_same_at_both_sites(sites, size):
    c = sites["clients"]
    keys = c["sae-a"].get_key("sae-b", number=2, size=size)
    assert [len(k) for _, k in keys] == [size // 8] * 2
    assert c["sae-b"].get_key_with_ids("sae-a", [k for k, _ in keys]) == keys
    assert sites["stores"]["a"].fingerprint() == sites["stores"]["b"].fingerprint()


def test_status_reports_the_served_sizes_and_limits(sites):
    status = sites["clients"]["sae-a"].status("sae-b")
    assert (status["min_key_size"], status["key_size"], status["max_key_size"]) == (8, 256, 1024)
    assert status["max_key_count"] == 300 and status["stored_key_count"] <= 300
    assert status["max_SAE_ID_count"] == 1


@pytest.mark.parametrize("body, message", [
    ({"size": 1032}, "requested key size is not supported"),
    ({"size": 4}, "size shall be a multiple of 8"),
    ({"size": 12}, "size shall be a multiple of 8"),
    ({"size": -8}, "size shall be a positive integer"),
    ({"additional_slave_SAE_IDs": ["sae-b2", "sae-b3"]}, "max_SAE_ID_count (1)"),
])
def test_invalid_sizes_and_too_many_slaves_get_400_json(sites, body, message):
    with pytest.raises(Etsi014Error) as err:
        sites["clients"]["sae-a"]._call("POST", "/api/v1/keys/sae-b/enc_keys", body)
    assert err.value.status == 400 and message in err.value.body["message"]


def test_max_SAE_ID_count_counts_only_additional_slaves(sites):
    c = sites["clients"]
    keys = c["sae-a"].get_key("sae-b", number=1, additional_slave_SAE_IDs=["sae-b2"])  # 2 slaves, 1 additional
    assert c["sae-b2"].get_key_with_ids("sae-a", [keys[0][0]]) == keys
    assert c["sae-b"].get_key_with_ids("sae-a", [keys[0][0]]) == keys


def test_the_store_refuses_keys_beyond_max_key_count(sites):
    store = sites["stores"]["b"]
    left = store.capacity_left()
    bits = np.random.default_rng().integers(0, 2, (left + 1) * 256, dtype=np.uint8)
    with pytest.raises(StoreFull, match="max_key_count"):
        store.add_round(cut_key(bits, link_id="A-B", round_number=9, epoch=EPOCH), link_id="A-B", epoch=EPOCH,
                        round_number=9)
    assert store.capacity_left() == left
    assert sites["clients"]["sae-b"].status("sae-a")["stored_key_count"] <= 300


def test_coordinated_ttl_drops_the_same_keys_at_both_sites(sites):
    a, b = sites["stores"]["a"], sites["stores"]["b"]
    before = a.count_free()
    assert sites["a"].purge(3600) == 0
    bits = np.random.default_rng().integers(0, 2, 5 * 256, dtype=np.uint8)
    fresh = cut_key(bits, link_id="A-B", round_number=1, epoch=EPOCH)
    for store in (a, b):
        store.add_round(fresh, link_id="A-B", epoch=EPOCH, round_number=1)
    assert a.fingerprint() == b.fingerprint()
    assert sites["a"].purge(-1) == before + 5  # every free key is "expired" with a negative TTL
    assert a.count_free() == 0 and a.purge_outbox() == []
    assert a.fingerprint() == b.fingerprint() and b.count_free() == 0
    # the stores are empty from here on: refill so later tests have keys
    refill = cut_key(np.random.default_rng().integers(0, 2, 50 * 256, dtype=np.uint8), link_id="A-B",
                     round_number=2, epoch=EPOCH)
    for store in (a, b):
        store.add_round(refill, link_id="A-B", epoch=EPOCH, round_number=2)


def test_a_tls_1_2_only_client_is_refused(sites):
    ctx = sites["ctx"]("sae-a")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", sites["a"].port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1"):
                pass
    with socket.create_connection(("127.0.0.1", sites["a"].port), timeout=5) as raw:
        with sites["ctx"]("sae-a").wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.3"


def _raw_exchange(sites, request: bytes) -> tuple[int, str, dict]:
    with socket.create_connection(("127.0.0.1", sites["a"].port), timeout=10) as raw:
        with sites["ctx"]("sae-a").wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), json.loads(body)


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/v1/keys/sae-b/status?" + b"x" * 10_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /api/v1/keys/sae-b/status HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 10_000 + b"\r\n\r\n",
    b"NOT A REQUEST LINE\r\n\r\n",
    b"GET /api/v1/keys/sae-b/status HTTP/9.9\r\nHost: a\r\n\r\n",
], ids=["10kB-URL", "10kB-header", "bad-request-line", "bad-version"])
def test_requests_the_http_parser_refuses_get_a_json_error(sites, request_bytes):
    status, kind, body = _raw_exchange(sites, request_bytes)
    assert status == 400 and kind.startswith("application/json") and isinstance(body["message"], str)
    assert "y" * 100 not in body["message"] and "x" * 100 not in body["message"]


def test_health_and_metrics_share_the_node_registry(sites, caplog):
    port = sites["a"].metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and health["store"] == "ok" and health["peer"] == "ok"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    for name in ("qkd_kme_deliveries_total", "qkd_kme_errors_total", "qkd_kme_request_seconds_bucket",
                 "qkd_kme_stored_keys", "qkd_kme_unsettled_reservations", "qkd_node_rounds 7.0"):
        assert name in text, name
    assert 'qkd_kme_errors_total{status="400"}' in text
    assert sites["a"].metrics.registry is sites["a"].metrics.registry  # the one the node passed


def test_one_log_line_per_request_and_never_key_bytes(sites, caplog):
    import base64

    caplog.set_level(logging.INFO, logger="qkd_circuits.kme")
    c = sites["clients"]
    keys = c["sae-a"].get_key("sae-b", number=2)
    c["sae-b"].get_key_with_ids("sae-a", [k for k, _ in keys])
    records = [r for r in caplog.records if r.name == "qkd_circuits.kme" and hasattr(r, "kme")]
    enc = [r.kme for r in records if r.kme["path"].endswith("/enc_keys")]
    dec = [r.kme for r in records if r.kme["path"].endswith("/dec_keys")]
    peer = [r.kme for r in records if r.kme["path"] == "/peer/v1/assign"]
    assert enc[-1]["keys"] == 2 and enc[-1]["caller"] == "sae-a" and enc[-1]["status"] == 200
    assert dec[-1]["key_IDs"] == 2 and dec[-1]["caller"] == "sae-b" and peer[-1]["caller"] == "kme-a"
    assert all(r.kme["latency_ms"] >= 0 for r in records)
    for _, key in keys:
        assert base64.b64encode(key).decode() not in caplog.text and key.hex() not in caplog.text


@pytest.mark.parametrize("field, value", [("key_size", 12), ("key_size", 0), ("key_size", -8),
                                          ("max_key_size", 7), ("max_SAE_ID_count", -1), ("peer_timeout", 0)])
def test_bad_configs_are_refused(field, value):
    with pytest.raises(ConfigurationError, match="must be"):
        KmeConfig(KME_ID="x", local_SAEs=frozenset({"s"}), **{field: value})


def test_many_concurrent_requests_share_peer_calls_and_stay_consistent(sites):
    from concurrent.futures import ThreadPoolExecutor

    def work(i):
        master = KmeClient("127.0.0.1", sites["a"].port, sites["ctx"]("sae-a"))
        slave = KmeClient("127.0.0.1", sites["b"].port, sites["ctx"]("sae-b"))
        got = []
        for _ in range(4):
            keys = master.get_key("sae-b", number=1, size=64 * (1 + i % 3))
            assert slave.get_key_with_ids("sae-a", [keys[0][0]]) == keys
            got.append(keys[0][0])
        return got

    with ThreadPoolExecutor(8) as pool:
        ids = [k for batch in pool.map(work, range(8)) for k in batch]
    assert len(ids) == len(set(ids)) == 32
    assert sites["stores"]["a"].fingerprint() == sites["stores"]["b"].fingerprint()


def test_assign_batch_answers_each_assignment_on_its_own(sites):
    import http.client

    b = sites["stores"]["b"]
    free = [k for k in b.key_IDs()][:2]
    body = {"assignments": [
        {"reservation": "r-ok", "master_SAE_ID": "sae-a", "slave_SAE_IDs": ["sae-b"], "key_IDs": [free[0]]},
        {"reservation": "r-missing", "master_SAE_ID": "sae-a", "slave_SAE_IDs": ["sae-b"],
         "key_IDs": ["00000000-0000-4000-8000-000000000000"]},
        {"reservation": "r-bad"},
    ]}
    conn = http.client.HTTPSConnection("127.0.0.1", sites["b"].port, context=sites["ctx"]("kme-a"), timeout=10)
    conn.request("POST", "/peer/v1/assign_batch", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    results = json.loads(response.read())["results"]
    conn.close()
    assert response.status == 200
    assert [r["status"] for r in results] == [200, 409, 400] and results[1]["reason"] == "not_found"
    assert b.unassign([free[0]], master="sae-a", reservation="r-ok") == 1  # put it back
    with pytest.raises(Etsi014Error) as err:  # an SAE is not the peer KME
        sites["clients"]["sae-b"]._call("POST", "/peer/v1/assign_batch", body)
    assert err.value.status == 401
