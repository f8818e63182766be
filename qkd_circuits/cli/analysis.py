"""``qkd keyrate`` (the key-rate formulas against distance) and ``qkd decoy`` (one decoy-state round)."""

from __future__ import annotations

import sys

import click

from ..exceptions import ConfigurationError
from ..params import DECOY_EXCHANGES
from .errors import EXIT_ABORTED, EXIT_OK, EXIT_USAGE, exit_codes
from .options import json_option, output_file, param_option
from .keyrate_plot import finite_label as _finite_label, footer as _footer, plot_keyrate as _plot_keyrate
from .keyrate_plot import provenance as _keyrate_provenance
from .report import echo_json, print_report

__all__ = ["decoy_command", "keyrate"]

_KEYRATE_METHODS = ("gllp", "decoy-vacuum-weak", "decoy-infinite")
_PRESET = dict(type=click.Choice(["GYS"], case_sensitive=False))
# The finite-key methods of analysis.finite_rate (kept here so --help does not import scipy).
_FINITE_METHODS = ("lim2014", "rusca2018", "bb84-single-photon")
_KEYRATE_PRESETS = ("GYS", "Lim2014")


def _preset(name: str):
    """The link preset called ``name``, whatever its case."""
    from ..analysis.keyrate import PRESETS

    for key, link in PRESETS.items():
        if key.lower() == name.lower():
            return link
    raise ConfigurationError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")


def _block_sizes(values) -> list[float]:
    """``--finite`` values: block sizes such as 1e7 (>= 1, finite, at most 8 of them)."""
    sizes = []
    for v in values:
        try:
            n = float(v)
        except ValueError:
            n = float("nan")
        if not (n >= 1 and n < 1e18):
            raise ConfigurationError(f"--finite takes a block size >= 1 such as 1e7, got {v!r}")
        sizes.append(n)
    if len(sizes) > 8:
        raise ConfigurationError(f"--finite is repeatable up to 8 block sizes, got {len(sizes)}")
    return sizes


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
        raise ConfigurationError(f"--distance-km takes START:STOP:STEP (km, STEP > 0) or a comma list, "
                                 f"got {spec!r}") from None


@click.command()
@param_option("distance_km", dest="distance_spec", type=str, default="0:200:5", show_default=True,
              metavar="START:STOP:STEP", help="Fibre lengths in km (STOP included), or a comma-separated list.")
@param_option("decoy_method", type=click.Choice(_KEYRATE_METHODS), default="decoy-vacuum-weak",
              help="gllp: no decoys; decoy-vacuum-weak: vacuum + one weak decoy; decoy-infinite: the limit.")
@param_option("preset", type=click.Choice(_KEYRATE_PRESETS, case_sensitive=False),
              help="Published link parameters the options below change (GYS: Gobby, Yuan & Shields 2004; "
              "Lim2014: Lim et al., PRA 89, 022307 (2014), Sec. IV).")
@param_option("alpha_db_per_km", default=None, show_default=False, help="Fibre attenuation α (dB/km) "
              "[default: the preset's].")
@click.option("--eta-bob", type=float, default=None, help="Bob's optics x detector efficiency.")
@click.option("--y0", type=float, default=None, help="Dark-count yield per pulse.")
@click.option("--e-detector", type=float, default=None, help="Misalignment error e_det.")
@click.option("--f-ec", type=float, default=None, help="Error-correction inefficiency f.")
@click.option("--afterpulse", type=float, default=None, help="Detector afterpulse probability (finite-key "
              "curves only).")
@param_option("mu", default=None, show_default=False, help="Signal intensity (default: optimised per distance; "
              "0.5 for --simulate).")
@param_option("nu")
@click.option("--compare", is_flag=True, help="Also compute the other two methods (plot and 'others' in JSON).")
@click.option("--simulate", "simulate_spec", default=None, metavar="KM,KM,...",
              help="Also run circuit sessions at these distances (vacuum + weak decoy, at --mu or 0.5).")
@param_option("exchanges", default=1_000_000, help="Pulses per simulated point.")
@param_option("seed", help="Simulation seed for the simulated points; omit for CSPRNG choices.")
@click.option("--finite", "finite_sizes", multiple=True, metavar="N",
              help="Also draw the composable finite-key curve for block size N (repeatable, e.g. --finite 1e5 "
              "--finite 1e9), protocol parameters optimised at each distance.")
