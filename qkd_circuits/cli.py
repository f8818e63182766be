"""The ``qkd`` command line.

Exit codes: 0 a key was made, 3 the protocol aborted (reason in the report), 2 bad usage,
1 a backend failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .channel.attacks import ATTACKS
from .channel.pool import AuthKeyPool, create_psk_file
from .exceptions import BackendError, ConfigurationError, QKDError
from .hazmat.cascade import PRESETS as CASCADE_PRESETS
from .postprocessing.protocol import PostProcessingConfig
from .quantum.models import Channel, Detector, parse_eve, parse_noise

EXIT_OK, EXIT_BACKEND, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
#: Below this many pulses a run is quick and gets no progress bar.
PROGRESS_MIN_EXCHANGES = 1 << 21


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qkd_circuits")
def main() -> None:
    """qkd_circuits: BB84 quantum key distribution on Qiskit circuits.

    Keys made on a simulator or a cloud QPU are known to whoever runs it: they are for study.
    """


_SHARED_OPTIONS = [
    click.option("--exchanges", "-n", type=int, default=100_000, show_default=True, help="Pulses Alice sends."),
    click.option("--mode", type=click.Choice(["prepared", "qrng"]), default="qrng", show_default=True,
                  help="prepared: the parties' CSPRNG choices drive the circuit; qrng: choices come from "
                       "Hadamard-measured qubits in the circuit."),
    click.option("--backend", default="aer", show_default=True,
                  help="aer | fake:<name> | ibm:<name> | braket-local"),
    click.option("--noise", multiple=True, metavar="MODEL:P",
                  help="depolarizing:P, dephasing:P, bit_flip:P, misalignment:P, readout:P (repeatable)."),
    click.option("--eve", default=None, metavar="SPEC",
                  help="intercept-resend:F[:random|Z|X|breidbart] or probe:STRENGTH."),
    click.option("--distance-km", type=float, default=0.0, show_default=True, help="Fibre length."),
    click.option("--alpha-db-per-km", type=float, default=0.2, show_default=True, help="Fibre attenuation."),
    click.option("--detector-efficiency", type=float, default=1.0, show_default=True),
    click.option("--dark-count", type=float, default=0.0, show_default=True, help="Dark-count probability per pulse."),
    click.option("--seed", type=int, default=None, help="Simulation seed (choices and simulator); omit for CSPRNG choices."),
    click.option("--lanes", default=None, help="Exchanges side by side per circuit, or 'device'."),
    click.option("--schedule", type=click.Choice(["grouped", "sequential"]), default="grouped", show_default=True,
                  help="prepared mode: settings grouped per binding, or one binding per shot in send order."),
    click.option("--abort-qber", type=float, default=0.11, show_default=True,
                  help="Abort when the QBER upper bound exceeds this."),
    click.option("--cascade", type=click.Choice(sorted(CASCADE_PRESETS)), default="option7", show_default=True,
                  help="Cascade variant for error correction."),
    click.option("--sample-fraction", type=float, default=0.1, show_default=True,
                  help="Share of the sifted key disclosed to estimate the QBER."),
    click.option("--eps-sec", type=float, default=1e-10, show_default=True, help="Secrecy parameter."),
    click.option("--eps-cor", type=float, default=1e-15, show_default=True, help="Correctness parameter."),
]


def _shared_options(command):
    """The quantum-exchange and post-processing options every round-running command takes."""
    for option in reversed(_SHARED_OPTIONS):
        command = option(command)
    return command


def _round_options(exchanges, mode, backend, noise, eve, distance_km, alpha_db_per_km, detector_efficiency,
                   dark_count, seed, lanes, schedule, abort_qber, cascade, sample_fraction, eps_sec, eps_cor) -> dict:
    """Validate the shared options into keyword arguments for run_bb84 / submit (raises QKDError)."""
    channel_kw, detector_kw = parse_noise(noise)
    channel = Channel(distance_km=distance_km, alpha_db_per_km=alpha_db_per_km, **channel_kw)
    detector = Detector(efficiency=detector_efficiency, dark_count_probability=dark_count, **detector_kw)
    attacker = parse_eve(eve)
    if lanes is not None and lanes != "device":
        if not lanes.isdigit():
            raise click.BadParameter(f"must be a whole number or 'device', got {lanes!r}", param_hint="--lanes")
        lanes = int(lanes)
    try:
        config = PostProcessingConfig(sample_fraction=sample_fraction, abort_qber=abort_qber,
                                      cascade=cascade, eps_sec=eps_sec, eps_cor=eps_cor)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    return dict(mode=mode, backend=backend, channel=channel, detector=detector, eve=attacker,
                seed=seed, lanes=lanes, schedule=schedule, config=config)


@main.command()
@_shared_options
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report and nothing else.")
def run(exchanges, mode, backend, noise, eve, distance_km, alpha_db_per_km, detector_efficiency,
        dark_count, seed, lanes, schedule, abort_qber, cascade, sample_fraction, eps_sec, eps_cor,
        psk_file, pki_dir, attack, mitm, store_a, store_b, link_id, save_record, as_json) -> None:
    """Run one BB84 round and print its report."""
    from .session import run_bb84

    try:
        options = _round_options(exchanges, mode, backend, noise, eve, distance_km, alpha_db_per_km,
                                 detector_efficiency, dark_count, seed, lanes, schedule, abort_qber, cascade,
                                 sample_fraction, eps_sec, eps_cor)
        if psk_file and pki_dir:
            raise ConfigurationError("choose one bootstrap: --psk FILE or --pki DIR")
        pool = AuthKeyPool.load(psk_file) if psk_file else None
        if pki_dir:
            options.update(_pki_identities(pki_dir))
        if mitm:
            _run_mitm(exchanges, options, pool, as_json)
        if pool is not None:
            options.update(alice_pool=pool, bob_pool=pool.copy())
        if (store_a or store_b) and (seed is not None or (pool is not None and pool.simulation)):
            raise ConfigurationError("a seeded round's key (or one authenticated by a simulation pool) is known to "
                                     "anyone with the seed: it never goes into a key store; omit --seed")
        if attack:
            options["attack"] = ATTACKS[attack]
        if as_json or exchanges < PROGRESS_MIN_EXCHANGES:
            result = run_bb84(exchanges, **options)
        else:
            with click.progressbar(length=exchanges, label="exchanges", file=sys.stderr) as bar:
                result = run_bb84(exchanges, progress=lambda done, total: bar.update(done - bar.pos), **options)
    except click.BadParameter:
        raise
    except BackendError as exc:
        code = EXIT_USAGE if isinstance(exc, ImportError) else EXIT_BACKEND
        _fail(str(exc), code)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
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
        click.echo(json.dumps(report.to_dict(), default=_json_default))
    else:
        _print_report(report)
    sys.exit(EXIT_ABORTED if report.aborted else EXIT_OK)


def _store_keys(result, store_a, store_b, link_id, round_number, epoch: bytes = b"") -> None:
    import secrets as _secrets

    from .keystore import KeyStore, store_final_key

    # Key IDs come from (link, pool epoch, round, index), so a re-bootstrapped PSK never reuses
    # them; a round without a PSK has no number or epoch, so use a fresh random round number
    # (both sites are stored from this process, so they agree).
    round_id = round_number if round_number is not None else _secrets.randbits(62)
    for path, key in ((store_a, result.alice_key), (store_b, result.bob_key)):
        if path:
            try:
                stored = store_final_key(KeyStore(path), key, link_id=link_id, round_number=round_id, epoch=epoch)
            except QKDError as exc:
                _fail(str(exc), EXIT_USAGE)
            click.echo(f"stored {stored} keys of 256 bits in {path}", err=True)


def _run_mitm(exchanges, options, pool, as_json) -> None:
    from .session import run_mitm

    options = {k: v for k, v in options.items() if not k.endswith("_pki")}
    pools = {} if pool is None else {"alice_pool": pool, "bob_pool": pool.copy()}
    result = run_mitm(exchanges, **pools, **options)
    summary = {
        "mitm": True, "authenticated": result.authenticated, "detected": result.detected,
        "aborted": result.alice_key is None or result.bob_key is None,
        "abort_reason": "authentication_failed" if result.detected else None,
        "alice_failure": result.alice_failure, "bob_failure": result.bob_failure,
        "alice_key_sha256": result.alice_key.sha256() if result.alice_key else None,
        "bob_key_sha256": result.bob_key.sha256() if result.bob_key else None,
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo("Classical man-in-the-middle: Eve runs BB84 with Alice and with Bob separately.")
        click.echo("  detected: the round aborted at both ends, no key was output" if result.detected
                   else "  NOT detected: each party holds a key shared with Eve")
    sys.exit(EXIT_ABORTED if summary["aborted"] else EXIT_OK)


def _pki_identities(directory) -> dict:
    from cryptography import x509

    from .channel import pki
    from .channel.authenticated import PkiIdentity

    try:
        anchor = x509.load_pem_x509_certificate((Path(directory) / "ca.pem").read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the CA certificate in {directory}: {exc}; run 'qkd pki init {directory}'") from None
    return {"alice_pki": PkiIdentity(pki.load_credentials(directory, "alice"), anchor, "bob"),
            "bob_pki": PkiIdentity(pki.load_credentials(directory, "bob"), anchor, "alice")}


def _party_command(role: str):
    address_help = ("HOST:PORT to listen on (port 0 picks a free one)" if role == "alice"
                    else "HOST:PORT of Alice")

    def decorate(function):
        function = click.option("--json", "as_json", is_flag=True,
                                help="Print one JSON object per round (JSON lines) and nothing else.")(function)
        function = click.option("--rounds", type=click.IntRange(1, 1_000_000), default=1, show_default=True,
                                help="Rounds to run, one connection each (a seeded simulation: a new block each).")(function)
        function = click.option("--timeout", type=float, default=60.0, show_default=True,
                                help="Seconds to wait for the peer at each step.")(function)
        function = click.option("--record", "record_file", type=click.Path(dir_okay=False), default=None,
                                help="Use this measurement record (from 'qkd run --save-record') instead of simulating.")(function)
        function = click.option("--psk", "psk_file", type=click.Path(dir_okay=False), required=True,
                                help="This party's copy of the PSK / link state file; updated as the round goes.")(function)
        function = click.option("--listen" if role == "alice" else "--connect", "address", required=True,
                                help=address_help)(function)
        return main.command(role, help=f"Run {role.capitalize()}'s side of BB84 rounds over TCP.")(_shared_options(function))

    return decorate


def _block_seed(seed: int, block: bytes) -> int:
    """The simulation seed of one block: both processes derive it from the shared seed and Bob's block id."""
    import hashlib

    return int.from_bytes(hashlib.sha256(seed.to_bytes(8, "big", signed=True) + block).digest()[:7], "big")


