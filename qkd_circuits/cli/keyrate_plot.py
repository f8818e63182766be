"""The plot and the provenance line of ``qkd keyrate`` (curves against distance, finite-key curves)."""

from __future__ import annotations

from .errors import EXIT_USAGE, fail

__all__ = ["provenance", "footer", "finite_label", "plot_keyrate"]


def provenance(parameters: dict, link) -> dict:
    """Where the curves came from: the checkout's commit, the package versions, every parameter."""
    from .. import _provenance

    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in parameters.items()}
    return {"commit": _provenance.commit(), "versions": _provenance.versions(), "parameters": params,
            "link": link.to_dict()}


def footer(provenance: dict) -> str:
    """One line for a plot or a table: commit, versions, the parameters that were set."""
    v = provenance["versions"]
    versions = ", ".join(f"{k} {v[k]}" for k in ("qkd_circuits", "numpy", "scipy") if k in v)
    link = provenance["link"]
    set_params = {k: val for k, val in provenance["parameters"].items()
                  if val not in (None, False, (), []) and k not in ("plot_file", "as_json")}
    return (f"commit {provenance['commit'] or 'unknown'}; {versions}; link {link['name']} α={link['alpha_db_per_km']} "
            f"η_Bob={link['eta_bob']} Y0={link['y0']} e_det={link['e_detector']} f={link['f_ec']} "
            f"p_ap={link['afterpulse']}; " + " ".join(f"{k}={val}" for k, val in sorted(set_params.items())))


def finite_label(c) -> str:
    block = f"n_X = {c.n_key:.0e}" if c.n_key is not None else f"N = {c.pulses:.0e} pulses"
    return f"{c.method}, {block}"


def plot_keyrate(path, curve, others, simulated, finite=(), provenance=None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("--plot needs matplotlib: pip install 'qkd_circuits[notebooks]'", EXIT_USAGE)
    labels = {"gllp": "GLLP, no decoy", "decoy-vacuum-weak": "vacuum + weak decoy", "decoy-infinite": "infinite decoy"}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for c in [curve, *others.values()]:
        xs = [p.distance_km for p in c.points if p.rate > 0]
        ys = [p.rate for p in c.points if p.rate > 0]
        ax.semilogy(xs, ys, lw=2.5 if c is curve else 1.5, label=f"{labels[c.method]} (max {c.max_distance_km:.0f} km)")
    if simulated:
        pts = [s for s in simulated if s["rate"] > 0]
        ax.errorbar([s["distance_km"] for s in pts], [s["rate"] for s in pts],
                    yerr=[s["rate_sd"] or 0 for s in pts], fmt="o", color="black", capsize=4,
                    label="simulated circuits (±1 sd)")
    for c in finite:
        xs = [p.distance_km for p in c.points if p.rate > 0]
        ys = [p.rate for p in c.points if p.rate > 0]
        ax.semilogy(xs, ys, "--", lw=1.5, label=f"finite key, {finite_label(c)} (max {c.max_distance_km:.0f} km)")
    ax.set_xlabel("fibre length (km)", fontsize=13)
    ax.set_ylabel("secret key rate (bits per pulse)", fontsize=13)
    ax.set_title(f"BB84 key rate vs distance, {curve.link.name} parameters", fontsize=14)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9 if finite else 11)
    if provenance is not None:
        import textwrap

        fig.text(0.01, 0.005, "\n".join(textwrap.wrap(footer(provenance), 150)), fontsize=6, va="bottom",
                 family="monospace")
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
