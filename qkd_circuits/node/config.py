"""A link node's configuration: one TOML file per site (``DIR/node.toml``), command-line overrides.

Paths in the file are relative to the node's directory.  Unknown tables or keys are refused
(a typo must not silently fall back to a default), and every value is checked before anything
starts, with a :class:`~qkd_circuits.ConfigurationError` naming the key.  See
``docs/node.md`` for every key; :func:`default_config_text` writes a commented file.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import ConfigurationError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["NodeConfig", "load_config", "default_config_text", "CONFIG_NAME", "DEFAULTS"]

CONFIG_NAME = "node.toml"
#: Tables whose keys the operator names (not checked against DEFAULTS).
_FREE_TABLES = {"kme.wrap_for"}

#: Every key with its default; the [round] table takes the names of the ``qkd run`` options.
DEFAULTS: dict = {
    "role": None,
    "link_id": "A-B",
    "pool": "pool.psk",
    "store": "keys.db",
    "link": {"classical": "127.0.0.1:7100", "quantum": "127.0.0.1:7101", "timeout_s": 10.0,
             "retry_s": 0.5, "retry_max_s": 10.0},
    "round": {"exchanges": 30000, "backend": "aer", "noise": [], "eve": None, "distance_km": 0.0,
              "alpha_db_per_km": 0.2, "detector_efficiency": 1.0, "dark_count": 0.0, "lanes": None,
              "schedule": "grouped", "abort_qber": 0.11, "cascade": "option7", "sample_fraction": 0.1,
              "eps_sec": 1e-10, "eps_cor": 1e-15, "replenish_bits": 1024},
    "stock": {"key_size": 256, "low": 500, "high": 2000, "max_key_count": 100_000, "ttl_s": 0.0,
              "purge_every_s": 60.0},
    "kme": {"enabled": False, "id": None, "listen": "127.0.0.1:8443", "tls": "tls", "cert": None, "key": None,
            "ca": None, "saes": [], "peer_id": None, "peer_url": None, "peer_saes": [], "wrap_for": {}},
    "metrics": {"listen": ""},
    "log": {"format": "json"},
}


@dataclass(frozen=True)
class NodeConfig:
    """A validated node configuration (``raw`` is the merged table, for status and logs)."""

    directory: Path
    raw: dict

    def __getitem__(self, key: str):
        return self.raw[key]

    @property
    def role(self) -> str:
        return self.raw["role"]

    def path(self, value: str | None) -> Path | None:
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.directory / p


def _merge(base: dict, extra: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        name = f"{where}{key}"
        if key not in base:
            raise ConfigurationError(f"unknown configuration key {name!r}")
        if name in _FREE_TABLES:  # keys chosen by the operator (SAE IDs)
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigurationError(f"{name!r} must be a table of SAE_ID = \"path\"")
            out[key] = {**out[key], **value}
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigurationError(f"{name!r} must be a table")
            out[key] = _merge(base[key], value, f"{name}.")
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """``"stock.high=500"`` → ``{"stock": {"high": 500}}`` (the value is read as TOML, else text)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigurationError(f"an override is KEY=VALUE, got {text!r}")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parsed
    return out


