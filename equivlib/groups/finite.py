"""Finite groups: closure of generators, the rotation groups of the cube, tetrahedron and icosahedron, the
paper's 16-element cube subset, conjugacy classes of the cube group, and the symmetric group S_n."""
from __future__ import annotations

import itertools
import math
from functools import lru_cache

import torch

from .so3 import GroupError

__all__ = ["generate_group", "cube_group", "cube_rotation_classes", "cube_subset16", "element_indices", "tetrahedral_group", "octahedral_group", "icosahedral_group", "symmetric_group", "permutation_matrices"]


def generate_group(generators: torch.Tensor, max_order: int = 10_000, decimals: int = 8) -> torch.Tensor:
    """Close a set of matrices ``(k, d, d)`` under multiplication (exact enumeration).

    Returns the group elements ``(|G|, d, d)`` in float64, identity first, then in
    breadth-first order of word length (deterministic).
    """
    gens = generators.to(torch.float64)
    if gens.ndim != 3 or gens.shape[-1] != gens.shape[-2]:
        raise GroupError(f"generators must have shape (k, d, d), got {tuple(gens.shape)}")
    d = gens.shape[-1]
    key = lambda M: tuple(torch.round(M * 10**decimals).to(torch.int64).flatten().tolist())  # noqa: E731
    eye = torch.eye(d, dtype=torch.float64)
    elements, seen, frontier = [eye], {key(eye)}, [eye]
    while frontier:
        new = []
        for A in frontier:
            for g in gens:
                M = g @ A
                k = key(M)
                if k not in seen:
                    seen.add(k)
                    elements.append(M)
                    new.append(M)
                    if len(elements) > max_order:
                        raise GroupError(f"group generated exceeds max_order={max_order}: not finite?")
        frontier = new
    return torch.stack(elements)


@lru_cache(maxsize=None)
def _cube_group() -> torch.Tensor:
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            M = torch.zeros(3, 3, dtype=torch.float64)
            for i, (j, s) in enumerate(zip(perm, signs)):
                M[i, j] = s
            if torch.linalg.det(M) > 0:
                mats.append(M)
    G = torch.stack(mats)
    # identity first, a stable order otherwise
    order = sorted(range(len(G)), key=lambda i: (not torch.equal(G[i], torch.eye(3, dtype=torch.float64)), i))
    return G[order]


