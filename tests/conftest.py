"""Shared pytest fixtures (fixtures only: every test module may use them)."""
from __future__ import annotations

import pytest
import torch

_TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture
def tol():
    """Absolute float tolerance per dtype: ``tol(torch.float64) == 1e-10``, ``tol(torch.float32) == 1e-5``."""

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
