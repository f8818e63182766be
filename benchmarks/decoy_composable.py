"""Decoy-state key lengths: the composable finite-key analysis beside the old GLLP estimate.

For the package's default decoy round (μ = 0.5, ν = 0.1, vacuum, p = 0.7/0.2/0.1, symmetric
bases q = 0.5, GYS link, ε_sec = 1e-10, ε_cor = 1e-15), NOT optimised, at fixed numbers of pulses
N and fibre lengths L, from the *expected* counts of the link (one JSON line per point: ``value``
is the Lim/Serfling length, ``lim2014_fung`` and ``old_gllp`` the other two, in bits; 0 = no key,
``old_gllp`` null where the old bounds certify no single photons):

  * ``lim2014_serfling`` / ``lim2014_fung``: the composable key length ℓ of Lim et al., PRA 89,
    022307 (2014) (:func:`qkd_circuits.analysis.finite_decoy.lim2014`), on the counts of
    :func:`qkd_circuits.analysis.finite_rate.expected_counts` (key from the X-basis detections
    of every intensity; λ_EC = f h(E_X) n_X with f = 1.22), with Serfling's or the papers' γ;
  * ``old_gllp``: what a decoy round computed before (``decoy.run_decoy_session``): the
    vacuum + weak bounds of ``analysis.keyrate.decoy_estimate`` with u_alpha = 5 on the expected
    gains (κ = Q_1/Q_μ, e_1), then ``analysis.finite_key.decoy_key_length(n, k, κ, e_1, leak)``
    with n = the sifted signal bits minus a 10% sample k, leak = 1.22 n h(E_μ) + 128.

    python benchmarks/decoy_composable.py            # a table
    python benchmarks/decoy_composable.py --json     # one JSON object per point
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

from qkd_circuits.analysis import finite_decoy as fd  # noqa: E402
from qkd_circuits.analysis import finite_key as fk  # noqa: E402
from qkd_circuits.analysis import keyrate as kr  # noqa: E402
from qkd_circuits.analysis.finite_rate import expected_counts  # noqa: E402

INTENSITIES = {"signal": 0.5, "decoy": 0.1, "vacuum": 0.0}
PROBABILITIES = {"signal": 0.7, "decoy": 0.2, "vacuum": 0.1}
Q_KEY, EPS_SEC, EPS_COR, U_ALPHA, SAMPLE, EXTRA_LEAK = 0.5, 1e-10, 1e-15, 5.0, 0.1, 128


def composable(link, distance, pulses, sampling):
    counts = expected_counts(link, distance, intensities=INTENSITIES, probabilities=PROBABILITIES, q_key=Q_KEY,
                             pulses=pulses)
    leak = link.f_ec * fk.binary_entropy(counts.key.m / counts.key.n) * counts.key.n
    return fd.lim2014(counts, leak_ec=leak, eps_sec=EPS_SEC, eps_cor=EPS_COR, sampling=sampling)


def old_estimate(link, distance, pulses):
    eta = float(link.transmittance(distance))
    q = {k: float(kr.gain(mu, eta, link)) for k, mu in INTENSITIES.items()}
    e = {k: float(kr.error_gain(mu, eta, link)) / q[k] for k, mu in INTENSITIES.items()}
    sent = {k: int(round(pulses * p)) for k, p in PROBABILITIES.items()}
    est = kr.decoy_estimate("decoy-vacuum-weak", mu=INTENSITIES["signal"], q_mu=q["signal"], e_mu=e["signal"],
                            nu=INTENSITIES["decoy"], q_nu=q["decoy"], e_nu=e["decoy"], q_vacuum=q["vacuum"],
                            pulses=sent, u_alpha=U_ALPHA)
    sifted = int(sent["signal"] * q["signal"] * link.q)
    k = max(1, math.ceil(SAMPLE * sifted))
    n = sifted - k
    if not est.valid or n < 1:
        return None, est, n, k
    leak = math.ceil(link.f_ec * n * fk.binary_entropy(e["signal"])) + EXTRA_LEAK
    kl = fk.decoy_key_length(n, k, min(1.0, est.q1 / est.q_mu), est.e1, leak, eps_sec=EPS_SEC, eps_cor=EPS_COR)
    return kl, est, n, k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--distances", default="0,25,50,100", help="km, comma-separated")
    parser.add_argument("--pulses", default="1e7,1e8,1e9,1e10", help="pulses sent, comma-separated")
    args = parser.parse_args(argv)
    ctx = context()
    link = kr.PRESETS["GYS"]
    if not args.json:
        print(f"{'km':>5} {'pulses':>8} {'lim2014 serfling':>17} {'lim2014 fung':>13} {'old GLLP':>12}  (bits)")
    for distance in (float(x) for x in args.distances.split(",")):
        for pulses in (float(x) for x in args.pulses.split(",")):
            ser, fung = composable(link, distance, pulses, "serfling"), composable(link, distance, pulses, "fung")
            old, est, n, k = old_estimate(link, distance, pulses)
            params = {"distance_km": distance, "pulses": pulses, "preset": "GYS", "intensities": INTENSITIES,
                      "probabilities": PROBABILITIES, "q_key": Q_KEY, "eps_sec": EPS_SEC, "eps_cor": EPS_COR,
                      "f_ec": link.f_ec, "old_u_alpha": U_ALPHA, "old_sample_fraction": SAMPLE,
                      "old_extra_leak": EXTRA_LEAK}
            emit({"figure": "decoy_key_length", "params": params,
                  "value": ser.length, "unit": "bits", "estimator": "lim2014_serfling",
                  "lim2014_fung": fung.length, "old_gllp": None if old is None else old.length,
                  "lim2014": {"n_key": ser.key_bits, "s_key_1_serfling": ser.s_key_1, "s_key_0": ser.s_key_0,
                              "phase_error_serfling": ser.phase_error, "phase_error_fung": fung.phase_error,
                              "leak_ec": ser.leak_ec, "reason_serfling": ser.reason},
                  "old": {"n": n, "k": k, "kappa": est.q1 / est.q_mu if est.q_mu > 0 else None, "e1": est.e1,
                          "valid": est.valid, "leak_ec": None if old is None else old.leak_ec},
                  **ctx}, as_json=args.json,
                 text=f"{distance:>5.0f} {pulses:>8.0e} {ser.length:>17,} {fung.length:>13,} "
                      f"{'no key' if old is None else format(old.length, ','):>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