def _party_round(role, *, address, psk_file, record_file, timeout, rounds, as_json, **shared) -> None:
    from .channel.tcp import parse_address
    from .network import run_alice, run_bob
    from .records import load_record

    try:
        options = _round_options(**shared)
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
            from .channel.admission import refuse_known_keys
            from .quantum.execution import run_exchanges

            refuse_known_keys(pool, seeded=True)
            seed = options.pop("seed")

            def records(block: bytes):
                return run_exchanges(shared["exchanges"], seed=_block_seed(seed, block), **options)

            # Load the simulator once before the peer waits on us (the first run pays for imports).
            run_exchanges(64, seed=_block_seed(seed, b"warm-up"), **options)

        def on_round(result) -> None:
            summary = result.to_dict()
            if as_json:
                click.echo(json.dumps(summary, default=_json_default), nl=True)
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
    except BackendError as exc:
        _fail(str(exc), EXIT_BACKEND)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    except ConnectionError as exc:
        _fail(str(exc), EXIT_BACKEND)
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


def _distances(spec: str) -> list[float]:
    """``START:STOP:STEP`` (STOP included) or a comma-separated list, in km."""
    try:
        if ":" in spec:
            parts = [float(x) for x in spec.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            start, stop, step = parts
            count = int(round((stop - start) / step)) + 1
            if count > 100_000:
                raise ValueError
            return [start + i * step for i in range(count) if start + i * step <= stop + 1e-9]
        values = [float(x) for x in spec.split(",") if x.strip()]
        if not values:
            raise ValueError
        return values
    except ValueError:
        raise ConfigurationError(f"--distance takes START:STOP:STEP (km, STEP > 0) or a comma list, got {spec!r}") from None


@main.command()
@click.option("--distance", "distance_spec", default="0:200:5", show_default=True, metavar="START:STOP:STEP",
              help="Fibre lengths in km (STOP included), or a comma-separated list.")
@click.option("--method", type=click.Choice(["gllp", "decoy-vacuum-weak", "decoy-infinite"]),
              default="decoy-vacuum-weak", show_default=True,
              help="gllp: no decoys; decoy-vacuum-weak: vacuum + one weak decoy; decoy-infinite: the limit.")
@click.option("--preset", type=click.Choice(["GYS"], case_sensitive=False), default="GYS", show_default=True,
              help="Published link parameters (GYS: Gobby, Yuan & Shields 2004) the options below change.")
@click.option("--alpha-db-per-km", type=float, default=None, help="Fibre attenuation α (dB/km).")
@click.option("--eta-bob", type=float, default=None, help="Bob's optics x detector efficiency.")
@click.option("--y0", type=float, default=None, help="Dark-count yield per pulse.")
@click.option("--e-detector", type=float, default=None, help="Misalignment error e_det.")
@click.option("--f-ec", type=float, default=None, help="Error-correction inefficiency f.")
@click.option("--mu", type=float, default=None, help="Signal intensity (default: optimised per distance).")
@click.option("--nu", type=float, default=0.05, show_default=True, help="Weak decoy intensity (vacuum + weak).")
@click.option("--compare", is_flag=True, help="Also compute the other two methods (plot and 'others' in JSON).")
@click.option("--simulate", "simulate_spec", default=None, metavar="KM,KM,...",
              help="Also run circuit sessions at these distances (vacuum + weak decoy, at --mu or 0.5).")
@click.option("--pulses", type=int, default=1_000_000, show_default=True, help="Pulses per simulated point.")
@click.option("--seed", type=int, default=None, help="Simulation seed for the simulated points.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Draw the curve(s) to a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the curve and max_distance_km as one JSON object.")
def keyrate(distance_spec, method, preset, alpha_db_per_km, eta_bob, y0, e_detector, f_ec, mu, nu, compare,
            simulate_spec, pulses, seed, plot_file, as_json) -> None:
    """Secret key rate against fibre distance, from the formulas (and circuits with --simulate)."""
    from . import keyrate as kr

    try:
        link = kr.PRESETS[preset.upper()].with_(alpha_db_per_km=alpha_db_per_km, eta_bob=eta_bob, y0=y0,
                                                 e_detector=e_detector, f_ec=f_ec)
        distances = _distances(distance_spec)
        curve = kr.key_rate_curve(distances, method, link, mu=mu, nu=nu)
        others = {m: kr.key_rate_curve(distances, m, link, mu=mu, nu=nu) for m in kr.METHODS if m != method} \
            if compare else {}
        simulated = []
        if simulate_spec:
            if method == "decoy-infinite":
                raise ConfigurationError("--simulate runs a finite set of intensities: use gllp or decoy-vacuum-weak")
            if pulses < 1000:
                raise ConfigurationError(f"--pulses must be >= 1000, got {pulses}")
            from .decoy import simulate_point

            sim_mu = 0.5 if mu is None else mu
            sim_nu = min(nu, sim_mu / 2) if method == "decoy-vacuum-weak" else 0.1
            for i, d in enumerate(_distances(simulate_spec)):
                simulated.append(simulate_point(d, link=link, mu=sim_mu, nu=sim_nu, pulses=pulses, method=method,
                                                seed=None if seed is None else seed + i))
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    out = curve.to_dict()
    out["simulated"] = simulated
    out["others"] = {m: {"max_distance_km": c.max_distance_km} for m, c in others.items()}
    if plot_file:
        _plot_keyrate(plot_file, curve, others, simulated)
    if as_json:
        click.echo(json.dumps(out, default=_json_default))
        return
    click.echo(f"{method} on {link.name} (α={link.alpha_db_per_km} dB/km, η_Bob={link.eta_bob}, Y0={link.y0}, "
               f"e_det={link.e_detector}, f={link.f_ec}): maximum distance {curve.max_distance_km:.1f} km")
    for m, c in others.items():
        click.echo(f"{m}: maximum distance {c.max_distance_km:.1f} km")
    click.echo(f"{'km':>8} {'rate (bit/pulse)':>18} {'mu':>8}")
    for p in curve.points:
        click.echo(f"{p.distance_km:>8.1f} {p.rate:>18.4e} {p.mu:>8.4f}")
    for s in simulated:
        click.echo(f"simulated {s['distance_km']:.1f} km: {s['rate']:.3e} ± {s['rate_sd']:.1e} "
                   f"(analytic {s['analytic']:.3e}, {s['pulses']:,} pulses)")
    if plot_file:
        click.echo(f"wrote {plot_file}")


def _plot_keyrate(path, curve, others, simulated) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _fail("--plot needs matplotlib: pip install 'qkd_circuits[notebooks]'", EXIT_USAGE)
    labels = {"gllp": "GLLP, no decoy", "decoy-vacuum-weak": "vacuum + weak decoy", "decoy-infinite": "infinite decoy"}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for c in [curve, *others.values()]:
        xs = [p.distance_km for p in c.points if p.rate > 0]
        ys = [p.rate for p in c.points if p.rate > 0]
        label = f"{labels[c.method]} (max {c.max_distance_km:.0f} km)"
        ax.semilogy(xs, ys, lw=2.5 if c is curve else 1.5, label=label)
    if simulated:
        pts = [s for s in simulated if s["rate"] > 0]
        ax.errorbar([s["distance_km"] for s in pts], [s["rate"] for s in pts],
                    yerr=[s["rate_sd"] or 0 for s in pts], fmt="o", color="black", capsize=4,
                    label="simulated circuits (±1 sd)")
    ax.set_xlabel("fibre length (km)", fontsize=13)
    ax.set_ylabel("secret key rate (bits per pulse)", fontsize=13)
    ax.set_title(f"BB84 key rate vs distance, {curve.link.name} parameters", fontsize=14)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@main.command("decoy")
@click.option("--pulses", "-n", type=int, default=3_000_000, show_default=True, help="Pulses Alice sends (all intensities).")
@click.option("--distance-km", type=float, default=0.0, show_default=True, help="Fibre length of the link.")
@click.option("--preset", type=click.Choice(["GYS"], case_sensitive=False), default="GYS", show_default=True,
              help="Link parameters (fibre loss, detector, dark counts, misalignment).")
@click.option("--mu", type=float, default=0.5, show_default=True, help="Signal intensity.")
@click.option("--nu", type=float, default=0.1, show_default=True, help="Weak decoy intensity.")
@click.option("--p-signal", type=float, default=0.7, show_default=True, help="Share of signal pulses.")
@click.option("--p-decoy", type=float, default=0.2, show_default=True, help="Share of decoy pulses (the rest: vacuum).")
@click.option("--method", type=click.Choice(["decoy-vacuum-weak", "gllp", "assume-single-photons"]),
              default="decoy-vacuum-weak", show_default=True,
              help="How the single-photon part is bounded; assume-single-photons is the insecure shortcut.")
@click.option("--u-alpha", type=float, default=3.0, show_default=True,
              help="Standard deviations of statistical fluctuation in the decoy bounds.")
@click.option("--eve", type=click.Choice(["none", "pns"]), default="none", show_default=True,
              help="pns: photon-number splitting tuned to keep the signal's click rate honest.")
@click.option("--seed", type=int, default=None, help="Simulation seed; omit for CSPRNG choices.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else.")
def decoy_command(pulses, distance_km, preset, mu, nu, p_signal, p_decoy, method, u_alpha, eve, seed, as_json) -> None:
    """One decoy-state BB84 round on weak coherent pulses (circuits on Aer)."""
    from .decoy import link_models, run_decoy_session
    from .analysis.keyrate import PRESETS
    from .quantum.wcp import PhotonNumberSplitting, WeakCoherentSource

    try:
        if pulses < 1:
            raise ConfigurationError(f"--pulses must be >= 1, got {pulses}")
        link = PRESETS[preset.upper()]
        if not distance_km >= 0:
            raise ConfigurationError(f"--distance-km must be >= 0, got {distance_km}")
        channel, detector = link_models(distance_km, link)
        source = WeakCoherentSource.vacuum_weak(mu, nu, p_signal=p_signal, p_decoy=p_decoy)
        attacker = PhotonNumberSplitting.matching(mu, channel, detector) if eve == "pns" else None
        result = run_decoy_session(pulses, source=source, channel=channel, detector=detector, eve=attacker,
                                   seed=seed, method=method, u_alpha=u_alpha, link=link)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    out = result.to_dict()
    if as_json:
        click.echo(json.dumps(out, default=_json_default))
    else:
        d = out["decoy"]
        for label, s in d["intensities"].items():
            click.echo(f"  {label:<7} mu={s['mu']:<5} pulses {s['pulses']:>10,}  gain {s['gain']:.3e}  "
                       f"QBER {s['qber']:.2%} on {s['sifted']:,} sifted")
        e = d["estimate"]
        click.echo(f"  single photons: Y1 >= {e['y1']:.3e}, e1 <= {e['e1']:.2%}, "
                   f"{'certified' if e['valid'] else 'NONE certified'}; asymptotic rate {d['rate']:.3e} bit/pulse")
        if out["report"] is not None:
            _print_report(result.bb84.report)
        elif out["aborted"]:
            click.echo(f"  ABORTED: {out['abort_reason']}; no key was output")
        if eve == "pns":
            click.echo(f"  (study) Eve knows {out['eve_known_sifted_fraction']:.1%} of the sifted signal bits")
    sys.exit(EXIT_ABORTED if out["aborted"] else EXIT_OK)


@main.group("pki")
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
def pki_init(directory, algorithm, days, force, site_tls) -> None:
    """Write a demo CA and certificates + private keys for alice and bob."""
    from .channel import pki

    try:
        paths = pki.init_demo_pki(directory, algorithm=algorithm, days=days, overwrite=force)
        if site_tls:
            from .etsi014 import init_tls_pki

            init_tls_pki(Path(directory) / "tls", days=days, overwrite=force)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"wrote a demo {algorithm} PKI to {directory}: CA {paths['ca'].name}, "
               + ", ".join(p.name for p in paths["certificates"].values()) + " (keys mode 0600)"
               + (f"; site TLS material in {Path(directory) / 'tls'}" if site_tls else ""))


