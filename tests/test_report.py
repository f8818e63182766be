"""The round report: ``Report.to_dict()`` (what ``qkd run --json`` prints) keeps its shape.

Scripts, notebooks and the sweep read these dicts by key, so the nested keys, their order and
the type of every value are pinned here for a few seeded rounds (an honest round, a round an
eavesdropper pushes past the QBER threshold, a round with a tampered carrier, a PKI bootstrap,
two pool rounds, decoy sessions of the estimate method that make a key and that fail the decoy
check, and a composable decoy session that fails it inside the protocol).  The pinned
shapes are in ``tests/vectors/report_shapes.json``; a report that only gains keys still fails
here, on purpose: update the vector file in the same change that adds the field.

Regenerate the vector file (after a deliberate addition) with
``python tests/test_report.py --write``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

import qkd_circuits as qkd

VECTORS = Path(__file__).parent / "vectors" / "report_shapes.json"


#: Values whose keys or length depend on the installation or the run, not on the report's format:
#: package -> version string, and the backend's job ids.
OPEN_KEYS = {"versions": "open dict", "job_ids": "open list"}


def shape(value):
    """The structure of a to_dict() value: keys in order, the type name of every leaf."""
    if isinstance(value, dict):
        return {"dict": [[key, OPEN_KEYS[key] if key in OPEN_KEYS and isinstance(item, (dict, list, tuple))
                          else shape(item)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        shapes = []
        for item in value:
            s = shape(item)
            if s not in shapes:
                shapes.append(s)
        return {type(value).__name__: shapes}
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, str):
        return "str"  # AbortReason members are str; the report prints them as str
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return type(value).__name__  # anything else shows up as a diff


def _pki(directory: Path):
    from cryptography import x509

    from qkd_circuits.channel import pki
    from qkd_circuits.channel.authenticated import PkiIdentity

    paths = pki.init_demo_pki(directory)
    anchor = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    return (PkiIdentity(pki.load_credentials(directory, "alice"), anchor, "bob"),
            PkiIdentity(pki.load_credentials(directory, "bob"), anchor, "alice"))


def scenarios(tmp: Path) -> dict:
    """name -> the to_dict() of a seeded round (the pinned cases)."""
    from qkd_circuits.decoy import run_decoy_session
    from qkd_circuits.quantum.wcp import PhotonNumberSplitting

    out = {}
    honest = qkd.run_bb84(150_000, channel=qkd.Channel(depolarizing=0.04), seed=3)
    out["honest"] = honest.report.to_dict()
    eve = qkd.run_bb84(60_000, eve=qkd.InterceptResend(0.2), seed=5)
    out["partial_eve"] = eve.report.to_dict()
    abort = qkd.run_bb84(4000, eve=qkd.InterceptResend(1.0), seed=4)
    out["qber_abort"] = abort.report.to_dict()
    tampered = qkd.postprocess(honest.record, attack=lambda c: qkd.attacks.tamper(c, index=1, bit=8 * 40 + 3))
    out["tampered"] = tampered.report.to_dict()
    alice_pki, bob_pki = _pki(tmp / "pki")
    first = qkd.postprocess(honest.record, alice_pki=alice_pki, bob_pki=bob_pki)
    out["pki_bootstrap"] = first.report.to_dict()
    alice_pool, bob_pool = first.pools
    second = qkd.run_bb84(60_000, channel=qkd.Channel(depolarizing=0.04), seed=6, alice_pool=alice_pool,
                          bob_pool=bob_pool)
    out["pool_round"] = second.report.to_dict()
    third = qkd.run_bb84(60_000, channel=qkd.Channel(depolarizing=0.04), seed=7, alice_pool=alice_pool,
                         bob_pool=bob_pool)
    out["pool_round_after"] = third.report.to_dict()
    out["decoy_key"] = run_decoy_session(100_000, seed=2, method="decoy-vacuum-weak").to_dict()
    out["decoy_check_failed"] = run_decoy_session(100_000, seed=2, eve=PhotonNumberSplitting(),
                                                  method="decoy-vacuum-weak").to_dict()
    # The composable default: 100,000 pulses certify no single photons; the parties stop
    # inside the protocol (the report carries the bound and its ε ledger).
    out["composable_check_failed"] = run_decoy_session(100_000, seed=2).to_dict()
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return scenarios(tmp_path_factory.mktemp("report"))


CASES = ["honest", "partial_eve", "qber_abort", "tampered", "pki_bootstrap", "pool_round", "pool_round_after",
         "decoy_key", "decoy_check_failed", "composable_check_failed"]


@pytest.mark.parametrize("case", CASES)
def test_to_dict_keeps_its_keys_order_and_types(reports, case):
    pinned = json.loads(VECTORS.read_text())[case]
    assert shape(reports[case]) == pinned


def test_the_pinned_cases_are_what_they_claim(reports):
    r = reports
    assert not r["honest"]["aborted"] and r["honest"]["final_key_bits"] > 0 and r["honest"]["eve"] is None
    assert r["partial_eve"]["eve"]["attack"]["kind"] == "intercept-resend" and not r["partial_eve"]["aborted"]
    assert r["qber_abort"]["abort_reason"] == "qber_too_high" and r["qber_abort"]["cascade"] is None
    assert r["tampered"]["abort_reason"] == "authentication_failed"
    assert r["tampered"]["auth"]["failure"] is not None  # the channel error's class name
    assert r["pki_bootstrap"]["auth"]["bootstrap"] == "pki" and not r["pki_bootstrap"]["aborted"]
    assert r["pool_round_after"]["auth"]["alice_settled"]  # the earlier round settled at this one's start
    assert r["decoy_key"]["report"]["final_key_bits"] > 0
    assert r["decoy_check_failed"] == {**r["decoy_check_failed"], "aborted": True,
                                       "abort_reason": "decoy_check_failed", "report": None}
    c = r["composable_check_failed"]
    assert c["aborted"] and c["abort_reason"] == "decoy_check_failed" and c["composable"]
    assert c["report"]["decoy_key_length"]["length"] == 0 and c["report"]["decoy_key_length"]["ledger"]["terms"]
    assert "certify no single-photon detections" in c["report"]["abort_detail"]


def test_report_values_are_json_and_abort_reasons_plain_strings(reports):
    for case, d in reports.items():
        text = json.dumps(d, allow_nan=True)
        assert json.loads(text).keys() == d.keys(), case
    for case in ("qber_abort", "tampered"):
        assert type(reports[case]["abort_reason"]) is str  # not an enum member in the printed dict


def test_the_typed_report_reads_like_the_dict(reports):
    """Attribute access and mapping access on the report's parts agree with to_dict()."""
    result = qkd.run_bb84(60_000, channel=qkd.Channel(depolarizing=0.04), seed=3)
    report, d = result.report, result.report.to_dict()
    for part in ("qber", "cascade", "verification", "key_length", "auth"):
        value = getattr(report, part)
        assert dict(value) == d[part], part
        assert list(value) == list(d[part]), part
        assert value == d[part], part
        for key in d[part]:
            assert value[key] == d[part][key] or (isinstance(value[key], float) and math.isnan(value[key]))
    assert report.qber.upper == report.qber["upper"] == d["qber"]["upper"]
    assert report.cascade.leaked_bits == d["cascade"]["leaked_bits"]
    assert report.key_length.length == d["key_length"]["length"] == report.final_key_bits + report.auth[
        "pool_bits_added"]
    assert report.auth.get("no such key", "absent") == "absent" and "round" in report.auth
    with pytest.raises(KeyError, match="no such key"):
        report.qber["no such key"]
    abort = qkd.run_bb84(4000, eve=qkd.InterceptResend(1.0), seed=4).report
    assert abort.abort_reason is qkd.AbortReason.QBER_TOO_HIGH and abort.abort_reason == "qber_too_high"


