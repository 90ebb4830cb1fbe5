"""Exact teacher-student landscapes for permutation-equivariant two-layer networks.

This module reproduces the setting of Xie & Smidt, *A Tale of Two Symmetries*
(NeurIPS 2025): a two-layer network ``f(x) = V sigma(W x)`` with Gaussian input
``x ~ N(0, I_d)`` whose first-layer weights ``W`` are trained while the output
weights ``V`` stay fixed at the teacher's.  Everything is float64 and batched over
leading dimensions, so that a whole 2-D loss landscape, or gradient descent from
every point of a grid, is a single tensor call.

Contents
--------
* exact population losses through the arc-cosine (ReLU) and arcsine (erf) kernels,
  with finite gradients where two weight vectors are parallel or antiparallel;
* permutation representations of the symmetric group ``S_n`` (trivial, standard,
  regular, and direct sums), orbit bases of equivariant linear maps, projections,
  hidden fixed-point subspaces and equivariance errors (also against the closest
  conjugate hidden representation);
* the experiment of the paper's Sec. 4 (a ``P -> P`` block swept over its
  diagonal ``a`` and off-diagonal ``b`` entries), batched gradient descent in the
  direct and rescaled parameterizations, minimum finding, Hessians and the
  relaxation experiment;
* spherical signals with e3nn (App. C.3): the ``0e + l`` model, its landscape and
  the aliasing error of a pointwise nonlinearity on an S^2 grid.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = [
    "ACTIVATIONS",
    "BLOCK_KINDS",
    "arccos_kernel_j",
    "relu_kernel",
    "erf_kernel",
    "gaussian_kernel",
    "monte_carlo_kernel",
    "population_loss",
    "equivariant_population_loss",
    "monte_carlo_loss",
    "symmetric_group",
    "PermRep",
    "orbit_labels",
    "equivariant_basis",
    "constraint_nullspace",
    "project_equivariant",
    "group_average",
    "equivariance_error",
    "conjugate_equivariance_error",
    "hidden_fixed_point_basis",
    "SliceProblem",
    "make_problem",
    "slice_landscape",
    "gd_slice",
    "local_minima_grid",
    "refine_slice_minimum",
    "find_slice_minima",
    "boundary_points",
    "line_fit_residual",
    "hessian",
    "newton_minimize",
    "min_hessian_eigenvalue",
    "constrained_descent",
    "relax",
    "match_hidden_permutation",
    "SphericalSignalModel",
    "s2_landscape",
    "s2_loss_fn",
    "s2_aliasing_error",
    "haar_rotation_angles",
]

ACTIVATIONS = ("relu", "erf")
BLOCK_KINDS = ("trivial", "standard", "regular")
DTYPE = torch.float64

# 1 - c^2 is clamped from below by this number in the second derivative of the
# arc-cosine kernel (angles below ~1e-6 rad); see ``_JPrime``.
_ONE_MINUS_C2_MIN = 1e-12


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    return activation


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------
class _JPrime(torch.autograd.Function):
    """``J'(c) = pi - arccos(c)`` with a bounded derivative ``1/sqrt(1-c^2)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(c):
        return math.pi - torch.arccos(c.clamp(-1.0, 1.0))

    @staticmethod
    def setup_context(ctx, inputs, output):
        (c,) = inputs
        ctx.save_for_backward(c)
        ctx.save_for_forward(c)

    @staticmethod
    def _second(c):
        return torch.rsqrt((1.0 - c.clamp(-1.0, 1.0) ** 2).clamp_min(_ONE_MINUS_C2_MIN))

    @staticmethod
    def backward(ctx, grad):
        (c,) = ctx.saved_tensors
        return grad * _JPrime._second(c)

    @staticmethod
    def jvp(ctx, tangent):
        (c,) = ctx.saved_tensors
        return tangent * _JPrime._second(c)


