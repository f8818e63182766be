"""Shared helpers for the statistical tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

import qkd_circuits as qkd


def binomial_tolerance(p: float, n: int, sigmas: float = 5.0) -> float:
    """sigmas standard deviations of a rate p measured on n trials (never below 1/n)."""
    return max(sigmas * math.sqrt(max(p * (1 - p), 1e-12) / n), 1.0 / n)


def assert_rate(observed: float, expected: float, n: int, *, sigmas: float = 5.0, extra: float = 0.0) -> None:
    tol = binomial_tolerance(expected, n, sigmas) + extra
    assert abs(observed - expected) <= tol, (
        f"rate {observed:.5f} differs from {expected:.5f} by more than {tol:.5f} (n={n})"
    )


def sifted_stats(record: qkd.MeasurementRecord) -> dict:
    m = qkd.sift_mask(record.alice_bases, record.bob_bases, record.detected)
    n = int(m.sum())
    errors = int((record.alice_bits[m] != record.bob_results[m]).sum())
    return {"sifted": n, "qber": errors / n if n else float("nan"), "mask": m}


@pytest.fixture(params=["qrng", "prepared"])
def mode(request) -> str:
    return request.param
