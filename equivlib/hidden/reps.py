"""Permutation representations of ``S_n`` and the equivariant linear maps between them.

Every representation here is a direct sum of permutation representations
(trivial, standard ``P``, regular), so every group element acts by permuting
basis indices, and a linear map is equivariant exactly when it is constant on
the orbits of ``S_n`` acting on index pairs.  That makes bases, projections and
fixed-point subspaces combinatorial (union-find over orbits) rather than
numerical; :func:`constraint_nullspace` and :func:`group_average` are the slow,
independent checks.

* :class:`PermRep`: the representation (index maps and matrices);
* :func:`orbit_labels`, :func:`equivariant_basis`, :func:`constraint_nullspace`:
  the commutant ``{W : W rho_in(g) = rho_out(g) W}``;
* :func:`project_equivariant`, :func:`group_average`, :func:`equivariance_error`,
  :func:`conjugate_equivariance_error`: distances to it (also for conjugated
  hidden representations ``Pi rho Pi^T``);
* :func:`hidden_fixed_point_basis`: equivariant maps fixed by the permutations of
  the neurons of one hidden block (the hidden fixed-point subspace).

The group elements themselves come from :func:`equivlib.groups.symmetric_group`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..groups import symmetric_group

__all__ = [
    "BLOCK_KINDS",
    "DTYPE",
    "PermRep",
    "orbit_labels",
    "pair_orbit_representatives",
    "equivariant_basis",
    "constraint_nullspace",
    "project_equivariant",
    "group_average",
    "equivariance_error",
    "conjugate_equivariance_error",
    "hidden_fixed_point_basis",
]

BLOCK_KINDS = ("trivial", "standard", "regular")
DTYPE = torch.float64


def _generators(n: int) -> list[tuple[int, ...]]:
    """A transposition and an n-cycle generate S_n."""
    if n == 1:
        return [(0,)]
    swap = tuple([1, 0] + list(range(2, n)))
    cycle = tuple(list(range(1, n)) + [0])
    return [swap, cycle]


@dataclass(frozen=True)
class PermRep:
    """A direct sum of permutation representations of ``S_n``.

    Parameters
    ----------
    n : int
        The group is ``S_n`` (``n >= 2``).
    blocks : tuple of {"trivial", "standard", "regular"}
        ``trivial`` has dimension 1, ``standard`` (called ``P``) dimension ``n``
        and permutes basis vectors, ``regular`` dimension ``n!`` (``n <= 5``).

    Every group element acts by permuting basis indices; :meth:`index_action`
    returns those index maps, :meth:`matrices` the permutation matrices.
    """

    n: int
    blocks: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.n, (int, np.integer)) or self.n < 2:
            raise ValueError(f"PermRep needs an integer n >= 2, got n={self.n!r}")
        if isinstance(self.blocks, str):
            raise ValueError("blocks must be a sequence of block names, not a string")
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if len(self.blocks) == 0:
            raise ValueError("a representation needs at least one block")
        for b in self.blocks:
            if b not in BLOCK_KINDS:
                raise ValueError(f"unknown block kind {b!r}; expected one of {BLOCK_KINDS}")
        if "regular" in self.blocks and self.n > 5:
            raise ValueError(f"the regular representation is limited to n <= 5, got n={self.n}")

    def block_dim(self, kind: str) -> int:
        return {"trivial": 1, "standard": self.n, "regular": math.factorial(self.n)}[kind]

    @property
    def dim(self) -> int:
        return sum(self.block_dim(b) for b in self.blocks)

    @property
    def slices(self) -> list[slice]:
        out, start = [], 0
        for b in self.blocks:
            out.append(slice(start, start + self.block_dim(b)))
            start += self.block_dim(b)
        return out

    def _act_one(self, g: Sequence[int], perms_index: dict | None) -> list[int]:
        img: list[int] = []
        off = 0
        for b in self.blocks:
            if b == "trivial":
                img.append(off)
            elif b == "standard":
                img.extend(off + int(g[i]) for i in range(self.n))
            else:
                elems = list(perms_index)
                for h in elems:
                    gh = tuple(int(g[h[k]]) for k in range(self.n))
                    img.append(off + perms_index[gh])
            off += self.block_dim(b)
        return img

    def index_action(self, perms: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
        """Index maps of the given group elements.

        Parameters
        ----------
        perms : array-like, shape ``(m, n)``

        Returns
        -------
        torch.LongTensor, shape ``(m, dim)``: ``rho(g) e_i = e_{out[g, i]}``.
        """
        perms = [tuple(int(v) for v in p) for p in perms]
        for p in perms:
            if sorted(p) != list(range(self.n)):
                raise ValueError(f"{p} is not a permutation of range({self.n})")
        index = _regular_index(self)
        return torch.tensor([self._act_one(p, index) for p in perms], dtype=torch.long)

    def matrices(self, perms, dtype=DTYPE, device=None) -> torch.Tensor:
        """Permutation matrices ``rho(g)``, shape ``(m, dim, dim)``."""
        act = self.index_action(perms)
        m, d = act.shape
        M = torch.zeros(m, d, d, dtype=dtype, device=device)
        M[torch.arange(m)[:, None], act.to(M.device if device else "cpu"), torch.arange(d)[None, :]] = 1
        return M

    def generators(self) -> list[tuple[int, ...]]:
        return _generators(self.n)


def _check_reps(rep_in: PermRep, rep_out: PermRep) -> None:
    if not isinstance(rep_in, PermRep) or not isinstance(rep_out, PermRep):
        raise ValueError("rep_in and rep_out must be PermRep instances")
    if rep_in.n != rep_out.n:
        raise ValueError(f"representations of different groups: S_{rep_in.n} vs S_{rep_out.n}")


def _union_find_orbits(size_out: int, size_in: int, maps: list[tuple[np.ndarray, np.ndarray]]):
    """Orbits of index pairs ``(i, j)`` under generators acting as ``(i, j) -> (ro[i], ri[j])``."""
    parent = np.arange(size_out * size_in)

    def find(x):
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    I, J = np.meshgrid(np.arange(size_out), np.arange(size_in), indexing="ij")
    src = (I * size_in + J).ravel()
    for ro, ri in maps:
        dst = (ro[I] * size_in + ri[J]).ravel()
        for s, t in zip(src, dst):
            a, b = find(s), find(t)
            if a != b:
                parent[max(a, b)] = min(a, b)
    roots = np.array([find(x) for x in range(size_out * size_in)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels.reshape(size_out, size_in)


@functools.lru_cache(maxsize=256)
def _orbit_labels_np(rep_in: PermRep, rep_out: PermRep, hidden_group: tuple) -> np.ndarray:
    gens = _generators(rep_in.n)
    ai = np.array([rep_in._act_one(g, _regular_index(rep_in)) for g in gens], dtype=np.int64)
    ao = np.array([rep_out._act_one(g, _regular_index(rep_out)) for g in gens], dtype=np.int64)
    maps = [(ao[k], ai[k]) for k in range(len(gens))]
    ident_in = np.arange(rep_in.dim)
    for h in hidden_group:
        maps.append((np.asarray(h, dtype=np.int64), ident_in))
    labels = _union_find_orbits(rep_out.dim, rep_in.dim, maps)
    labels.setflags(write=False)
    return labels


def _regular_index(rep: PermRep) -> dict | None:
    """Position of every permutation in :func:`equivlib.groups.symmetric_group` (the regular block's basis)."""
    if "regular" not in rep.blocks:
        return None
    return {tuple(p): i for i, p in enumerate(symmetric_group(int(rep.n)).tolist())}


def orbit_labels(rep_in: PermRep, rep_out: PermRep, hidden_group: Sequence[Sequence[int]] = ()) -> torch.Tensor:
    """Orbit label of every matrix entry under ``W -> rho_out(g) W rho_in(g)^T``.

    Optionally also under row permutations ``W -> Pi W`` for ``Pi`` in
    ``hidden_group`` (index maps of length ``rep_out.dim``): the orbits then index
    the hidden fixed-point subspace.  Results are cached per representation pair.

    Returns
    -------
    torch.LongTensor, shape ``(rep_out.dim, rep_in.dim)`` with labels ``0..k-1``.
    """
    _check_reps(rep_in, rep_out)
    hg = []
    for h in hidden_group:
        h = tuple(int(v) for v in h)
        if len(h) != rep_out.dim or sorted(h) != list(range(rep_out.dim)):
            raise ValueError(f"hidden permutation must permute range({rep_out.dim}), got {list(h)}")
        hg.append(h)
    return torch.from_numpy(_orbit_labels_np(rep_in, rep_out, tuple(hg)).copy())


def pair_orbit_representatives(rep: PermRep):
    """One index pair ``(i, j)`` per orbit of ``S_n`` on ``range(dim)^2``, and the orbit sizes.

    Returns
    -------
    I, J, counts : torch.LongTensor, shape ``(R,)`` each (``R`` orbits)
    """
    flat = _orbit_labels_np(rep, rep, ()).reshape(-1)
    _, first, counts = np.unique(flat, return_index=True, return_counts=True)
    return (torch.from_numpy(first // rep.dim), torch.from_numpy(first % rep.dim),
            torch.from_numpy(counts))


def _orbit_basis(labels: torch.Tensor, dtype, device, normalize: bool) -> torch.Tensor:
    k = int(labels.max()) + 1
    B = torch.nn.functional.one_hot(labels, k).permute(2, 0, 1).to(dtype=dtype, device=device)
    if normalize:
        B = B / torch.sqrt(B.sum((-1, -2), keepdim=True))
    return B


def equivariant_basis(rep_in: PermRep, rep_out: PermRep, *, normalize: bool = True,
                      dtype=DTYPE, device=None) -> torch.Tensor:
    """Basis of the commutant ``{W : W rho_in(g) = rho_out(g) W}``.

    For permutation representations the commutant is spanned by indicator
    matrices of the orbits of ``S_n`` on index pairs (the "orbital" basis); e.g.
    for ``P -> P`` the identity and ``1 1^T - I``.

    Parameters
    ----------
    normalize : bool
        ``True``: orthonormal in the Frobenius inner product.  ``False``: 0/1
        orbit indicators (the natural "diagonal / off-diagonal" coordinates).

    Returns
    -------
    torch.Tensor, shape ``(k, rep_out.dim, rep_in.dim)``
    """
    return _orbit_basis(orbit_labels(rep_in, rep_out), dtype, device, normalize)


def constraint_nullspace(rep_in: PermRep, rep_out: PermRep, dtype=DTYPE, tol: float = 1e-9) -> torch.Tensor:
    """Commutant basis by solving ``W rho_in(g) - rho_out(g) W = 0`` (SVD null space).

    An independent check of :func:`equivariant_basis`.

    Returns
    -------
    torch.Tensor, shape ``(k, rep_out.dim, rep_in.dim)``, orthonormal.
    """
    _check_reps(rep_in, rep_out)
    gens = _generators(rep_in.n)
    Ri, Ro = rep_in.matrices(gens, dtype), rep_out.matrices(gens, dtype)
    do, di = rep_out.dim, rep_in.dim
    eye_o, eye_i = torch.eye(do, dtype=dtype), torch.eye(di, dtype=dtype)
    # vec(W R) = (R^T kron I) vec(W), vec(R W) = (I kron R) vec(W)  (column-major vec)
    rows = [torch.kron(Ri[k].T.contiguous(), eye_o) - torch.kron(eye_i, Ro[k]) for k in range(len(gens))]
    A = torch.cat(rows, 0)
    _, S, Vh = torch.linalg.svd(A)
    S = torch.cat([S, torch.zeros(Vh.shape[0] - S.shape[0], dtype=dtype)])
    null = Vh[S < tol]
    return null.reshape(-1, di, do).transpose(-1, -2)


def _check_W(W: torch.Tensor, rep_in: PermRep, rep_out: PermRep) -> None:
    if W.dim() < 2 or W.shape[-2:] != (rep_out.dim, rep_in.dim):
        raise ValueError(
            f"weight matrix must have shape (..., {rep_out.dim}, {rep_in.dim}), got {tuple(W.shape)}"
        )


def _orbit_project(W: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    labels = labels.to(W.device)
    k = int(labels.max()) + 1
    flat = W.reshape(*W.shape[:-2], -1)
    lab = labels.reshape(-1)
    counts = torch.bincount(lab, minlength=k).to(W.dtype)
    sums = torch.zeros(*flat.shape[:-1], k, dtype=W.dtype, device=W.device).index_add(-1, lab, flat)
    return (sums / counts)[..., lab].reshape(W.shape)


def project_equivariant(W: torch.Tensor, rep_in: PermRep, rep_out: PermRep) -> torch.Tensor:
    """Orthogonal projection onto the commutant (equals the group average).

    Parameters
    ----------
    W : torch.Tensor, shape ``(..., rep_out.dim, rep_in.dim)``

    Returns
    -------
    torch.Tensor, same shape.
    """
    _check_W(W, rep_in, rep_out)
    return _orbit_project(W, orbit_labels(rep_in, rep_out))


def group_average(W: torch.Tensor, rep_in: PermRep, rep_out: PermRep) -> torch.Tensor:
    """``(1/|G|) sum_g rho_out(g)^T W rho_in(g)`` by explicit enumeration of ``S_n``.

    Same result as :func:`project_equivariant`, slower; kept as a reference.
    """
    _check_W(W, rep_in, rep_out)
    G = symmetric_group(int(rep_in.n))
    Ri = rep_in.matrices(G, W.dtype, W.device)
    Ro = rep_out.matrices(G, W.dtype, W.device)
    return torch.einsum("gab,...ac,gcd->...bd", Ro, W, Ri) / G.shape[0]


def equivariance_error(W: torch.Tensor, rep_in: PermRep, rep_out: PermRep, relative: bool = False) -> torch.Tensor:
    """Frobenius distance of ``W`` to the equivariant subspace, shape ``(...)``.

    ``relative=True`` divides by ``||W||_F``.
    """
    _check_W(W, rep_in, rep_out)
    err = torch.linalg.matrix_norm(W - project_equivariant(W, rep_in, rep_out))
    return err / torch.linalg.matrix_norm(W) if relative else err


def conjugate_equivariance_error(W: torch.Tensor, rep_in: PermRep, rep_hidden: PermRep,
                                 max_perms: int = 50_000, chunk: int = 5040):
    """Distance of ``W`` to the closest *conjugate* equivariant subspace.

    A permutation ``Pi`` of hidden neurons turns the hidden representation into
    ``Pi rho Pi^T``, whose equivariant maps are ``Pi C``.  Returns
    ``min_Pi ||Pi^T W - proj(Pi^T W)||_F`` and the minimizing ``Pi`` (index
    map: row ``i`` of ``Pi^T W`` is row ``perm[i]`` of ``W``).

    Parameters
    ----------
    W : torch.Tensor, shape ``(rep_hidden.dim, rep_in.dim)``
    max_perms : int
        Brute force over all ``dim!`` hidden permutations; refuse above this.

    Returns
    -------
    error : float
    perm : torch.LongTensor, shape ``(rep_hidden.dim,)``
    """
    _check_W(W, rep_in, rep_hidden)
    if W.dim() != 2:
        raise ValueError(f"conjugate_equivariance_error takes one matrix, got shape {tuple(W.shape)}")
    h = rep_hidden.dim
    if math.factorial(h) > max_perms:
        raise ValueError(f"{h}! hidden permutations exceed max_perms={max_perms}")
    labels = orbit_labels(rep_in, rep_hidden)
    best, best_perm = math.inf, None
    perms = symmetric_group(h, device=W.device)
    for s in range(0, perms.shape[0], chunk):
        P = perms[s : s + chunk]
        Wp = W[P]
        err = torch.linalg.matrix_norm(Wp - _orbit_project(Wp, labels))
        i = int(torch.argmin(err))
        if err[i].item() < best:
            best, best_perm = err[i].item(), P[i].clone()
    return best, best_perm


def hidden_fixed_point_basis(rep_in: PermRep, rep_hidden: PermRep, block: int, *,
                             normalize: bool = True, dtype=DTYPE, device=None) -> torch.Tensor:
    """Basis of the hidden fixed-point subspace of one hidden block.

    The hidden symmetry is the group of all permutations of the neurons of
    ``rep_hidden.blocks[block]`` (a global parameter symmetry of the unconstrained
    network when the output weights of that block are equal, which equivariance
    into a trivial output enforces).  Its fixed points inside the equivariant
    subspace are the equivariant ``W`` whose rows in that block coincide.

    Returns
    -------
    torch.Tensor, shape ``(k, rep_hidden.dim, rep_in.dim)``
    """
    _check_reps(rep_in, rep_hidden)
    if not 0 <= block < len(rep_hidden.blocks):
        raise ValueError(f"block index {block} out of range for {len(rep_hidden.blocks)} hidden blocks")
    sl = rep_hidden.slices[block]
    m = sl.stop - sl.start
    gens = []
    if m >= 2:
        for g in _generators(m):
            full = list(range(rep_hidden.dim))
            for i in range(m):
                full[sl.start + i] = sl.start + g[i]
            gens.append(full)
    return _orbit_basis(orbit_labels(rep_in, rep_hidden, gens), dtype, device, normalize)