def test_abort_reasons_are_one_enum_everywhere():
    from qkd_circuits.channel.rounds import channel_failure
    from qkd_circuits.decoy import NO_SINGLE_PHOTONS
    from qkd_circuits.postprocessing.protocol import ABORT_REASONS

    assert all(isinstance(r, qkd.AbortReason) for r in ABORT_REASONS) and NO_SINGLE_PHOTONS == "decoy_check_failed"
    assert ABORT_REASONS == ("too_few_sifted_bits", "qber_too_high", "key_too_short", "leak_budget_exceeded",
                             "verification_failed")
    # A network party reports the channel error's kind; an authentication failure by its reason.
    assert [qkd.AbortReason.for_channel_failure(channel_failure(e)) for e in (
        qkd.AuthenticationError(), qkd.LinkHalted(), qkd.ProtocolError("x"), TimeoutError(), ConnectionResetError(),
    )] == ["authentication_failed", "authentication_failed", "ProtocolError", "TimeoutError", "ConnectionError"]
    with pytest.raises(ValueError, match="not a channel failure: 'qber_too_high'"):
        qkd.AbortReason.for_channel_failure("qber_too_high")
    with pytest.raises(TypeError, match="not a channel error: ValueError"):
        channel_failure(ValueError("a bug, not the channel"))


def test_a_party_result_prints_its_abort_reason_as_a_plain_string():
    from qkd_circuits.network import PartyResult

    result = PartyResult("bob", None, qkd.AbortReason.CONNECTION_ERROR, {"round": 3}, 0, None)
    d = result.to_dict()
    assert d["abort_reason"] == "ConnectionError" and type(d["abort_reason"]) is str and d["aborted"]
    assert json.loads(json.dumps(d))["abort_reason"] == "ConnectionError"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shapes = {case: shape(d) for case, d in scenarios(Path(tmp)).items()}
    VECTORS.write_text(json.dumps(shapes, indent=1) + "\n")
    print(f"wrote {VECTORS}")
