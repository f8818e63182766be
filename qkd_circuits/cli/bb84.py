"""``qkd run``: one BB84 round in this process (both parties), optionally authenticated, attacked,
stored into site key stores or recorded."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..exceptions import AbortReason, ConfigurationError
from .errors import EXIT_ABORTED, EXIT_OK, exit_codes
from .options import json_option, round_kwargs, round_options
from .report import echo_json, print_report

__all__ = ["PROGRESS_MIN_EXCHANGES", "run"]

#: Below this many pulses a run is quick and gets no progress bar.
PROGRESS_MIN_EXCHANGES = 1 << 21


@click.command()
@round_options()
@click.option("--psk", "psk_file", type=click.Path(dir_okay=False), default=None,
              help="Authentication key pool (from 'qkd psk init'); updated in place after the round.")
@click.option("--pki", "pki_dir", type=click.Path(file_okay=False), default=None,
              help="Bootstrap with X.509 signatures (from 'qkd pki init'); writes DIR/pool.psk for later rounds.")
@click.option("--attack", type=click.Choice(["tamper", "replay", "reorder", "drop"]), default=None,
              help="An active attacker on the classical channel.")
@click.option("--mitm", is_flag=True, help="A classical man-in-the-middle between the parties.")
@click.option("--store-a", type=click.Path(dir_okay=False), default=None,
              help="Put Alice's final key into this site key store (for 'qkd kme serve').")
@click.option("--store-b", type=click.Path(dir_okay=False), default=None, help="The same for Bob's key.")
@click.option("--link-id", default="A-B", show_default=True, help="Link name in the key IDs both sites derive.")
@click.option("--save-record", type=click.Path(dir_okay=False), default=None,
              help="Write the measurement record (.npz; holds Alice's raw bits).")
@json_option()
def run(exchanges, psk_file, pki_dir, attack, mitm, store_a, store_b, link_id, save_record, as_json,
        **values) -> None:
    """Run one BB84 round and print its report."""
    from ..channel.pool import AuthKeyPool
    from ..session import run_bb84

    with exit_codes():
        options = round_kwargs(values)
        if psk_file and pki_dir:
            raise ConfigurationError("choose one bootstrap: --psk FILE or --pki DIR")
        pool = AuthKeyPool.load(psk_file) if psk_file else None
        if pki_dir:
            options.update(_pki_identities(pki_dir))
        if mitm:
            _run_mitm(exchanges, options, pool, as_json)
        if pool is not None:
            options.update(alice_pool=pool, bob_pool=pool.copy())
        if (store_a or store_b) and (options["seed"] is not None or (pool is not None and pool.simulation)):
            raise ConfigurationError("a seeded round's key (or one authenticated by a simulation pool) is known to "
                                     "anyone with the seed: it never goes into a key store; omit --seed")
        if attack:
            from ..channel.attacks import ATTACKS

            options["attack"] = ATTACKS[attack]
        if as_json or exchanges < PROGRESS_MIN_EXCHANGES:
            result = run_bb84(exchanges, **options)
        else:
            with click.progressbar(length=exchanges, label="exchanges", file=sys.stderr) as bar:
                result = run_bb84(exchanges, progress=lambda done, total: bar.update(done - bar.pos), **options)
    if pool is not None:
        options["bob_pool"].save(psk_file)  # Bob's view: he decides each round (Alice's copy follows him)
    if pki_dir and result.pools is not None and not result.report.aborted:
        result.pools[1].save(Path(pki_dir) / "pool.psk")
        if not as_json:
            click.echo(f"the signed round seeded the key pool: continue with --psk {Path(pki_dir) / 'pool.psk'}",
                       err=True)
    if (store_a or store_b) and not result.report.aborted:
        _store_keys(result, store_a, store_b, link_id, result.report.auth.get("round") if pool is not None else None,
                    pool.epoch if pool is not None else b"")
    if save_record:
        result.record.save(save_record)
    report = result.report
    if as_json:
        echo_json(report.to_dict())
    else:
        print_report(report)
    sys.exit(EXIT_ABORTED if report.aborted else EXIT_OK)


def _store_keys(result, store_a, store_b, link_id, round_number, epoch: bytes = b"") -> None:
    import secrets

    from ..keystore import KeyStore, store_final_key

    # Key IDs come from (link, pool epoch, round, index), so a re-bootstrapped PSK never reuses
    # them; a round without a PSK has no number or epoch, so use a fresh random round number
    # (both sites are stored from this process, so they agree).
    round_id = round_number if round_number is not None else secrets.randbits(62)
    for path, key in ((store_a, result.alice_key), (store_b, result.bob_key)):
        if path:
            with exit_codes():
                stored = store_final_key(KeyStore(path), key, link_id=link_id, round_number=round_id, epoch=epoch)
            click.echo(f"stored {stored} keys of 256 bits in {path}", err=True)


def _run_mitm(exchanges, options, pool, as_json) -> None:
    from ..session import run_mitm

    options = {k: v for k, v in options.items() if not k.endswith("_pki")}
    pools = {} if pool is None else {"alice_pool": pool, "bob_pool": pool.copy()}
    result = run_mitm(exchanges, **pools, **options)
    summary = {
        "mitm": True, "authenticated": result.authenticated, "detected": result.detected,
        "aborted": result.alice_key is None or result.bob_key is None,
        "abort_reason": AbortReason.AUTHENTICATION_FAILED if result.detected else None,
        "alice_failure": result.alice_failure, "bob_failure": result.bob_failure,
        "alice_key_sha256": result.alice_key.sha256() if result.alice_key else None,
        "bob_key_sha256": result.bob_key.sha256() if result.bob_key else None,
    }
    if as_json:
        echo_json(summary)
    else:
        click.echo("Classical man-in-the-middle: Eve runs BB84 with Alice and with Bob separately.")
        click.echo("  detected: the round aborted at both ends, no key was output" if result.detected
                   else "  NOT detected: each party holds a key shared with Eve")
    sys.exit(EXIT_ABORTED if summary["aborted"] else EXIT_OK)


def _pki_identities(directory) -> dict:
    from cryptography import x509

    from ..channel import pki
    from ..channel.authenticated import PkiIdentity

    try:
        anchor = x509.load_pem_x509_certificate((Path(directory) / "ca.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the CA certificate in {directory}: {exc}; "
                                 f"run 'qkd pki init {directory}'") from None
    return {"alice_pki": PkiIdentity(pki.load_credentials(directory, "alice"), anchor, "bob"),
            "bob_pki": PkiIdentity(pki.load_credentials(directory, "bob"), anchor, "alice")}
