"""Lennard-Jones clusters: a small physical task with exactly equivariant targets.

Atoms interact through the pair potential

.. math::

    E = \\sum_{i<j} 4\\varepsilon\\left[\\left(\\frac{\\sigma}{r_{ij}}\\right)^{12}
        - \\left(\\frac{\\sigma}{r_{ij}}\\right)^{6}\\right],
    \\qquad F_i = -\\nabla_{x_i} E,

so the energy is invariant and the forces are exactly equivariant under rotations
(and permutations, and translations).  Nothing is downloaded: clusters are drawn
from a :class:`torch.Generator` and labelled analytically.

Clusters in one batch may have different numbers of atoms; they are padded to the
largest, and ``mask`` marks the real atoms.  Padded atoms have zero positions and
zero forces.  Lengths are in units of ``sigma``, energies in units of ``epsilon``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from .cache import batch_index

__all__ = ["AtomsBatch", "check_positions_mask", "lennard_jones_forces", "lennard_jones_clusters"]


@dataclass
class AtomsBatch:
    """A padded batch of atom clusters with per-atom force targets.

    Attributes
    ----------
    positions : torch.Tensor, shape (B, A, 3)
        Cartesian coordinates; zero at padded atoms.
    forces : torch.Tensor, shape (B, A, 3)
        Force on each atom; zero at padded atoms.
    mask : torch.Tensor, shape (B, A), bool
        ``True`` for real atoms, ``False`` for padding.
    energies : torch.Tensor, shape (B,)
        Total energy of each cluster.
    """

    positions: torch.Tensor
    forces: torch.Tensor
    mask: torch.Tensor
    energies: torch.Tensor

    def __post_init__(self) -> None:
        p, f, m, e = self.positions, self.forces, self.mask, self.energies
        if p.ndim != 3 or p.shape[-1] != 3:
            raise ValueError(f"positions must have shape (B, A, 3), got {tuple(p.shape)}")
        B, A, _ = p.shape
        if tuple(f.shape) != (B, A, 3):
            raise ValueError(f"forces must have shape (B, A, 3) = {(B, A, 3)}, got {tuple(f.shape)}")
        if tuple(m.shape) != (B, A):
            raise ValueError(f"mask must have shape (B, A) = {(B, A)}, got {tuple(m.shape)}")
        if m.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got dtype {m.dtype}")
        if tuple(e.shape) != (B,):
            raise ValueError(f"energies must have shape (B,) = {(B,)}, got {tuple(e.shape)}")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "AtomsBatch":
        """Move to ``device`` and cast the floating tensors to ``dtype`` (the mask stays bool)."""
        return AtomsBatch(
            positions=self.positions.to(device=device, dtype=dtype),
            forces=self.forces.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            energies=self.energies.to(device=device, dtype=dtype),
        )

    def __len__(self) -> int:
        return self.positions.shape[0]

    def __getitem__(self, idx) -> "AtomsBatch":
        """Select clusters by slice, integer, index list/tensor or bool tensor.

        An integer keeps the batch dimension (returns a batch of one cluster).
        """
        idx = batch_index(idx)
        return AtomsBatch(*(getattr(self, f.name)[idx] for f in fields(self)))

    @property
    def n_atoms(self) -> torch.Tensor:
        """Number of real atoms per cluster, shape (B,), int64."""
        return self.mask.sum(dim=1)

    @property
    def dtype(self) -> torch.dtype:
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        return self.positions.device


def check_positions_mask(positions: torch.Tensor, mask: torch.Tensor | None = None, *,
                         name: str = "positions", length: str = "A") -> torch.Tensor:
    """Validate a padded batch of points and its mask; return the mask.

    The one validator of the padded ``(B, N, 3)`` layout of :class:`AtomsBatch`,
    used by the data loaders and by every model of :mod:`equivlib.models`.

    Parameters
    ----------
    positions : torch.Tensor, shape (B, N, 3), floating point
    mask : torch.Tensor, shape (B, N), bool, optional
        ``True`` for real points; ``None`` means every point is real.
    name, length : str
        How error messages call the tensor and its point axis (``"x_t"`` and
        ``"L"`` for residues, say).

    Returns
    -------
    torch.Tensor, shape (B, N), bool
        ``mask`` on the device of ``positions`` (all True if it was ``None``).

    Raises
    ------
    TypeError
        ``positions`` is not a tensor.
    ValueError
        A wrong shape or dtype.
    """
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(positions).__name__}")
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, {length}, 3), got {tuple(positions.shape)}")
    if not positions.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got dtype {positions.dtype}")
    B, N, _ = positions.shape
    if mask is None:
        return torch.ones(B, N, dtype=torch.bool, device=positions.device)
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (B, N):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape (B, {length}) = {(B, N)}, got {shape}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape (B, {length}), got dtype {mask.dtype}")
    return mask.to(positions.device)


def lennard_jones_forces(
    positions: torch.Tensor,
    mask: torch.Tensor | None = None,
    epsilon: float = 1.0,
    sigma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic Lennard-Jones energies and forces of a padded batch of clusters.

    Parameters
    ----------
    positions : torch.Tensor, shape (B, A, 3)
        Coordinates (any floating dtype; the computation stays in it).
    mask : torch.Tensor, shape (B, A), bool, optional
        ``True`` for real atoms.  Pairs involving a padded atom are ignored, and
        so are self-pairs.  ``None`` means all atoms are real.
    epsilon, sigma : float
        Depth of the well and the zero-crossing distance (both > 0).

    Returns
    -------
    energies : torch.Tensor, shape (B,)
        :math:`\\sum_{i<j} 4\\varepsilon[(\\sigma/r)^{12} - (\\sigma/r)^6]`.
    forces : torch.Tensor, shape (B, A, 3)
        :math:`-\\partial E / \\partial x_i`; exactly zero at padded atoms.
    """
    mask = check_positions_mask(positions, mask)
    if not (epsilon > 0 and sigma > 0):
        raise ValueError(f"epsilon and sigma must be positive, got epsilon={epsilon}, sigma={sigma}")
    B, A, _ = positions.shape
    eye = torch.eye(A, dtype=torch.bool, device=positions.device)
    pair = mask[:, :, None] & mask[:, None, :] & ~eye  # (B, A, A)
    diff = positions[:, :, None, :] - positions[:, None, :, :]  # x_i - x_j, (B, A, A, 3)
    r2 = (diff * diff).sum(-1)
    r2 = torch.where(pair, r2, torch.ones_like(r2))  # safe value for ignored pairs
    s2 = (sigma * sigma) / r2
    s6 = s2 * s2 * s2
    s12 = s6 * s6
    zero = torch.zeros_like(r2)
    e_pair = torch.where(pair, 4.0 * epsilon * (s12 - s6), zero)
    energies = 0.5 * e_pair.sum(dim=(1, 2))
    # F_i = sum_j 24 eps (2 s12 - s6) / r^2 (x_i - x_j)
    coef = torch.where(pair, 24.0 * epsilon * (2.0 * s12 - s6) / r2, zero)
    forces = (coef[..., None] * diff).sum(dim=2)
    return energies, forces


