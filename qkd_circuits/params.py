"""Round parameters: one typed specification, one set of defaults.

Every parameter a BB84 or decoy-state round takes is declared here once, with its type, its
default, its unit and its help text.  The library's defaults (:class:`~qkd_circuits.PostProcessingConfig`,
:func:`~qkd_circuits.decoy.run_decoy_session`, :func:`~qkd_circuits.analysis.keyrate.key_rate`...),
the command line's options (``qkd run``, ``qkd alice``/``bob``, ``qkd decoy``, ``qkd keyrate``)
and the sweep file schema (``qkd sweep``) are all read from :data:`PARAMETERS`, so two "default"
runs cannot disagree.

This module is the bottom layer: it imports nothing from the package.

>>> PARAMETERS["abort_qber"].default
0.11
>>> PARAMETERS["exchanges"].flag
'--exchanges'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Parameter", "PARAMETERS", "BB84", "DECOY", "DECOY_EXCHANGES", "default", "defaults"]


@dataclass(frozen=True)
class Parameter:
    """One round parameter.

    Attributes:
        name: the Python keyword and the sweep-file key (``snake_case``; a contract: never renamed).
        default: the one default value (``None``: unset, e.g. a CSPRNG instead of a seed).
        kind: ``int``, ``float`` or ``str``.
        help: one line for ``--help`` and the docs.
        unit: the unit of a number, or ``""``.
        choices: the allowed values of a ``str`` parameter, or ``None``.
        group: ``"bb84"`` (every round) or ``"decoy"`` (weak coherent pulses with decoy states).
        aliases: earlier option spellings, still accepted but not shown in ``--help``.
    """

    name: str
    default: Any
    kind: type
    help: str
    unit: str = ""
    choices: tuple[str, ...] | None = None
    group: str = "bb84"
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The command-line option: ``--`` and the name with dashes."""
        return "--" + self.name.replace("_", "-")


_P = Parameter

PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    # The quantum exchange.
    _P("exchanges", 100_000, int, "Pulses Alice sends (every intensity, for weak coherent pulses).",
       aliases=("--pulses",)),
    _P("mode", "qrng", str, "prepared: the parties' CSPRNG choices drive the circuit; qrng: the choices come from "
       "Hadamard-measured qubits in the circuit.", choices=("prepared", "qrng")),
    _P("backend", "aer", str, "aer | fake:<name> | ibm:<name> | braket-local | braket:<device or ARN>"),
    _P("noise", "none", str, "depolarizing:P, dephasing:P, bit_flip:P, misalignment:P, readout:P; "
       "several joined by '+' (or the option repeated)."),
    _P("eve", "none", str, "intercept-resend:F[:random|Z|X|breidbart], probe:STRENGTH, or pns (decoy rounds)."),
    _P("distance_km", 0.0, float, "Fibre length.", unit="km", aliases=("--distance",)),
    _P("alpha_db_per_km", 0.2, float, "Fibre attenuation.", unit="dB/km"),
    _P("detector_efficiency", 1.0, float, "Bob's detector efficiency (with his optics)."),
    _P("dark_count", 0.0, float, "Dark-count probability per pulse."),
    _P("seed", None, int, "Simulation seed (choices and simulator); omit for CSPRNG choices."),
    _P("lanes", None, str, "Exchanges side by side per circuit (a whole number), or 'device'."),
    _P("schedule", "grouped", str, "prepared mode: settings grouped per binding, or one binding per shot in send "
       "order.", choices=("grouped", "sequential")),
    # Post-processing.
    _P("abort_qber", 0.11, float, "Abort when the QBER's upper confidence bound exceeds this."),
    _P("cascade", "option7", str, "Cascade variant for error correction.",
       choices=("option7", "option8", "original", "yanetal")),
    _P("sample_fraction", 0.1, float, "Share of the sifted key disclosed to estimate the QBER."),
    _P("eps_sec", 1e-10, float, "Secrecy parameter ε_sec."),
    _P("eps_cor", 1e-15, float, "Correctness parameter ε_cor."),
    # Decoy states on weak coherent pulses (vacuum + weak decoy).
    _P("mu", 0.5, float, "Signal intensity μ (mean photon number).", unit="photons/pulse", group="decoy"),
    _P("nu", 0.1, float, "Weak decoy intensity ν.", unit="photons/pulse", group="decoy"),
    _P("p_signal", 0.7, float, "Share of signal pulses.", group="decoy"),
    _P("p_decoy", 0.2, float, "Share of weak decoy pulses (the rest: vacuum).", group="decoy"),
    _P("u_alpha", 5.0, float, "Standard deviations of statistical fluctuation in the single-photon bounds of the "
       "estimate methods (0: asymptotic); the composable methods take their margins from eps_sec.", group="decoy"),
    _P("decoy_method", "lim2014", str, "How the key length is bounded: lim2014 (composable finite-key, signal + "
       "decoy + vacuum) or rusca2018 (composable, signal + one decoy, no vacuum), both from the round's own counts; "
       "decoy-vacuum-weak (the earlier asymptotic-style estimate, not composable); gllp (that estimate without "
       "decoys); assume-single-photons (INSECURE textbook shortcut).",
       choices=("lim2014", "rusca2018", "decoy-vacuum-weak", "gllp", "assume-single-photons"), group="decoy",
       aliases=("--method",)),
    _P("preset", "GYS", str, "Link preset of the fibre and detector (Gobby-Yuan-Shields 2004).", choices=("GYS",),
       group="decoy"),
)}

#: The default pulse count of a decoy-state round (``exchanges`` there): its estimates need millions.
DECOY_EXCHANGES = 2_000_000

#: The names of the parameters every BB84 round takes, in declaration order.
BB84 = tuple(n for n, p in PARAMETERS.items() if p.group == "bb84")
#: The names only decoy-state rounds read.
DECOY = tuple(n for n, p in PARAMETERS.items() if p.group == "decoy")


def default(name: str) -> Any:
    """The default of parameter ``name`` (``KeyError`` for an unknown one)."""
    return PARAMETERS[name].default


def defaults(group: str | None = None) -> dict[str, Any]:
    """``{name: default}`` of every parameter, or of one group (``"bb84"``, ``"decoy"``)."""
    return {n: p.default for n, p in PARAMETERS.items() if group is None or p.group == group}