def _check(raw: dict) -> None:
    def fail(key, why):
        raise ConfigurationError(f"{key}: {why}")

    def number(table, key, *, minimum=0.0, integer=False):
        value = raw[table][key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            fail(f"{table}.{key}", f"must be a {'whole ' if integer else ''}number, got {value!r}")
        if value < minimum:
            fail(f"{table}.{key}", f"must be >= {minimum}, got {value!r}")
        return value

    if raw["role"] not in ("alice", "bob"):
        fail("role", f"must be 'alice' or 'bob', got {raw['role']!r}")
    if not isinstance(raw["link_id"], str) or not 0 < len(raw["link_id"]) <= 64 or "|" in raw["link_id"]:
        fail("link_id", "must be 1 to 64 characters without '|'")
    number("link", "timeout_s", minimum=0.1)
    number("link", "retry_s", minimum=0.01)
    number("link", "retry_max_s", minimum=0.01)
    number("round", "exchanges", minimum=64, integer=True)
    number("round", "replenish_bits", integer=True)
    if raw["round"]["replenish_bits"] % 8:
        fail("round.replenish_bits", "must be a multiple of 8")
    size = number("stock", "key_size", minimum=8, integer=True)
    if size % 8:
        fail("stock.key_size", f"must be a multiple of 8 bits, got {size}")
    low, high = number("stock", "low", integer=True), number("stock", "high", minimum=1, integer=True)
    limit = number("stock", "max_key_count", minimum=1, integer=True)
    if not low < high <= limit:
        fail("stock", f"need low < high <= max_key_count, got {low}, {high}, {limit}")
    number("stock", "ttl_s")
    number("stock", "purge_every_s", minimum=0.1)
    if not isinstance(raw["round"]["noise"], list):
        fail("round.noise", "must be a list of MODEL:P strings")
    if raw["log"]["format"] not in ("json", "text"):
        fail("log.format", "must be 'json' or 'text'")
    kme = raw["kme"]
    if kme["enabled"]:
        if not kme["id"] or not kme["saes"]:
            fail("kme", "an enabled KME needs an id and at least one SAE in saes")
        if bool(kme["peer_url"]) and not kme["peer_id"]:
            fail("kme.peer_id", "a peer_url needs the peer's id")


def load_config(directory: str | Path, *, file: str | Path | None = None, overrides: list[str] = ()) -> NodeConfig:
    """Read ``DIR/node.toml`` (or ``file``), apply ``overrides`` (``KEY=VALUE``), validate."""
    directory = Path(directory)
    path = Path(file) if file is not None else directory / CONFIG_NAME
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the node configuration {path}: {exc.strerror}; "
                                 f"create one with 'qkd node init {directory}'") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    raw = _merge(DEFAULTS, data)
    for item in overrides:
        raw = _merge(raw, parse_override(item))
    _check(raw)
    return NodeConfig(directory, raw)


def default_config_text(role: str, *, link_id: str = "A-B", kme: bool = True, tls: str = "tls") -> str:
    """A commented ``node.toml`` for one site of a demo link on loopback."""
    site = "a" if role == "alice" else "b"
    other = "b" if site == "a" else "a"
    ports = {"a": 8443, "b": 8444}
    connect = "listens on" if role == "alice" else "connects to"
    return f'''# qkd node: one site of a QKD link ({role}).  Paths are relative to this directory.
role = "{role}"
link_id = "{link_id}"          # both sites: the same; key_IDs derive from it
pool = "pool.psk"           # the PSK / link state (qkd psk init; the same file at both sites)
store = "keys.db"           # this site's key store (SQLite)

[link]
# {role} {connect} these: the authenticated classical channel and the simulated quantum channel
classical = "127.0.0.1:7100"
quantum = "127.0.0.1:7101"
timeout_s = 10.0
retry_s = 0.5               # bob: first wait after a failed round (doubles up to retry_max_s)
retry_max_s = 10.0

[round]                     # the `qkd run` options; both sites must agree on post-processing
exchanges = 30000
backend = "aer"
noise = ["depolarizing:0.02"]
distance_km = 0.0
cascade = "original"

[stock]                     # keys of key_size bits; bob runs rounds while his stock < high,
key_size = 256              # pauses at high, resumes below low, never exceeds max_key_count
low = 500
high = 2000
max_key_count = 100000
ttl_s = 0.0                 # > 0: alice purges keys older than this at both sites

[kme]                       # this site's ETSI GS QKD 014 server, in this process
enabled = {"true" if kme else "false"}
id = "kme-{site}"
listen = "127.0.0.1:{ports[site]}"
tls = {json.dumps(str(tls))}{' ' * max(1, 20 - len(json.dumps(str(tls))))}# ca.pem, kme-{site}.pem, kme-{site}.key (qkd kme tls-init)
saes = ["sae-{site}"]
peer_id = "kme-{other}"
peer_url = "https://127.0.0.1:{ports[other]}"
peer_saes = ["sae-{other}"]

[kme.wrap_for]              # SAE_ID = "its ML-KEM wrapping public key" (qkd kme wrap-keygen):
                            # that SAE's keys are delivered wrapped (for SAEs off this host)

[metrics]
listen = ""                 # e.g. "127.0.0.1:9100": Prometheus /metrics and /health

[log]
format = "json"             # json | text (one line per round, delivery and refusal; never key bytes)
'''
