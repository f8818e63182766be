"""Wrapped delivery end to end: two real KMEs on loopback, one wrapping for some of its SAEs."""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qkd_circuits.cli import main
from qkd_circuits.etsi014 import (KeyIsWrapped, KeyNotWrapped, KmeClient, WrapMismatch, client_context, init_tls_pki,
                                  server_context, wrap)
from qkd_circuits.exceptions import AuthenticationError, ConfigurationError, ProtocolError
from qkd_circuits.keystore import KeyStore, cut_key

pytest.importorskip("aiohttp", reason="the kme extra is not installed")
from qkd_circuits.etsi014 import KmeConfig, start_kme  # noqa: E402

EPOCH = b"\x02" * 8
SAES = ("sae-a", "sae-a2", "sae-b", "sae-b2")
QKD = str(Path(sys.executable).with_name("qkd"))
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wrap_sites")
    certs = init_tls_pki(tmp / "tls", kmes=("kme-a", "kme-b"), saes=SAES)
    bits = np.random.default_rng().integers(0, 2, 100 * 256, dtype=np.uint8)  # unseeded: key material
    pieces = cut_key(bits, link_id="A-B", round_number=0, epoch=EPOCH)
    stores = {s: KeyStore(tmp / f"{s}.db") for s in "ab"}
    for store in stores.values():
        assert store.add_round(pieces, link_id="A-B", epoch=EPOCH, round_number=0) == 100
    pairs = {sae: wrap.generate_wrapping_keypair() for sae in ("sae-a2", "sae-b")}

    def ctx(name):
        return client_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    def srv(name):
        return server_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")

    # kme-b wraps for sae-b (a slave here), kme-a for sae-a2 (a master there); sae-a and sae-b2 get plain keys.
    b = start_kme(KmeConfig(KME_ID="kme-b", local_SAEs=frozenset({"sae-b", "sae-b2"}), peer_KME_ID="kme-a",
                            remote_SAEs=frozenset({"sae-a", "sae-a2"}), wrap_keys={"sae-b": pairs["sae-b"][1]}),
                  stores["b"], ssl_context=srv("kme-b"))
    a = start_kme(KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a", "sae-a2"}), peer_KME_ID="kme-b",
                            remote_SAEs=frozenset({"sae-b", "sae-b2"}), peer_url=b.url, peer_ssl=ctx("kme-a"),
                            wrap_keys={"sae-a2": pairs["sae-a2"][1]}), stores["a"], ssl_context=srv("kme-a"))
    kmes = {"a": a, "b": b}

    def client(sae, unwrap=False):
        return KmeClient("127.0.0.1", kmes[sae[4]].port, ctx(sae), unwrap_with=pairs[sae][0] if unwrap else None)

    yield {"kmes": kmes, "client": client, "pairs": pairs, "ctx": ctx, "certs": certs}
    a.stop()
    b.stop()
    for store in stores.values():
        store.close()


def _raw(sites, sae, path, body):
    conn = http.client.HTTPSConnection("127.0.0.1", sites["kmes"][sae[4]].port, context=sites["ctx"](sae), timeout=10)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    assert response.status == 200, data
    return data


def test_plain_master_wrapped_slave_get_the_same_keys(sites):
    keys = sites["client"]("sae-a").get_key("sae-b", number=3)
    assert len(keys) == 3 and all(len(k) == 32 for _, k in keys)
    raw = _raw(sites, "sae-b", "/api/v1/keys/sae-a/dec_keys", {"key_IDs": [{"key_ID": k} for k, _ in keys]})
    for _, key in keys:  # what a recorder of this TLS session would see: no key, in any encoding
        assert key not in raw and base64.b64encode(key) not in raw and key.hex().encode() not in raw
    objects = json.loads(raw)["keys"]
    assert [o["key_ID"] for o in objects] == [k for k, _ in keys]
    assert all(o["key_extension"] == {"qkd_circuits_wrap": wrap.SUITE} for o in objects)
    private = sites["pairs"]["sae-b"][0]
    assert [(o["key_ID"], wrap.unwrap_delivered(o, private)) for o in objects] == keys


