"""``qkd node``: init a site's directory, run its link node, show its status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..exceptions import ConfigurationError, QKDError
from .errors import EXIT_ABORTED, EXIT_BACKEND, EXIT_USAGE, exit_codes
from .options import json_option

__all__ = ["node_group"]

#: A running node's failures are the backend's or the store's (1), a bad configuration is still usage (2).
_RUNNING = {QKDError: EXIT_BACKEND, ConfigurationError: EXIT_USAGE,
            **{cls: (EXIT_BACKEND, "cannot serve: {exc}") for cls in (OSError, ConnectionError, TimeoutError)}}


@click.group("node")
def node_group() -> None:
    """A long-running QKD link node per site: rounds, key store, ETSI 014 KME, metrics.

    Keys made on a simulator are known to whoever runs it: they are for study.
    """


@node_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--role", type=click.Choice(["alice", "bob"]), required=True)
@click.option("--link-id", default="A-B", show_default=True, help="The link's name (the same at both sites).")
@click.option("--psk", "psk_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Copy this PSK file (from 'qkd psk init'; the same at both sites) into DIR/pool.psk.")
@click.option("--tls", "tls_dir", type=click.Path(file_okay=False), default=None,
              help="The site's TLS material for its KME (qkd kme tls-init DIR); default DIR/tls.")
@click.option("--no-kme", is_flag=True, help="Do not run a KME in the node.")
@click.option("--force", is_flag=True, help="Overwrite an existing node.toml / pool.psk.")
def node_init(directory, role, link_id, psk_file, tls_dir, no_kme, force) -> None:
    """Write DIR/node.toml (commented defaults for a loopback demo) and copy the PSK."""
    from ..node.config import CONFIG_NAME, default_config_text
    from ..secretfile import write_secret_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    with exit_codes():
        write_secret_file(d / CONFIG_NAME, default_config_text(role, link_id=link_id, kme=not no_kme,
                                                              tls=str(Path(tls_dir).resolve()) if tls_dir else "tls").encode(),
                          overwrite=force)
        if psk_file:
            write_secret_file(d / "pool.psk", Path(psk_file).read_bytes(), overwrite=force)
    click.echo(f"wrote {d / CONFIG_NAME}" + (f" and {d / 'pool.psk'}" if psk_file else ""))


@node_group.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The configuration file (default DIR/node.toml).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a configuration key, e.g. --set stock.high=500 (repeatable).")
@click.option("--classical", default=None, help="Override link.classical (HOST:PORT).")
@click.option("--quantum", default=None, help="Override link.quantum (HOST:PORT).")
@click.option("--metrics-listen", default=None, help="Override metrics.listen (HOST:PORT).")
@click.option("--log-format", type=click.Choice(["json", "text"]), default=None, help="Override log.format.")
@click.option("--rounds", type=click.IntRange(1), default=None,
              help="Stop after this many rounds (Bob: attempts, Alice: connections); default: run on.")
def node_run(directory, config_file, overrides, classical, quantum, metrics_listen, log_format, rounds) -> None:
    """Run this site's link node until SIGTERM / SIGINT (or --rounds)."""
    from ..node.config import load_config
    from ..node.service import Node, configure_logging, install_signal_handlers

    extra = list(overrides)
    for key, value in (("link.classical", classical), ("link.quantum", quantum),
                       ("metrics.listen", metrics_listen), ("log.format", log_format)):
        if value is not None:
            extra.append(f"{key}={json.dumps(value)}")
    with exit_codes():
        config = load_config(directory, file=config_file, overrides=extra)
        configure_logging(config["log"]["format"])
        node = Node(config, rounds=rounds)
    install_signal_handlers(node)
    with exit_codes(_RUNNING):
        code = node.run()
    if code == EXIT_ABORTED:
        click.echo(f"the link halted after repeated authentication failures: inspect both sites, then "
                   f"'qkd psk resume {config.path(config['pool'])}'", err=True)
    sys.exit(code)


@node_group.command("status")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@json_option("Print the status as one JSON object.")
def node_status(directory, as_json) -> None:
    """This site's node: link state, stock, last round (from its status file and store)."""
    from ..keystore import KeyStore
    from ..node.config import load_config
    from ..node.service import read_status

    with exit_codes():
        config = load_config(directory)
        status = read_status(directory)
        store = KeyStore(config.path(config["store"]))
        status["stock"]["free_now"] = store.count_free()
        status["stock"]["stored_now"] = store.count()
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
        return
    stock, last = status["stock"], status.get("last_round") or {}
    lines = [f"{status['role']} node of link {status['link_id']} (epoch {status['epoch'][:8]}…, pid {status['pid']})",
             f"  next round {status['next_round']}; pool {status['pool_bits_available']:,} bits; "
             f"{'HALTED' if status['halted'] else 'running'}{'; paused by pacing' if status['paused'] else ''}",
             f"  stock {stock['free_now']:,} free keys of {stock['key_size']} bits "
             f"(low {stock['low']:,}, high {stock['high']:,}, max {stock['max_key_count']:,})",
             f"  rounds {status['counts']['rounds']:,}: {status['counts']['keys_made']:,} keys made; "
             f"secret key rate {status['secret_key_rate_bits_per_s']:,.0f} bit/s into the store",
             f"  pending {status['pending_rounds']} unconfirmed {status['unconfirmed_rounds']} "
             f"outbox {status['outbox_rounds']}",
             f"  last round {last.get('round')}: {last.get('outcome')} {last.get('reason') or ''}".rstrip()]
    click.echo("\n".join(lines))


