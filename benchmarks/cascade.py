"""Cascade reconciliation: efficiency, frame error rate, round trips and speed per preset.

Goal (2-core machine): efficiency f = leaked / (n·h(QBER)) at most 1.10 at QBER 2–5%
for n = 10^4 with the improved variant; at least 2 Mbit/s reconciled for n = 10^6.
Yardstick: Martinez-Mateo et al., QIC 15, 453 (2015), Figs. 5–6.

    python benchmarks/cascade.py            # human-readable lines
    python benchmarks/cascade.py --json     # one JSON object per (variant, qber, n)

Keys are random bits with independent flips at the given rate (seeded); f uses the actual
number of flips of each run; the frame error rate counts runs that left any error.  Both parties
run in this process and the request objects are handed over directly (no encoding).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import qkd_circuits as qkd  # noqa: E402
from _common import context, emit  # noqa: E402
from qkd_circuits.hazmat import reconcile  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--variants", default="original,yanetal,option7,option8")
    parser.add_argument("--qbers", default="0.01,0.02,0.05,0.08")
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--runs-small", type=int, default=50, help="runs for n <= 10^5")
    parser.add_argument("--runs-large", type=int, default=3, help="runs for n > 10^5")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    ctx = context()
    reconcile(np.zeros(64, np.uint8), np.zeros(64, np.uint8), seed=b"warm", preset="original", qber=0.05)
    for variant in args.variants.split(","):
        for n in map(int, args.sizes.split(",")):
            for q in map(float, args.qbers.split(",")):
                runs = args.runs_small if n <= 100_000 else args.runs_large
                rng = np.random.default_rng([args.seed, n, int(q * 1e4)])
                effs, uses, failures, seconds = [], [], 0, 0.0
                for _ in range(runs):
                    alice = rng.integers(0, 2, n, dtype=np.uint8)
                    flips = rng.random(n) < q
                    bob = alice ^ flips.astype(np.uint8)
                    t0 = time.perf_counter()
                    corrected, stats = reconcile(alice, bob, seed=rng.bytes(16), preset=variant, qber=q)
                    seconds += time.perf_counter() - t0
                    effs.append(stats.leaked_bits / (n * qkd.binary_entropy(flips.mean())))
                    uses.append(stats.channel_uses)
                    failures += bool((corrected != alice).any())
                eff = statistics.fmean(effs)
                result = {
                    "benchmark": "cascade", "figure": "efficiency", "value": round(eff, 4), "unit": "leaked/(n h(Q))",
                    "variant": variant, "qber": q, "bits": n, "runs": runs, "efficiency": round(eff, 4),
                    "efficiency_stdev": round(statistics.pstdev(effs), 4), "frame_error_rate": failures / runs,
                    "channel_uses": round(statistics.fmean(uses), 1), "bits_per_s": round(n * runs / seconds),
                    "params": {"variant": variant, "qber": q, "n": n, "runs": runs, "seed": args.seed}, **ctx,
                }
                emit(result, as_json=args.json,
                     text=f"{variant:9s} n={n:>9,} Q={q:.2f}  f={eff:.4f} (sd {statistics.pstdev(effs):.4f})  "
                          f"FER={failures / runs:.3f}  channel uses={statistics.fmean(uses):7.1f}  "
                          f"{n * runs / seconds / 1e6:6.2f} Mbit/s  ({runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
