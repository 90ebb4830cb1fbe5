"""SO(3): seeded Haar sampling (torch and NumPy), quaternions, and the rotation check; the group error type."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["haar_so3", "haar_so3_numpy", "quaternion_to_matrix", "check_rotations", "GroupError"]


class GroupError(ValueError):
    """Group elements or data do not fit together (shape, orthogonality, membership)."""


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(..., 4)`` (w, x, y, z) to rotation matrices ``(..., 3, 3)``."""
    if q.shape[-1] != 4:
        raise GroupError(f"quaternions must have shape (..., 4), got {tuple(q.shape)}")
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def haar_so3(
    *shape: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Haar-uniform random rotations of shape ``(*shape, 3, 3)``.

    Normalised standard Gaussian quaternions are uniform on S³, and the double
    cover S³ → SO(3) pushes that to the Haar measure.  Sampling is done in
    float64 on the CPU with ``generator`` (so a seed gives the same rotations
    on every device) and then moved to ``dtype`` / ``device``.
    """
    if any((not isinstance(s, int)) or s < 0 for s in shape):
        raise GroupError(f"shape must be non-negative ints, got {shape}")
    q = torch.randn(*shape, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(dtype=dtype, device=device)


def haar_so3_numpy(rng: np.random.Generator) -> np.ndarray:
    """One Haar-random rotation matrix ``(3, 3)``, float64, from a NumPy generator.

    QR of a standard Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``
    (Haar on O(3)), then the first column negated when ``det Q = -1``.  The torch
    sampler :func:`haar_so3` draws other rotations from other numbers; this one
    stays because the rotation check stored in every force data set
    (``meta["rotation_check"]``, see :func:`equivlib.data.generate_forces`) was drawn with it
    from ``np.random.default_rng(derived_seed(seed, 303))``: a regenerated data set
    reproduces that record (to the bit, on the same machine) only with the same rotation.
    """
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def check_rotations(R: torch.Tensor, atol: float | None = None, name: str = "R") -> torch.Tensor:
    """Raise :class:`GroupError` unless ``R`` is a stack of proper rotations.

    ``atol`` defaults to 1e-10 in float64 and 1e-5 in float32.
    """
    if R.ndim < 2 or R.shape[-2:] != (3, 3):
        raise GroupError(f"{name} must have shape (..., 3, 3), got {tuple(R.shape)}")
    if not R.is_floating_point():
        raise GroupError(f"{name} must be floating point, got {R.dtype}")
    if atol is None:
        atol = 1e-10 if R.dtype == torch.float64 else 1e-5
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    orth = (R @ R.transpose(-1, -2) - eye).abs().amax() if R.numel() else torch.tensor(0.0)
    if not orth <= atol:  # also catches NaN / inf entries
        raise GroupError(f"{name} is not orthogonal: max |R Rᵀ - I| = {float(orth):.3g} > {atol:g}")
    det = torch.linalg.det(R)
    if R.numel() and not (det - 1).abs().amax() <= atol:
        raise GroupError(f"{name} contains improper rotations (det = -1); only SO(3) is supported")
    return R
