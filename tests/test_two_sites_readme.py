"""README "Two sites in five minutes", command by command, as real processes.

The only change to the README's commands: every port is a free one picked here (``--set`` /
``--classical`` / ``--quantum`` overrides), so the test never collides with anything else
listening on this machine.  Every process is killed in the ``finally``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

from nodeharness import ENV, QKD, free_port, read_events


def _qkd(*args: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([QKD, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_the_readme_two_sites_commands_deliver_one_key_to_both_saes(tmp_path):
    for args in (["psk", "init", "link.psk"], ["kme", "tls-init", "tls"],
                 ["node", "init", "site-a", "--role", "alice", "--psk", "link.psk", "--tls", "tls"],
                 ["node", "init", "site-b", "--role", "bob", "--psk", "link.psk", "--tls", "tls"]):
        done = _qkd(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    assert oct((tmp_path / "site-a" / "pool.psk").stat().st_mode & 0o777) == "0o600"
    classical, quantum, kme_a, kme_b = (free_port() for _ in range(4))
    ports = {"alice": ["--set", f'kme.listen="127.0.0.1:{kme_a}"', "--set", f'kme.peer_url="https://127.0.0.1:{kme_b}"'],
             "bob": ["--set", f'kme.listen="127.0.0.1:{kme_b}"', "--set", f'kme.peer_url="https://127.0.0.1:{kme_a}"']}
    common = ["--classical", f"127.0.0.1:{classical}", "--quantum", f"127.0.0.1:{quantum}",
              "--set", "round.exchanges=30000"]
    procs = []
    try:
        for site, role in (("site-a", "alice"), ("site-b", "bob")):
            with open(tmp_path / f"{site}.err", "w") as err:
                procs.append(subprocess.Popen([QKD, "node", "run", site, *common, *ports[role]], cwd=tmp_path,
                                              env=ENV, stdout=subprocess.DEVNULL, stderr=err))
        deadline = time.monotonic() + 180
        while sum(e.get("event") == "stored" for e in read_events(tmp_path / "site-a.err")) < 2:
            assert all(p.poll() is None for p in procs), (tmp_path / "site-b.err").read_text()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        status = _qkd("node", "status", "site-b", cwd=tmp_path)
        assert status.returncode == 0 and "bob node of link A-B" in status.stdout, status.stderr
        got = _qkd("kme", "get-key", "--kme", f"https://127.0.0.1:{kme_a}", "--tls", "tls", "--sae", "sae-a",
                   "--slave", "sae-b", cwd=tmp_path)
        assert got.returncode == 0, got.stderr
        (key,) = json.loads(got.stdout)["keys"]
        fetched = _qkd("kme", "get-key-with-ids", "--kme", f"https://127.0.0.1:{kme_b}", "--tls", "tls", "--sae",
                       "sae-b", "--master", "sae-a", key["key_ID"], cwd=tmp_path)
        assert fetched.returncode == 0, fetched.stderr
        assert json.loads(fetched.stdout)["keys"] == [key]
        for proc in reversed(procs):  # Ctrl-C / SIGTERM: a graceful stop, exit 0
            proc.send_signal(signal.SIGINT if proc is procs[0] else signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
