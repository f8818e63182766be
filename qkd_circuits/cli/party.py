"""``qkd alice`` / ``qkd bob``: one party of BB84 rounds per process, over TCP."""

from __future__ import annotations

import sys

import click

from ..exceptions import ConfigurationError
from .errors import EXIT_ABORTED, EXIT_OK, exit_codes
from .options import json_option, round_kwargs, round_options
from .report import echo_json

__all__ = ["alice", "bob"]


def _party_command(role: str):
    address_help = ("HOST:PORT to listen on (port 0 picks a free one)" if role == "alice"
                    else "HOST:PORT of Alice")

    def decorate(function):
        for option in reversed([
            click.option("--listen" if role == "alice" else "--connect", "address", required=True, help=address_help),
            click.option("--psk", "psk_file", type=click.Path(dir_okay=False), required=True,
                         help="This party's copy of the PSK / link state file; updated as the round goes."),
            click.option("--record", "record_file", type=click.Path(dir_okay=False), default=None,
                         help="Use this measurement record (from 'qkd run --save-record') instead of simulating."),
            click.option("--timeout", type=float, default=60.0, show_default=True,
                         help="Seconds to wait for the peer at each step."),
            click.option("--rounds", type=click.IntRange(1, 1_000_000), default=1, show_default=True,
                         help="Rounds to run, one connection each (a seeded simulation: a new block each)."),
            json_option("Print one JSON object per round (JSON lines) and nothing else."),
        ]):
            function = option(function)
        return click.command(role, help=f"Run {role.capitalize()}'s side of BB84 rounds over TCP.")(
            round_options()(function))

    return decorate


def _block_seed(seed: int, block: bytes) -> int:
    """The simulation seed of one block: both processes derive it from the shared seed and Bob's block id."""
    import hashlib

    return int.from_bytes(hashlib.sha256(seed.to_bytes(8, "big", signed=True) + block).digest()[:7], "big")


def _party_round(role, *, address, psk_file, record_file, timeout, rounds, as_json, exchanges, **values) -> None:
    from ..channel.pool import AuthKeyPool
    from ..channel.tcp import parse_address
    from ..network import run_alice, run_bob
    from ..records import load_record

    with exit_codes():
        options = round_kwargs(values)
        host, port = parse_address(address)
        config = options.pop("config")
        pool = AuthKeyPool.load(psk_file)
        if record_file:
            if rounds != 1:
                raise ConfigurationError("a record file holds one round: --rounds must be 1 with --record")
            records = load_record(record_file)
        else:
            if options["seed"] is None:
                raise ConfigurationError("two processes share a simulation only through --seed with a simulation "
                                         "pool (qkd psk init --simulation), or use --record FILE")
            from ..channel.admission import refuse_known_keys
            from ..quantum.execution import run_exchanges

            refuse_known_keys(pool, seeded=True)
            seed = options.pop("seed")

            def records(block: bytes):
                return run_exchanges(exchanges, seed=_block_seed(seed, block), **options)

            # Load the simulator once before the peer waits on us (the first run pays for imports).
            run_exchanges(64, seed=_block_seed(seed, b"warm-up"), **options)

        def on_round(result) -> None:
            summary = result.to_dict()
            if as_json:
                echo_json(summary)
                sys.stdout.flush()
                return
            if result.key is not None:
                state = f"final key {summary['final_key_bits']:,} bits, sha256 {summary['key_sha256'][:16]}…"
            elif result.pending:
                state = "PENDING: the key is held until Bob's authenticated decision arrives (next connection)"
            else:
                state = f"ABORTED: {result.abort_reason}; no key was output"
            settled = [s for s in result.settled if s.round != summary["round"]]
            extra = "".join(f"; settled round {s.round}: {s.decision}" for s in settled)
            sim = " [simulation pool: keys known to anyone with the seed]" if pool.simulation else ""
            click.echo(f"{role} round {summary['round']}: {state}{extra}{sim}")

        persist = lambda: pool.save(psk_file)  # noqa: E731
        if role == "alice":
            results = run_alice(records, pool, host=host, port=port, config=config, timeout=timeout,
                                rounds=rounds, persist=persist, on_round=on_round,
                                on_listening=lambda h, p: click.echo(f"listening on {h}:{p}", err=True))
        else:
            results = run_bob(records, pool, host=host, port=port, config=config, timeout=timeout,
                              rounds=rounds, persist=persist, on_round=on_round)
    pool.save(psk_file)
    if pool.link.halted:
        click.echo(f"the link halted after {pool.link.failures} consecutive authentication failures: "
                   f"inspect both sites, then 'qkd psk resume {psk_file}'", err=True)
    sys.exit(EXIT_OK if results and results[-1].key is not None else EXIT_ABORTED)


@_party_command("alice")
def alice(**options) -> None:
    _party_round("alice", **options)


@_party_command("bob")
def bob(**options) -> None:
    _party_round("bob", **options)
