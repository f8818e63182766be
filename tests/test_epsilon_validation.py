"""Every ε (eps_sec, eps_cor, qber_epsilon) is checked where it enters: (0, 0.5] or a typed error.

Why 0.5 (see qkd_circuits/analysis/finite_key.py): the Clopper–Pearson "upper" bound on the
QBER stays above the measured rate only for ε <= 1/2, and ε_sec, ε_cor >= 1 are vacuous claims
that the TLGR terms would still turn into a (longer) key.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from qkd_circuits.exceptions import ConfigurationError
from qkd_circuits.postprocessing.estimation import clopper_pearson
from qkd_circuits.analysis.finite_key import (EPSILON_MAX, decoy_key_length, finite_key_length,
                                                   variable_key_length)
from qkd_circuits.postprocessing.protocol import AliceParty, BobParty, PostProcessingConfig, drive
from qkd_circuits.records import AliceView, BobView

# The values the issue reported (1.5 gave a key, 2.0 a longer one than 0.5, 0 a traceback), the
# edges of the range, and the non-finite ones.
BAD = [0, 0.0, -1e-10, -0.5, 0.5000001, 0.6, 1, 1.0, 1.5, 2.0, 3.0, math.nan, math.inf, -math.inf]
GOOD = [1e-300, 1e-15, 1e-10, 0.1, 0.5]
EPSILONS = ["eps_sec", "eps_cor", "qber_epsilon"]


def _message(name: str, value) -> str:
    return rf"^{name} must be in \(0, 0\.5\], got {re.escape(repr(float(value)))}$"


@pytest.mark.parametrize("value", BAD, ids=repr)
@pytest.mark.parametrize("name", EPSILONS)
def test_config_refuses_an_epsilon_outside_the_range(name, value):
    with pytest.raises(ConfigurationError, match=_message(name, value)):
        PostProcessingConfig(**{name: value})


@pytest.mark.parametrize("value", GOOD)
@pytest.mark.parametrize("name", EPSILONS)
def test_config_accepts_an_epsilon_inside_the_range(name, value):
    assert getattr(PostProcessingConfig(**{name: value}), name) == value


def test_the_error_is_still_a_value_error_and_the_bound_is_one_half():
    assert EPSILON_MAX == 0.5
    with pytest.raises(ValueError, match="eps_sec must be in"):  # callers that catch ValueError still do
        PostProcessingConfig(eps_sec=1.5)


@pytest.mark.parametrize("value", ["1e-10", None, True])
def test_an_epsilon_that_is_no_number_is_a_type_error(value):
    with pytest.raises(TypeError, match="eps_sec must be a real number"):
        PostProcessingConfig(eps_sec=value)


@pytest.mark.parametrize("kwargs, match", [
    ({"sample_fraction": 1.0}, "sample_fraction must be in"),
    ({"sample_fraction": math.nan}, "sample_fraction must be in"),
    ({"abort_qber": 0.6}, "abort_qber must be in"),
    ({"cascade": "nope"}, "unknown Cascade preset"),
    ({"qber_tolerance": 0.5}, "qber_tolerance must be in"),
    ({"single_photon": (1.5, 0.1)}, "single_photon must be"),
])
def test_every_other_config_check_raises_configuration_error_too(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        PostProcessingConfig(**kwargs)


KEY_LENGTH_CALLS = {
    "finite": lambda **eps: finite_key_length(10**6, 10**5, 0.02, 150_000, **eps),
    "variable": lambda **eps: variable_key_length(10**6, 10**5, 0.02, 150_000, **eps),
    "decoy": lambda **eps: decoy_key_length(10**6, 10**5, 0.6, 0.04, 150_000, **eps),
}


@pytest.mark.parametrize("value", BAD, ids=repr)
@pytest.mark.parametrize("name", ["eps_sec", "eps_cor"])
@pytest.mark.parametrize("formula", sorted(KEY_LENGTH_CALLS))
def test_key_length_functions_refuse_an_epsilon_outside_the_range(formula, name, value):
    with pytest.raises(ConfigurationError, match=_message(name, value)):
        KEY_LENGTH_CALLS[formula](**{name: value})


@pytest.mark.parametrize("formula", sorted(KEY_LENGTH_CALLS))
def test_key_length_functions_accept_the_edge_of_the_range(formula):
    assert KEY_LENGTH_CALLS[formula](eps_sec=0.5, eps_cor=0.5).length > 0


def test_the_clopper_pearson_upper_bound_is_an_upper_bound_only_up_to_one_half():
    # The reason for the bound: at P[Bin(k, errors/k) <= errors] >= 1/2 (the median), so for
    # ε <= 1/2 the bound is >= the estimate; past 1/2 it can fall below it.
    for errors, k in [(7, 100), (1, 3), (500, 1000), (0, 5)]:
        assert clopper_pearson(errors, k, 0.5)[1] >= errors / k
    assert clopper_pearson(7, 100, 0.6)[1] < 0.07


EPS_GRID = sorted({float(x) for x in np.logspace(-40, math.log10(0.5), 60)} | {0.5})


@pytest.mark.parametrize("formula", sorted(KEY_LENGTH_CALLS))
@pytest.mark.parametrize("n, k, leak", [(10**6, 10**5, 150_000), (20_000, 2_000, 3_000), (10**8, 10**7, 0)])
def test_a_smaller_eps_sec_never_gives_a_longer_key(formula, n, k, leak):
    calls = {
        "finite": lambda e: finite_key_length(n, k, 0.02, leak, eps_sec=e),
        "variable": lambda e: variable_key_length(n, k, 0.0213, leak, eps_sec=e),
        "decoy": lambda e: decoy_key_length(n, k, 0.6, 0.04, leak, eps_sec=e),
    }
    lengths = [calls[formula](e).length for e in EPS_GRID]
    assert lengths == sorted(lengths)  # non-decreasing as ε grows: smaller ε, never longer
    security = [calls[formula](e).security_term for e in EPS_GRID]
    assert all(s > 0 for s in security) and security == sorted(security, reverse=True)


def test_a_smaller_eps_cor_never_gives_a_longer_key():
    lengths = [finite_key_length(10**6, 10**5, 0.02, 150_000, eps_cor=e).length for e in EPS_GRID]
    assert lengths == sorted(lengths)


def _round(config: PostProcessingConfig, seed: int = 4, n: int = 40_000, q: float = 0.02):
    rng = np.random.default_rng(seed)
    bits, bases = rng.random(n) < 0.5, rng.random(n) < 0.5
    alice = AliceParty(AliceView(bits, bases), config, random_bytes=np.random.default_rng([seed, 1]).bytes)
    bob = BobParty(BobView(bases.copy(), bits ^ (rng.random(n) < q), np.ones(n, bool)), config,
                   random_bytes=np.random.default_rng([seed, 2]).bytes)
    return drive(bob, alice.handle)


def test_through_the_protocol_a_smaller_eps_sec_never_gives_a_longer_key():
    # Same data, same seeds: only eps_sec changes, so Cascade leaks the same and ℓ follows ε.
    lengths = [len(o.key) if o.key is not None else 0
               for o in (_round(PostProcessingConfig(eps_sec=e)) for e in (1e-30, 1e-20, 1e-10, 1e-3, 0.5))]
    assert lengths == sorted(lengths) and lengths[-1] > 0
