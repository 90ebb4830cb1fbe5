"""Plain helpers shared by the group tests (independent of the code they check)."""
from __future__ import annotations

import math

import numpy as np
import torch

F64 = torch.float64
EYE = torch.eye(3, dtype=F64)


def rotation_angle(R: torch.Tensor) -> np.ndarray:
    c = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.arccos(c).numpy()


def haar_angle_cdf(theta):
    """CDF of the rotation angle of a Haar rotation: density (1 - cos θ)/π on [0, π]."""
    return (theta - np.sin(theta)) / np.pi


def axis_rotation(axis, angle) -> torch.Tensor:
    axis = torch.as_tensor(axis, dtype=F64)
    axis = axis / axis.norm()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=F64)
    return EYE + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def member_distance(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """For every matrix in A (n, 3, 3), the distance to the nearest element of G (k, 3, 3)."""
    return (A[:, None] - G[None]).flatten(2).abs().amax(-1).amin(-1)


def is_closed(G: torch.Tensor, tol=1e-9) -> bool:
    prods = (G[:, None] @ G[None]).reshape(-1, 3, 3)
    return bool(member_distance(prods, G).max() < tol)


def assert_all_distinct(G: torch.Tensor):
    d = (G[:, None] - G[None]).flatten(2).abs().amax(-1)
    d = d + torch.eye(len(G), dtype=d.dtype) * 10
    assert d.min() > 0.1