class _J(torch.autograd.Function):
    """``J(c) = sqrt(1-c^2) + (pi - arccos c) c`` with derivative ``pi - arccos c``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(c):
        c = c.clamp(-1.0, 1.0)
        return torch.sqrt(1.0 - c * c) + (math.pi - torch.arccos(c)) * c

    @staticmethod
    def setup_context(ctx, inputs, output):
        (c,) = inputs
        ctx.save_for_backward(c)
        ctx.save_for_forward(c)

    @staticmethod
    def backward(ctx, grad):
        (c,) = ctx.saved_tensors
        return grad * _JPrime.apply(c)

    @staticmethod
    def jvp(ctx, tangent):
        (c,) = ctx.saved_tensors
        return tangent * _JPrime.apply(c)


def arccos_kernel_j(c: torch.Tensor) -> torch.Tensor:
    """Angular part of the degree-1 arc-cosine kernel.

    ``J(c) = sin(theta) + (pi - theta) cos(theta)`` with ``c = cos(theta)``.
    Its derivative ``J'(c) = pi - arccos(c)`` is finite on ``[-1, 1]``; autograd
    through ``sqrt`` and ``arccos`` would return NaN at ``c = +-1`` (parallel or
    antiparallel weights), so the derivative is written by hand.  The second
    derivative ``1/sqrt(1-c^2)`` diverges at ``c = +-1``; it is capped at
    ``1e6`` (``1-c^2 >= 1e-12``).  At an exactly parallel pair the gradient of
    ``c`` vanishes, so the Hessian there is still exact.

    Parameters
    ----------
    c : torch.Tensor, shape ``(...)``
        Cosines; values are clamped to ``[-1, 1]``.

    Returns
    -------
    torch.Tensor, shape ``(...)``
    """
    return _J.apply(c)


def _check_pair(A: torch.Tensor, B: torch.Tensor) -> None:
    if A.dim() < 2 or B.dim() < 2:
        raise ValueError(
            f"weight matrices need shape (..., rows, d); got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(
            f"input dimension mismatch: {tuple(A.shape)} vs {tuple(B.shape)} (last axes differ)"
        )


def _safe_norm(A: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((A * A).sum(-1).clamp_min(torch.finfo(A.dtype).tiny))


def relu_kernel(A: torch.Tensor, B: torch.Tensor, *, same: bool = False) -> torch.Tensor:
    """``K_ij = E[relu(a_i . x) relu(b_j . x)]`` for ``x ~ N(0, I)`` (Cho & Saul).

    ``K_ij = |a_i| |b_j| J(cos theta_ij) / (2 pi)`` with ``J`` from
    :func:`arccos_kernel_j`.

    Parameters
    ----------
    A : torch.Tensor, shape ``(..., h, d)``
    B : torch.Tensor, shape ``(..., k, d)``
        Leading dimensions broadcast.
    same : bool
        ``True`` when ``B is A``: the diagonal is then set to its exact value
        ``|a_i|^2 / 2`` (the angle is identically zero there).

    Returns
    -------
    torch.Tensor, shape ``(..., h, k)``
    """
    _check_pair(A, B)
    na, nb = _safe_norm(A), _safe_norm(B)
    dot = A @ B.transpose(-1, -2)
    scale = na[..., :, None] * nb[..., None, :]
    K = scale * arccos_kernel_j(dot / scale) / (2 * math.pi)
    if same:
        eye = torch.eye(A.shape[-2], dtype=A.dtype, device=A.device)
        K = K * (1 - eye) + torch.diag_embed((A * A).sum(-1) / 2)
    return K


def erf_kernel(A: torch.Tensor, B: torch.Tensor, *, same: bool = False) -> torch.Tensor:
    """``K_ij = E[g(a_i . x) g(b_j . x)]`` with ``g(z) = erf(z / sqrt 2)``, ``x ~ N(0, I)``.

    ``K_ij = (2/pi) arcsin(a_i . b_j / sqrt((1 + |a_i|^2)(1 + |b_j|^2)))``; the
    argument stays strictly inside ``(-1, 1)`` so the kernel is smooth.

    Parameters
    ----------
    A : torch.Tensor, shape ``(..., h, d)``
    B : torch.Tensor, shape ``(..., k, d)``
    same : bool
        Accepted for symmetry with :func:`relu_kernel`; has no effect.

    Returns
    -------
    torch.Tensor, shape ``(..., h, k)``
    """
    _check_pair(A, B)
    qa = 1 + (A * A).sum(-1)
    qb = 1 + (B * B).sum(-1)
    arg = (A @ B.transpose(-1, -2)) / torch.sqrt(qa[..., :, None] * qb[..., None, :])
    return (2 / math.pi) * torch.arcsin(arg)


def gaussian_kernel(A, B, activation: str = "relu", *, same: bool = False) -> torch.Tensor:
    """Dispatch to :func:`relu_kernel` or :func:`erf_kernel`; shapes as there."""
    _check_activation(activation)
    return (relu_kernel if activation == "relu" else erf_kernel)(A, B, same=same)


def _sigma(z: torch.Tensor, activation: str) -> torch.Tensor:
    _check_activation(activation)
    return torch.relu(z) if activation == "relu" else torch.erf(z / math.sqrt(2))


def monte_carlo_kernel(A, B, activation: str, n_samples: int, generator: torch.Generator,
                       chunk: int = 200_000):
    """Monte Carlo estimate of :func:`gaussian_kernel` and its standard error.

    Parameters
    ----------
    A : torch.Tensor, shape ``(h, d)``
    B : torch.Tensor, shape ``(k, d)``
    activation : {"relu", "erf"}
    n_samples : int
    generator : torch.Generator

    Returns
    -------
    mean, stderr : torch.Tensor, shape ``(h, k)`` each
    """
    _check_pair(A, B)
    s1 = torch.zeros(A.shape[-2], B.shape[-2], dtype=A.dtype)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        x = torch.randn(m, A.shape[-1], generator=generator, dtype=A.dtype)
        p = _sigma(x @ A.T, activation)[:, :, None] * _sigma(x @ B.T, activation)[:, None, :]
        s1 += p.sum(0)
        s2 += (p * p).sum(0)
        done += m
    mean = s1 / n_samples
    var = (s2 / n_samples - mean**2) * n_samples / (n_samples - 1)
    return mean, torch.sqrt(var.clamp_min(0) / n_samples)


def _check_net(W, V, name="student"):
    if W.dim() < 2:
        raise ValueError(f"{name} W must have shape (..., h, d), got {tuple(W.shape)}")
    if V.dim() < 2:
        raise ValueError(f"{name} V must have shape (..., o, h), got {tuple(V.shape)}")
    if V.shape[-1] != W.shape[-2]:
        raise ValueError(
            f"{name}: V has {V.shape[-1]} hidden columns but W has {W.shape[-2]} hidden rows"
        )


def population_loss(W, V, W_teacher, V_teacher, activation: str = "relu",
                    teacher_term: torch.Tensor | None = None) -> torch.Tensor:
    """Exact Gaussian population loss ``E ||V s(W x) - V* s(W* x)||^2``.

    ``= tr(V K(W,W) V^T) - 2 tr(V K(W,W*) V*^T) + tr(V* K(W*,W*) V*^T)``.

    Parameters
    ----------
    W : torch.Tensor, shape ``(..., h, d)``
        Student first-layer weights; leading dimensions are a batch (a grid).
    V : torch.Tensor, shape ``(o, h)`` or ``(..., o, h)``
        Student output weights.
    W_teacher : torch.Tensor, shape ``(h*, d)`` (or batched)
    V_teacher : torch.Tensor, shape ``(o, h*)`` (or batched)
    activation : {"relu", "erf"}
    teacher_term : torch.Tensor, optional
        Precomputed ``tr(V* K(W*,W*) V*^T)``.

    Returns
    -------
    torch.Tensor, shape ``(...)``
    """
    _check_activation(activation)
    _check_net(W, V)
    _check_net(W_teacher, V_teacher, "teacher")
    if W.shape[-1] != W_teacher.shape[-1]:
        raise ValueError(
            f"student input dimension {W.shape[-1]} != teacher input dimension {W_teacher.shape[-1]}"
        )
    if V.shape[-2] != V_teacher.shape[-2]:
        raise ValueError(f"student has {V.shape[-2]} outputs, teacher {V_teacher.shape[-2]}")
    Kss = gaussian_kernel(W, W, activation, same=True)
    Kst = gaussian_kernel(W, W_teacher, activation)
    ss = torch.einsum("...oh,...hk,...ok->...", V, Kss, V)
    st = torch.einsum("...oh,...hk,...ok->...", V, Kst, V_teacher)
    if teacher_term is None:
        Ktt = gaussian_kernel(W_teacher, W_teacher, activation, same=True)
        teacher_term = torch.einsum("...oh,...hk,...ok->...", V_teacher, Ktt, V_teacher)
    return ss - 2 * st + teacher_term


def _pair_orbit_representatives(rep: "PermRep"):
    """One ``(i, j)`` per orbit of ``S_n`` on hidden index pairs, and the orbit sizes."""
    flat = _orbit_labels_np(rep, rep, ()).reshape(-1)
    _, first, counts = np.unique(flat, return_index=True, return_counts=True)
    return (torch.from_numpy(first // rep.dim), torch.from_numpy(first % rep.dim),
            torch.from_numpy(counts))


def equivariant_population_loss(W, V, W_teacher, rep_hidden: "PermRep", activation: str = "relu",
                                teacher_term: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`population_loss` for equivariant student and teacher sharing ``V``.

    If ``W``, ``W*`` are equivariant and the output weights ``V`` (shared by
    student and teacher) are invariant along hidden orbits, the kernel matrices
    are constant on the orbits of ``S_n`` acting on pairs of hidden neurons, so
    it suffices to evaluate one representative pair per orbit and weight it by
    the orbit size.

    Parameters
    ----------
    W : torch.Tensor, shape ``(..., h, d)``, equivariant
    V : torch.Tensor, shape ``(o, h)``, equivariant into trivial outputs
    W_teacher : torch.Tensor, shape ``(h, d)``
    rep_hidden : PermRep of dimension ``h``

    Returns
    -------
    torch.Tensor, shape ``(...)``
    """
    _check_activation(activation)
    _check_net(W, V)
    if W.shape[-2] != rep_hidden.dim:
        raise ValueError(f"W has {W.shape[-2]} hidden rows, representation has dimension {rep_hidden.dim}")
    I, J, cnt = _pair_orbit_representatives(rep_hidden)
    h = rep_hidden.dim
    I, J, cnt = I.to(W.device), J.to(W.device), cnt.to(W.dtype).to(W.device)
    flat = I * h + J
    diag = torch.arange(h, device=W.device) * (h + 1)
    wv = (V[..., :, I] * V[..., :, J]).sum(-2) * cnt  # (R,)
    Gss = (W @ W.transpose(-1, -2)).flatten(-2)  # (..., h*h)
    Gst = (W @ W_teacher.transpose(-1, -2)).flatten(-2)
    Gtt = (W_teacher @ W_teacher.transpose(-1, -2)).flatten(-2)
    n2s, n2t = Gss[..., diag], Gtt[..., diag]
    ss = _kernel_from_dots(Gss[..., flat], n2s[..., I], n2s[..., J], activation, same=(I == J))
    st = _kernel_from_dots(Gst[..., flat], n2s[..., I], n2t[..., J], activation)
    if teacher_term is None:
        tt = _kernel_from_dots(Gtt[..., flat], n2t[..., I], n2t[..., J], activation, same=(I == J))
        teacher_term = (tt * wv).sum(-1)
    return ((ss - 2 * st) * wv).sum(-1) + teacher_term