@main.group()
def psk() -> None:
    """Pre-shared keys that bootstrap the authentication key pool."""


@psk.command("init")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--bits", type=int, default=1 << 16, show_default=True, help="Pool bits (512 per round).")
@click.option("--simulation", is_flag=True,
              help="A pool for seeded simulations: their keys are known to anyone with the seed, so it never "
                   "feeds a key store.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def psk_init(path, bits, simulation, force) -> None:
    """Write a fresh PSK file (copy it to the other site over a trusted path)."""
    try:
        create_psk_file(path, pad_bits=bits, overwrite=force, simulation=simulation)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    kind = "simulation pool" if simulation else "PSK"
    click.echo(f"wrote {path}: a {kind} of {bits} bits, {bits // 512} rounds of tags (mode 0600)")


def _psk_status(pool: AuthKeyPool) -> dict:
    link = pool.link
    return {"epoch": link.epoch.hex(), "next_round": link.next_round, "position": pool.position,
            "available_bits": pool.available_bits, "simulation": link.simulation, "pending_rounds": sorted(link.pending),
            "unconfirmed_rounds": sorted(link.unconfirmed), "failures": link.failures, "halt_after": link.halt_after,
            "halted": link.halted, "records_processed": len(link.processed), "epsilon": link.ledger.to_dict(),
            "state_sha256": pool.state_digest()}


@psk.command("status")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def psk_status(path, as_json) -> None:
    """Show a link state file: round, pool level, pending rounds, halt state, ε ledger (no secrets)."""
    try:
        status = _psk_status(AuthKeyPool.load(path))
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(status))
        return
    for key, value in status.items():
        click.echo(f"{key:>20}: {value}")


