"""Groups, group samples and group actions.

Conventions
-----------
* Rotations are ``(..., 3, 3)`` float64 matrices acting on column vectors:
  a point ``p`` goes to ``R @ p``.  A per-atom tensor ``x`` of shape
  ``(B, atoms, 3)`` goes to ``x @ R.T``.
* A *group sample* (:class:`GroupSample`) holds the elements used to estimate a
  twirl together with the way they were drawn, because the right finite-sample
  estimator depends on it:

  ``"iid"``
      independent uniform draws (Haar on SO(3), or uniform on a finite group);
  ``"design"``
      ``K`` independent copies of a finite rotation group, each turned by its own
      Haar rotation (``R_k g`` for ``g`` in the group).  Every element is Haar
      distributed but the elements of one copy are dependent;
  ``"exhaustive"``
      every element of a finite group exactly once: the twirl is exact.

  Elements are stored with shape ``(K, m, B, *element_shape)``: ``K`` independent
  blocks of ``m`` elements each, for each of ``B`` data samples (``B = 1`` means
  shared by all samples and is broadcast).
* An *action* maps elements and data to transformed data, batched over all
  elements in one call (no Python loop over group elements).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

__all__ = [
    "haar_so3",
    "haar_so3_numpy",
    "quaternion_to_matrix",
    "check_rotations",
    "generate_group",
    "cube_group",
    "cube_rotation_classes",
    "cube_subset16",
    "element_indices",
    "tetrahedral_group",
    "octahedral_group",
    "icosahedral_group",
    "symmetric_group",
    "permutation_matrices",
    "GroupSample",
    "sample_haar",
    "sample_design",
    "sample_finite",
    "exhaustive",
    "Action",
    "VectorAction",
    "VoxelAction",
    "IrrepsAction",
    "PermutationAction",
    "wigner_D",
    "GroupError",
]

Scheme = Literal["iid", "design", "exhaustive"]


class GroupError(ValueError):
    """Group elements or data do not fit together (shape, orthogonality, membership)."""


# --------------------------------------------------------------------------- SO(3)
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
    (``meta["rotation_check"]``, see :func:`equivlib.data.forces.generate_forces`) was drawn with it
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


# --------------------------------------------------------------------------- finite groups
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


# --------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class GroupSample:
    """Group elements for a finite-sample twirl, with how they were drawn.

    Attributes
    ----------
    elements : Tensor ``(K, m, B, *element_shape)``
        ``K`` independent blocks of ``m`` elements for each of ``B`` samples
        (``B = 1``: shared by all samples).
    scheme : ``"iid" | "design" | "exhaustive"``
        See the module docstring; it decides which estimator is unbiased.
    """

    elements: torch.Tensor
    scheme: Scheme

    def __post_init__(self):
        if self.scheme not in ("iid", "design", "exhaustive"):
            raise GroupError(f"unknown sampling scheme {self.scheme!r}")
        if self.elements.ndim < 3:
            raise GroupError(f"elements must have shape (K, m, B, ...), got {tuple(self.elements.shape)}")
        if self.scheme == "iid" and self.elements.shape[1] != 1:
            raise GroupError("an iid sample has blocks of size m = 1")
        if self.scheme == "exhaustive" and self.elements.shape[0] != 1:
            raise GroupError("an exhaustive sample is a single block (K = 1)")

    @property
    def n_blocks(self) -> int:
        return self.elements.shape[0]

    @property
    def block_size(self) -> int:
        return self.elements.shape[1]

    @property
    def n_elements(self) -> int:
        """Number of group elements per data sample, ``N = K m``."""
        return self.n_blocks * self.block_size

    @property
    def batch(self) -> int:
        return self.elements.shape[2]

    def flat(self, batch: int) -> torch.Tensor:
        """Elements as ``(N, batch, *element_shape)``, broadcasting a shared sample."""
        e = self.elements
        if e.shape[2] not in (1, batch):
            raise GroupError(f"group sample was drawn for {e.shape[2]} data samples, data has {batch}")
        e = e.expand(e.shape[0], e.shape[1], batch, *e.shape[3:])
        return e.reshape(self.n_elements, batch, *e.shape[3:])

    def to(self, device=None, dtype=None) -> "GroupSample":
        e = self.elements.to(device=device)
        if dtype is not None and e.is_floating_point():
            e = e.to(dtype)
        return GroupSample(e, self.scheme)

    def check_for(self, action: "Action") -> None:
        """Validate the elements for ``action`` once per sample (samples are immutable)."""
        key = (type(action), tuple(action.element_shape))
        checked = self.__dict__.setdefault("_checked", set())
        if key not in checked:
            e = self.elements
            action.check_elements(e.reshape(e.shape[0] * e.shape[1], *e.shape[2:]))
            checked.add(key)

    def subset(self, blocks: torch.Tensor) -> "GroupSample":
        """Keep blocks ``blocks`` (indices along K); used by bootstraps."""
        return GroupSample(self.elements[blocks], self.scheme)


def _batch_shape(batch: int | None) -> int:
    if batch is None:
        return 1
    if not isinstance(batch, int) or batch < 1:
        raise GroupError(f"batch must be a positive int, got {batch!r}")
    return batch


def sample_haar(n: int, *, batch: int | None = None, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float64, device=None) -> GroupSample:
    """``n`` independent Haar rotations (per data sample when ``batch`` is given)."""
    if not isinstance(n, int) or n < 1:
        raise GroupError(f"number of rotations must be a positive int, got {n!r}")
    B = _batch_shape(batch)
    R = haar_so3(n, 1, B, generator=generator, dtype=dtype, device=device)
    return GroupSample(R, "iid")


def sample_design(group: torch.Tensor, n_copies: int, *, batch: int | None = None,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                  device=None) -> GroupSample:
    """``n_copies`` randomly turned copies ``{R_k g : g ∈ group}`` of a finite rotation group.

    Each element is Haar distributed, and the average over one copy integrates
    exactly every component of the twisted prediction that transforms under an
    SO(3) irrep with no vector fixed by the group (for the tetrahedral group all
    degrees 1 and 2, octahedral 1-3, icosahedral 1-5), which is where the
    variance reduction comes from.  Use ``n_copies >= 2`` for unbiased estimates.
    """
    check_rotations(group, name="group")
    if not isinstance(n_copies, int) or n_copies < 1:
        raise GroupError(f"n_copies must be a positive int, got {n_copies!r}")
    B = _batch_shape(batch)
    turn = haar_so3(n_copies, 1, B, generator=generator, dtype=torch.float64)
    G = group.to(torch.float64)[None, :, None]
    return GroupSample((turn @ G).to(dtype=dtype, device=device), "design")


def sample_finite(group: torch.Tensor, n: int, *, batch: int | None = None,
                  generator: torch.Generator | None = None, device=None) -> GroupSample:
    """``n`` independent uniform draws (with replacement) from a finite group ``(|G|, ...)``."""
    if not isinstance(n, int) or n < 1:
        raise GroupError(f"number of elements must be a positive int, got {n!r}")
    B = _batch_shape(batch)
    idx = torch.randint(len(group), (n, 1, B), generator=generator)
    return GroupSample(group[idx].to(device=device), "iid")


def exhaustive(group: torch.Tensor, device=None) -> GroupSample:
    """Every element of a finite group once: the twirl over it is exact."""
    return GroupSample(group[None, :, None].to(device=device), "exhaustive")


# --------------------------------------------------------------------------- actions
class Action:
    """How group elements act on a data tensor.

    Subclasses implement :meth:`apply` and :meth:`apply_inverse`, both batched
    over group elements: ``g`` has shape ``(M, B, *element_shape)``.
    """

    element_shape: tuple[int, ...] = ()

    def apply(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x (B, ...)`` → ``(M, B, ...)``: every sample transformed by its elements."""
        raise NotImplementedError

    def apply_inverse(self, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y (M, B, ...)`` → ``(M, B, ...)``: undo the action of ``g`` on each slice."""
        raise NotImplementedError

    def check_elements(self, g: torch.Tensor) -> None:
        if tuple(g.shape[2:]) != tuple(self.element_shape):
            raise GroupError(
                f"{type(self).__name__} expects group elements of shape {self.element_shape}, "
                f"got {tuple(g.shape[2:])}"
            )


class VectorAction(Action):
    """Rotations acting on per-atom vectors ``(B, atoms, 3)`` (positions, forces, velocities)."""

    element_shape = (3, 3)

    def check_elements(self, g):
        super().check_elements(g)
        check_rotations(g, name="group elements")

    def _check_data(self, x, lead):
        if x.ndim != lead + 2 or x.shape[-1] != 3:
            want = "(B, atoms, 3)" if lead == 1 else "(M, B, atoms, 3)"
            raise GroupError(f"VectorAction expects data of shape {want}, got {tuple(x.shape)}")

    def apply(self, g, x):
        self._check_data(x, 1)
        return torch.einsum("mbij,baj->mbai", g.to(x.dtype), x)

    def apply_inverse(self, g, y):
        self._check_data(y, 2)
        return torch.einsum("mbji,mbaj->mbai", g.to(y.dtype), y)


class VoxelAction(Action):
    """The cube group acting on cubic voxel grids ``(B, C, S, S, S)``.

    A rotation ``R`` moves a density ``ρ`` to ``ρ'(p) = ρ(Rᵀ p)``, with voxel
    centres at ``(i - (S-1)/2)`` along each axis, so that rotating the atoms by
    ``R`` and voxelizing equals voxelizing and applying this action.  Only the
    24 signed-permutation rotations map the grid onto itself; any other element
    is rejected.  Implemented as one gather per call.
    """

    element_shape = (3, 3)

    def __init__(self):
        self._cache: dict[tuple[int, bytes], torch.Tensor] = {}

    def _index(self, R: torch.Tensor, S: int) -> torch.Tensor:
        """Source flat index for every target voxel, ``(S³,)``."""
        key = (S, R.to(torch.int8).cpu().numpy().tobytes())
        if key not in self._cache:
            c = torch.arange(S, dtype=torch.float64) - (S - 1) / 2
            P = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
            Q = P @ R.to(torch.float64)  # rows: Rᵀ p
            idx = torch.round(Q + (S - 1) / 2).to(torch.long)
            self._cache[key] = (idx[:, 0] * S + idx[:, 1]) * S + idx[:, 2]
        return self._cache[key]

    def check_elements(self, g):
        super().check_elements(g)
        check_rotations(g, name="group elements")
        if (g - g.round()).abs().amax() > 1e-6:
            raise GroupError("VoxelAction only supports the 24 rotations of the cube (signed permutations)")

    def _indices(self, g: torch.Tensor, S: int, device) -> torch.Tensor:
        flat = g.reshape(-1, 3, 3).round()
        uniq, inv = torch.unique(flat.cpu(), dim=0, return_inverse=True)
        table = torch.stack([self._index(R, S) for R in uniq]).to(device)  # (U, S³) — at most 24 rows
        return table[inv.to(device)].reshape(*g.shape[:2], S**3)

    def _check_data(self, x, lead):
        if x.ndim != lead + 4 or not (x.shape[-1] == x.shape[-2] == x.shape[-3]):
            want = "(B, C, S, S, S)" if lead == 1 else "(M, B, C, S, S, S)"
            raise GroupError(f"VoxelAction expects a cubic grid {want}, got {tuple(x.shape)}")

    def apply(self, g, x):
        self._check_data(x, 1)
        M, B = g.shape[:2]
        S, C = x.shape[-1], x.shape[1]
        idx = self._indices(g, S, x.device)  # (M, B, S³)
        src = x.reshape(1, B, C, S**3).expand(M, B, C, S**3)
        out = torch.gather(src, 3, idx[:, :, None, :].expand(M, B, C, S**3))
        return out.reshape(M, B, C, S, S, S)

    def apply_inverse(self, g, y):
        self._check_data(y, 2)
        M, B, C, S = y.shape[0], y.shape[1], y.shape[2], y.shape[-1]
        idx = self._indices(g, S, y.device)
        out = torch.empty_like(y).reshape(M, B, C, S**3)
        out.scatter_(3, idx[:, :, None, :].expand(M, B, C, S**3), y.reshape(M, B, C, S**3))
        return out.reshape(y.shape)


@lru_cache(maxsize=None)
def _so3_generators64(l: int) -> torch.Tensor:
    """Real-basis so(3) generators of degree ``l`` in float64 (e3nn's basis; e3nn builds them in float32)."""
    from e3nn.o3 import change_basis_real_to_complex

    j = l
    m = torch.arange(-j, j, dtype=torch.float64)
    raising = torch.diag(-torch.sqrt(j * (j + 1) - m * (m + 1)), diagonal=-1).to(torch.complex128)
    m = torch.arange(-j + 1, j + 1, dtype=torch.float64)
    lowering = torch.diag(torch.sqrt(j * (j + 1) - m * (m - 1)), diagonal=1).to(torch.complex128)
    m = torch.arange(-j, j + 1, dtype=torch.float64)
    X = torch.stack([0.5 * (raising + lowering), torch.diag(1j * m), -0.5j * (raising - lowering)])
    Q = change_basis_real_to_complex(l, dtype=torch.float64)
    X = Q.conj().T @ X @ Q
    if X.imag.abs().max() > 1e-12:
        raise RuntimeError(f"so(3) generators of degree {l} are not real")
    return X.real.contiguous()


def wigner_D(irreps, R: torch.Tensor) -> torch.Tensor:
    """Block-diagonal Wigner-D matrices of e3nn ``irreps`` for rotations ``R (..., 3, 3)``, in float64.

    Same basis and convention as ``e3nn.o3.Irreps.D_from_matrix`` (for ``1o``
    it equals ``R``), but accurate to ~1e-15 instead of ~1e-7: e3nn builds its
    generators in float32.
    """
    from e3nn import o3

    irreps = o3.Irreps(irreps)
    R = R.to(torch.float64)
    check_rotations(R, name="R")
    alpha, beta, gamma = o3.matrix_to_angles(R)
    blocks = []
    for mul, ir in irreps:
        X = _so3_generators64(ir.l).to(R.device)
        a, b, c = (t[..., None, None] for t in (alpha, beta, gamma))
        D = torch.matrix_exp(a * X[1]) @ torch.matrix_exp(b * X[0]) @ torch.matrix_exp(c * X[1])
        blocks += [D] * mul
    out = torch.zeros(*R.shape[:-2], irreps.dim, irreps.dim, dtype=torch.float64, device=R.device)
    i = 0
    for D in blocks:
        k = D.shape[-1]
        out[..., i:i + k, i:i + k] = D
        i += k
    return out


class IrrepsAction(Action):
    """Rotations acting on e3nn irreps features ``(B, ..., irreps.dim)`` through Wigner-D matrices."""

    element_shape = (3, 3)

    def __init__(self, irreps):
        from e3nn import o3

        self.irreps = o3.Irreps(irreps)

    def check_elements(self, g):
        super().check_elements(g)
        check_rotations(g, name="group elements")

    def _D(self, g, dtype):
        # float64-accurate Wigner-D (e3nn's own builds its generators in float32: ~1e-7)
        D = wigner_D(self.irreps, g.reshape(-1, 3, 3))
        return D.reshape(*g.shape[:2], self.irreps.dim, self.irreps.dim).to(dtype=dtype)

    def _check_data(self, x, lead):
        if x.ndim < lead + 1 or x.shape[-1] != self.irreps.dim:
            raise GroupError(
                f"IrrepsAction({self.irreps}) expects a last dimension of {self.irreps.dim}, got {tuple(x.shape)}"
            )

    def apply(self, g, x):
        self._check_data(x, 1)
        D = self._D(g, x.dtype)
        xb = x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.einsum("mbij,bkj->mbki", D, xb)
        return out.reshape(*g.shape[:2], *x.shape[1:])

    def apply_inverse(self, g, y):
        self._check_data(y, 2)
        D = self._D(g, y.dtype)
        yb = y.reshape(*y.shape[:2], -1, y.shape[-1])
        out = torch.einsum("mbji,mbkj->mbki", D, yb)
        return out.reshape(y.shape)


class PermutationAction(Action):
    """S_n permuting axis ``dim`` (default 1, e.g. atoms) of ``(B, n, ...)`` data.

    Elements are index tensors ``(n,)``: ``(g·x)[:, i] = x[:, g[i]]``.
    """

    def __init__(self, n: int, dim: int = 1):
        self.n, self.dim = n, dim
        self.element_shape = (n,)

    def check_elements(self, g):
        super().check_elements(g)
        if g.dtype != torch.long:
            raise GroupError("permutations must be integer index tensors")
        srt = g.sort(-1).values
        if not torch.equal(srt, torch.arange(self.n, device=g.device).expand_as(srt)):
            raise GroupError("group elements are not permutations of range(n)")

    def apply(self, g, x):
        M, B = g.shape[:2]
        if x.ndim < 2 or x.shape[self.dim] != self.n:
            raise GroupError(f"PermutationAction(n={self.n}) expects size {self.n} on axis {self.dim}, "
                             f"got shape {tuple(x.shape)}")
        src = x.unsqueeze(0).expand(M, *x.shape)
        return self._take(src, g, self.dim + 1)

    def apply_inverse(self, g, y):
        inv = torch.argsort(g, dim=-1)
        return self._take(y, inv, self.dim + 1)

    @staticmethod
    def _take(src, g, d):
        shape = [1] * src.ndim
        shape[0], shape[1], shape[d] = g.shape[0], g.shape[1], g.shape[-1]
        idx = g.reshape(shape).expand(src.shape)
        return torch.gather(src, d, idx)
