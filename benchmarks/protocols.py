"""Every protocol on every local backend: QBER, key fraction, exchanges/s and secret bits/s.

BB84, BBM92 and six-state run as whole rounds (``qkd_circuits.session.run_round``: circuits,
sifting, estimation, Cascade, verification, amplification, the authenticated channel); the key
fraction is the final key's bits per pulse sent, and secret bits/s is the final key over the
round's wall time (after an untimed 2,000-pulse warm-up round of the same protocol).  E91 runs its circuits and the CHSH estimate only (it does not go through the
post-processing yet): its key fraction is the *rate* ``bb84_rate`` (1 − 2h(Q), per key round) times
the key rounds per pulse, with ``di_rate`` (Acín et al. 2007) beside it, and no secret bits/s.
B92, SARG04 and MDI have their circuits and tests but no round yet, so no line here.  Seeded
simulations: every key here is known to whoever runs the simulator.

    python benchmarks/protocols.py                                    # the table of the note
    python benchmarks/protocols.py --json --exchanges 20000 --backends aer --protocols bb84,e91
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

import qkd_circuits as qkd  # noqa: E402

PROTOCOLS = ("bb84", "bbm92", "six-state", "e91")
#: The channel of every line: a little depolarizing noise where the backend runs Aer noise
#: instructions; on a device twin or the Braket simulator, the device (or nothing) is the channel.
AER_NOISE = 0.04


def _round(protocol: str, n: int, backend: str, seed: int) -> dict:
    channel = qkd.Channel(depolarizing=AER_NOISE) if backend == "aer" else qkd.Channel()
    t0 = time.perf_counter()
    if protocol == "e91":
        from qkd_circuits.quantum.e91 import run_e91

        est = run_e91(n, backend=backend, channel=channel, seed=seed).estimate()
        seconds = time.perf_counter() - t0
        return {"qber": est.qber, "key_fraction": est.bb84_rate * est.key_rounds / n, "s": est.s,
                "di_rate": est.di_rate, "secret_bits": None, "seconds": seconds, "aborted": None}
    result = qkd.run_round(n, protocol=protocol, mode="prepared", backend=backend, channel=channel, seed=seed)
    seconds = time.perf_counter() - t0
    r = result.report
    return {"qber": r.qber.estimate, "key_fraction": r.final_key_bits / n, "secret_bits": r.final_key_bits,
            "seconds": seconds, "aborted": str(r.abort_reason) if r.aborted else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--exchanges", type=int, default=200_000, help="pulses per round on aer")
    parser.add_argument("--device-exchanges", type=int, default=90_000,
                        help="pulses per round elsewhere (BBM92 and six-state do not split jobs at a device's "
                             "100,000-shot limit yet)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--backends", default="aer,fake:nairobi,braket-local")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    protocols = args.protocols.split(",")
    if any(p not in PROTOCOLS for p in protocols):
        parser.error(f"--protocols takes {', '.join(PROTOCOLS)}")
    ctx = context()
    for backend in args.backends.split(","):
        n = args.exchanges if backend == "aer" else args.device_exchanges
        for protocol in protocols:
            _round(protocol, 2_000, backend, args.seed)  # untimed: imports, transpilation, first simulator start
            out = _round(protocol, n, backend, args.seed)
            params = {"protocol": protocol, "backend": backend, "exchanges": n, "seed": args.seed,
                      "depolarizing": AER_NOISE if backend == "aer" else 0.0, "mode": "prepared"}
            rate = n / out["seconds"]
            secret = None if out["secret_bits"] is None else out["secret_bits"] / out["seconds"]
            emit({"benchmark": "protocols", "figure": "exchanges_per_s", "params": params, "value": rate,
                  "unit": "exchanges/s", "qber": out["qber"], "key_fraction": out["key_fraction"],
                  "secret_bits_per_s": secret, "aborted": out["aborted"], "s": out.get("s"),
                  "di_rate": out.get("di_rate"), "seconds": out["seconds"], **ctx},
                 as_json=args.json,
                 text=f"{protocol:<10} {backend:<14} QBER {out['qber']:.2%}  key fraction {out['key_fraction']:.4f}  "
                      f"{rate:>10,.0f} exchanges/s  "
                      + (f"{secret:>9,.0f} secret bits/s" if secret is not None else
                         f"S = {out['s']:.3f}, r_DI = {out['di_rate']:.3f}")
                      + (f"  ({out['aborted']})" if out["aborted"] else ""))


if __name__ == "__main__":
    main()
