"""Printing results: JSON (the default for scripts: ``--json``) and the text report of a round."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["echo_json", "json_default", "print_report", "simulation_notice"]


def json_default(value: Any) -> Any:
    """``json.dumps`` hook: numpy scalars become Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def echo_json(value: Any, **kwargs: Any) -> None:
    """Print ``value`` as one JSON document on stdout."""
    click.echo(json.dumps(value, default=json_default, **kwargs))


#: How the text report names each protocol's round.
_PROTOCOL_NAMES = {"bb84": "BB84", "bbm92": "BBM92", "six-state": "Six-state", "e91": "E91"}


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.4%}"


def simulation_notice(report) -> str:
    """The closing line of a text report: who else can know this round's key.

    A simulator's (``aer``, ``fake:``, ``braket-local``) operator knows every bit; on a cloud
    device (``ibm:``, ``braket:``) the provider and anyone who can read the job results do.  An
    aborted round made no key, so the line says what a key from it would have been.
    """
    backend = str(report.backend)
    device = backend.partition(":")[2]
    if backend.startswith("ibm:"):
        who, verb = f"run on IBM Quantum hardware ({device}): IBM and anyone who can read the job results", "know"
    elif backend.startswith("braket:"):
        who, verb = f"run on Amazon Braket ({device}): Amazon and anyone who can read the task results", "know"
    else:
        who, verb = "simulated: the simulator's operator", "knows"
    if report.aborted:
        return f"  ({who} would know every bit of a key from this round)"
    return f"  ({who} {verb} every bit of this key; for study, not for secrets)"


def _abort_line(report) -> str:
    q = report.qber
    reason = str(report.abort_reason)
    if report.abort_reason == "qber_too_high" and q.get("estimate") is not None and q["estimate"] <= q["threshold"]:
        reason += (f" (the measured {q['estimate']:.2%} is fine: the sample was too small to bound the QBER below "
                   f"{q['threshold']:.0%})")
    elif report.abort_reason == "classroom_round":
        reason += " (every sifted bit was compared in public)"
    return f"  ABORTED: {reason}; no key was output"


def print_report(report) -> None:
    """The human-readable report of one BB84 round (no key bytes: digests only)."""
    q = report.qber
    lines = [
        f"{_PROTOCOL_NAMES.get(getattr(report, 'protocol', 'bb84'), getattr(report, 'protocol', 'bb84'))} round on "
        f"{report.backend} ({report.mode} mode, seed {report.seed})",
        f"  exchanges      {report.exchanges:>12,}",
        f"  detected       {report.detected:>12,}",
        f"  sifted         {report.sifted:>12,}",
        f"  QBER           {_percent(q.get('estimate')):>12}   upper bound {_percent(q.get('upper'))} "
        f"on {report.sample_bits:,} sampled bits",
    ]
    if getattr(report, "chsh", None):
        h = report.chsh
        lines.append(f"  CHSH           S {h['s']:.3f}  [{h['s_lower']:.3f}, {h['s_upper']:.3f}] on {h['test_rounds']:,} "
                     f"test rounds (eps {h['epsilon']:g}); DI rate {h['di_rate']:.3f} (at bounds "
                     f"{h['di_rate_lower']:.3f}), BB84 rate {h['bb84_rate']:.3f}")
    if report.cascade:
        c = report.cascade
        eff = f", efficiency {c['efficiency']:.3f}" if "efficiency" in c else ""
        lines.append(f"  Cascade        {c['variant']}: {c['leaked_bits']:,} parity bits, "
                     f"{c['channel_uses']} round trips{eff}")
    if report.eve:
        e = report.eve
        lines.append(f"  Eve            attacked {e['attacked_fraction']:.1%} of the sifted key; "
                     f"her error where her basis was right: {e['guess_error_right_basis']}")
    if report.auth:
        a = report.auth
        closing = ("signatures" if a["bootstrap"] == "pki"
                   else f"forgery bound per tag {a['forgery_bound']:.1e}" if a["forgery_bound"] else "no tags sent")
        lines.append(f"  auth           {a['bootstrap']} round {a['round']}: pool bits used {a['pool_bits_used']}, "
                     f"added {a['pool_bits_added']}, {closing}" + (f", FAILED ({a['failure']})" if a.get("failure") else ""))
    lines.append("  timings        " + ", ".join(f"{k} {v:.3f} s" for k, v in report.timings_s.items()))
    if report.aborted:
        lines.append(_abort_line(report))
        if getattr(report, "abort_detail", None):
            lines.append(f"  why            {report.abort_detail}")
    else:
        lines.append(f"  final key      {report.final_key_bits:>12,} bits  (sha256 {report.alice_key_sha256[:16]}…, "
                     f"{'same at both ends' if report.alice_key_sha256 == report.bob_key_sha256 else 'KEYS DIFFER'})")
    if getattr(report, "mitm", None):
        m = report.mitm
        lines.append("  man-in-the-middle  " + (
            "detected: the tags did not verify, both ends aborted" if m["detected"] else
            "NOT detected: each party holds a key shared with Eve" if m["key_shared_with"] == "eve" else
            "the round ended without a key"))
    lines.append(simulation_notice(report))
    click.echo("\n".join(lines))
