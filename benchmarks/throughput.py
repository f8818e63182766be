"""Exchanges per second of the BB84 circuits, end to end (circuit -> sampler -> MeasurementRecord).

Goal (issue 2, on a 2-core machine): qrng mode >= 1,000,000 exchanges/s, noiseless and with
noise and Eve in the circuit; prepared mode >= 100,000 exchanges/s.

    python benchmarks/throughput.py            # human-readable lines
    python benchmarks/throughput.py --json     # one JSON object per result line

Each case is run once to warm up, then ``--repeats`` times; the figure is the median rate, with
the best and worst beside it.  The time covers building and transpiling the circuit, running
the sampler, unpacking the bits and assembling the record.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import qkd_circuits as qkd  # noqa: E402
from _common import context, emit  # noqa: E402

GOALS = {"qrng": 1_000_000, "prepared": 100_000}

CASES = {
    "noiseless": {},
    "depolarizing": {"channel": qkd.Channel(depolarizing=0.05)},
    "intercept-resend": {"eve": qkd.InterceptResend(0.5)},
    "depolarizing+intercept-resend": {"channel": qkd.Channel(depolarizing=0.05), "eve": qkd.InterceptResend(0.5)},
    "lossy-link+probe": {"channel": qkd.Channel(distance_km=25, depolarizing=0.02),
                         "detector": qkd.Detector(efficiency=0.5, dark_count_probability=1e-4),
                         "eve": qkd.EntanglingProbe(0.3)},
}


def measure(n: int, repeats: int, **options) -> list[float]:
    qkd.run_exchanges(min(n, 50_000), **options)  # warm-up: imports, transpiler caches
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        record = qkd.run_exchanges(n, **options)
        rates.append(len(record) / (time.perf_counter() - t0))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--exchanges", type=int, default=2_000_000, help="pulses per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="aer")
    parser.add_argument("--modes", default="qrng,prepared")
    parser.add_argument("--sequential-exchanges", type=int, default=20_000,
                        help="pulses for the prepared/sequential reference case (0 to skip)")
    args = parser.parse_args(argv)
    ctx = context()
    warnings.simplefilter("ignore")

    plan = [(mode, "grouped", case) for mode in args.modes.split(",") for case in CASES]
    if args.sequential_exchanges and "prepared" in args.modes:
        plan.append(("prepared", "sequential", "noiseless"))
    for mode, schedule, case in plan:
        n = args.sequential_exchanges if schedule == "sequential" else args.exchanges
        rates = measure(n, args.repeats, mode=mode, schedule=schedule, backend=args.backend, seed=1, **CASES[case])
        rate = statistics.median(rates)
        goal = GOALS[mode] if schedule == "grouped" else None
        result = {
            "benchmark": "throughput", "figure": "exchange_rate", "value": round(rate), "unit": "exchanges/s",
            "best": round(max(rates)), "worst": round(min(rates)), "goal": goal,
            "meets_goal": None if goal is None else rate >= goal,
            "params": {"mode": mode, "schedule": schedule, "case": case, "backend": args.backend,
                       "exchanges": n, "repeats": args.repeats},
            **ctx,
        }
        text = (f"{mode:9s} {schedule:10s} {case:32s} {rate:>12,.0f} exchanges/s "
                f"(best {max(rates):,.0f}; goal {goal and f'{goal:,}' or '-'})")
        emit(result, as_json=args.json, text=text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
