"""Input bits per second of Toeplitz privacy amplification and of the GHASH verification hash.

Goal (on a 2-core machine): toeplitz_hash of n = 10^6 key bits to m = 5·10^5 at >= 10 Mbit/s of
input; PolyHash128 (GHASH) over 10^6 bits (125,000 bytes) in well under 100 ms, i.e. >= 10 Mbit/s.

    python benchmarks/amplification.py            # human-readable lines
    python benchmarks/amplification.py --json     # one JSON object per result line

Each case runs once to warm up, then ``--repeats`` times; the figure is the median rate, with the
best and worst beside it.  Toeplitz: key and seed arrive as bool arrays (m = n/2); the time covers
validation, both forward FFTs, the product, the inverse FFT and rounding.  GHASH: one
PolyHash128 per key (its table set-up is timed separately, once), the time covers ``digest``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib import metadata, util
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

from qkd_circuits.hazmat import PolyHash128, toeplitz_hash  # noqa: E402

GOAL_BITS = 1_000_000  # the input size the goals are stated for
GOALS = {"toeplitz_input_rate": 10_000_000, "verification_hash_rate": 10_000_000}


def fft_backend() -> str:
    """What toeplitz_hash uses: scipy.fft when scipy is importable, else numpy.fft."""
    if util.find_spec("scipy") is None:
        return f"numpy.fft {np.__version__}"
    return f"scipy.fft {metadata.version('scipy')}"


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: first-touch allocations, FFT plan caches
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="input bits n, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="toeplitz_hash(workers=...)")
    parser.add_argument("--figures", default="toeplitz,hash", help="which of toeplitz,hash to run")
    args = parser.parse_args(argv)
    ctx = context()
    ctx["versions"].update({name: metadata.version(name) for name in ("scipy", "cryptography")
                            if _installed(name)})
    rng = np.random.default_rng(0)
    figures = args.figures.split(",")

    for n in (int(size) for size in args.sizes.split(",")):
        m = max(1, n // 2)
        if "toeplitz" in figures:
            key = rng.integers(0, 2, n, dtype=np.uint8).astype(bool)
            seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8).astype(bool)
            seconds = timed(lambda: toeplitz_hash(key, seed, m, workers=args.workers), args.repeats)
            params = {"n": n, "m": m, "repeats": args.repeats, "workers": args.workers, "fft": fft_backend(),
                      "input": "bool arrays"}
            report("toeplitz_input_rate", n, seconds, params, ctx, args.json,
                   f"toeplitz_hash  n={n:>9,} m={m:>9,}")
        if "hash" in figures:
            message = rng.bytes(n // 8)
            t0 = time.perf_counter()
            hasher = PolyHash128(rng.bytes(16))
            setup = time.perf_counter() - t0
            seconds = timed(lambda: hasher.digest(message), args.repeats)
            params = {"n": 8 * len(message), "bytes": len(message), "repeats": args.repeats,
                      "key_setup_seconds": round(setup, 6), "setup_included": False}
            report("verification_hash_rate", 8 * len(message), seconds, params, ctx, args.json,
                   f"PolyHash128    n={8 * len(message):>9,} ({len(message):,} bytes)")
    return 0


def report(figure: str, n: int, seconds: list[float], params: dict, ctx: dict, as_json: bool, label: str) -> None:
    rates = [n / s for s in seconds]
    rate = statistics.median(rates)
    goal = GOALS[figure] if n == GOAL_BITS else None
    result = {
        "benchmark": "amplification", "figure": figure, "value": round(rate), "unit": "bits/s",
        "best": round(max(rates)), "worst": round(min(rates)),
        "median_seconds": statistics.median(seconds), "goal": goal,
        "meets_goal": None if goal is None else rate >= goal, "params": params, **ctx,
    }
    text = (f"{label}  {rate / 1e6:8.2f} Mbit/s  ({statistics.median(seconds) * 1e3:7.2f} ms; "
            f"best {max(rates) / 1e6:.2f}, worst {min(rates) / 1e6:.2f}; "
            f"goal {f'{goal / 1e6:g} Mbit/s' if goal else '-'})")
    emit(result, as_json=as_json, text=text)


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
