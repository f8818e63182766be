"""Exchanges per second of the BB84 circuits, end to end (circuit -> sampler -> MeasurementRecord).

Goal (on a 2-core machine): qrng mode >= 1,000,000 exchanges/s, noiseless and with
noise and Eve in the circuit; prepared mode >= 100,000 exchanges/s.

    python benchmarks/throughput.py            # human-readable lines
    python benchmarks/throughput.py --json     # one JSON object per result line
    python benchmarks/throughput.py --json --lanes 1,2,4,8,16 --cases noiseless,noisy-link
                                               # the lane sweep behind submit()'s Aer default

Each case is run once to warm up, then ``--repeats`` times; the figure is the median rate, with
the best and worst beside it.  The time covers building and transpiling the circuit, running
the sampler, unpacking the bits and assembling the record.

``--lanes`` (a comma list) repeats every case at each lane count; without it each case runs at
:func:`qkd_circuits.submit`'s default (the line's ``lanes`` is what the record says was used).  A
lane count that cannot run (the circuit is wider than the simulator allows) gives a line with
``value: null`` and the ``error``.  A case whose probe (growing runs from 200 exchanges) says the
timed runs would take longer than ``--max-seconds`` is timed on fewer exchanges
(``params.exchanges`` says how many).
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
#: Cases run only when named in --cases.  noisy-link is what
#: ``qkd run --noise depolarizing:0.02 --distance-km 25`` builds (fibre loss + depolarizing).
EXTRA_CASES = {
    "noisy-link": {"channel": qkd.Channel(distance_km=25, depolarizing=0.02), "detector": qkd.Detector()},
}
ALL_CASES = {**CASES, **EXTRA_CASES}
PROBE = 200


def measure(n: int, repeats: int, max_seconds: float | None = None, **options) -> tuple[list[float], int, int]:
    """Median-able rates, the exchanges actually timed per run, and the lanes the record used."""
    if max_seconds:  # probe with growing runs until one takes a tenth of the budget
        m = min(n, PROBE)
        while True:
            t0 = time.perf_counter()
            qkd.run_exchanges(m, **options)
            elapsed = time.perf_counter() - t0
            if m >= n or elapsed > max_seconds / 10:
                break
            m = min(n, 4 * m)
        n = max(min(n, PROBE), min(n, int(m / elapsed * max_seconds / (repeats + 1))))
    qkd.run_exchanges(min(n, 50_000), **options)  # warm-up: imports, transpiler caches
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        record = qkd.run_exchanges(n, **options)
        rates.append(len(record) / (time.perf_counter() - t0))
    return rates, n, record.provenance.lanes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--exchanges", type=int, default=2_000_000, help="pulses per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="aer")
    parser.add_argument("--modes", default="qrng,prepared")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma list of {', '.join(ALL_CASES)} (default: all but {', '.join(EXTRA_CASES)})")
    parser.add_argument("--lanes", default=None,
                        help="comma list of lane counts to sweep (default: submit()'s default)")
    parser.add_argument("--max-seconds", type=float, default=120.0,
                        help="time a case on fewer exchanges when its probe says the runs would take longer "
                             "(0: never)")
    parser.add_argument("--sequential-exchanges", type=int, default=20_000,
                        help="pulses for the prepared/sequential reference case (0 to skip)")
    args = parser.parse_args(argv)
    ctx = context()
    warnings.simplefilter("ignore")

    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(ALL_CASES)}")
    lane_counts = [None] if args.lanes is None else [int(v) for v in args.lanes.split(",")]
    plan = [(mode, "grouped", case, lanes) for mode in args.modes.split(",") for case in cases
            for lanes in lane_counts]
    if args.sequential_exchanges and "prepared" in args.modes:
        plan.append(("prepared", "sequential", "noiseless", None))
    for mode, schedule, case, lanes in plan:
        n = args.sequential_exchanges if schedule == "sequential" else args.exchanges
        params = {"mode": mode, "schedule": schedule, "case": case, "backend": args.backend,
                  "exchanges": n, "repeats": args.repeats, "lanes": lanes, "lanes_requested": lanes}
        goal = GOALS[mode] if schedule == "grouped" else None
        try:
            rates, n, used = measure(n, args.repeats, args.max_seconds, mode=mode, schedule=schedule,
                                     backend=args.backend, seed=1, lanes=lanes, **ALL_CASES[case])
        except Exception as exc:  # e.g. more qubits than the simulator takes
            result = {"benchmark": "throughput", "figure": "exchange_rate", "value": None,
                      "unit": "exchanges/s", "error": f"{type(exc).__name__}: {exc}", "params": params, **ctx}
            emit(result, as_json=args.json, text=f"{mode:9s} {schedule:10s} {case:32s} lanes={lanes}: {exc}")
            continue
        rate = statistics.median(rates)
        params.update(exchanges=n, lanes=used)
        result = {
            "benchmark": "throughput", "figure": "exchange_rate", "value": round(rate), "unit": "exchanges/s",
            "best": round(max(rates)), "worst": round(min(rates)), "goal": goal,
            "meets_goal": None if goal is None else rate >= goal,
            "params": params,
            **ctx,
        }
        text = (f"{mode:9s} {schedule:10s} {case:32s} lanes={used:<3d} {rate:>12,.0f} exchanges/s "
                f"(best {max(rates):,.0f}; goal {goal and f'{goal:,}' or '-'})")
        emit(result, as_json=args.json, text=text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
