"""``qkd kme``: ETSI GS QKD 014 key delivery (a site's KME server, its TLS material, SAE clients)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..exceptions import ConfigurationError
from .errors import EXIT_USAGE, exit_codes, fail
from .kme_client import CLIENT_COMMANDS, _tls_files

__all__ = ["kme"]


@click.group()
def kme() -> None:
    """ETSI GS QKD 014 key delivery: serve a site's keys to its SAEs over mutual TLS."""


@kme.command("tls-init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--kme", "kmes", multiple=True, default=("kme-a", "kme-b"), show_default=True)
@click.option("--sae", "saes", multiple=True, default=("sae-a", "sae-b"), show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@exit_codes()
def kme_tls_init(directory, kmes, saes, force) -> None:
    """Write a demo CA and certificates for the KMEs and SAEs (the CN is the ID)."""
    from ..etsi014 import init_tls_pki

    init_tls_pki(directory, kmes=tuple(kmes), saes=tuple(saes), overwrite=force)
    click.echo(f"wrote {directory}/ca.pem and certificates for {', '.join((*kmes, *saes))}")


@kme.command("wrap-keygen")
@click.argument("private_file", metavar="PRIVFILE", type=click.Path(dir_okay=False))
@click.argument("public_file", metavar="PUBFILE", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@exit_codes({OSError: EXIT_USAGE})
def kme_wrap_keygen(private_file, public_file, force) -> None:
    """Make an SAE's wrapping key pair (ML-KEM-768 + X25519): PRIVFILE stays with the SAE
    ('get-key --unwrap PRIVFILE'), PUBFILE goes to its KME ('serve --wrap-for SAE=PUBFILE').
    Both files are written mode 0600."""
    from ..etsi014 import wrap

    if Path(private_file).resolve() == Path(public_file).resolve():
        fail("PRIVFILE and PUBFILE must be different files", EXIT_USAGE)
    if not force:
        existing = [f for f in (private_file, public_file) if Path(f).exists() or Path(f).is_symlink()]
        if existing:
            fail(f"{', '.join(existing)} exists; use --force to overwrite", EXIT_USAGE)
    private, public = wrap.generate_wrapping_keypair()
    wrap.save_wrapping_key(private_file, private, overwrite=force)
    wrap.save_wrapping_public(public_file, public, overwrite=force)
    click.echo(f"wrote the wrapping private key {private_file} (keep it with the SAE) and its public key "
               f"{public_file} (for the KME: --wrap-for SAE={public_file})")


def _tls_material(kme_id, tls_dir, cert, key, ca):
    """The KME's (certificate, key, CA) from --cert/--key/--ca (a foreign PKI) or --tls DIR."""
    given = [x for x in (cert, key, ca) if x]
    if given and len(given) != 3:
        fail("--cert, --key and --ca go together", EXIT_USAGE)
    if given:
        missing = [str(f) for f in (cert, key, ca) if not Path(f).exists()]
        if missing:
            fail(f"missing TLS files {missing}", EXIT_USAGE)
        return Path(cert), Path(key), Path(ca)
    if tls_dir:
        return _tls_files(tls_dir, kme_id)
    return None, None, None


@kme.command("serve")
@click.option("--id", "kme_id", required=True, help="This KME's ID (its certificate's CN in --tls).")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False), help="The site's key store.")
@click.option("--tls", "tls_dir", default=None, type=click.Path(file_okay=False),
              help="TLS material (required for TCP and for a peer KME, unless --cert/--key/--ca).")
@click.option("--cert", default=None, type=click.Path(dir_okay=False), help="This KME's certificate (PEM).")
@click.option("--key", "key_file", default=None, type=click.Path(dir_okay=False), help="Its private key (PEM).")
@click.option("--ca", default=None, type=click.Path(dir_okay=False), help="The CA that signs SAEs and the peer.")
@click.option("--listen", default="127.0.0.1:8443", show_default=True)
@click.option("--unix", "unix_path", default=None, type=click.Path(dir_okay=False),
              help="Serve on this Unix socket instead (mode 0600; no network at all).")
@click.option("--uid-sae", "uid_saes", multiple=True, metavar="UID=SAE",
              help="On --unix: the SAE ID of a local user id (repeatable).")
@click.option("--unix-mode", default="600", show_default=True,
              help="Octal mode of the socket file (660 lets a shared group's users connect).")
@click.option("--also-tcp", is_flag=True, help="With --unix: also listen on --listen with mutual TLS (peer KME).")
@click.option("--sae", "saes", multiple=True, required=True, help="An SAE attached to this site (repeatable).")
@click.option("--peer-id", default=None, help="The KME at the other end of the link.")
@click.option("--peer-url", default=None, help="https://HOST:PORT of the peer KME.")
@click.option("--peer-sae", "peer_saes", multiple=True, help="An SAE attached to the peer site (repeatable).")
@click.option("--key-size", type=int, default=256, show_default=True,
              help="The stock unit and default key size in bits (a positive multiple of 8).")
@click.option("--max-key-size", type=int, default=None, help="Largest key served, bits [default: 8 x --key-size].")
@click.option("--max-key-count", type=int, default=100_000, show_default=True, help="Most keys the store holds.")
@click.option("--max-keys-per-request", type=int, default=128, show_default=True)
@click.option("--max-sae-id-count", type=int, default=8, show_default=True,
              help="Most additional_slave_SAE_IDs in one request.")
