"""Sustained secret key rate of two link nodes: key bits per second into both sites' stores.

    python benchmarks/node_rate.py                          # human-readable lines
    python benchmarks/node_rate.py --json                   # one JSON object per result line
    python benchmarks/node_rate.py --distances 0,25 --rounds 20 --exchanges 100000

For each fibre length, two real ``qkd node run`` processes (Alice's site and Bob's) run on
loopback, each with its own directory, PSK copy and SQLite store; Bob's node runs ``--rounds``
rounds back to back (pacing off: the high watermark is above what the run can make).  The figure
is the key bits both stores hold at the end divided by the wall time from Bob's first round to
his last stored key; the script checks that the two stores hold the same keys under the same
key_IDs before it reports anything.  Everything a round does is counted: the circuit on Aer at
Bob's node, sifting, estimation, Cascade, verification, privacy amplification, the three tags,
the pool refill (1,024 bits a round) and the SQLite writes.  Both nodes share this machine's
cores, so on two cores the figure is a lower bound for two machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402
from qkd_circuits import create_psk_file  # noqa: E402
from qkd_circuits.keystore import KeyStore  # noqa: E402
from qkd_circuits.node import default_config_text  # noqa: E402

QKD = str(Path(sys.executable).with_name("qkd"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def measure(root: Path, *, distance_km: float, rounds: int, exchanges: int, noise: str, cascade: str) -> dict:
    root.mkdir(parents=True)
    psk = root / "link.psk"
    create_psk_file(psk, pad_bits=1 << 16)
    ports = {"classical": _port(), "quantum": _port()}
    sets = {"round.exchanges": exchanges, "round.distance_km": distance_km, "round.noise": [noise],
            "round.cascade": cascade, "stock.low": 10**8, "stock.high": 10**8 + 1, "stock.max_key_count": 10**9}
    procs, dirs = {}, {}
    try:
        for role in ("alice", "bob"):
            d = dirs[role] = root / role
            d.mkdir()
            shutil.copy2(psk, d / "pool.psk")
            (d / "node.toml").write_text(default_config_text(role, kme=False))
        argv = lambda role: [QKD, "node", "run", str(dirs[role]), "--classical", f"127.0.0.1:{ports['classical']}",  # noqa: E731
                             "--quantum", f"127.0.0.1:{ports['quantum']}",
                             *[x for k, v in sets.items() for x in ("--set", f"{k}={json.dumps(v)}")]]
        with open(dirs["alice"] / "node.err", "w") as err:
            procs["alice"] = subprocess.Popen(argv("alice"), stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while not any(e.get("event") == "listening" for e in _events(dirs["alice"] / "node.err")):
            if procs["alice"].poll() is not None or time.monotonic() > deadline:
                raise SystemExit("Alice's node did not start: " + (dirs["alice"] / "node.err").read_text()[-2000:])
            time.sleep(0.05)
        with open(dirs["bob"] / "node.err", "w") as err:
            procs["bob"] = subprocess.Popen([*argv("bob"), "--rounds", str(rounds)], stdout=subprocess.DEVNULL,
                                            stderr=err)
        if procs["bob"].wait(timeout=3600) != 0:
            raise SystemExit("Bob's node failed: " + (dirs["bob"] / "node.err").read_text()[-2000:])
        procs["alice"].send_signal(signal.SIGTERM)
        procs["alice"].wait(timeout=60)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    stores = {role: KeyStore(dirs[role] / "keys.db") for role in dirs}
    if stores["alice"].fingerprint() != stores["bob"].fingerprint():
        raise SystemExit("the two sites' stores differ: no figure is reported")
    events = _events(dirs["bob"] / "node.err")
    start = next(e["time"] for e in events if e["event"] == "connecting")
    stored = [e for e in events if e["event"] == "stored"]
    end = stored[-1]["time"] if stored else time.time()
    bits = sum(e["key_bits"] for e in stored)
    round_lines = [e for e in events if e["event"] == "round"]
    qbers = [e["qber"] for e in round_lines if e.get("qber") is not None]
    return {"key_bits": bits, "seconds": end - start, "rounds": len(round_lines),
            "rounds_with_key": sum(e["outcome"] == "key" for e in round_lines),
            "keys": stores["bob"].count(), "mean_qber": sum(qbers) / len(qbers) if qbers else None,
            "final_key_bits_per_round": sum(e["final_key_bits"] for e in round_lines) / max(1, len(round_lines))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--distances", default="0,25", help="fibre lengths in km, comma-separated")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--exchanges", type=int, default=100_000, help="pulses per round")
    parser.add_argument("--noise", default="depolarizing:0.02")
    parser.add_argument("--cascade", default="option7")
    args = parser.parse_args(argv)
    ctx = context()
    with tempfile.TemporaryDirectory() as tmp:
        for i, distance in enumerate(float(x) for x in args.distances.split(",")):
            r = measure(Path(tmp) / f"d{i}", distance_km=distance, rounds=args.rounds, exchanges=args.exchanges,
                        noise=args.noise, cascade=args.cascade)
            rate = r["key_bits"] / r["seconds"] if r["seconds"] > 0 else 0.0
            params = {"distance_km": distance, "rounds": args.rounds, "exchanges": args.exchanges,
                      "noise": args.noise, "cascade": args.cascade, "key_size": 256, "backend": "aer"}
            emit({"benchmark": "node_rate", "params": params, "value": rate, "unit": "secret bits/s into both stores",
                  **r, **ctx}, as_json=args.json,
                 text=f"{distance:g} km: {rate:,.0f} secret bits/s into both stores ({r['key_bits']:,} bits, "
                      f"{r['rounds_with_key']}/{r['rounds']} rounds with a key, {r['seconds']:.1f} s, "
                      f"mean QBER {r['mean_qber'] or 0:.3%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
