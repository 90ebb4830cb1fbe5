"""Tests for equivlib.groups.so3: seeded Haar sampling (torch and NumPy), quaternions, the rotation check."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from equivlib.groups import (
    GroupError,
    check_rotations,
    haar_so3,
    quaternion_to_matrix,
)
from tests.groups.helpers import rotation_angle, haar_angle_cdf, axis_rotation, EYE, F64


def test_haar_proper_rotations_float64(generator):
    R = haar_so3(500, 3, generator=generator)
    assert R.shape == (500, 3, 3, 3) and R.dtype == F64
    assert (R @ R.transpose(-1, -2) - EYE).abs().max() < 1e-12
    assert (torch.linalg.det(R) - 1).abs().max() < 1e-12
    check_rotations(R, atol=1e-12)


def test_haar_dtype_and_seed_reproducible():
    a = haar_so3(10, generator=torch.Generator().manual_seed(7))
    b = haar_so3(10, generator=torch.Generator().manual_seed(7))
    c = haar_so3(10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    f = haar_so3(10, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert f.dtype == torch.float32
    assert torch.allclose(f.double(), a, atol=1e-6)
    with pytest.raises(GroupError, match="non-negative"):
        haar_so3(-1)


def test_quaternion_to_matrix_known_rotation():
    # 90° about z: q = (cos 45°, 0, 0, sin 45°)
    q = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=F64)
    R = quaternion_to_matrix(q)
    assert torch.allclose(R, axis_rotation([0, 0, 1], math.pi / 2), atol=1e-15)
    # q and -q are the same rotation; scale does not matter
    assert torch.allclose(quaternion_to_matrix(-3 * q), R, atol=1e-15)
    with pytest.raises(GroupError, match=r"\(\.\.\., 4\)"):
        quaternion_to_matrix(torch.zeros(3))


def test_haar_moments(generator):
    n = 20000
    R = haar_so3(n, generator=generator)
    # E[R] = 0, each entry has variance 1/3
    se = math.sqrt(1 / 3 / n)
    assert R.mean(0).abs().max() < 5 * se
    # E[tr R] = 0 with Var(tr R) = 1 (character of an irrep)
    tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(tr.mean()) < 5 / math.sqrt(n)
    assert abs(tr.var() - 1) < 0.05
    # E[R_ij^2] = 1/3, Var(R_ij^2) = 1/5 - 1/9
    se2 = math.sqrt((1 / 5 - 1 / 9) / n)
    assert ((R**2).mean(0) - 1 / 3).abs().max() < 5 * se2


def test_haar_rotation_angle_ks(generator):
    theta = rotation_angle(haar_so3(20000, generator=generator))
    assert stats.kstest(theta, haar_angle_cdf).pvalue > 0.01


def test_angle_ks_detects_non_haar(generator):
    """The KS check above has power: naive uniform Euler angles are not Haar."""
    n = 20000
    a, b, c = (torch.rand(3, n, generator=generator, dtype=F64) * 2 * math.pi).unbind(0)
    R = axis_rotation_batch(2, a) @ axis_rotation_batch(1, b / 2) @ axis_rotation_batch(2, c)
    assert stats.kstest(rotation_angle(R), haar_angle_cdf).pvalue < 1e-6


def axis_rotation_batch(axis: int, angle: torch.Tensor) -> torch.Tensor:
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = torch.eye(3, dtype=F64).repeat(len(angle), 1, 1)
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    return R


def test_haar_left_and_right_invariance(generator):
    n = 20000
    Q = axis_rotation([1, 2, 3], 1.1)
    R1 = haar_so3(n, generator=generator)
    R2 = haar_so3(n, generator=generator)
    for QR in (Q @ R1, R1 @ Q):
        # rotation angle and a single entry have the same distribution as for fresh Haar draws
        assert stats.ks_2samp(rotation_angle(QR), rotation_angle(R2)).pvalue > 0.01
        assert stats.ks_2samp(QR[:, 0, 1].numpy(), R2[:, 0, 1].numpy()).pvalue > 0.01
        assert QR.mean(0).abs().max() < 5 * math.sqrt(1 / 3 / n)
    # ... while a biased distribution is detected by the same statistic
    biased = axis_rotation_batch(2, torch.rand(n, generator=generator, dtype=F64))
    assert stats.ks_2samp(rotation_angle(biased), rotation_angle(R2)).pvalue < 1e-6


def test_check_rotations_errors():
    with pytest.raises(GroupError, match=r"shape \(\.\.\., 3, 3\)"):
        check_rotations(torch.zeros(3, 4, dtype=F64))
    with pytest.raises(GroupError, match="not orthogonal"):
        check_rotations(EYE * 1.01)
    with pytest.raises(GroupError, match="improper"):
        check_rotations(torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64)))
    with pytest.raises(GroupError, match="floating point"):
        check_rotations(torch.eye(3, dtype=torch.long))
    with pytest.raises(GroupError, match="not orthogonal"):
        check_rotations(torch.full((3, 3), float("nan"), dtype=F64))
    # valid input passes through, float32 with the float32 default tolerance
    R = haar_so3(4, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert check_rotations(R) is R
    check_rotations(torch.empty(0, 3, 3, dtype=F64))


def test_haar_so3_numpy_is_haar():
    from equivlib.groups import haar_so3_numpy

    Rs = np.stack([haar_so3_numpy(np.random.default_rng(s)) for s in range(2000)])
    assert np.abs(Rs @ Rs.transpose(0, 2, 1) - np.eye(3)).max() < 1e-12
    assert np.abs(np.linalg.det(Rs) - 1).max() < 1e-12
    assert stats.kstest(rotation_angle(torch.from_numpy(Rs)), haar_angle_cdf).pvalue > 1e-3