def test_the_slave_client_unwraps_and_a_client_without_the_key_refuses_the_blob(sites):
    a = sites["client"]("sae-a")
    keys = a.get_key("sae-b", number=2)
    with pytest.raises(KeyIsWrapped) as err:  # the blob is never handed out as if it were the key
        sites["client"]("sae-b").get_key_with_ids("sae-a", [keys[0][0]])
    assert err.value.key_ID == keys[0][0] and isinstance(err.value, (WrapMismatch, ProtocolError))
    assert sites["client"]("sae-b", unwrap=True).get_key_with_ids("sae-a", [keys[1][0]]) == [keys[1]]


def test_a_wrapped_master_and_a_wrapped_slave_at_the_other_site(sites):
    keys = sites["client"]("sae-a2", unwrap=True).get_key("sae-b", number=2, size=136)
    assert [len(k) for _, k in keys] == [17, 17]
    assert sites["client"]("sae-b", unwrap=True).get_key_with_ids("sae-a2", [k for k, _ in keys]) == keys


def test_a_plain_slave_next_to_a_wrapped_one_gets_plain_keys(sites):
    keys = sites["client"]("sae-a").get_key("sae-b2", number=1)
    assert sites["client"]("sae-b2").get_key_with_ids("sae-a", [keys[0][0]]) == keys


def test_unwrap_with_against_an_sae_the_kme_does_not_wrap_for_raises(sites):
    private, _ = wrap.generate_wrapping_keypair()
    client = KmeClient("127.0.0.1", sites["kmes"]["a"].port, sites["ctx"]("sae-a"), unwrap_with=private)
    with pytest.raises(KeyNotWrapped) as err:
        client.get_key("sae-b", number=1)
    assert err.value.key_ID and "unwrapped" in str(err.value)


def test_another_private_key_does_not_open_the_keys(sites):
    keys = sites["client"]("sae-a").get_key("sae-b", number=1)
    stranger, _ = wrap.generate_wrapping_keypair()
    client = KmeClient("127.0.0.1", sites["kmes"]["b"].port, sites["ctx"]("sae-b"), unwrap_with=stranger)
    with pytest.raises(AuthenticationError):
        client.get_key_with_ids("sae-a", [keys[0][0]])


def test_status_says_whether_the_kme_wraps_for_the_caller(sites):
    assert sites["client"]("sae-a2").status("sae-b")["status_extension"] == {"qkd_circuits_wrap": wrap.SUITE}
    assert "status_extension" not in sites["client"]("sae-a").status("sae-b")


def test_wrap_keys_are_checked_at_construction():
    private, public = wrap.generate_wrapping_keypair()
    base = dict(KME_ID="k", local_SAEs=frozenset({"s"}), remote_SAEs=frozenset({"r"}))
    config = KmeConfig(**base, wrap_keys={"s": bytearray(public)})
    assert config.wrap_keys == {"s": public} and public.hex() not in repr(config)
    with pytest.raises(ConfigurationError, match="not a local SAE"):
        KmeConfig(**base, wrap_keys={"r": public})
    with pytest.raises(ConfigurationError, match="wrapping public key"):
        KmeConfig(**base, wrap_keys={"s": private})
    with pytest.raises(ConfigurationError, match="wrapping public key"):
        KmeConfig(**base, wrap_keys={"s": public[:-32] + bytes(32)})  # a low-order X25519 point
    with pytest.raises(ConfigurationError, match="wrapping public key"):
        KmeConfig(**base, wrap_keys={"s": public[:6] + b"\xff" * 1184 + public[-32:]})  # ML-KEM modulus check
    with pytest.raises(ConfigurationError, match="too large for wrapped delivery"):
        KmeConfig(**base, key_size=2048, wrap_keys={"s": public})
    with pytest.raises(ConfigurationError):
        KmeClient(unix_path="/nonexistent", unwrap_with=public)  # a public key is no private key