def _kernel_from_dots(dot, n2a, n2b, activation, same=None):
    """Kernel from dot products and squared norms (all of shape ``(..., R)``)."""
    if activation == "relu":
        tiny = torch.finfo(dot.dtype).tiny
        scale = torch.sqrt(n2a.clamp_min(tiny) * n2b.clamp_min(tiny))
        K = scale * arccos_kernel_j(dot / scale) / (2 * math.pi)
        if same is not None and bool(same.any()):
            K = torch.where(same, n2a / 2, K)
        return K
    return (2 / math.pi) * torch.arcsin(dot / torch.sqrt((1 + n2a) * (1 + n2b)))


def monte_carlo_loss(W, V, W_teacher, V_teacher, activation: str, n_samples: int,
                     generator: torch.Generator):
    """Monte Carlo estimate of :func:`population_loss` for one network.

    Parameters
    ----------
    W : (h, d), V : (o, h), W_teacher : (h*, d), V_teacher : (o, h*)

    Returns
    -------
    mean, stderr : float
    """
    _check_net(W, V)
    x = torch.randn(n_samples, W.shape[-1], generator=generator, dtype=W.dtype)
    r = _sigma(x @ W.T, activation) @ V.T - _sigma(x @ W_teacher.T, activation) @ V_teacher.T
    e = (r * r).sum(-1)
    return e.mean().item(), (e.std() / math.sqrt(n_samples)).item()


