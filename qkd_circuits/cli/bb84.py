"""``qkd run``: one BB84 round in this process (both parties), optionally authenticated, attacked,
stored into site key stores or recorded; ``--protocol bbm92|six-state`` runs those protocols'
circuits through the same post-processing (:func:`qkd_circuits.session.run_round`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..exceptions import ConfigurationError
from .errors import EXIT_ABORTED, EXIT_OK, exit_codes
from .options import json_option, output_file, round_kwargs, round_options
from .report import echo_json, print_report

__all__ = ["PROGRESS_MIN_EXCHANGES", "run"]

#: Below this many pulses a run is quick and gets no progress bar.
PROGRESS_MIN_EXCHANGES = 1 << 21


#: ``--protocol`` choices (:data:`qkd_circuits.protocols.PROTOCOLS`; listed here so that ``--help`` loads nothing).
PROTOCOL_NAMES = ("bb84", "bbm92", "six-state", "e91")


@click.command()
@round_options()
@click.option("--protocol", type=click.Choice(PROTOCOL_NAMES), default="bb84", show_default=True,
              help="bb84; bbm92 (Bell pairs, Z/X); six-state (Z/X/Y); e91 (Bell pairs, CHSH test rounds; aborts "
                   "chsh_not_violated when S_lower <= 2). bbm92, six-state and e91 run prepared, one lane "
                   "(bbm92 over a lossy link only with --source alice); their default --abort-qber is the "
                   "protocol's threshold (11.0%, 12.6%).")
@click.option("--source", type=click.Choice(("alice", "middle", "bob")), default=None,
              help="bbm92: where the pair source sits  [default: middle]")
@click.option("--eve-arm", type=click.Choice(("alice", "bob")), default=None,
              help="bbm92: the arm --eve attacks (a channel arm)  [default: bob]")
@click.option("--psk", "psk_file", type=click.Path(dir_okay=False), default=None,
              help="Authentication key pool (from 'qkd psk init'); updated in place after the round.")
@click.option("--pki", "pki_dir", type=click.Path(file_okay=False), default=None,
              help="Bootstrap with X.509 signatures (from 'qkd pki init'); writes DIR/pool.psk for later rounds.")
@click.option("--attack", type=click.Choice(["tamper", "replay", "reorder", "drop"]), default=None,
              help="An active attacker on the classical channel.")
@click.option("--mitm", is_flag=True, help="A classical man-in-the-middle between the parties.")
@click.option("--no-authentication", "unauthenticated", is_flag=True,
              help="With --mitm: the parties do not authenticate, so Eve's keys go unnoticed (a lesson).")
@click.option("--store-a", type=click.Path(dir_okay=False), default=None,
              help="Put Alice's final key into this site key store (for 'qkd kme serve').")
@click.option("--store-b", type=click.Path(dir_okay=False), default=None, help="The same for Bob's key.")
@click.option("--link-id", default="A-B", show_default=True, help="Link name in the key IDs both sites derive.")
@click.option("--save-record", type=click.Path(dir_okay=False), default=None, callback=output_file,
              help="Write the measurement record (.npz; holds Alice's raw bits).")
@click.option("--show-bits", type=click.IntRange(min=1), default=None, metavar="N",
              help="Print the first N pulses: Alice's bit and basis, Eve, Bob's basis and result, kept or not.")
@click.option("--classroom", is_flag=True,
              help="A lesson's round: sift, then compare every sifted bit in public (QBER, no key, by design).")
@json_option()
def run(exchanges, protocol, source, eve_arm, psk_file, pki_dir, attack, mitm, unauthenticated, store_a, store_b,
        link_id, save_record, show_bits, classroom, as_json, **values) -> None:
    """Run one BB84 round (or, with --protocol, BBM92 or six-state) and print its report.

    For a lesson: --show-bits N prints the first N pulses, and --classroom compares every sifted
    bit in public (the QBER of the whole sifted key; no key is left).  A short round says in its
    report why it made no key and how many pulses one would need.
    """
    from ..channel.pool import AuthKeyPool
    from ..session import run_bb84, run_round

    with exit_codes():
        explicit = {name for name in ("mode", "lanes", "schedule", "abort_qber")
                    if click.get_current_context().get_parameter_source(name).name != "DEFAULT"}
        options = round_kwargs(values)
        if protocol != "bb84":
            options = _protocol_options(protocol, options, explicit, mitm=mitm, classroom=classroom,
                                        show_bits=show_bits)
            options.update({k: v for k, v in (("source", source), ("eve_arm", eve_arm)) if v is not None})
        elif source or eve_arm:
            raise ConfigurationError("--source and --eve-arm place a BBM92 pair source: use them with --protocol bbm92")
        options["on_warning"] = lambda warning: click.echo(f"WARNING: {warning}", err=True)  # before any job is sent
        if psk_file and pki_dir:
            raise ConfigurationError("choose one bootstrap: --psk FILE or --pki DIR")
        if unauthenticated and not mitm:
            raise ConfigurationError("--no-authentication only goes with --mitm (every other round authenticates)")
        if (show_bits or classroom) and (store_a or store_b or psk_file or pki_dir):
            raise ConfigurationError("--show-bits and --classroom print raw key material: they do not go with "
                                     "--store-a/--store-b/--psk/--pki, whose keys are kept")
        if show_bits and mitm:
            raise ConfigurationError("--show-bits shows one link's pulses; a man-in-the-middle round has two")
        if classroom and (mitm or attack):
            raise ConfigurationError("--classroom runs no classical protocol to attack: drop --mitm/--attack")
        if classroom:
            _run_classroom(exchanges, options, show_bits or 16, save_record, as_json)
        pool = AuthKeyPool.load(psk_file) if psk_file else None
        if pki_dir:
            options.update(_pki_identities(pki_dir))
        if mitm:
            _run_mitm(exchanges, options, pool, as_json, authenticated=not unauthenticated)
        if pool is not None:
            options.update(alice_pool=pool, bob_pool=pool.copy())
        if (store_a or store_b) and (options["seed"] is not None or (pool is not None and pool.simulation)):
            raise ConfigurationError("a seeded round's key (or one authenticated by a simulation pool) is known to "
                                     "anyone with the seed: it never goes into a key store; omit --seed")
        if attack:
            from ..channel.attacks import ATTACKS

            options["attack"] = ATTACKS[attack]
        if protocol != "bb84":
            result = run_round(exchanges, protocol=protocol, **options)
        elif as_json or exchanges < PROGRESS_MIN_EXCHANGES:
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
    _finish(result.report, result.record, show_bits, save_record, as_json)


def _protocol_options(protocol, options, explicit, *, mitm, classroom, show_bits) -> dict:
    """``qkd run --protocol bbm92|six-state``: the round's options for :func:`~qkd_circuits.session.run_round`."""
    import dataclasses

    from ..protocols import get_protocol

    if mitm or classroom or show_bits:
        raise ConfigurationError(f"--mitm, --classroom and --show-bits are BB84 lessons; drop them with --protocol "
                                 f"{protocol}")
    wrong = [f"--{name.replace('_', '-')}" for name in ("mode", "lanes", "schedule") if name in explicit]
    if wrong:
        raise ConfigurationError(f"--protocol {protocol} runs the parties' own choices, one lane, grouped: drop "
                                 f"{', '.join(wrong)}")
    options = {k: v for k, v in options.items() if k not in ("mode", "lanes", "schedule")}
    config = dataclasses.replace(options["config"], protocol=protocol)
    if "abort_qber" not in explicit:
        config = dataclasses.replace(config, abort_qber=get_protocol(protocol).abort_qber)
    options["config"] = config
    return options