def cube_group(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The 24 rotations of the cube (signed permutation matrices of det +1), ``(24, 3, 3)``."""
    return _cube_group().to(dtype=dtype, device=device)


octahedral_group = cube_group


def cube_rotation_classes(G: torch.Tensor) -> list[str]:
    """Conjugacy class of each cube rotation in ``G (n, 3, 3)``.

    ``"identity"``, ``"90° face"`` (quarter turn about a face axis),
    ``"180° face"``, ``"120° vertex"`` (about a body diagonal) or ``"180° edge"``
    (about an axis through opposite edge midpoints): 1 + 6 + 3 + 8 + 6 elements.
    """
    G = torch.as_tensor(G, dtype=torch.float64)
    if G.ndim != 3 or G.shape[1:] != (3, 3):
        raise GroupError(f"expected rotations of shape (n, 3, 3), got {tuple(G.shape)}")
    out = []
    for R in G:
        if not torch.allclose(R.abs().sum(0), torch.ones(3, dtype=R.dtype)) or (R.round() - R).abs().max() > 1e-9:
            raise GroupError("not a rotation of the cube (a signed permutation matrix)")
        tr = int(round(float(torch.trace(R))))
        if tr == 3:
            out.append("identity")
        elif tr == 1:
            out.append("90° face")
        elif tr == 0:
            out.append("120° vertex")
        else:  # tr == -1: a half turn; its axis n n^T = (R + I) / 2
            n_nonzero = int(((R + torch.eye(3, dtype=R.dtype)) / 2).diagonal().abs().gt(1e-9).sum())
            out.append("180° face" if n_nonzero == 1 else "180° edge")
    return out


def element_indices(group: torch.Tensor, elements: torch.Tensor, atol: float = 1e-9) -> torch.Tensor:
    """Index in ``group (G, 3, 3)`` of each matrix of ``elements (K, 3, 3)``, shape ``(K,)``.

    Raises :class:`GroupError` naming the first element that is not in the group.
    """
    if group.ndim != 3 or elements.ndim != 3 or group.shape[1:] != elements.shape[1:]:
        raise GroupError(f"need group (G, d, d) and elements (K, d, d) of the same d, got {tuple(group.shape)} "
                         f"and {tuple(elements.shape)}")
    dist = (group[None] - elements[:, None].to(group)).abs().flatten(2).amax(2)  # (K, G)
    best, idx = dist.min(1)
    bad = torch.nonzero(best > atol).flatten()
    if len(bad):
        raise GroupError(f"element {int(bad[0])} is not in the group (closest differs by {float(best[bad[0]]):.2e})")
    return idx


def _axis_rotation(axis: int, quarter_turns: int) -> torch.Tensor:
    c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][quarter_turns % 4]
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    M = torch.eye(3, dtype=torch.float64)
    M[i, i], M[i, j], M[j, i], M[j, j] = c, -s, s, c
    return M


def cube_subset16(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Sixteen 90° rotations ``R_x^i R_z^j`` (i, j = 0..3), ``(16, 3, 3)``.

    A 16-element subset of the cube group, like the augmentation set of the
    voxel experiments in :cite:`shen2025training`.  It is *not* a subgroup
    (16 does not divide 24), so averaging over it is not exactly equivariant.
    """
    mats = [_axis_rotation(0, i) @ _axis_rotation(2, j) for i in range(4) for j in range(4)]
    return torch.stack(mats).to(dtype=dtype, device=device)


@lru_cache(maxsize=None)
def _tetrahedral() -> torch.Tensor:
    G = _cube_group()
    # the rotations of the cube that are even permutations up to sign: the 12 that
    # map the tetrahedron {(1,1,1), (1,-1,-1), (-1,1,-1), (-1,-1,1)} to itself
    tet = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    keep = []
    for g in G:
        img = tet @ g.T
        if all(((img[i] - tet).abs().sum(-1) < 1e-9).any() for i in range(4)):
            keep.append(g)
    return torch.stack(keep)


def tetrahedral_group(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The 12 rotations of the regular tetrahedron, ``(12, 3, 3)``."""
    return _tetrahedral().to(dtype=dtype, device=device)


@lru_cache(maxsize=None)
def _icosahedral() -> torch.Tensor:
    phi = (1 + math.sqrt(5)) / 2
    # generators: a 5-fold rotation about a vertex axis (0, 1, phi) and a 2-fold about z
    axis = torch.tensor([0.0, 1.0, phi], dtype=torch.float64)
    axis = axis / axis.norm()
    ang = 2 * math.pi / 5
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    R5 = torch.eye(3, dtype=torch.float64) + math.sin(ang) * K + (1 - math.cos(ang)) * K @ K
    R2 = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))
    G = generate_group(torch.stack([R5, R2]))
    if len(G) != 60:
        raise RuntimeError(f"icosahedral closure gave {len(G)} elements, expected 60")
    return G


def icosahedral_group(dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """The 60 rotations of the regular icosahedron, ``(60, 3, 3)``."""
    return _icosahedral().to(dtype=dtype, device=device)


def symmetric_group(n: int, device=None) -> torch.Tensor:
    """All ``n!`` permutations of ``range(n)`` as index tensors ``(n!, n)`` (identity first)."""
    if not isinstance(n, int) or n < 1:
        raise GroupError(f"S_n needs a positive integer n, got {n!r}")
    if n > 8:
        raise GroupError(f"S_{n} has {math.factorial(n)} elements; exact enumeration is limited to n <= 8")
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long, device=device)


def permutation_matrices(perms: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Permutation index tensors ``(..., n)`` to matrices ``(..., n, n)`` with ``(P x)_i = x_{perm[i]}``."""
    n = perms.shape[-1]
    return torch.nn.functional.one_hot(perms, n).to(dtype)