# ---------------------------------------------------------------------------
# Permutation representations of S_n
# ---------------------------------------------------------------------------
def symmetric_group(n: int) -> torch.Tensor:
    """All ``n!`` permutations of ``{0..n-1}``, identity first.

    Returns
    -------
    torch.LongTensor, shape ``(n!, n)``; row ``g`` maps ``i -> g[i]``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n > 8:
        raise ValueError(f"n = {n} is too large to enumerate S_n (n! = {math.factorial(n)})")
    return torch.tensor(list(itertools.permutations(range(n))), dtype=torch.long)


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
        index = None
        if "regular" in self.blocks:
            index = {tuple(p): i for i, p in enumerate(itertools.permutations(range(self.n)))}
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


def _regular_index(rep: PermRep):
    if "regular" not in rep.blocks:
        return None
    return {tuple(p): i for i, p in enumerate(itertools.permutations(range(rep.n)))}


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
    G = symmetric_group(rep_in.n)
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
    perms = torch.tensor(list(itertools.permutations(range(h))), dtype=torch.long, device=W.device)
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


# ---------------------------------------------------------------------------
# The experiment of Sec. 4: a P -> P block swept over (a, b)
# ---------------------------------------------------------------------------
@dataclass
class SliceProblem:
    """Teacher, fixed output weights and the 2-D ``(a, b)`` slice of student weights.

    ``W(a, b) = W_rest + a E_diag + b E_off`` where ``E_diag`` / ``E_off`` are the
    diagonal / off-diagonal indicators of the ``P -> P`` block and ``W_rest`` is
    the teacher with that block zeroed.  The hidden fixed-point line is ``a = b``.
    """

    n: int
    rep_in: PermRep
    rep_hidden: PermRep
    rep_out: PermRep
    activation: str
    W_teacher: torch.Tensor  # (h, d)
    V_teacher: torch.Tensor  # (o, h)
    a_teacher: float
    b_teacher: float
    E_diag: torch.Tensor  # (h, d)
    E_off: torch.Tensor  # (h, d)
    W_rest: torch.Tensor  # (h, d)
    teacher_term: torch.Tensor = field(repr=False)

    def W(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``W(a, b)``; ``a``, ``b`` broadcast to shape ``(...)``, result ``(..., h, d)``."""
        kw = dict(dtype=self.W_rest.dtype, device=self.W_rest.device)
        a, b = torch.broadcast_tensors(torch.as_tensor(a, **kw), torch.as_tensor(b, **kw))
        coeff = torch.stack([torch.ones_like(a), a, b], -1)  # (..., 3)
        basis = torch.stack([self.W_rest, self.E_diag, self.E_off]).flatten(-2)  # (3, h*d)
        return (coeff @ basis).unflatten(-1, self.W_rest.shape)

    def loss_W(self, W: torch.Tensor, equivariant: bool = False) -> torch.Tensor:
        """Exact loss of student weights ``W`` (shape ``(..., h, d)``), shape ``(...)``.

        ``equivariant=True`` promises that ``W`` is equivariant and evaluates the
        kernel only on one representative pair of hidden neurons per orbit
        (:func:`equivariant_population_loss`); the value is the same, the cost
        several times lower.
        """
        if equivariant:
            return equivariant_population_loss(W, self.V_teacher, self.W_teacher, self.rep_hidden,
                                               self.activation, self.teacher_term)
        return population_loss(W, self.V_teacher, self.W_teacher, self.V_teacher,
                               self.activation, self.teacher_term)

    def loss_ab(self, a, b) -> torch.Tensor:
        """Exact loss on the slice (which is equivariant), shape ``broadcast(a, b)``."""
        return self.loss_W(self.W(a, b), equivariant=True)

    def to(self, device) -> "SliceProblem":
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return SliceProblem(**kw)


def make_problem(n: int = 4, *, n_in_trivial: int = 2, n_hidden_trivial: int = 2, activation: str = "relu",
                 seed: int = 0, device=None, dtype=DTYPE) -> SliceProblem:
    """Random equivariant teacher for input ``P + t_in * 1``, hidden ``P + t_h * 1``, output ``1``.

    Every orbit-basis coefficient of the teacher's ``W*`` and ``V*`` is drawn
    from ``N(0, 1)`` with a generator seeded by ``seed``; the student's output
    weights are the teacher's.

    Parameters
    ----------
    n : int, ``n >= 3``
    n_in_trivial, n_hidden_trivial : int, ``>= 0``
    activation : {"relu", "erf"}
    seed : int

    Returns
    -------
    SliceProblem
    """
    _check_activation(activation)
    if not isinstance(n, (int, np.integer)) or n < 3:
        raise ValueError(f"n must be an integer >= 3 (S_n with a non-trivial standard rep), got {n!r}")
    if n_in_trivial < 0 or n_hidden_trivial < 0:
        raise ValueError("numbers of trivial blocks must be non-negative")
    gen = torch.Generator().manual_seed(int(seed))
    rep_in = PermRep(n, ("standard",) + ("trivial",) * n_in_trivial)
    rep_h = PermRep(n, ("standard",) + ("trivial",) * n_hidden_trivial)
    rep_out = PermRep(n, ("trivial",))
    BW = equivariant_basis(rep_in, rep_h, normalize=False, dtype=dtype)
    BV = equivariant_basis(rep_h, rep_out, normalize=False, dtype=dtype)
    cW = torch.randn(BW.shape[0], generator=gen, dtype=dtype)
    cV = torch.randn(BV.shape[0], generator=gen, dtype=dtype)
    W_t = torch.einsum("k,kij->ij", cW, BW)
    V_t = torch.einsum("k,kij->ij", cV, BV)
    E_diag = torch.zeros_like(W_t)
    E_diag[:n, :n] = torch.eye(n, dtype=dtype)
    E_off = torch.zeros_like(W_t)
    E_off[:n, :n] = 1 - torch.eye(n, dtype=dtype)
    a_t, b_t = W_t[0, 0].item(), W_t[0, 1].item()
    W_rest = W_t - a_t * E_diag - b_t * E_off
    Ktt = gaussian_kernel(W_t, W_t, activation, same=True)
    tt = torch.einsum("oh,hk,ok->", V_t, Ktt, V_t)
    prob = SliceProblem(n, rep_in, rep_h, rep_out, activation, W_t, V_t, a_t, b_t, E_diag, E_off, W_rest, tt)
    return prob.to(device) if device is not None else prob


