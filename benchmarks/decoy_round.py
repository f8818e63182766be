"""Whole decoy-state rounds through the circuits: the composable key length they release.

Each point is one seeded ``decoy.run_decoy_session`` on Aer over 0 km of Lim et al.'s 2014 link
(afterpulsing left out: the circuits do not model it) with intensities tuned for small blocks:
two decoys 0.76 / 0.24 / vacuum at p = 0.16 / 0.54 / 0.30 (``lim2014``), one decoy 0.64 / 0.20 at
p = 0.31 / 0.69 (``rusca2018``).  ``value`` is the key length ℓ the two parties computed from the
counts they exchanged (bits; 0 when the round stopped, ``abort_reason`` says why), beside the
certified single-photon key bits and the phase-error bound.  A simulated key is known to whoever
runs the simulator.

    python benchmarks/decoy_round.py                                   # the points of the note
    python benchmarks/decoy_round.py --json --pulses 1500000 --q 0.5,0.65
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

from qkd_circuits.analysis.keyrate import PRESETS  # noqa: E402
from qkd_circuits.decoy import link_models, run_decoy_session  # noqa: E402
from qkd_circuits.records import WeakCoherentSource  # noqa: E402

SOURCES = {
    "lim2014": WeakCoherentSource({"signal": 0.76, "decoy": 0.24, "vacuum": 0.0},
                                  {"signal": 0.16, "decoy": 0.54, "vacuum": 0.30}),
    "rusca2018": WeakCoherentSource({"signal": 0.64, "decoy": 0.20}, {"signal": 0.31, "decoy": 0.69}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per round")
    parser.add_argument("--pulses", default="1200000,1500000,2000000", help="pulses per round, comma-separated")
    parser.add_argument("--q", default="0.5", help="key-basis probabilities, comma-separated")
    parser.add_argument("--methods", default="lim2014,rusca2018", help="lim2014 and/or rusca2018")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if any(m not in SOURCES for m in methods):
        parser.error(f"--methods takes {', '.join(SOURCES)}")
    link = PRESETS["Lim2014"].with_(afterpulse=0.0)
    channel, detector = link_models(0.0, link)
    ctx = context()
    for method in methods:
        for pulses in (int(float(p)) for p in args.pulses.split(",")):
            for q in (float(x) for x in args.q.split(",")):
                t0 = time.perf_counter()
                r = run_decoy_session(pulses, source=SOURCES[method], channel=channel, detector=detector,
                                      seed=args.seed, method=method, link=link, replenish_bits=256,
                                      key_basis_probability=q)
                kl = r.key_length
                params = {"method": method, "pulses": pulses, "key_basis_probability": q, "seed": args.seed,
                          "link": link.name, "distance_km": 0.0, "eps_sec": 1e-10,
                          "source": SOURCES[method].to_dict()}
                emit({"benchmark": "decoy_round", "figure": "decoy_round_key_length", "params": params,
                      "value": kl.length if kl is not None else 0, "unit": "bits",
                      "abort_reason": None if r.abort_reason is None else str(r.abort_reason),
                      "s_key_1": None if kl is None else kl.s_key_1,
                      "phase_error": None if kl is None else kl.phase_error,
                      "phase_error_observed": None if kl is None else kl.phase_error_observed,
                      "seconds": time.perf_counter() - t0, **ctx},
                     as_json=args.json,
                     text=f"{method:<10} {pulses:>10,} pulses  q={q:<5} ℓ = {kl.length if kl else 0:>6,} bits"
                          + (f"  ({r.abort_reason})" if r.aborted else "")
                          + (f"  singles {kl.s_key_1:,.0f}, phase error <= {kl.phase_error:.1%}"
                             if kl is not None else ""))


if __name__ == "__main__":
    main()
