"""Shared pytest fixtures, and plain helpers (``random_rotation``, ``random_rotations``) that test
modules import with ``from tests.conftest import random_rotation``."""
from __future__ import annotations

import pytest
import torch

from equivlib.testing import TOL_FLOAT64


def random_rotation(seed: int) -> torch.Tensor:
    """Haar-random rotation (det +1) in float64 from a seeded QR with sign fix.

    Deliberately independent of ``equivlib.groups`` so that model and data tests
    do not rely on the code they would be checking.
    """
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` rotations from :func:`random_rotation` with seeds ``seed, ..., seed + n - 1``, shape (n, 3, 3).

    A tensor of elements is a group sample for :func:`equivlib.testing.assert_equivariant`
    (every element applied to every data sample).
    """
    return torch.stack([random_rotation(seed + i) for i in range(n)])


_TOLERANCES = {torch.float64: TOL_FLOAT64, torch.float32: 1e-5}


@pytest.fixture
def tol():
    """Float tolerance per dtype: ``tol(torch.float64) == 1e-10`` (:data:`equivlib.testing.TOL_FLOAT64`,
    also the default of ``assert_equivariant``), ``tol(torch.float32) == 1e-5``."""

    def _tol(dtype: torch.dtype) -> float:
        if dtype not in _TOLERANCES:
            raise KeyError(f"no tolerance defined for {dtype}")
        return _TOLERANCES[dtype]

    return _tol


@pytest.fixture
def generator() -> torch.Generator:
    """A CPU ``torch.Generator`` with a fixed seed (a fresh one for every test)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def float64_default():
    """Temporarily make float64 torch's default dtype (e3nn builds its Wigner-D
    generators in the default dtype), restoring the previous default afterwards."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(prev)