def slice_landscape(problem: SliceProblem, a_values: torch.Tensor, b_values: torch.Tensor) -> torch.Tensor:
    """Exact loss on the grid ``a_values x b_values`` in one batched call.

    Returns
    -------
    torch.Tensor, shape ``(len(b_values), len(a_values))`` (rows indexed by ``b``).
    """
    B, A = torch.meshgrid(b_values, a_values, indexing="ij")
    with torch.no_grad():
        return problem.loss_ab(A, B)


def gd_slice(problem: SliceProblem, a0: torch.Tensor, b0: torch.Tensor, *, steps: int, lr: float,
             scale_a: float = 1.0, scale_b: float = 1.0, record_every: int = 0):
    """Gradient descent on the slice from a batch of starting points, all at once.

    The trained parameters are ``(a', b')`` with ``a = scale_a a'`` and
    ``b = scale_b b'``.  ``scale_a = sqrt(n-1)`` (``scale_b = 1``) makes the
    coordinates proportional to an orthonormal basis of the slice, the
    "rescaled" parameterization in which the line ``a = b`` is invariant.

    Parameters
    ----------
    a0, b0 : torch.Tensor, shape ``(...)``
    steps : int
    lr : float
    record_every : int
        If positive, also return the trajectory every that many steps.

    Returns
    -------
    dict with ``a``, ``b``, ``loss`` (shape ``(...)``, after the last step) and,
    when recorded, ``traj`` of shape ``(T, 2, ...)``.
    """
    if steps < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    pa = (a0 / scale_a).clone().requires_grad_(True)
    pb = (b0 / scale_b).clone().requires_grad_(True)
    traj = []
    for t in range(steps):
        if record_every and t % record_every == 0:
            traj.append(torch.stack([pa.detach() * scale_a, pb.detach() * scale_b]))
        loss = problem.loss_ab(pa * scale_a, pb * scale_b)
        ga, gb = torch.autograd.grad(loss.sum(), (pa, pb))
        with torch.no_grad():
            pa -= lr * ga
            pb -= lr * gb
    with torch.no_grad():
        a, b = pa * scale_a, pb * scale_b
        out = {"a": a, "b": b, "loss": problem.loss_ab(a, b)}
    if record_every:
        traj.append(torch.stack([a, b]))
        out["traj"] = torch.stack(traj)
    return out


