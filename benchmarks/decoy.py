"""Decoy states on circuits: the analytic curves, simulated points on them, and the PNS check.

Figures:
  * maximum distance of each key-rate method with the GYS parameters (km; published: ~142 km
    for decoys, a few tens of km without);
  * simulated circuit sessions at several distances beside the analytic vacuum + weak rate at
    the same intensities: the rate, its bootstrap standard deviation and z = (sim − analytic)/sd,
    for ``--repeats`` independent seeds, and their mean with its standard error
    (sd/√repeats, from the mean bootstrap variance);
  * throughput of the weak-coherent-pulse circuits (pulses per second on Aer);
  * photon-number splitting at 40 km: the signal's click rate under attack over the honest one
    (≈ 1: invisible), the decoy's (≪ 1: caught), and the share of sifted bits Eve knows.

    python benchmarks/decoy.py            # human-readable lines
    python benchmarks/decoy.py --json     # one JSON object per result line
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

from qkd_circuits.decoy import analyse, link_models, simulate_point  # noqa: E402
from qkd_circuits.analysis.keyrate import METHODS, PRESETS, max_distance_km  # noqa: E402
from qkd_circuits import PhotonNumberSplitting, WeakCoherentSource, run_wcp_exchanges  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--distances", default="0,20,40,60", help="km, comma-separated, for simulated points")
    parser.add_argument("--pulses", type=int, default=3_000_000, help="pulses per simulated point")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--repeats", type=int, default=3, help="independent seeds per simulated distance")
    parser.add_argument("--figures", default="distance,points,pns", help="which of distance,points,pns to run")
    args = parser.parse_args(argv)
    figures = set(args.figures.split(","))
    ctx = context()
    gys = PRESETS["GYS"]

    if "distance" in figures:
        for method in METHODS:
            km = max_distance_km(method, gys, nu=0.05)
            emit({"figure": "max_distance", "params": {"method": method, "preset": "GYS",
                                                        "nu": 0.05 if "weak" in method else None},
                  "value": km, "unit": "km", **ctx}, as_json=args.json,
                 text=f"max distance {method:<18} {km:7.2f} km (GYS)")

    if "points" in figures:
        for i, d in enumerate(float(x) for x in args.distances.split(",")):
            rates, sds = [], []
            for r in range(args.repeats):
                seed = args.seed + 100 * i + r
                p = simulate_point(d, mu=0.5, nu=0.1, pulses=args.pulses, seed=seed, bootstrap=200)
                z = (p["rate"] - p["analytic"]) / p["rate_sd"] if p["rate_sd"] else float("nan")
                rates.append(p["rate"])
                sds.append(p["rate_sd"])
                emit({"figure": "simulated_rate",
                      "params": {"distance_km": d, "mu": 0.5, "nu": 0.1, "pulses": args.pulses, "seed": seed},
                      "value": p["rate"], "sd": p["rate_sd"], "analytic": p["analytic"], "z": z,
                      "unit": "bits/pulse", **ctx}, as_json=args.json,
                     text=f"{d:6.1f} km  simulated {p['rate']:.3e} ± {p['rate_sd']:.1e}  analytic "
                          f"{p['analytic']:.3e}  z = {z:+.2f}  ({args.pulses:,} pulses, seed {seed})")
                emit({"figure": "wcp_throughput", "params": {"distance_km": d, "pulses": args.pulses, "backend": "aer"},
                      "value": args.pulses / p["quantum_seconds"], "unit": "pulses/s", **ctx}, as_json=args.json,
                     text=f"{d:6.1f} km  circuits: {args.pulses / p['quantum_seconds']:,.0f} pulses/s")
            if args.repeats > 1:
                mean = statistics.fmean(rates)
                sem = math.sqrt(statistics.fmean(v * v for v in sds) / len(sds))
                z = (mean - p["analytic"]) / sem if sem else float("nan")
                emit({"figure": "simulated_rate_mean",
                      "params": {"distance_km": d, "mu": 0.5, "nu": 0.1, "pulses": args.pulses, "repeats": args.repeats},
                      "value": mean, "sd": sem, "analytic": p["analytic"], "z": z, "unit": "bits/pulse", **ctx},
                     as_json=args.json,
                     text=f"{d:6.1f} km  mean of {args.repeats}: {mean:.3e} ± {sem:.1e}  analytic {p['analytic']:.3e}"
                          f"  z = {z:+.2f}")

    if "pns" in figures:
        channel, detector = link_models(40)
        source = WeakCoherentSource.vacuum_weak(0.5, 0.1, p_signal=0.6, p_decoy=0.3)
        eve = PhotonNumberSplitting.matching(0.5, channel, detector)
        t0 = time.perf_counter()
        honest = analyse(run_wcp_exchanges(args.pulses, source=source, channel=channel, detector=detector,
                                           seed=args.seed))
        attacked_rec = run_wcp_exchanges(args.pulses, source=source, channel=channel, detector=detector, eve=eve,
                                         seed=args.seed + 1)
        attacked = analyse(attacked_rec)
        s = attacked_rec.label_mask("signal") & attacked_rec.sifted_mask()
        known = float((attacked_rec.eve_known[s] & (attacked_rec.eve_results[s] == attacked_rec.alice_bits[s])).mean())
        for label in ("signal", "decoy"):
            ratio = attacked.stats[label].gain / honest.stats[label].gain
            emit({"figure": "pns_gain_ratio",
                  "params": {"intensity": label, "distance_km": 40, "pulses": args.pulses, "mu": 0.5, "nu": 0.1},
                  "value": ratio, "unit": "attacked/honest", **ctx}, as_json=args.json,
                 text=f"PNS 40 km: {label} click rate attacked/honest = {ratio:.3f}")
        emit({"figure": "pns_eve_known", "params": {"distance_km": 40, "pulses": args.pulses, "mu": 0.5, "nu": 0.1},
              "value": known,
              "unit": "fraction of sifted signal bits", "decoy_valid": attacked.estimate.valid,
              "honest_decoy_valid": honest.estimate.valid, "seconds": time.perf_counter() - t0, **ctx},
             as_json=args.json,
             text=f"PNS 40 km: Eve knows {known:.1%} of sifted signal bits; decoy bound certifies single photons: "
                  f"honest {honest.estimate.valid}, attacked {attacked.estimate.valid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