def _parse_n_atoms(n_atoms: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(n_atoms, bool):
        raise ValueError(f"n_atoms must be an int or a (min, max) pair, got {n_atoms!r}")
    if isinstance(n_atoms, int):
        lo = hi = n_atoms
    else:
        try:
            lo, hi = (int(v) for v in n_atoms)
        except (TypeError, ValueError):
            raise ValueError(f"n_atoms must be an int or a (min, max) pair, got {n_atoms!r}") from None
    if lo < 2:
        raise ValueError(f"n_atoms must be at least 2 (a cluster needs a pair), got min {lo}")
    if lo > hi:
        raise ValueError(f"n_atoms (min, max) must have min <= max, got ({lo}, {hi})")
    return lo, hi


def _sample_in_ball(n: int, k: int, radius: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``k`` uniform points in balls of the given radii; shape (n, k, 3), float64."""
    g = torch.randn(n, k, 3, generator=generator, dtype=torch.float64)
    g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u = torch.rand(n, k, 1, generator=generator, dtype=torch.float64)
    return g * (radius[:, None, None] * u.pow(1.0 / 3.0))


def lennard_jones_clusters(
    n_clusters: int,
    n_atoms: int | Sequence[int] = (6, 12),
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    min_distance: float = 0.95,
    density: float = 0.3,
    relax_steps: int = 0,
    relax_step_size: float = 1e-3,
    relax_max_displacement: float = 0.05,
    epsilon: float = 1.0,
    sigma: float = 1.0,
    candidates_per_try: int = 16,
    max_tries: int = 1000,
) -> AtomsBatch:
    """Random Lennard-Jones clusters labelled with exact energies and forces.

    Each cluster draws its atom count uniformly from ``[min, max]`` of ``n_atoms``
    and places atoms one by one, uniformly in a ball whose radius gives
    ``density`` atoms per :math:`\\sigma^3`, rejecting candidates closer than
    ``min_distance * sigma`` to an atom already placed (vectorised over clusters,
    ``candidates_per_try`` candidates per cluster at a time).  Clusters are then
    centred on the centroid of their real atoms and padded to the largest count.

    Parameters
    ----------
    n_clusters : int
        Number of clusters B (>= 1).
    n_atoms : int or (int, int)
        Fixed atom count, or the inclusive range it is drawn from (min >= 2).
    generator : torch.Generator
        CPU generator; the batch is a function of its state and the arguments.
    dtype : torch.dtype
        Dtype of the returned tensors.  Sampling and labelling run in float64,
        then the batch is cast.
    min_distance : float
        Smallest allowed pair distance, in units of ``sigma``.
    density : float
        Atoms per :math:`\\sigma^3` of the sampling ball.  The default 0.3 gives
        compact clusters (radius about 2.1 sigma for 12 atoms).  Without
        relaxation the force distribution is heavy-tailed, since pairs near
        ``min_distance`` sit on the repulsive wall: for (6, 12) atoms, ``|F|`` has
        median about 3, mean about 9 and maximum about 90 epsilon/sigma;
        ``relax_steps=20`` brings the mean to about 2 and the maximum to about 7.
    relax_steps : int
        Steps of clipped gradient descent on the LJ energy after sampling
        (``0``: none, so forces stay large and informative).
    relax_step_size : float
        Step size of the descent (in :math:`\\sigma^2/\\varepsilon`).
    relax_max_displacement : float
        Per-atom displacement cap per step, in units of ``sigma``.
    epsilon, sigma : float
        Lennard-Jones parameters.
    candidates_per_try, max_tries : int
        Rejection-sampling controls; ``RuntimeError`` if an atom cannot be placed
        after ``max_tries`` rounds (lower the density or ``min_distance``).

    Returns
    -------
    AtomsBatch
        ``positions`` and ``forces`` (B, A_max, 3), ``mask`` (B, A_max),
        ``energies`` (B,), all on the CPU.
    """
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    lo, hi = _parse_n_atoms(n_atoms)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if not min_distance >= 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    if not density > 0:
        raise ValueError(f"density must be > 0, got {density}")
    if isinstance(relax_steps, bool) or not isinstance(relax_steps, int) or relax_steps < 0:
        raise ValueError(f"relax_steps must be a non-negative integer, got {relax_steps!r}")
    if not (epsilon > 0 and sigma > 0):
        raise ValueError(f"epsilon and sigma must be positive, got epsilon={epsilon}, sigma={sigma}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")

    B = n_clusters
    counts = torch.randint(lo, hi + 1, (B,), generator=generator)
    radius = sigma * (3.0 * counts.to(torch.float64) / (4.0 * math.pi * density)).pow(1.0 / 3.0)
    d2_min = (min_distance * sigma) ** 2
    pos = torch.zeros(B, hi, 3, dtype=torch.float64)
    pos[:, 0] = _sample_in_ball(B, 1, radius, generator)[:, 0]
    K = candidates_per_try
    for k in range(1, hi):
        pending = torch.nonzero(counts > k).flatten()
        tries = 0
        while pending.numel() > 0:
            if tries >= max_tries:
                raise RuntimeError(
                    f"could not place atom {k} in {pending.numel()} cluster(s) after {max_tries} tries; "
                    f"lower density ({density}) or min_distance ({min_distance})"
                )
            tries += 1
            cand = _sample_in_ball(pending.numel(), K, radius[pending], generator)  # (P, K, 3)
            placed = pos[pending, :k]  # (P, k, 3)
            d2 = ((cand[:, :, None, :] - placed[:, None, :, :]) ** 2).sum(-1)  # (P, K, k)
            ok = (d2 >= d2_min).all(dim=-1)  # (P, K)
            has = ok.any(dim=1)
            first = ok.to(torch.int8).argmax(dim=1)  # first valid candidate
            chosen = cand[torch.arange(pending.numel()), first]
            pos[pending[has], k] = chosen[has]
            pending = pending[~has]

    mask = torch.arange(hi)[None, :] < counts[:, None]

    def centre(x: torch.Tensor) -> torch.Tensor:
        c = (x * mask[..., None]).sum(1, keepdim=True) / counts[:, None, None].to(x.dtype)
        return torch.where(mask[..., None], x - c, torch.zeros_like(x))

    pos = centre(pos)
    for _ in range(relax_steps):
        _, f = lennard_jones_forces(pos, mask, epsilon=epsilon, sigma=sigma)
        step = relax_step_size * f
        norm = step.norm(dim=-1, keepdim=True)
        cap = relax_max_displacement * sigma
        step = step * torch.clamp(cap / norm.clamp_min(1e-300), max=1.0)
        pos = torch.where(mask[..., None], pos + step, pos)
    if relax_steps:
        pos = centre(pos)

    positions = pos.to(dtype)
    energies, forces = lennard_jones_forces(pos, mask, epsilon=epsilon, sigma=sigma)
    return AtomsBatch(positions=positions, forces=forces.to(dtype), mask=mask, energies=energies.to(dtype))