@psk.command("resume")
@click.argument("path", type=click.Path(dir_okay=False))
def psk_resume(path) -> None:
    """Resume a halted link after an operator has inspected both sites (resets the failure count)."""
    try:
        pool = AuthKeyPool.load(path)
        was = pool.link.failures
        pool.link.failures = 0
        pool.save(path)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"{path}: failure count {was} -> 0; the link may run again")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.4%}"


def _print_report(report) -> None:
    q = report.qber
    lines = [
        f"BB84 round on {report.backend} ({report.mode} mode, seed {report.seed})",
        f"  exchanges      {report.exchanges:>12,}",
        f"  detected       {report.detected:>12,}",
        f"  sifted         {report.sifted:>12,}",
        f"  QBER           {_percent(q.get('estimate')):>12}   upper bound {_percent(q.get('upper'))} "
        f"on {report.sample_bits:,} sampled bits",
    ]
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
        lines.append(f"  ABORTED: {report.abort_reason}; no key was output")
    else:
        lines.append(f"  final key      {report.final_key_bits:>12,} bits  (sha256 {report.alice_key_sha256[:16]}…, "
                     f"{'same at both ends' if report.alice_key_sha256 == report.bob_key_sha256 else 'KEYS DIFFER'})")
    lines.append("  (simulated: the simulator's operator knows every bit of this key)")
    click.echo("\n".join(lines))