def _finish(report, record, show_bits, save_record, as_json) -> None:
    """Print the report (and the pulse table), then save the record: a failed write loses no result."""
    if as_json:
        out = report.to_dict()
        if show_bits:
            from ..teaching import pulse_table

            out["pulses"] = pulse_table(record, show_bits)
        echo_json(out)
    else:
        if show_bits:
            from ..teaching import format_pulse_table, pulse_table

            click.echo(format_pulse_table(pulse_table(record, show_bits)))
            click.echo()
        print_report(report)
    if save_record:
        with exit_codes({OSError: (2, "cannot write the record: {exc}")}):
            record.save(save_record)
    sys.exit(EXIT_ABORTED if report.aborted else EXIT_OK)


def _run_classroom(exchanges, options, show_bits, save_record, as_json) -> None:
    import time

    from ..quantum.execution import submit
    from ..session import classroom_report

    config = options.pop("config")
    t0 = time.perf_counter()
    record = submit(exchanges, **options).result()
    report = classroom_report(record, config, timings_s={"quantum": time.perf_counter() - t0})
    if not as_json:
        click.echo("Classroom round: Alice and Bob keep the pulses where their bases agreed, then compare every kept "
                   "bit in public.")
    _finish(report, record, show_bits, save_record, as_json)


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


def _run_mitm(exchanges, options, pool, as_json, *, authenticated: bool) -> None:
    """``--mitm``: the report of Bob's leg in the schema of every round, with ``mitm`` (what Eve achieved)."""
    from ..session import run_mitm

    options = {k: v for k, v in options.items() if not k.endswith("_pki")}
    pools = {} if pool is None else {"alice_pool": pool, "bob_pool": pool.copy()}
    result = run_mitm(exchanges, authenticated=authenticated, **pools, **options)
    if not as_json:
        click.echo("Classical man-in-the-middle: Eve runs BB84 with Alice and with Bob separately"
                   + ("." if authenticated else ", and the parties do not authenticate."))
    _finish(result.report, None, None, None, as_json)


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
