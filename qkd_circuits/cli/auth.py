"""``qkd psk`` and ``qkd pki``: what bootstraps the authentication of the classical channel."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import exit_codes
from .options import json_option
from .report import echo_json

__all__ = ["pki_group", "psk"]


@click.group("pki")
def pki_group() -> None:
    """A demo X.509 PKI for bootstrapping authentication with signatures."""


@pki_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--algorithm", type=click.Choice(["ed25519", "ml-dsa-65"]), default="ml-dsa-65", show_default=True)
@click.option("--days", type=int, default=30, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@click.option("--site-tls", is_flag=True,
              help="Also write the key-delivery TLS material (CA, KME server certificates with SAN 127.0.0.1 "
                   "and localhost, SAE certificates) into DIR/tls, as 'qkd kme tls-init' does.")
@exit_codes()
def pki_init(directory, algorithm, days, force, site_tls) -> None:
    """Write a demo CA and certificates + private keys for alice and bob."""
    from ..channel import pki

    paths = pki.init_demo_pki(directory, algorithm=algorithm, days=days, overwrite=force)
    if site_tls:
        from ..etsi014 import init_tls_pki

        init_tls_pki(Path(directory) / "tls", days=days, overwrite=force)
    click.echo(f"wrote a demo {algorithm} PKI to {directory}: CA {paths['ca'].name}, "
               + ", ".join(p.name for p in paths["certificates"].values()) + " (keys mode 0600)"
               + (f"; site TLS material in {Path(directory) / 'tls'}" if site_tls else ""))


@click.group()
def psk() -> None:
    """Pre-shared keys that bootstrap the authentication key pool."""


@psk.command("init")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--bits", type=int, default=1 << 16, show_default=True, help="Pool bits (512 per round).")
@click.option("--simulation", is_flag=True,
              help="A pool for seeded simulations: their keys are known to anyone with the seed, so it never "
                   "feeds a key store.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@exit_codes()
def psk_init(path, bits, simulation, force) -> None:
    """Write a fresh PSK file (copy it to the other site over a trusted path)."""
    from ..channel.pool import create_psk_file

    create_psk_file(path, pad_bits=bits, overwrite=force, simulation=simulation)
    kind = "simulation pool" if simulation else "PSK"
    click.echo(f"wrote {path}: a {kind} of {bits} bits, {bits // 512} rounds of tags (mode 0600)")


def _psk_status(pool) -> dict:
    link = pool.link
    return {"epoch": link.epoch.hex(), "next_round": link.next_round, "position": pool.position,
            "available_bits": pool.available_bits, "simulation": link.simulation, "pending_rounds": sorted(link.pending),
            "unconfirmed_rounds": sorted(link.unconfirmed), "failures": link.failures, "halt_after": link.halt_after,
            "halted": link.halted, "records_processed": len(link.processed), "epsilon": link.ledger.to_dict(),
            "state_sha256": pool.state_digest()}


@psk.command("status")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option("Print one JSON object.")
def psk_status(path, as_json) -> None:
    """Show a link state file: round, pool level, pending rounds, halt state, ε ledger (no secrets)."""
    from ..channel.pool import AuthKeyPool

    with exit_codes():
        status = _psk_status(AuthKeyPool.load(path))
    if as_json:
        echo_json(status)
        return
    for key, value in status.items():
        click.echo(f"{key:>20}: {value}")


@psk.command("resume")
@click.argument("path", type=click.Path(dir_okay=False))
@exit_codes()
def psk_resume(path) -> None:
    """Resume a halted link after an operator has inspected both sites (resets the failure count)."""
    from ..channel.pool import AuthKeyPool

    pool = AuthKeyPool.load(path)
    was = pool.link.failures
    pool.link.failures = 0
    pool.save(path)
    click.echo(f"{path}: failure count {was} -> 0; the link may run again")