@main.group()
def kme() -> None:
    """ETSI GS QKD 014 key delivery: serve a site's keys to its SAEs over mutual TLS."""


def _tls_files(directory: str, name: str) -> tuple[Path, Path, Path]:
    d = Path(directory)
    files = (d / f"{name}.pem", d / f"{name}.key", d / "ca.pem")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        _fail(f"missing TLS files {missing}: run 'qkd kme tls-init {directory}'", EXIT_USAGE)
    return files


@kme.command("tls-init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--kme", "kmes", multiple=True, default=("kme-a", "kme-b"), show_default=True)
@click.option("--sae", "saes", multiple=True, default=("sae-a", "sae-b"), show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def kme_tls_init(directory, kmes, saes, force) -> None:
    """Write a demo CA and certificates for the KMEs and SAEs (the CN is the ID)."""
    from .etsi014 import init_tls_pki

    try:
        init_tls_pki(directory, kmes=tuple(kmes), saes=tuple(saes), overwrite=force)
    except QKDError as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"wrote {directory}/ca.pem and certificates for {', '.join((*kmes, *saes))}")


@kme.command("wrap-keygen")
@click.argument("private_file", metavar="PRIVFILE", type=click.Path(dir_okay=False))
@click.argument("public_file", metavar="PUBFILE", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def kme_wrap_keygen(private_file, public_file, force) -> None:
    """Make an SAE's wrapping key pair (ML-KEM-768 + X25519): PRIVFILE stays with the SAE
    ('get-key --unwrap PRIVFILE'), PUBFILE goes to its KME ('serve --wrap-for SAE=PUBFILE').
    Both files are written mode 0600."""
    from .etsi014 import wrap

    if Path(private_file).resolve() == Path(public_file).resolve():
        _fail("PRIVFILE and PUBFILE must be different files", EXIT_USAGE)
    if not force:
        existing = [f for f in (private_file, public_file) if Path(f).exists() or Path(f).is_symlink()]
        if existing:
            _fail(f"{', '.join(existing)} exists; use --force to overwrite", EXIT_USAGE)
    private, public = wrap.generate_wrapping_keypair()
    try:
        wrap.save_wrapping_key(private_file, private, overwrite=force)
        wrap.save_wrapping_public(public_file, public, overwrite=force)
    except (QKDError, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)
    click.echo(f"wrote the wrapping private key {private_file} (keep it with the SAE) and its public key "
               f"{public_file} (for the KME: --wrap-for SAE={public_file})")


def _tls_material(kme_id, tls_dir, cert, key, ca):
    """The KME's (certificate, key, CA) from --cert/--key/--ca (a foreign PKI) or --tls DIR."""
    given = [x for x in (cert, key, ca) if x]
    if given and len(given) != 3:
        _fail("--cert, --key and --ca go together", EXIT_USAGE)
    if given:
        missing = [str(f) for f in (cert, key, ca) if not Path(f).exists()]
        if missing:
            _fail(f"missing TLS files {missing}", EXIT_USAGE)
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

    from .channel.tcp import parse_address
    from .etsi014 import KmeConfig, client_context, server_context, start_kme
    from .etsi014.server import JsonLogFormatter
    from .keystore import KeyStore

    cert, key, ca = _tls_material(kme_id, tls_dir, cert, key_file, ca)
    if cert is None and (unix_path is None or peer_url or also_tcp):
        _fail("--tls DIR (or --cert/--key/--ca) is needed to serve over TCP or to reach a peer KME", EXIT_USAGE)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter("%(message)s"))
    kme_log = logging.getLogger("qkd_circuits.kme")
    kme_log.addHandler(handler)
    kme_log.setLevel(logging.INFO)
    kme_log.propagate = False
    store = None
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
            from .etsi014.wrap import load_wrapping_public

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
    except QKDError as exc:
        if store is not None:
            store.close()
        _fail(str(exc), EXIT_USAGE)
    except OSError as exc:  # the address is taken, a file cannot be read...
        if store is not None:
            store.close()
        _fail(f"cannot serve: {exc}", EXIT_USAGE)
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