@click.option("--finite-method", type=click.Choice(_FINITE_METHODS), default="lim2014", show_default=True,
              help="lim2014: two decoys; rusca2018: one decoy; bb84-single-photon: TLGR on an ideal source.")
@click.option("--finite-block", type=click.Choice(["n-key", "pulses"]), default="n-key", show_default=True,
              help="What --finite counts: n-key, the key-basis block n_X (Lim et al.'s Fig. 1), or pulses sent.")
@click.option("--finite-sampling", type=click.Choice(["serfling", "fung"]), default="serfling", show_default=True,
              help="Phase-error sampling bound of the decoy analyses: serfling (rigorous) or fung (the papers').")
@param_option("eps_sec", default=None, show_default=False,
              help="Secrecy of the finite-key curves [default: 1e-10, or kappa x length with --kappa].")
@click.option("--kappa", type=float, default=None, help="Secrecy per key bit: eps_sec = kappa x length (Lim et "
              "al. use 1e-15); instead of --eps-sec.")
@param_option("eps_cor")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, callback=output_file,
              help="Draw the curve(s) to a PNG.")
@json_option("Print the curve and max_distance_km as one JSON object.")
def keyrate(distance_spec, decoy_method, preset, alpha_db_per_km, eta_bob, y0, e_detector, f_ec, afterpulse, mu, nu,
            compare, simulate_spec, exchanges, seed, finite_sizes, finite_method, finite_block, finite_sampling,
            eps_sec, kappa, eps_cor, plot_file, as_json) -> None:
    """Secret key rate against fibre distance, from the formulas (and circuits with --simulate).

    With --finite, also the composable finite-key rate for each block size (expected counts of
    the link: a curve says what a link could give, not that any key is secret).
    """
    from ..analysis import keyrate as kr

    method = decoy_method
    parameters = {k: v for k, v in locals().items() if k not in ("kr", "method")}
    with exit_codes():
        link = _preset(preset).with_(alpha_db_per_km=alpha_db_per_km, eta_bob=eta_bob, y0=y0,
                                     e_detector=e_detector, f_ec=f_ec, afterpulse=afterpulse)
        distances = _distances(distance_spec)
        sizes = _block_sizes(finite_sizes)
        if (eps_sec is not None or kappa is not None) and not sizes:
            raise ConfigurationError("--eps-sec and --kappa set the finite-key curves: add --finite N")
        curve = kr.key_rate_curve(distances, method, link, mu=mu, nu=nu)
        others = {m: kr.key_rate_curve(distances, m, link, mu=mu, nu=nu) for m in kr.METHODS if m != method} \
            if compare else {}
        simulated = []
        if simulate_spec:
            if method == "decoy-infinite":
                raise ConfigurationError("--simulate runs a finite set of intensities: use gllp or decoy-vacuum-weak")
            if exchanges < 1000:
                raise ConfigurationError(f"--exchanges must be >= 1000, got {exchanges}")
            from ..decoy import simulate_point

            sim_mu = 0.5 if mu is None else mu
            sim_nu = min(nu, sim_mu / 2) if method == "decoy-vacuum-weak" else 0.1
            for i, d in enumerate(_distances(simulate_spec)):
                simulated.append(simulate_point(d, link=link, mu=sim_mu, nu=sim_nu, pulses=exchanges, method=method,
                                                seed=None if seed is None else seed + i))
        finite = []
        if sizes:
            from ..analysis import finite_rate as fr

            for n in sizes:
                block = {"n_key": n} if finite_block == "n-key" else {"pulses": n}
                finite.append(fr.finite_key_rate_curve(distances, finite_method, link, **block, eps_sec=eps_sec,
                                                       kappa=kappa, eps_cor=eps_cor, sampling=finite_sampling))
    out = curve.to_dict()
    out["simulated"] = simulated
    out["others"] = {m: {"max_distance_km": c.max_distance_km} for m, c in others.items()}
    out["finite"] = [c.to_dict() for c in finite]
    out["provenance"] = _keyrate_provenance(parameters, link)
    if as_json:
        echo_json(out)
    else:
        _print_keyrate(out, method, link, curve, others, simulated, finite)
    if plot_file:  # after the results are out: a failed write loses nothing
        with exit_codes({OSError: (EXIT_USAGE, "cannot write the plot: {exc}")}):
            _plot_keyrate(plot_file, curve, others, simulated, finite, out["provenance"])
        if not as_json:
            click.echo(f"wrote {plot_file}")