def local_minima_grid(Z: torch.Tensor) -> torch.Tensor:
    """Interior grid points strictly below their 8 neighbours.

    Parameters
    ----------
    Z : torch.Tensor, shape ``(nb, na)``

    Returns
    -------
    torch.LongTensor, shape ``(m, 2)`` of ``(row, col)`` indices.
    """
    if Z.dim() != 2 or min(Z.shape) < 3:
        raise ValueError(f"need a 2-D grid of at least 3x3, got {tuple(Z.shape)}")
    c = Z[1:-1, 1:-1]
    is_min = torch.ones_like(c, dtype=torch.bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_min &= c < Z[1 + di : Z.shape[0] - 1 + di, 1 + dj : Z.shape[1] - 1 + dj]
    return torch.nonzero(is_min) + 1


def _grad(f, p: torch.Tensor) -> torch.Tensor:
    q = p.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(f(q), (q,))[0]


def newton_minimize(f: Callable[[torch.Tensor], torch.Tensor], p0: torch.Tensor, iters: int = 100,
                    tol: float = 1e-12) -> torch.Tensor:
    """Saddle-free damped Newton: step ``|H|^{-1} g`` with backtracking.

    Parameters
    ----------
    f : callable mapping a vector ``(k,)`` to a scalar
    p0 : torch.Tensor, shape ``(k,)``

    Returns
    -------
    torch.Tensor, shape ``(k,)``: the last iterate.
    """
    p = p0.detach().clone()
    for _ in range(iters):
        g = _grad(f, p)
        if g.norm() < tol:
            break
        evals, evecs = torch.linalg.eigh(hessian(f, p))
        step = evecs @ ((evecs.T @ g) / evals.abs().clamp_min(1e-8))
        t, L0 = 1.0, f(p)
        while t > 1e-8 and f(p - t * step) > L0:
            t /= 2
        p = p - t * step
    return p


def refine_slice_minimum(problem: SliceProblem, a: float, b: float, iters: int = 50, tol: float = 1e-12):
    """Damped Newton iteration for a critical point of the slice loss.

    Returns
    -------
    dict with ``a``, ``b``, ``loss``, ``grad_norm`` and ``hess_eigs`` (2 values).
    """
    p = torch.tensor([a, b], dtype=problem.W_rest.dtype, device=problem.W_rest.device)
    f = lambda q: problem.loss_ab(q[0], q[1])
    p = newton_minimize(f, p, iters, tol)
    g = _grad(f, p)
    H = hessian(f, p)
    return {"a": p[0].item(), "b": p[1].item(), "loss": f(p).item(), "grad_norm": g.norm().item(),
            "hess_eigs": torch.linalg.eigvalsh(H).tolist()}


def find_slice_minima(problem: SliceProblem, a_values, b_values, Z=None, merge_tol: float = 1e-4):
    """Local minima of the slice: grid candidates refined by Newton, deduplicated.

    Only refined points with positive-definite 2x2 Hessian and a small gradient
    inside the grid's range are kept.

    Returns
    -------
    list of dicts (see :func:`refine_slice_minimum`), sorted by loss, each with
    ``dist_line = |a - b| / sqrt(2)``.
    """
    if Z is None:
        Z = slice_landscape(problem, a_values, b_values)
    found = []
    for i, j in local_minima_grid(Z).tolist():
        r = refine_slice_minimum(problem, a_values[j].item(), b_values[i].item())
        inside = (a_values[0] <= r["a"] <= a_values[-1]) and (b_values[0] <= r["b"] <= b_values[-1])
        if not (inside and r["grad_norm"] < 1e-6 and min(r["hess_eigs"]) > 0):
            continue
        if any(abs(r["a"] - q["a"]) + abs(r["b"] - q["b"]) < merge_tol for q in found):
            continue
        r["dist_line"] = abs(r["a"] - r["b"]) / math.sqrt(2)
        found.append(r)
    return sorted(found, key=lambda r: r["loss"])


def boundary_points(labels: torch.Tensor, a_values: torch.Tensor, b_values: torch.Tensor) -> torch.Tensor:
    """Midpoints of grid edges whose two ends carry different labels.

    Parameters
    ----------
    labels : torch.Tensor, shape ``(nb, na)``

    Returns
    -------
    torch.Tensor, shape ``(m, 2)`` of ``(a, b)`` points.
    """
    B, A = torch.meshgrid(b_values, a_values, indexing="ij")
    pts = []
    h = labels[:, 1:] != labels[:, :-1]
    pts.append(torch.stack([(A[:, 1:] + A[:, :-1])[h] / 2, B[:, 1:][h]], -1))
    v = labels[1:, :] != labels[:-1, :]
    pts.append(torch.stack([A[1:, :][v], (B[1:, :] + B[:-1, :])[v] / 2], -1))
    return torch.cat(pts, 0)


def line_fit_residual(points: torch.Tensor) -> dict:
    """Total-least-squares line through 2-D points.

    Returns
    -------
    dict with ``rms`` (root-mean-square perpendicular residual), ``max``,
    ``angle_deg`` (direction, degrees from the ``a`` axis; 45 is the line
    ``a = b``) and ``offset`` (signed distance of the line from the origin
    along its normal).
    """
    if points.dim() != 2 or points.shape[-1] != 2 or points.shape[0] < 3:
        raise ValueError(f"need at least 3 points of shape (m, 2), got {tuple(points.shape)}")
    c = points.mean(0)
    X = points - c
    _, _, Vh = torch.linalg.svd(X, full_matrices=False)
    direction, normal = Vh[0], Vh[1]
    r = X @ normal
    ang = math.degrees(math.atan2(direction[1].item(), direction[0].item())) % 180
    return {"rms": r.pow(2).mean().sqrt().item(), "max": r.abs().max().item(), "angle_deg": ang,
            "offset": (c @ normal).abs().item(), "n_points": int(points.shape[0])}


# ---------------------------------------------------------------------------
# Hessians, constrained training and relaxation
# ---------------------------------------------------------------------------
def hessian(f: Callable[[torch.Tensor], torch.Tensor], p: torch.Tensor) -> torch.Tensor:
    """Dense Hessian of a scalar function by reverse-over-reverse autodiff.

    Parameters
    ----------
    p : torch.Tensor, shape ``(*S)``

    Returns
    -------
    torch.Tensor, shape ``(prod(S), prod(S))``
    """
    # Row by row with double backward: for the few dozen parameters used here this is
    # as fast as ``torch.func.hessian`` and avoids the slow first call of vmap over the
    # custom autograd functions of the arc-cosine kernel.
    q = p.detach().reshape(-1).clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(q.reshape(p.shape)), (q,), create_graph=True)
        rows = []
        for i in range(q.numel()):
            (r,) = torch.autograd.grad(g[i], (q,), retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(q) if r is None else r)
    return torch.stack(rows).detach()


def min_hessian_eigenvalue(f, p: torch.Tensor) -> float:
    """Smallest eigenvalue of :func:`hessian`."""
    return torch.linalg.eigvalsh(hessian(f, p))[0].item()


def constrained_descent(problem: SliceProblem, W0: torch.Tensor, *, steps: int, lr: float,
                        basis: torch.Tensor | None = None, tol: float = 1e-10, newton_iters: int = 0):
    """Gradient descent inside the equivariant subspace (orthonormal coordinates).

    Parameters
    ----------
    W0 : torch.Tensor, shape ``(..., h, d)``, equivariant
    basis : torch.Tensor, shape ``(k, h, d)``, orthonormal; default the commutant.
    newton_iters : int
        For a single (unbatched) ``W0``: polish the end point with this many
        saddle-free Newton steps in the same coordinates.

    Returns
    -------
    dict with ``W`` (``(..., h, d)``), ``theta`` (coordinates), ``loss`` (``(...)``),
    ``grad_norm``, ``steps``.
    """
    if basis is None:
        basis = equivariant_basis(problem.rep_in, problem.rep_hidden, dtype=W0.dtype, device=W0.device)
    theta = torch.einsum("...hd,khd->...k", W0, basis).clone().requires_grad_(True)
    gnorm = torch.tensor(math.inf)
    t = 0
    for t in range(steps):
        loss = problem.loss_W(torch.einsum("...k,khd->...hd", theta, basis))
        (g,) = torch.autograd.grad(loss.sum(), (theta,))
        gnorm = g.norm(dim=-1).max()
        if gnorm < tol:
            break
        with torch.no_grad():
            theta -= lr * g
    theta = theta.detach()
    if newton_iters and theta.dim() == 1:
        f = lambda th: problem.loss_W(torch.einsum("k,khd->hd", th, basis))
        theta = newton_minimize(f, theta, newton_iters)
        gnorm = _grad(f, theta).norm()
    W = torch.einsum("...k,khd->...hd", theta, basis)
    return {"W": W, "theta": theta, "loss": problem.loss_W(W), "grad_norm": gnorm.item(), "steps": t + 1}


