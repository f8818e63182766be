"""Shared helpers: statistical tolerances, synthetic keys, one Dask cluster for the session."""

from __future__ import annotations

import math
import secrets

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


def synthetic_final_key(bits: int) -> qkd.FinalKey:
    """A final key of ``bits`` random bits (from :mod:`secrets`), for tests that only need a filled
    key store: the QKD rounds that make real keys are tested where that is the point."""
    raw = np.frombuffer(secrets.token_bytes((bits + 7) // 8), dtype=np.uint8)
    return qkd.FinalKey(np.unpackbits(raw)[:bits])


@pytest.fixture(scope="session")
def dask_scheduler():
    """One two-worker Dask LocalCluster for the whole session (each worker process of pytest-xdist
    starts its own, once); yields its scheduler address."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address