def _print_keyrate(out, method, link, curve, others, simulated, finite) -> None:
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
    for c in finite:
        click.echo(f"finite key, {_finite_label(c)}: maximum distance {c.max_distance_km:.1f} km")
        click.echo(f"{'km':>8} {'rate (bit/pulse)':>18} {'length (bits)':>14} {'pulses':>10} {'q_key':>6}")
        for p in c.points:
            click.echo(f"{p.distance_km:>8.1f} {p.rate:>18.4e} {p.length:>14,} {p.pulses:>10.3g} {p.q_key:>6.3f}")
    click.echo(f"({_footer(out['provenance'])})")


@click.command("decoy")
@param_option("exchanges", default=DECOY_EXCHANGES)
@param_option("distance_km")
@param_option("preset", **_PRESET)
@param_option("mu")
@param_option("nu")
@param_option("p_signal")
@param_option("p_decoy")
@param_option("decoy_method")
@param_option("u_alpha")
@param_option("eve", type=click.Choice(["none", "pns"]), metavar=None,
              help="pns: photon-number splitting tuned to keep the signal's click rate honest.")
@param_option("seed")
@json_option("Print one JSON object and nothing else.")
def decoy_command(exchanges, distance_km, preset, mu, nu, p_signal, p_decoy, decoy_method, u_alpha, eve, seed,
                  as_json) -> None:
    """One decoy-state BB84 round on weak coherent pulses (circuits on Aer)."""
    from ..analysis.keyrate import PRESETS
    from ..decoy import link_models, run_decoy_session
    from ..quantum.wcp import PhotonNumberSplitting, WeakCoherentSource

    with exit_codes():
        if exchanges < 1:
            raise ConfigurationError(f"--exchanges must be >= 1, got {exchanges}")
        link = PRESETS[preset.upper()]
        if not distance_km >= 0:
            raise ConfigurationError(f"--distance-km must be >= 0, got {distance_km}")
        channel, detector = link_models(distance_km, link)
        if decoy_method == "rusca2018":  # one decoy, no vacuum
            from ..decoy import one_decoy_source
            source = one_decoy_source(mu, nu, p_signal=p_signal)
        else:
            source = WeakCoherentSource.vacuum_weak(mu, nu, p_signal=p_signal, p_decoy=p_decoy)
        attacker = PhotonNumberSplitting.matching(mu, channel, detector) if eve == "pns" else None
        result = run_decoy_session(exchanges, source=source, channel=channel, detector=detector, eve=attacker,
                                   seed=seed, method=decoy_method, u_alpha=u_alpha, link=link)
    out = result.to_dict()
    if as_json:
        echo_json(out)
    else:
        d = out["decoy"]
        for label, s in d["intensities"].items():
            click.echo(f"  {label:<7} mu={s['mu']:<5} pulses {s['pulses']:>10,}  gain {s['gain']:.3e}  "
                       f"QBER {s['qber']:.2%} on {s['sifted']:,} sifted")
        e = d["estimate"]
        click.echo(f"  (asymptotic estimate) Y1 >= {e['y1']:.3e}, e1 <= {e['e1']:.2%}, "
                   f"{'certified' if e['valid'] else 'NONE certified'}; rate {d['rate']:.3e} bit/pulse")
        kl = result.key_length
        if kl is not None:
            click.echo(f"  composable ({kl.method}, {kl.sampling}): key-basis singles >= {kl.s_key_1:,.0f} of "
                       f"{kl.key_bits:,.0f}, phase error <= {kl.phase_error:.2%} (test {kl.phase_error_observed:.2%}), "
                       f"length {kl.length:,} bits at eps_sec {kl.eps_sec:g}")
        if out["report"] is not None:
            print_report(result.bb84.report)
        elif out["aborted"]:
            click.echo(f"  ABORTED: {out['abort_reason']}; no key was output")
        if eve == "pns":
            click.echo(f"  (study) Eve knows {out['eve_known_sifted_fraction']:.1%} of the sifted signal bits")
    sys.exit(EXIT_ABORTED if out["aborted"] else EXIT_OK)