def match_hidden_permutation(W: torch.Tensor, W_ref: torch.Tensor):
    """Hidden permutation aligning ``W`` with ``W_ref`` (Hungarian on row distances).

    Returns
    -------
    perm : numpy array, shape ``(h,)``, such that ``W[perm] ~ W_ref``
    residual : float, ``||W[perm] - W_ref||_F / ||W_ref||_F``
    """
    from scipy.optimize import linear_sum_assignment

    if W.shape != W_ref.shape or W.dim() != 2:
        raise ValueError(f"need two matrices of equal shape, got {tuple(W.shape)} and {tuple(W_ref.shape)}")
    C = torch.cdist(W_ref, W).pow(2).cpu().numpy()
    _, perm = linear_sum_assignment(C)
    res = (torch.linalg.matrix_norm(W[perm] - W_ref) / torch.linalg.matrix_norm(W_ref)).item()
    return perm, res


def relax(problem: SliceProblem, W0: torch.Tensor, *, steps: int, lr: float, log_every: int,
          noise: float, generator: torch.Generator, momentum: float = 0.0, progress: bool = False) -> dict:
    """Release the equivariance constraint: plain GD on all entries of ``W``.

    Starts from ``W0 + noise * N(0, 1)`` (an exactly equivariant critical point
    has zero unconstrained gradient too, so some perturbation is needed to leave
    it) and logs loss, equivariance errors and the smallest Hessian eigenvalue.
    ``momentum > 0`` uses heavy-ball gradient descent.

    Returns
    -------
    dict with ``W`` (final, ``(h, d)``) and ``history`` (dict of lists: ``step``,
    ``loss``, ``eq_err``, ``eq_err_conj``, ``min_eig``).
    """
    from tqdm.auto import tqdm

    W = (W0 + noise * torch.randn(W0.shape, generator=generator, dtype=W0.dtype).to(W0.device)).clone()
    W.requires_grad_(True)
    hist = {k: [] for k in ("step", "loss", "eq_err", "eq_err_conj", "min_eig")}
    f = problem.loss_W

    def log(t):
        Wd = W.detach()
        hist["step"].append(t)
        hist["loss"].append(f(Wd).item())
        hist["eq_err"].append(equivariance_error(Wd, problem.rep_in, problem.rep_hidden).item())
        hist["eq_err_conj"].append(conjugate_equivariance_error(Wd, problem.rep_in, problem.rep_hidden)[0])
        hist["min_eig"].append(min_hessian_eigenvalue(f, Wd))

    for t in tqdm(range(steps), disable=not progress, desc="relaxation"):
        if t % log_every == 0:
            log(t)
        (g,) = torch.autograd.grad(f(W), (W,))
        with torch.no_grad():
            buf = g if t == 0 else momentum * buf + g
            W -= lr * buf
    log(steps)
    return {"W": W.detach(), "history": hist}