@click.option("--peer-timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the peer KME to record an assignment (retries included).")
@click.option("--store-timeout", type=float, default=5.0, show_default=True,
              help="SQLite busy timeout, seconds (keep it below the peer's --peer-timeout).")
@click.option("--metrics-listen", default=None, metavar="HOST:PORT",
              help="Also serve /health and /metrics over plain HTTP here (loopback!) [default: off].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="One line per request on stderr: key=value text or JSON.")
@click.option("--wrap-for", "wrap_for", multiple=True, metavar="SAE=PUBFILE",
              help="Wrap every key handed to this --sae for its wrapping public key (from "
                   "'qkd kme wrap-keygen'; repeatable).")
def kme_serve(kme_id, store_path, tls_dir, cert, key_file, ca, listen, unix_path, uid_saes, unix_mode, also_tcp, saes,
              peer_id, peer_url, peer_saes, key_size, max_key_size, max_key_count, max_keys_per_request,
              max_sae_id_count, peer_timeout, store_timeout, metrics_listen, log_format, wrap_for) -> None:
    """Serve one site's key store over ETSI GS QKD 014 until SIGINT or SIGTERM (then finish the
    requests in flight, close the store and exit 0)."""
    import logging
    import signal
    import threading

    from ..channel.tcp import parse_address
    from ..etsi014 import KmeConfig, client_context, server_context, start_kme
    from ..etsi014.server import JsonLogFormatter
    from ..keystore import KeyStore

    cert, key, ca = _tls_material(kme_id, tls_dir, cert, key_file, ca)
    if cert is None and (unix_path is None or peer_url or also_tcp):
        fail("--tls DIR (or --cert/--key/--ca) is needed to serve over TCP or to reach a peer KME", EXIT_USAGE)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter("%(message)s"))
    kme_log = logging.getLogger("qkd_circuits.kme")
    kme_log.addHandler(handler)
    kme_log.setLevel(logging.INFO)
    kme_log.propagate = False
    store = None
    # A taken address or an unreadable file is the operator's to fix: usage, like a bad option.
    with exit_codes({OSError: (EXIT_USAGE, "cannot serve: {exc}"), ConnectionError: (EXIT_USAGE, "cannot serve: {exc}")}):
        try:
            uid_map = {}
            for item in uid_saes:
                uid, sep, sae = item.partition("=")
                if not sep or not uid.isdigit() or not sae:
                    raise ConfigurationError(f"--uid-sae takes UID=SAE, got {item!r}")
                uid_map[int(uid)] = sae
            wrap_keys = {}
            for item in wrap_for:
                sae, sep, pubfile = item.partition("=")
                if not sep or not sae or not pubfile:
                    raise ConfigurationError(f"--wrap-for takes SAE=PUBFILE, got {item!r}")
                if sae not in saes:
                    raise ConfigurationError(f"--wrap-for {sae}: not an SAE of this KME (give it with --sae)")
                if sae in wrap_keys:
                    raise ConfigurationError(f"--wrap-for {sae} is given twice")
                from ..etsi014.wrap import load_wrapping_public

                wrap_keys[sae] = load_wrapping_public(pubfile)
            config = KmeConfig(KME_ID=kme_id, local_SAEs=frozenset(saes), peer_KME_ID=peer_id,
                               remote_SAEs=frozenset(peer_saes), peer_url=peer_url, key_size=key_size,
                               max_key_size=max_key_size, max_key_count=max_key_count,
                               max_key_per_request=max_keys_per_request, max_SAE_ID_count=max_sae_id_count,
                               peer_timeout=peer_timeout,
                               peer_ssl=client_context(cert, key, ca) if peer_url else None, uid_SAEs=uid_map,
                               wrap_keys=wrap_keys)
            try:
                mode = int(unix_mode, 8)
            except ValueError:
                raise ConfigurationError(f"--unix-mode must be octal, got {unix_mode!r}") from None
            if not store_timeout > 0:
                raise ConfigurationError(f"--store-timeout must be positive, got {store_timeout}")
            host, port = parse_address(listen)
            tcp = unix_path is None or also_tcp
            store = KeyStore(store_path, timeout=store_timeout, max_key_count=max_key_count)
            running = start_kme(config, store, host=host, port=port, unix_path=unix_path, unix_mode=mode,
                                ssl_context=server_context(cert, key, ca) if tcp else None,
                                metrics_listen=metrics_listen)
        except BaseException:
            if store is not None:
                store.close()
            raise
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    where = " and ".join(([f"unix:{unix_path}"] if unix_path else []) + ([running.url] if running.port else []))
    extra = f"; metrics on http://{metrics_listen.rsplit(':', 1)[0]}:{running.metrics_port}" if metrics_listen else ""
    if wrap_for:
        extra += f"; wrapping keys for {', '.join(sorted(config.wrap_keys))}"
    click.echo(f"{kme_id} serving ETSI GS QKD 014 on {where} (recovered: {running.recovery}){extra}", err=True)
    while not stop.wait(3600):
        pass
    running.stop()  # in-flight requests finish first
    store.close()
    click.echo(f"{kme_id} stopped", err=True)


for _command in CLIENT_COMMANDS:
    kme.add_command(_command)
