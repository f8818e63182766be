"""``qkd kme status / get-key / get-key-with-ids / audit``: an SAE's side of ETSI GS QKD 014 (and the
site's delivery log); registered on the ``qkd kme`` group by :mod:`qkd_circuits.cli.kme`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..exceptions import BackendError, ConfigurationError, MissingExtraError, QKDError
from .errors import EXIT_ABORTED, EXIT_BACKEND, EXIT_USAGE, exit_codes, fail

__all__ = ["CLIENT_COMMANDS", "kme_audit", "kme_get_key", "kme_get_key_with_ids", "kme_status"]


def _tls_files(directory: str, name: str) -> tuple[Path, Path, Path]:
    d = Path(directory)
    files = (d / f"{name}.pem", d / f"{name}.key", d / "ca.pem")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        fail(f"missing TLS files {missing}: run 'qkd kme tls-init {directory}'", EXIT_USAGE)
    return files




def _kme_client(url: str, tls_dir: str, sae: str, unwrap_with: bytes | None = None):
    from urllib.parse import urlsplit

    from ..etsi014 import KmeClient, client_context

    if url.startswith("unix:"):
        return KmeClient(unix_path=url[5:], unwrap_with=unwrap_with)  # the kernel names us: no certificate
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or not parts.port:
        fail(f"--kme must be https://HOST:PORT or unix:PATH, got {url!r}", EXIT_USAGE)
    if not (tls_dir and sae):
        fail("--tls DIR and --sae ID are needed for an https KME", EXIT_USAGE)
    return KmeClient(parts.hostname, parts.port, client_context(*_tls_files(tls_dir, sae)), unwrap_with=unwrap_with)


def _unwrap_key_file(path):
    """The wrapping private key of ``--unwrap PRIVFILE`` (None without it); a bad file exits 2."""
    if path is None:
        return None
    from ..etsi014.wrap import load_wrapping_key

    with exit_codes():
        try:
            return load_wrapping_key(path)
        except QKDError as exc:
            raise ConfigurationError(f"--unwrap {path}: {exc}") from None


#: A client's view: a refused or mismatched delivery is the protocol saying no (3, with the class:
#: no key bytes in it); a KME out of reach is a backend failure (1).
_CLIENT_EXITS = {QKDError: (EXIT_ABORTED, "{type}: {exc}"), BackendError: (EXIT_ABORTED, "{type}: {exc}"),
                 MissingExtraError: (EXIT_ABORTED, "{type}: {exc}"),
                 **{cls: (EXIT_BACKEND, "cannot reach the KME: {exc}") for cls in (OSError, ConnectionError, TimeoutError)}}


def _kme_call(fn) -> None:
    from ..etsi014 import Etsi014Error

    with exit_codes(_CLIENT_EXITS):
        try:
            click.echo(json.dumps(fn()))
        except Etsi014Error as exc:
            click.echo(json.dumps({"status": exc.status, **exc.body}))
            sys.exit(EXIT_ABORTED)


def _client_options(command):
    for option in reversed([
        click.option("--kme", "url", required=True, help="https://HOST:PORT or unix:PATH of your site's KME."),
        click.option("--tls", "tls_dir", default=None, type=click.Path(file_okay=False), help="For https."),
        click.option("--sae", default=None, help="Your SAE ID (your certificate's CN in --tls), for https."),
    ]):
        command = option(command)
    return command


_UNWRAP = click.option("--unwrap", "unwrap_file", default=None, type=click.Path(dir_okay=False), metavar="PRIVFILE",
                       help="Unwrap the keys with this wrapping private key (the KME wraps for this SAE).")


def _keys_json(keys) -> dict:
    import base64

    return {"keys": [{"key_ID": k, "key": base64.b64encode(v).decode()} for k, v in keys]}


@click.command("status")
@_client_options
@click.option("--slave", required=True)
def kme_status(url, tls_dir, sae, slave) -> None:
    """Get status for a slave SAE (JSON)."""
    _kme_call(lambda: _kme_client(url, tls_dir, sae).status(slave))


@click.command("get-key")
@_client_options
@click.option("--slave", required=True)
@click.option("--number", type=int, default=1, show_default=True)
@click.option("--also", "additional", multiple=True, help="An additional slave SAE (repeatable).")
@_UNWRAP
def kme_get_key(url, tls_dir, sae, slave, number, additional, unwrap_file) -> None:
    """Get keys as master for a slave SAE (prints key_IDs and base64 keys as JSON)."""
    private = _unwrap_key_file(unwrap_file)
    _kme_call(lambda: _keys_json(_kme_client(url, tls_dir, sae, private).get_key(
        slave, number=number, additional_slave_SAE_IDs=list(additional))))


@click.command("get-key-with-ids")
@_client_options
@click.option("--master", required=True)
@click.argument("key_ids", nargs=-1, required=True)
@_UNWRAP
def kme_get_key_with_ids(url, tls_dir, sae, master, key_ids, unwrap_file) -> None:
    """Get keys by ID as a slave of MASTER (JSON)."""
    private = _unwrap_key_file(unwrap_file)
    _kme_call(lambda: _keys_json(_kme_client(url, tls_dir, sae, private).get_key_with_ids(master, list(key_ids))))


@click.command("audit")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False, exists=True))
@exit_codes()
def kme_audit(store_path) -> None:
    """Print a site's delivery log (time, key_ID, SAE, action) as JSON lines; never key bytes."""
    from ..keystore import KeyStore

    for when, key_ID, sae, action in KeyStore(store_path).audit():
        click.echo(json.dumps({"time": when, "key_ID": key_ID, "SAE_ID": sae, "action": action}))


CLIENT_COMMANDS = (kme_status, kme_get_key, kme_get_key_with_ids, kme_audit)