# ---------------------------------------------------------------------------
# Spherical signals (App. C.3) with e3nn
# ---------------------------------------------------------------------------
def haar_rotation_angles(m: int, generator: torch.Generator, dtype=DTYPE):
    """Seeded Haar-random rotations as e3nn Euler angles ``(alpha, beta, gamma)``, each ``(m,)``."""
    from e3nn import o3

    q = torch.randn(m, 4, generator=generator, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    return o3.quaternion_to_angles(q)


class SphericalSignalModel:
    """The ``0e + l`` model of App. C.3 on an e3nn S^2 grid.

    ``s(r) = w0 x0 Y_0(r) + wl x_l . Y_l(r)`` is sampled on a
    ``(res_beta, res_alpha)`` grid, passed through ``relu`` pointwise, projected
    back to harmonics of degree ``<= lmax_out`` and the output is the squared
    norm of those coefficients.

    Parameters
    ----------
    l : int, ``>= 1``
    lmax_out : int, ``>= l``
    res : tuple (res_beta, res_alpha)
    """

    def __init__(self, l: int, lmax_out: int, res: tuple[int, int], dtype=DTYPE, device=None):
        from e3nn import o3

        if not isinstance(l, (int, np.integer)) or l < 1:
            raise ValueError(f"l must be an integer >= 1, got {l!r}")
        if lmax_out < l:
            raise ValueError(f"lmax_out={lmax_out} must be >= l={l}")
        if len(res) != 2 or res[0] < 2 * (lmax_out + 1) or res[0] % 2 or res[1] < 2 * lmax_out + 1:
            raise ValueError(
                f"grid res={tuple(res)} too coarse for lmax_out={lmax_out}: need an even res_beta >= "
                f"{2 * (lmax_out + 1)} and res_alpha >= {2 * lmax_out + 1}")
        self.l, self.lmax_out, self.res = int(l), int(lmax_out), tuple(res)
        self.lmax_in = self.l
        self.to_grid = o3.ToS2Grid(self.lmax_in, self.res, dtype=dtype, device=device)
        self.from_grid = o3.FromS2Grid(self.res, self.lmax_out, dtype=dtype, device=device)
        self.irreps_in = o3.Irreps.spherical_harmonics(self.lmax_in)
        self.irreps_out = o3.Irreps.spherical_harmonics(self.lmax_out)
        self.dtype, self.device = dtype, device

    def basis_signals(self, x: torch.Tensor):
        """Grid signals of the two input channels.

        Parameters
        ----------
        x : torch.Tensor, shape ``(N, 1 + 2l + 1)`` (scalar then degree-``l`` part)

        Returns
        -------
        S0, Sl : torch.Tensor, shape ``(N, res_beta, res_alpha)`` each, so that
        the signal is ``w0 S0 + wl Sl``.
        """
        l = self.l
        if x.dim() != 2 or x.shape[-1] != 2 * l + 2:
            raise ValueError(f"x must have shape (N, {2 * l + 2}) for input 0e + {l}, got {tuple(x.shape)}")
        c0 = torch.zeros(x.shape[0], (l + 1) ** 2, dtype=x.dtype, device=x.device)
        cl = torch.zeros_like(c0)
        c0[:, 0] = x[:, 0]
        cl[:, l * l :] = x[:, 1:]
        return self.to_grid(c0), self.to_grid(cl)

    def output_from_signal(self, s: torch.Tensor) -> torch.Tensor:
        """``|| FromS2Grid(relu(s)) ||^2`` for grid signals ``s`` of shape ``(..., rb, ra)``."""
        return self.from_grid(torch.relu(s)).pow(2).sum(-1)

    def forward(self, x: torch.Tensor, w0, wl) -> torch.Tensor:
        """Outputs for inputs ``x`` ``(N, 2l+2)`` and weights broadcast to ``(...)``: ``(..., N)``."""
        S0, Sl = self.basis_signals(x)
        w0 = torch.as_tensor(w0, dtype=x.dtype, device=x.device)[..., None, None, None]
        wl = torch.as_tensor(wl, dtype=x.dtype, device=x.device)[..., None, None, None]
        return self.output_from_signal(w0 * S0 + wl * Sl)


def s2_landscape(model: SphericalSignalModel, x: torch.Tensor, w0_values, wl_values, w_teacher, chunk: int = 64):
    """Empirical loss over a ``(w0, wl)`` grid for a fixed input sample.

    ``L(w0, wl) = mean_x (f(x; w0, wl) - f(x; w0*, wl*))^2``.

    Returns
    -------
    torch.Tensor, shape ``(len(wl_values), len(w0_values))`` (rows indexed by ``wl``).
    """
    with torch.no_grad():
        S0, Sl = model.basis_signals(x)
        y = model.output_from_signal(w_teacher[0] * S0 + w_teacher[1] * Sl)
        WL, W0 = torch.meshgrid(wl_values, w0_values, indexing="ij")
        w0f, wlf = W0.reshape(-1), WL.reshape(-1)
        out = []
        for s in range(0, w0f.shape[0], chunk):
            a = w0f[s : s + chunk, None, None, None]
            b = wlf[s : s + chunk, None, None, None]
            f = model.output_from_signal(a * S0 + b * Sl)
            out.append((f - y).pow(2).mean(-1))
        return torch.cat(out).reshape(WL.shape)


def s2_loss_fn(model: SphericalSignalModel, x: torch.Tensor, w_teacher: torch.Tensor):
    """Differentiable empirical loss ``w -> mean_x (f(x; w) - f(x; w*))^2``, ``w = (w0, wl)``."""
    S0, Sl = model.basis_signals(x)
    with torch.no_grad():
        y = model.output_from_signal(w_teacher[0] * S0 + w_teacher[1] * Sl)
    return lambda w: (model.output_from_signal(w[0] * S0 + w[1] * Sl) - y).pow(2).mean()


def s2_aliasing_error(model: SphericalSignalModel, n_signals: int, n_rotations: int, generator: torch.Generator):
    """Equivariance error of the grid nonlinearity under random rotations (float64).

    For band-limited random inputs ``c`` (degrees ``0 .. l``) and Haar rotations
    ``R``: ``|| F(relu(G(D_in(R) c))) - D_out(R) F(relu(G c)) || / || F(relu(G c)) ||``
    (``G`` = ToS2Grid, ``F`` = FromS2Grid), and the relative change of the
    invariant output ``||F(relu(G c))||^2``.

    Returns
    -------
    dict with ``coeff_rel_err`` (pooled ``sqrt(sum err^2 / sum ref^2)``),
    ``coeff_rel_err_worst`` (largest per-sample ratio, samples with tiny reference
    excluded) and ``output_rel_err`` (mean absolute change of the output over its
    mean).
    """
    dt = model.dtype
    c = torch.randn(n_signals, (model.lmax_in + 1) ** 2, generator=generator, dtype=dt)
    a, b, g = haar_rotation_angles(n_rotations, generator, dt)
    Din = model.irreps_in.D_from_angles(a, b, g)  # (R, din, din)
    Dout = model.irreps_out.D_from_angles(a, b, g)
    F = lambda coeffs: model.from_grid(torch.relu(model.to_grid(coeffs)))
    base = F(c)  # (N, dout)
    rot_in = torch.einsum("rij,nj->rni", Din, c)
    lhs = F(rot_in)  # (R, N, dout)
    rhs = torch.einsum("rij,nj->rni", Dout, base)
    # pooled ratios: a signal that is negative everywhere has relu == 0 (0/0 per sample)
    rel = ((lhs - rhs).pow(2).sum() / rhs.pow(2).sum()).sqrt()
    out_l, out_r = lhs.pow(2).sum(-1), base.pow(2).sum(-1)[None].expand_as(lhs[..., 0])
    orel = (out_l - out_r).abs().mean() / out_r.mean()
    worst = ((lhs - rhs).norm(dim=-1) / rhs.norm(dim=-1).clamp_min(1e-3 * rhs.norm(dim=-1).max())).max()
    return {"coeff_rel_err": rel.item(), "coeff_rel_err_worst": worst.item(), "output_rel_err": orel.item()}
