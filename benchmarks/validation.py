"""The validation board: published figures recomputed with this package, row by row.

Each row names the paper (authors, journal, year), the figure, table or equation, the
parameters, the published value and how it was read, our value, the tolerance and why,
and whether it passes.  A row that does not reproduce is kept, marked ``expected: "gap"``
with the measured difference and the reason; it is never dropped or widened into a pass.

    python benchmarks/validation.py                         # human lines, every row
    python benchmarks/validation.py --fast                  # the rows CI can afford (seconds)
    python benchmarks/validation.py --json                  # one JSON object per row
    python benchmarks/validation.py --markdown docs/validation.md   # write the board

``published_source`` says where the published number was read: ``"paper"`` (the paper's own
text, a table or a sentence), ``"citing"`` (quoted by another document, named in
``reading``: the paper itself could not be read here, so the value is *not confirmed*), or
``"none"`` (no published value could be read: the row reports ours only).

Exit status: 0 when every row expected to pass passes, 1 when one of them fails (a
regression of the board); gap rows never change the exit status.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))

from _common import context, emit  # noqa: E402

EXPECTED = ("pass", "gap", "unconfirmed")


@dataclass(frozen=True)
class Row:
    """One published figure and how we recompute it.

    ``compute(fast)`` returns (our value, details).  ``kind`` says how the tolerance applies:
    ``"abs"`` |ours − published| ≤ tol, ``"rel"`` |ours/published − 1| ≤ tol, ``"at_least"``
    ours ≥ published − tol (a claim such as "keys still reach 135 km").
    """

    id: str
    paper: str
    where: str
    params: dict
    published: float | None
    unit: str
    reading: str
    published_source: str
    tolerance: float
    kind: str
    tolerance_why: str
    compute: Callable[[bool], tuple[float, dict]]
    expected: str = "pass"
    gap_reason: str = ""
    fast: bool = True
    needs: str = ""  # a module the row needs (rows whose code is not there yet are reported "not run")
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Row 1: Shor & Preskill
# ---------------------------------------------------------------------------------------------

def _shor_preskill(fast: bool):
    from qkd_circuits.analysis.keyrate import shor_preskill_threshold
    q = shor_preskill_threshold(1.0)
    return 100.0 * q, {"threshold": q}


# ---------------------------------------------------------------------------------------------
# Row 2: GYS maximum distances (Lo, Ma & Chen 2005; Ma, Qi, Zhao & Lo 2005)
# ---------------------------------------------------------------------------------------------

def _gys(method: str, **kw):
    def compute(fast: bool):
        from qkd_circuits.analysis.keyrate import PRESETS, key_rate, max_distance_km
        d = max_distance_km(method, PRESETS["GYS"], tolerance_km=0.005, **kw)
        p = key_rate(max(d - 1.0, 0.0), method, PRESETS["GYS"], **kw)
        return d, {"mu_1km_before": p.mu, "rate_1km_before": p.rate}
    return compute


# ---------------------------------------------------------------------------------------------
# Row 3: Tomamichel, Lim, Gisin & Renner, Table II
# ---------------------------------------------------------------------------------------------

# (n, Q %, r %, column "p_x" %, Q_tol %, eps_rob %) as printed in Table II.
TLGR_TABLE = (
    (10**4, 1.0, 11.7, 38.2, 2.48, 2.3),
    (10**4, 2.5, 6.8, 43.0, 3.78, 3.0),
    (10**5, 1.0, 30.4, 22.0, 2.14, 0.8),
    (10**5, 2.5, 21.5, 23.3, 3.58, 1.0),
    (10**6, 1.0, 47.8, 12.5, 1.73, 0.6),
    (10**6, 2.5, 35.7, 13.7, 3.21, 0.7),
)
TLGR_SECURITY_RATE = 1e-14  # ε/ℓ
TLGR_XI = 1.1  # leak_EC = ξ n h(·)


def tlgr_rate(n: int, q: float, column: float, q_tol: float, eps_rob: float, *, leak_at: str = "Q") -> dict:
    """r = (1 − ε_rob) ℓ / M at the table's parameters (fractions, not %), with ℓ from
    :func:`qkd_circuits.analysis.finite_key.finite_key_length`.

    The column printed "p_x" is read as the test-basis probability p_z (see the row's reading):
    k = n (p_z/p_x)², M = (√n + √k)² (the expected number of pulses until n key and k test bits,
    TLGR Table I with p_x = 1/(1 + √(k/n))).  ε = ε_sec + ε_cor = 10⁻¹⁴ ℓ, split equally, found by
    fixed-point iteration.  ``leak_at``: ``"Q"`` leak = 1.1 n h(Q), ``"Q_tol"`` leak = 1.1 n h(Q_tol).
    """
    from qkd_circuits.analysis.finite_key import binary_entropy, finite_key_length
    p_z = column
    k = round(n * (p_z / (1.0 - p_z)) ** 2)
    m = (math.sqrt(n) + math.sqrt(k)) ** 2
    leak = TLGR_XI * n * binary_entropy(q if leak_at == "Q" else q_tol)
    eps = 1e-10
    kl = None
    for _ in range(60):
        kl = finite_key_length(n, k, q_tol, math.ceil(leak), eps_sec=eps / 2, eps_cor=eps / 2)
        new = min(max(TLGR_SECURITY_RATE * kl.length, 1e-300), 0.5)
        if abs(new - eps) <= 1e-9 * eps:
            break
        eps = new
    return {"rate": (1.0 - eps_rob) * kl.length / m, "length": kl.length, "k": k, "pulses": m, "mu": kl.mu,
            "eps": eps, "leak_ec": math.ceil(leak)}


def _tlgr(row):
    n, q, r, col, q_tol, rob = row

    def compute(fast: bool):
        ours = tlgr_rate(n, q / 100, col / 100, q_tol / 100, rob / 100, leak_at="Q")
        literal = tlgr_rate(n, q / 100, col / 100, q_tol / 100, rob / 100, leak_at="Q_tol")
        return 100.0 * ours["rate"], {**{k: v for k, v in ours.items() if k != "rate"},
                                      "rate_percent_leak_at_Q_tol": round(100.0 * literal["rate"], 3)}
    return compute


# ---------------------------------------------------------------------------------------------
# Row 6: Cascade efficiency (Martinez-Mateo et al. 2015)
# ---------------------------------------------------------------------------------------------

CASCADE_BITS = 2 ** 14


def cascade_efficiency(preset: str, qber: float, frames: int, seed: int = 2026) -> dict:
    """Mean f = leaked/(n h(flips/n)) over seeded frames of 2^14 bits, its standard error and FER."""
    import numpy as np

    from qkd_circuits.analysis.finite_key import binary_entropy
    from qkd_circuits.hazmat.cascade import reconcile
    rng = np.random.default_rng([seed, int(qber * 1e4), frames])
    effs, failures = [], 0
    for _ in range(frames):
        alice = rng.integers(0, 2, CASCADE_BITS, dtype=np.uint8)
        flips = rng.random(CASCADE_BITS) < qber
        bob = alice ^ flips.astype(np.uint8)
        corrected, stats = reconcile(alice, bob, seed=rng.bytes(16), preset=preset, qber=qber)
        effs.append(stats.leaked_bits / (CASCADE_BITS * binary_entropy(flips.mean())))
        failures += bool((corrected != alice).any())
    return {"efficiency": statistics.fmean(effs), "standard_error": statistics.stdev(effs) / math.sqrt(frames),
            "frames": frames, "frame_error_rate": failures / frames}


def _cascade(preset: str, qber: float, frames: int, fast_frames: int):
    def compute(fast: bool):
        res = cascade_efficiency(preset, qber, fast_frames if fast else frames)
        return res["efficiency"], res
    return compute


# ---------------------------------------------------------------------------------------------
# Rows 4-5: Lim et al. 2014 Fig. 1 and Rusca et al. 2018 (need analysis.finite_rate)
# ---------------------------------------------------------------------------------------------

LIM_PARAMS = {"eta_bob": 0.10, "p_dc": 6e-7, "p_ap": 4e-2, "alpha_db_per_km": 0.2, "e_mis": 5e-3, "f_ec": 1.16,
              "mu3": 2e-4, "kappa": 1e-15, "eps_cor": 1e-15, "sampling": "fung",
              "free": "q_x, p_mu1, p_mu2, mu1, mu2 optimised"}
RUSCA_PARAMS = {**LIM_PARAMS, "free": "every intensity and probability optimised, per method",
                "block_sizes": [1e4, 1e5, 1e6, 1e7, 1e8], "distances_km": [25, 50, 100]}


def _finite_rate():
    from qkd_circuits.analysis import finite_rate  # a module being written alongside
    return finite_rate


LIM_SETTINGS = {"kappa": 1e-15, "eps_cor": 1e-15, "sampling": "fung", "mu_weak": 2e-4}


def _lim_ratio(fast: bool):
    fr = _finite_rate()
    hi = fr.finite_key_rate(100.0, "lim2014", n_key=1e9, **LIM_SETTINGS)
    lo = fr.finite_key_rate(100.0, "lim2014", n_key=1e7, **LIM_SETTINGS)
    return hi.rate / lo.rate, {"rate_n1e9": hi.rate, "rate_n1e7": lo.rate, "q_key_n1e9": hi.q_key,
                               "q_key_n1e7": lo.q_key}


def _lim_reach(fast: bool):
    fr = _finite_rate()
    reach = fr.max_finite_distance_km("lim2014", n_key=1e4, tolerance_km=0.25, **LIM_SETTINGS)
    at = fr.finite_key_rate(max(reach - 1.0, 0.0), "lim2014", n_key=1e4, **LIM_SETTINGS)
    at135 = fr.finite_key_rate(135.0, "lim2014", n_key=1e4, **LIM_SETTINGS)
    raw135 = at135.key_length.s_key_0 + at135.key_length.s_key_1 * (1 - _h(at135.key_length.phase_error)) \
        - at135.key_length.leak_ec - at135.key_length.verification_bits - at135.key_length.security_bits
    return reach, {"rate_1km_before_reach": at.rate, "q_key_1km_before_reach": at.q_key,
                   "length_at_135km": at135.length, "margin_bits_at_135km": round(raw135, 1)}


def _h(x: float) -> float:
    from qkd_circuits.analysis.finite_key import binary_entropy
    return float(binary_entropy(x))


def _rusca_claim_no_afterpulse(fast: bool):
    from qkd_circuits.analysis.keyrate import PRESETS
    return _rusca_claim(fast, PRESETS["Lim2014"].with_(afterpulse=0.0))


def _rusca_claim(fast: bool, link=None):
    fr = _finite_rate()
    from qkd_circuits.analysis.keyrate import PRESETS
    link = PRESETS["Lim2014"] if link is None else link
    wins, total, points = 0, 0, []
    for n in RUSCA_PARAMS["block_sizes"]:
        for distance in RUSCA_PARAMS["distances_km"]:
            one = fr.finite_key_rate(float(distance), "rusca2018", link, n_key=n, **{k: v for k, v in LIM_SETTINGS.items()
                                                                               if k != "mu_weak"})
            two = fr.finite_key_rate(float(distance), "lim2014", link, n_key=n, **LIM_SETTINGS)
            if one.rate == 0 and two.rate == 0:
                continue  # neither makes a key: not a comparison
            total += 1
            wins += int(one.rate > two.rate)
            points.append(f"n={n:.0e} L={distance}: 1-decoy {one.rate:.3e}, 2-decoy {two.rate:.3e}")
    return wins / total, {"one_decoy_higher": wins, "points_compared": total, "points": "; ".join(points)}


# ---------------------------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------------------------

GYS_PARAMS = {"alpha_db_per_km": 0.21, "eta_bob": 0.045, "y0": 1.7e-6, "e_detector": 0.033, "f_ec": 1.22, "q": 0.5}
MA_READING = ("not read in the paper (its text could not be opened here): quoted as Ma, Qi, Zhao & Lo's Fig. 2 / "
              "Sec. 3.1 value by independent reproductions found by text search (test suites and notes that "
              "cite arXiv:quant-ph/0503005); X. Ma's thesis (arXiv:quant-ph/0503057, abstract, read) says only "
              "'maximum secure transmission distance of over 140 km'")


def rows() -> list[Row]:
    out = [
        Row("shor-preskill-threshold", "Shor & Preskill, Phys. Rev. Lett. 85, 441 (2000)",
            "asymptotic rate 1 − 2h(Q): the QBER where it reaches 0", {"f_ec": 1.0}, 11.0, "% QBER",
            "'11%' as quoted by Watanabe, Matsumoto & Uyematsu, arXiv:quant-ph/0412070 (abstract, read: "
            "'the tolerable error rate ... increased from 7.5 % to 11 %'); the PRL's own text not re-read here",
            "citing", 0.05, "abs", "the published figure has 3 significant digits (11.0 ± 0.05)", _shor_preskill),
        Row("gys-infinite-decoy", "Lo, Ma & Chen, Phys. Rev. Lett. 94, 230504 (2005); Ma, Qi, Zhao & Lo, "
            "Phys. Rev. A 72, 012326 (2005)", "maximum distance, infinitely many decoys (Fig. 2, dashed)",
            {**GYS_PARAMS, "mu": "optimised per distance"}, 142.05, "km", MA_READING, "citing", 0.3, "abs",
            "0.3 km: the model's details (Y_1 = Y_0 + η vs Y_0 + η − Y_0η, μ optimised per distance) move the "
            "root by ~0.1 km; a real error (f, e_det, α) moves it by kilometres", _gys("decoy-infinite")),
        Row("gys-vacuum-weak", "Ma, Qi, Zhao & Lo, Phys. Rev. A 72, 012326 (2005)",
            "maximum distance, vacuum + weak decoy at μ = 0.48, ν = 0.05 (Fig. 2)",
            {**GYS_PARAMS, "mu": 0.48, "nu": 0.05}, 140.55, "km", MA_READING, "citing", 0.3, "abs",
            "as for the infinite-decoy row", _gys("decoy-vacuum-weak", mu=0.48, nu=0.05)),
        Row("gys-vacuum-weak-package-nu", "Ma, Qi, Zhao & Lo, Phys. Rev. A 72, 012326 (2005)",
            "maximum distance, vacuum + weak decoy at the package's default ν, μ optimised",
            {**GYS_PARAMS, "mu": "optimised per distance", "nu": "package default"}, None, "km",
            "no published value at this ν (the paper's curve is at ν = 0.05); reported for reference", "none",
            0.0, "abs", "no comparison", _gys("decoy-vacuum-weak"), expected="unconfirmed"),
        Row("gys-gllp-no-decoy", "Gottesman, Lo, Lütkenhaus & Preskill, Quantum Inf. Comput. 4, 325 (2004), "
            "as plotted by Lo, Ma & Chen (2005)", "maximum distance without decoys (GLLP), μ optimised",
            {**GYS_PARAMS, "mu": "optimised per distance"}, None, "km",
            "published value not confirmed: the GLLP distance of Lo, Ma & Chen / Ma et al. could not be "
            "read in the papers here, and no number is invented", "none", 0.0, "abs", "no comparison",
            _gys("gllp"), expected="unconfirmed"),
    ]
    for t in TLGR_TABLE:
        n, q, r, col, q_tol, rob = t
        gap = ""
        expected = "pass"
        if n < 10**6:
            expected = "gap"
            gap = ("at the table's own parameters Eq. (2) gives more key than the table (a few % at n = 1e5, "
                   "about 20% at n = 1e4) while the n = 1e6 rows agree within 0.5%; not understood.  Candidates: "
                   "the table's expected-pulse count M or its ε_rob at small n (the robustness printed is not "
                   "reproduced by a Hoeffding or binomial tail of k test bits at these p_x, Q_tol either), "
                   "or a different statistical term in the optimiser.  Reading leak at Q_tol instead "
                   "(rate_percent_leak_at_Q_tol) gives 5-13% less than the table in every row, n = 1e6 included")
        out.append(Row(
            f"tlgr-table2-n1e{round(math.log10(n))}-q{q:g}", "Tomamichel, Lim, Gisin & Renner, Nat. Commun. 3, 634 "
            "(2012); arXiv:1103.4130", "Table II (ε/ℓ = 1e-14, ξ = 1.1), rate r = (1 − ε_rob) ℓ/M of Eq. (3) "
            "with ℓ from Eq. (2) at the table's p_x, Q_tol, ε_rob",
            {"n": n, "Q": q / 100, "p_column": col / 100, "Q_tol": q_tol / 100, "eps_rob": rob / 100,
             "eps_per_bit": TLGR_SECURITY_RATE, "xi": TLGR_XI}, r, "% key bits per pulse",
            "Table II of the arXiv text (a public transcription; found by its caption 'Optimized parameters for "
            "a given security rate').  Two readings were needed: (1) the column printed p_x falls with n "
            "(38% → 12.5%), so it is read as p_z = 1 − p_x (p_x → 1 as n → ∞ by Table I's "
            "p_x = 1/(1 + √(k/n)); read literally, r comes out at 2-10% of the table); (2) leak_EC = "
            "1.1 n h(Q), the expected error rate, as the text's remark on general channels allows, "
            "not 1.1 n h(Q_tol): with it both n = 1e6 rows agree within 0.5%",
            "paper", 0.02, "rel",
            "2%: the table prints 3 digits (≤ 0.5%); the ε_sec/ε_cor split (not stated) and the constant "
            "inside μ's logarithm (1, 2 or 4 over ε in the paper's versions) move r by ≤ 0.5% at n = 1e6, "
            "≤ 2% at n = 1e4", _tlgr(t), expected=expected, gap_reason=gap))
    for preset, frames in (("original", 200), ("yanetal", 200), ("option7", 100), ("option8", 100)):
        for q in (0.01, 0.02, 0.05):
            fast = preset == "option7" and q == 0.02
            out.append(Row(
                f"cascade-{preset}-q{q:g}", "Martinez-Mateo, Pacher, Peev, Ciurana & Martin, Quantum Inf. "
                "Comput. 15, 453 (2015)", "reconciliation efficiency f = leaked/(n h(Q)) on 2^14-bit frames",
                {"preset": preset, "qber": q, "bits": CASCADE_BITS, "frames": frames, "fast_frames": 20,
                 "seed": 2026}, None, "f",
                "published value not confirmed: the paper's efficiency figures/tables could not be read "
                "here (only its abstract).  The package's preset notes say Fig. 6 puts opt. (7)/(8) near "
                "f ≈ 1.05-1.1 at n = 1e4 (not re-checked).  The near-optimal variant the paper proposes "
                "last (f ≈ 1.04 at 1-5% by the issue's reading) is not among the presets: not implemented",
                "none", 0.0, "abs", "no comparison; the standard error over the seeded frames is in the row",
                _cascade(preset, q, frames, 20), expected="unconfirmed", fast=fast))
    out.extend(_finite_rate_rows())
    return out


LIM_READING = ("Lim, Curty, Walenta, Xu & Zbinden, PRA 89, 022307 (2014), Sec. IV (a public transcription "
               "of the published text, read)")


def _finite_rate_rows() -> list[Row]:
    need = "qkd_circuits.analysis.finite_rate"
    return [
        Row("lim2014-fig1-ratio-100km", "Lim, Curty, Walenta, Xu & Zbinden, Phys. Rev. A 89, 022307 (2014)",
            "Fig. 1 (dedicated fibre): R(n_X = 1e9) / R(n_X = 1e7) at 100 km", LIM_PARAMS, 1.75, "ratio",
            LIM_READING + ": 'at a fiber length of 100 km, the secret key rate obtained with n_X = 10^9 is "
            "about 1.75 times the one based on n_X = 10^7'", "paper", 0.05, "rel",
            "5%: 'about 1.75' is read off a log plot; the optimiser's residual (rates optimised over five "
            "parameters) is below 1%", _lim_ratio, fast=False, needs=need),
        Row("lim2014-fig1-n1e4-135km", "Lim, Curty, Walenta, Xu & Zbinden, Phys. Rev. A 89, 022307 (2014)",
            "Fig. 1 (dedicated fibre): the longest fibre with key at n_X = 1e4", LIM_PARAMS, 135.0, "km",
            LIM_READING + ": 'even if we use a block size of 10^4, cryptographic keys can still be distributed "
            "over a fiber length of 135 km' (also in the introduction: 'up to 135 km')", "paper", 2.0,
            "at_least", "the claim is a lower bound ('still ... over 135 km'); 2 km for reading it off the plot",
            _lim_reach, fast=False, needs=need, expected="gap", gap_reason=(
                "the link model as printed makes no key at 135 km with n_X = 1e4 for any parameters, so it is "
                "not the optimiser: a separate search (random starts, then Nelder-Mead on the key length "
                "before flooring, q_x down to 0.001 i.e. unlimited test statistics, ε_sec = 1e-13) finds at "
                "most -274 bits at 135 km and +108 bits at 130 km, a hard reach of about 131 km; the "
                "optimiser's own margin at 135 km is in the details.  What costs the distance is the "
                "afterpulse error term p_ap D_k/2 of Sec. IV (a QBER floor near 1.9%): without it the same "
                "search finds +1559 bits at 135 km.  The misalignment term with η_ch as printed (instead of "
                "η_sys) is far worse (-3140 bits), so the paper cannot have used it either.  The paper's "
                "curve therefore comes from an error model (or λ_EC) other than the one printed; not "
                "resolved.  (The earlier sketch's 100-110 km was its optimiser: random search finds key at "
                "120 km near q_x = 0.18, p_μ1 = 0.07)")),
        Row("rusca2018-one-vs-two-decoys", "Rusca, Boaron, Grünenfelder, Martin & Zbinden, Appl. Phys. Lett. 112, "
            "171104 (2018); arXiv:1801.03443", "abstract: 1 decoy beats 2 decoys for block sizes up to 1e8",
            RUSCA_PARAMS, 1.0, "fraction of points", "abstract of arXiv:1801.03443 (read): 'for practical block "
            "sizes of up to 10^8 bits, the 1-decoy protocol achieves for almost all experimental settings higher "
            "secret key rates than the 2-decoy protocol'", "paper", 0.2, "at_least",
            "'almost all settings': at least 80% of the (block size, distance) points checked", _rusca_claim,
            fast=False, needs=need, expected="gap", gap_reason=(
                "on Lim et al.'s link (4% afterpulsing) two decoys give more key at every point checked "
                "(1-decoy/2-decoy = 0.3 at n = 1e4, 0.85 at 1e8, 50 km).  The 1-decoy bound needs an upper "
                "bound on the vacuum detections from the weak intensity's errors, (A16), which counts every "
                "error as a vacuum event at error rate 1/2: afterpulse and misalignment errors inflate it and "
                "the single-photon bound (A17) drops.  On the same link without afterpulsing (next row) "
                "1 decoy wins from n = 1e5 on (about 1.1x) but not at 1e4 (0.84-0.9x).  Rusca et al.'s own link "
                "parameters could not be read (only their abstract), and the (A18) e^k/p_k factor the package "
                "adds (see analysis.finite_decoy) also lowers the 1-decoy key relative to the printed form")),
        Row("rusca2018-one-vs-two-decoys-no-afterpulse", "Rusca, Boaron, Grünenfelder, Martin & Zbinden, Appl. "
            "Phys. Lett. 112, 171104 (2018); arXiv:1801.03443", "as above, on Lim's link with p_ap = 0",
            {**RUSCA_PARAMS, "p_ap": 0.0}, 1.0, "fraction of points", "as above", "paper", 0.2, "at_least",
            "as above; the row sits on its bound: one decoy gives more key at every point with n = 1e5 to "
            "1e8 (about 1.1x) and less at n = 1e4 (0.84-0.9x), 12 of 15 points", _rusca_claim_no_afterpulse,
            fast=False, needs=need),
    ]


# ---------------------------------------------------------------------------------------------
# Evaluation and output
# ---------------------------------------------------------------------------------------------

def evaluate(row: Row, *, fast: bool) -> dict:
    t0 = time.perf_counter()
    details: dict = {}
    ours: float | None = None
    error = None
    try:
        if row.needs:
            __import__(row.needs)
        ours, details = row.compute(fast)
    except ImportError as exc:
        error = f"not run: {exc}"
    seconds = time.perf_counter() - t0
    details = {k: _plain(v) for k, v in details.items()}
    ours = None if ours is None else float(ours)
    within = None
    difference = None
    if ours is not None and row.published is not None:
        if row.kind == "abs":
            difference = ours - row.published
            within = abs(difference) <= row.tolerance
        elif row.kind == "rel":
            difference = ours / row.published - 1.0
            within = abs(difference) <= row.tolerance
        elif row.kind == "at_least":
            difference = ours - row.published
            within = difference >= -row.tolerance
        else:
            raise ValueError(f"unknown tolerance kind {row.kind!r}")
    if error:
        status = "not run"
    elif row.published is None:
        status = "no published value"
    else:
        status = "pass" if within else "fail"
    return {
        "benchmark": "validation", "figure": row.id, "value": ours, "unit": row.unit, "id": row.id,
        "paper": row.paper, "where": row.where, "params": row.params, "published": row.published,
        "published_source": row.published_source, "reading": row.reading, "ours": ours,
        "difference": difference, "difference_kind": row.kind, "tolerance": row.tolerance,
        "tolerance_why": row.tolerance_why, "status": status, "expected": row.expected,
        "gap_reason": row.gap_reason or None, "error": error, "fast": row.fast, "details": details,
        "seconds": round(seconds, 3),
    }


def _plain(value):
    """numpy scalars as Python numbers (the rows are printed as JSON)."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


def run_rows(*, fast: bool = False, only: list[str] | None = None) -> list[dict]:
    """Evaluate the board's rows (the ``--fast`` subset when ``fast``); no context attached."""
    selected = [r for r in rows() if (r.fast or not fast) and (not only or r.id in only)]
    return [evaluate(r, fast=fast) for r in selected]


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    else:
        text = str(value)
    return text


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def markdown(results: list[dict], *, ctx: dict | None = None, fast: bool = False) -> str:
    """The board: a table with every row, then a paragraph for each row that does not pass."""
    lines = ["# Validation board", "",
             "Published figures recomputed with this package.  Generated by "
             f"`python benchmarks/validation.py{' --fast' if fast else ''} --markdown docs/validation.md`"
             + (f" at commit `{ctx['commit']}`" if ctx else "") + "; do not edit by hand.", "",
             "*Source* says where the published value was read: **paper** (the paper's own text), **citing** "
             "(quoted by another document, named in the row's notes: not confirmed in the paper), **none** "
             "(no published value could be read; ours is reported alone).  *Expected* is `gap` for a row "
             "known not to reproduce; its reason is below.", "",
             "| id | paper | figure / table | published | source | ours | difference | tolerance | status | expected |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        diff = r["difference"]
        if diff is None:
            dtext = "—"
        elif r["difference_kind"] == "rel":
            dtext = f"{100 * diff:+.2f}%"
        else:
            dtext = f"{diff:+.3g}"
        tol = "—" if r["published"] is None else (
            f"±{100 * r['tolerance']:g}%" if r["difference_kind"] == "rel" else
            (f"≥ −{r['tolerance']:g}" if r["difference_kind"] == "at_least" else f"±{r['tolerance']:g}"))
        ours = _fmt(r["ours"])
        if r["id"].startswith("cascade-") and r["ours"] is not None:
            ours = f"{r['ours']:.4f} ± {r['details']['standard_error']:.4f}"
        lines.append(f"| `{r['id']}` | {r['paper']} | {r['where']} | {'—' if r['published'] is None else format(r['published'], 'g')} {r['unit']} | "
                     f"{r['published_source']} | {ours} | {dtext} | {tol} | **{r['status']}** | {r['expected']} |")
    lines += ["", "## Rows that do not pass", ""]
    for r in results:
        if r["status"] == "pass":
            continue
        lines.append(f"### `{r['id']}` — {r['status']}")
        lines.append("")
        lines.append(f"Parameters: {_fmt_params(r['params'])}.")
        lines.append("")
        if r["status"] == "fail":
            diff = r["difference"]
            dtext = f"{100 * diff:+.2f}%" if r["difference_kind"] == "rel" else f"{diff:+.4g} {r['unit']}"
            lines.append(f"Published {_fmt(r['published'])} {r['unit']}, ours {_fmt(r['ours'])}: {dtext} "
                         f"(tolerance {r['tolerance']:g}, {r['difference_kind']}).")
            lines.append("")
        if r["error"]:
            lines.append(f"{r['error']}.")
            lines.append("")
        if r["gap_reason"]:
            lines.append(f"Reason: {r['gap_reason']}.")
            lines.append("")
        lines.append(f"How the published value was read: {r['reading']}.")
        lines.append("")
        extra = {k: v for k, v in r["details"].items() if isinstance(v, (int, float, str))}
        if extra:
            lines.append("Details: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in extra.items()) + ".")
            lines.append("")
    lines += ["## How each published value was read", ""]
    for r in results:
        if r["status"] == "pass":
            lines.append(f"- `{r['id']}`: {r['reading']}.  Tolerance: {r['tolerance_why']}.")
    lines.append("")
    return "\n".join(lines)


def _text(r: dict) -> str:
    pub = "—" if r["published"] is None else f"{r['published']:g}"
    ours = "—" if r["ours"] is None else f"{r['ours']:.5g}"
    return f"{r['status']:>18s}  {r['id']:34s} published {pub:>8s}  ours {ours:>10s} {r['unit']}  ({r['seconds']:.2f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--fast", action="store_true", help="only the rows CI can afford (a few seconds)")
    parser.add_argument("--markdown", metavar="PATH", help="write the board as Markdown to PATH")
    parser.add_argument("--rows", help="comma-separated row ids (default: all)")
    args = parser.parse_args(argv)
    ctx = context()
    results = []
    only = args.rows.split(",") if args.rows else None
    for row in rows():
        if (args.fast and not row.fast) or (only and row.id not in only):
            continue
        r = evaluate(row, fast=args.fast)
        results.append(r)
        emit({**r, **ctx}, as_json=args.json, text=_text(r))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, ctx=ctx, fast=args.fast), encoding="utf-8")
    regressions = [r["id"] for r in results if r["expected"] == "pass" and r["status"] != "pass"]
    if regressions:
        print(f"rows expected to pass that do not: {', '.join(regressions)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