def test_cli_wrap_keygen_writes_0600_files_that_load(tmp_path):
    priv, pub = tmp_path / "sae.wrap", tmp_path / "sae.wrap.pub"
    runner = CliRunner()
    result = runner.invoke(main, ["kme", "wrap-keygen", str(priv), str(pub)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600 and stat.S_IMODE(pub.stat().st_mode) == 0o600
    private = wrap.load_wrapping_key(priv)
    assert wrap.load_wrapping_public(pub) == wrap.public_key_of(private)
    again = runner.invoke(main, ["kme", "wrap-keygen", str(priv), str(pub)])
    assert again.exit_code == 2 and "--force" in again.output
    assert wrap.load_wrapping_key(priv) == private  # kept
    assert runner.invoke(main, ["kme", "wrap-keygen", "--force", str(priv), str(pub)]).exit_code == 0
    assert wrap.load_wrapping_key(priv) != private


def test_cli_get_key_unwrap_prints_plain_keys(sites, tmp_path):
    priv_a2, priv_b = tmp_path / "a2.wrap", tmp_path / "b.wrap"
    wrap.save_wrapping_key(priv_a2, sites["pairs"]["sae-a2"][0])
    wrap.save_wrapping_key(priv_b, sites["pairs"]["sae-b"][0])
    tls, runner = str(sites["certs"]), CliRunner()
    got = runner.invoke(main, ["kme", "get-key", "--kme", sites["kmes"]["a"].url, "--tls", tls, "--sae", "sae-a2",
                               "--slave", "sae-b", "--number", "2", "--unwrap", str(priv_a2)])
    assert got.exit_code == 0, got.output
    keys = json.loads(got.output)["keys"]
    assert [len(base64.b64decode(k["key"])) for k in keys] == [32, 32]
    ids = [k["key_ID"] for k in keys]
    back = runner.invoke(main, ["kme", "get-key-with-ids", "--kme", sites["kmes"]["b"].url, "--tls", tls,
                                "--sae", "sae-b", "--master", "sae-a2", "--unwrap", str(priv_b), *ids])
    assert back.exit_code == 0, back.output
    assert json.loads(back.output)["keys"] == keys
    # --unwrap against a KME that sends this SAE plain keys: exit 3 with the typed error, no key printed
    plain = runner.invoke(main, ["kme", "get-key", "--kme", sites["kmes"]["a"].url, "--tls", tls, "--sae", "sae-a",
                                 "--slave", "sae-b", "--unwrap", str(priv_a2)])
    assert plain.exit_code == 3 and "KeyNotWrapped" in plain.output
    bad = runner.invoke(main, ["kme", "get-key", "--kme", sites["kmes"]["a"].url, "--tls", tls, "--sae", "sae-a",
                               "--slave", "sae-b", "--unwrap", str(tmp_path / "missing")])
    assert bad.exit_code == 2


@pytest.mark.parametrize("spec, message", [
    ("bad", "--wrap-for takes SAE=PUBFILE, got 'bad'"),
    ("sae-x={pub}", "--wrap-for sae-x: not an SAE of this KME"),
    ("sae-a={missing}", "{missing}"),
])
def test_cli_serve_refuses_a_bad_wrap_for(tmp_path, spec, message):
    _, public = wrap.generate_wrapping_keypair()
    wrap.save_wrapping_public(tmp_path / "PUB", public)
    names = {"pub": tmp_path / "PUB", "missing": tmp_path / "missing.pub"}
    spec, message = spec.format(**names), message.format(**names)
    proc = subprocess.run([QKD, "kme", "serve", "--id", "kme-a", "--store", str(tmp_path / "a.db"),
                           "--unix", str(tmp_path / "kme.sock"), "--sae", "sae-a", "--wrap-for", spec],
                          capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "serving" not in proc.stderr
    assert not (tmp_path / "a.db").exists()
