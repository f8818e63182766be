"""ETSI GS QKD 014 key deliveries per second over mutual TLS, two real KMEs on loopback.

Goal: at 10 concurrent clients, >= 500 deliveries/s with a p99 delivery latency below 50 ms.

    python benchmarks/kme_load.py                          # human-readable lines
    python benchmarks/kme_load.py --json                   # one JSON object per result line
    python benchmarks/kme_load.py --clients 1,10 --deliveries 100
    python benchmarks/kme_load.py --client-threads --in-process-kmes   # all in one process

Site A's KME serves the master SAE ``sae-a``, site B's the slave SAE ``sae-b``; by default each
KME is its own ``qkd kme serve`` process (the deployment shape) and each client its own process
(``--in-process-kmes``: both KMEs in this process via ``start_kme``; ``--client-threads``: clients
as threads of this process, sharing its GIL), with SQLite stores (WAL, ``synchronous=FULL``) in a
temporary directory.  A *delivery* is one enc_keys call for 1 key at A (A reserves it, has B record the
assignment over the KME-to-KME TLS link, then hands it out) followed by one dec_keys call for
that key_ID at B; its latency is the time of both calls, and the two keys are checked equal.
Each client has its own ``KmeClient`` pair (one kept-alive TLS connection to each KME).  Every client first makes ``--warmup`` deliveries; then all start together
and each makes ``--deliveries`` (capped at ``--max-per-level`` deliveries per concurrency level,
so 50 clients make 40 each by default); deliveries/s is the total over the wall time from the
common start to the last client's end.

The key source is not what is measured: the stores are filled directly with random bits (numpy
``default_rng(seed)``) cut by ``cut_key``, the same pieces at both sites, never from a QKD run.
With ``--in-process-kmes --client-threads`` everything shares one Python process (and its
GIL), a lower bound for the deployment shape.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402
from qkd_circuits.etsi014 import (  # noqa: E402
    KmeClient, KmeConfig, client_context, init_tls_pki, server_context, start_kme)
from qkd_circuits.keystore import KeyStore, cut_key  # noqa: E402

GOAL = {"clients": 10, "deliveries_per_s": 500, "p99_ms": 50.0}
KEY_BITS = 256


class Sites:
    """Two KMEs on loopback (A: master SAE, peer B; B: slave SAE), stores filled with ``keys`` keys."""

    def __init__(self, directory: Path, *, keys: int, seed: int, processes: bool = False) -> None:
        certs = init_tls_pki(directory / "tls", kmes=("kme-a", "kme-b"), saes=("sae-a", "sae-b"))
        self._ctx = lambda name: client_context(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")
        bits = np.random.default_rng(seed).integers(0, 2, size=keys * KEY_BITS, dtype=np.uint8)
        pieces = cut_key(bits, link_id="A-B", round_number=0, size=KEY_BITS)
        self.stores = {site: KeyStore(directory / f"{site}.db") for site in "ab"}
        for store in self.stores.values():
            store.add(pieces, link_id="A-B", round_number=0)
        self._procs = []
        if processes:  # the deployment shape: each KME its own `qkd kme serve` process
            for store in self.stores.values():
                store.close()
            self._start_processes(directory)
            return
        srv = {site: server_context(certs / f"kme-{site}.pem", certs / f"kme-{site}.key", certs / "ca.pem")
               for site in "ab"}
        # B only answers A's peer calls (its slave never calls enc_keys), so it needs no peer URL.
        self.b = start_kme(KmeConfig(KME_ID="kme-b", local_SAEs=frozenset({"sae-b"}), peer_KME_ID="kme-a",
                                     remote_SAEs=frozenset({"sae-a"})), self.stores["b"], ssl_context=srv["b"])
        self.a = start_kme(KmeConfig(KME_ID="kme-a", local_SAEs=frozenset({"sae-a"}), peer_KME_ID="kme-b",
                                     remote_SAEs=frozenset({"sae-b"}), peer_url=self.b.url,
                                     peer_ssl=self._ctx("kme-a")), self.stores["a"], ssl_context=srv["a"])

    def _start_processes(self, directory: Path) -> None:
        qkd = str(Path(sys.executable).with_name("qkd"))

        def serve(site, *extra):
            log = directory / f"kme-{site}.log"  # its request log lines go to a file, not a pipe to drain
            with open(log, "w") as sink:
                proc = subprocess.Popen([qkd, "kme", "serve", "--id", f"kme-{site}", "--store",
                                         str(directory / f"{site}.db"), "--tls", str(directory / "tls"),
                                         "--listen", "127.0.0.1:0", "--sae", f"sae-{site}",
                                         "--max-key-count", str(10 ** 9), *extra], stderr=sink, text=True)
            self._procs.append(proc)
            line = ""
            for _ in range(600):  # up to 60 s
                line = log.read_text().partition("\n")[0] if "\n" in log.read_text() else ""
                if line or proc.poll() is not None:
                    break
                time.sleep(0.1)
            if " on https://" not in line:
                raise SystemExit(f"kme-{site} did not start: {log.read_text()[:500]}")
            return int(line.split(" on https://")[1].split()[0].rsplit(":", 1)[1])

        self.b_port = serve("b", "--peer-id", "kme-a", "--peer-sae", "sae-a")
        self.a_port = serve("a", "--peer-id", "kme-b", "--peer-url", f"https://127.0.0.1:{self.b_port}",
                            "--peer-sae", "sae-b")

    def clients(self) -> tuple[KmeClient, KmeClient]:
        """A fresh (master at A, slave at B) client pair."""
        a_port = self.a_port if self._procs else self.a.port
        b_port = self.b_port if self._procs else self.b.port
        return (KmeClient("127.0.0.1", a_port, self._ctx("sae-a")),
                KmeClient("127.0.0.1", b_port, self._ctx("sae-b")))

    def stop(self) -> None:
        if self._procs:
            for proc in self._procs:
                proc.terminate()
            for proc in self._procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return
        self.a.stop()
        self.b.stop()


def deliver(master: KmeClient, slave: KmeClient) -> float:
    """One delivery (enc_keys for 1 key at A, dec_keys for it at B); returns its latency in s."""
    t0 = time.perf_counter()
    (key,) = master.get_key("sae-b", number=1)
    got = slave.get_key_with_ids("sae-a", [key[0]])
    elapsed = time.perf_counter() - t0
    if got != [key]:
        raise RuntimeError(f"the slave got other key material for key_ID {key[0]}")
    return elapsed


def _client_process(sites: Sites, per_client: int, warmup: int, start, results) -> None:
    """One client in its own process (forked): warm up, wait for the others, deliver, report."""
    try:
        master, slave = sites.clients()
        for _ in range(warmup):
            deliver(master, slave)
        start.wait(timeout=300)
        results.put([deliver(master, slave) for _ in range(per_client)])
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        start.abort()
        results.put(f"{type(exc).__name__}: {exc}")


def measure_processes(sites: Sites, clients: int, per_client: int, warmup: int) -> tuple[float, list[float]]:
    """Deliveries/s and every delivery's latency (s) for ``clients`` client processes."""
    mp = multiprocessing.get_context("fork")
    start, results = mp.Barrier(clients + 1), mp.Queue()
    procs = [mp.Process(target=_client_process, args=(sites, per_client, warmup, start, results), daemon=True)
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    try:
        start.wait(timeout=300)
        t0 = time.perf_counter()
        batches = [results.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - t0
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    failed = [b for b in batches if isinstance(b, str)]
    if failed:
        raise RuntimeError(f"{len(failed)} client(s) failed: {failed[0]}")
    latencies = [s for batch in batches for s in batch]
    return len(latencies) / wall, latencies


def measure(sites: Sites, clients: int, per_client: int, warmup: int) -> tuple[float, list[float]]:
    """Deliveries/s and every delivery's latency (s) for ``clients`` concurrent client threads."""
    start = threading.Barrier(clients + 1)

    def client(_: int) -> list[float]:
        master, slave = sites.clients()
        try:
            for _ in range(warmup):
                deliver(master, slave)
            start.wait(timeout=120)
        except BaseException:
            start.abort()  # release the others instead of leaving them at the barrier
            raise
        return [deliver(master, slave) for _ in range(per_client)]

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, i) for i in range(clients)]
        start.wait(timeout=120)
        t0 = time.perf_counter()
        latencies = [s for f in futures for s in f.result()]
        wall = time.perf_counter() - t0
    return len(latencies) / wall, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per result line")
    parser.add_argument("--clients", default="1,10,50", help="concurrent clients per level, comma-separated")
    parser.add_argument("--deliveries", type=int, default=200, help="timed deliveries per client")
    parser.add_argument("--max-per-level", type=int, default=2000,
                        help="cap on the timed deliveries of one level (per client: at least 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed deliveries per client first")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random key material")
    parser.add_argument("--kme-processes", action="store_true", default=True,
                        help="run each KME as its own `qkd kme serve` process (the default)")
    parser.add_argument("--in-process-kmes", dest="kme_processes", action="store_false",
                        help="run both KMEs in this process (start_kme)")
    parser.add_argument("--client-processes", action="store_true", default=True,
                        help="each client its own process (the default)")
    parser.add_argument("--client-threads", dest="client_processes", action="store_false",
                        help="clients as threads of this process (sharing its GIL)")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    if any(c < 1 for c in levels) or args.deliveries < 1 or args.warmup < 0:
        parser.error(f"--clients must be positive, --deliveries >= 1, --warmup >= 0 (got {args.clients!r}, "
                     f"{args.deliveries}, {args.warmup})")
    plan = [(c, min(args.deliveries, max(1, args.max_per_level // c))) for c in levels]
    ctx = context()
    ctx["versions"]["aiohttp"] = metadata.version("aiohttp")

    needed = sum(c * (per + args.warmup) for c, per in plan)
    with tempfile.TemporaryDirectory(prefix="kme_load-") as tmp:
        sites = Sites(Path(tmp), keys=needed + 100, seed=args.seed, processes=args.kme_processes)
        try:
            for clients, per_client in plan:
                run = measure_processes if args.client_processes else measure
                rate, latencies = run(sites, clients, per_client, args.warmup)
                p50, p99 = (float(np.percentile(latencies, q)) * 1e3 for q in (50, 99))
                at_goal = clients == GOAL["clients"]
                meets = rate >= GOAL["deliveries_per_s"] and p99 < GOAL["p99_ms"] if at_goal else None
                result = {
                    "benchmark": "kme_load", "figure": "delivery_rate", "value": round(rate, 1),
                    "unit": "deliveries/s", "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
                    "mean_ms": round(statistics.fmean(latencies) * 1e3, 2), "deliveries": len(latencies),
                    "goal": GOAL if at_goal else None, "meets_goal": meets,
                    "params": {"clients": clients, "deliveries": per_client, "warmup": args.warmup,
                               "key_bits": KEY_BITS, "keys_per_request": 1, "transport": "https mutual TLS, loopback",
                               "kmes": "processes" if args.kme_processes else "in-process",
                               "clients_as": "processes" if args.client_processes else "threads",
                               "store": "sqlite WAL synchronous=FULL, group commit", "seed": args.seed},
                    **ctx,
                }
                goal_text = (f"goal >= {GOAL['deliveries_per_s']} deliveries/s and p99 < {GOAL['p99_ms']:g} ms: "
                             f"{'met' if meets else 'NOT met'}" if at_goal else "no goal at this level")
                emit(result, as_json=args.json,
                     text=f"{clients:3d} clients x {per_client:4d} deliveries: {rate:8,.1f} deliveries/s, "
                          f"p50 {p50:7.2f} ms, p99 {p99:7.2f} ms ({len(latencies)} deliveries; {goal_text})")
        finally:
            sites.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