def _kme_client(url: str, tls_dir: str, sae: str, unwrap_with: bytes | None = None):
    from urllib.parse import urlsplit

    from .etsi014 import KmeClient, client_context

    if url.startswith("unix:"):
        return KmeClient(unix_path=url[5:], unwrap_with=unwrap_with)  # the kernel names us: no certificate
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or not parts.port:
        _fail(f"--kme must be https://HOST:PORT or unix:PATH, got {url!r}", EXIT_USAGE)
    if not (tls_dir and sae):
        _fail("--tls DIR and --sae ID are needed for an https KME", EXIT_USAGE)
    return KmeClient(parts.hostname, parts.port, client_context(*_tls_files(tls_dir, sae)), unwrap_with=unwrap_with)


def _unwrap_key_file(path):
    """The wrapping private key of ``--unwrap PRIVFILE`` (None without it); a bad file exits 2."""
    if path is None:
        return None
    from .etsi014.wrap import load_wrapping_key

    try:
        return load_wrapping_key(path)
    except QKDError as exc:
        _fail(f"--unwrap {path}: {exc}", EXIT_USAGE)


def _kme_call(fn) -> None:
    from .etsi014 import Etsi014Error

    try:
        click.echo(json.dumps(fn()))
    except Etsi014Error as exc:
        click.echo(json.dumps({"status": exc.status, **exc.body}))
        sys.exit(EXIT_ABORTED)
    except QKDError as exc:  # a wrapped/plain mismatch, or a key that does not unwrap (no key bytes in it)
        _fail(f"{type(exc).__name__}: {exc}", EXIT_ABORTED)
    except (OSError, ConnectionError) as exc:
        _fail(f"cannot reach the KME: {exc}", EXIT_BACKEND)


_KME_CLIENT_OPTIONS = [
    click.option("--kme", "url", required=True, help="https://HOST:PORT or unix:PATH of your site's KME."),
    click.option("--tls", "tls_dir", default=None, type=click.Path(file_okay=False), help="For https."),
    click.option("--sae", default=None, help="Your SAE ID (your certificate's CN in --tls), for https."),
]


def _kme_client_options(command):
    for option in reversed(_KME_CLIENT_OPTIONS):
        command = option(command)
    return command


@kme.command("status")
@_kme_client_options
@click.option("--slave", required=True)
def kme_status(url, tls_dir, sae, slave) -> None:
    """Get status for a slave SAE (JSON)."""
    _kme_call(lambda: _kme_client(url, tls_dir, sae).status(slave))


@kme.command("get-key")
@_kme_client_options
@click.option("--slave", required=True)
@click.option("--number", type=int, default=1, show_default=True)
@click.option("--also", "additional", multiple=True, help="An additional slave SAE (repeatable).")
@click.option("--unwrap", "unwrap_file", default=None, type=click.Path(dir_okay=False), metavar="PRIVFILE",
              help="Unwrap the keys with this wrapping private key (the KME wraps for this SAE).")
def kme_get_key(url, tls_dir, sae, slave, number, additional, unwrap_file) -> None:
    """Get keys as master for a slave SAE (prints key_IDs and base64 keys as JSON)."""
    import base64

    private = _unwrap_key_file(unwrap_file)

    def call():
        keys = _kme_client(url, tls_dir, sae, private).get_key(slave, number=number,
                                                               additional_slave_SAE_IDs=list(additional))
        return {"keys": [{"key_ID": k, "key": base64.b64encode(v).decode()} for k, v in keys]}

    _kme_call(call)


@kme.command("get-key-with-ids")
@_kme_client_options
@click.option("--master", required=True)
@click.argument("key_ids", nargs=-1, required=True)
@click.option("--unwrap", "unwrap_file", default=None, type=click.Path(dir_okay=False), metavar="PRIVFILE",
              help="Unwrap the keys with this wrapping private key (the KME wraps for this SAE).")
def kme_get_key_with_ids(url, tls_dir, sae, master, key_ids, unwrap_file) -> None:
    """Get keys by ID as a slave of MASTER (JSON)."""
    import base64

    private = _unwrap_key_file(unwrap_file)

    def call():
        keys = _kme_client(url, tls_dir, sae, private).get_key_with_ids(master, list(key_ids))
        return {"keys": [{"key_ID": k, "key": base64.b64encode(v).decode()} for k, v in keys]}

    _kme_call(call)


@kme.command("audit")
@click.option("--store", "store_path", required=True, type=click.Path(dir_okay=False, exists=True))
def kme_audit(store_path) -> None:
    """Print a site's delivery log (time, key_ID, SAE, action) as JSON lines; never key bytes."""
    from .keystore import KeyStore

    for when, key_ID, sae, action in KeyStore(store_path).audit():
        click.echo(json.dumps({"time": when, "key_ID": key_ID, "SAE_ID": sae, "action": action}))


from .sweep.cli import sweep_command  # noqa: E402  (qkd sweep: imports dask only when it runs)

main.add_command(sweep_command)

from .node.cli import node_group  # noqa: E402  (qkd node: imports the node only when it runs)

main.add_command(node_group)
