"""The experiment of Xie & Smidt's Sec. 4: a ``P -> P`` block swept over its ``(a, b)`` slice.

A random equivariant teacher (input ``P + k_in 1``, hidden ``P + k_hid 1``, one
trivial output) fixes every weight except the diagonal ``a`` and off-diagonal
``b`` of the student's ``P -> P`` block.  On that 2-D slice the line ``a = b`` is
the hidden fixed-point subspace: gradient flow in orthonormal ("rescaled")
coordinates cannot cross it, so the half without the teacher holds a second,
spurious minimum.

* :class:`SliceProblem` / :func:`make_problem`: the teacher and the slice
  (``W(a, b)``, exact losses, the mirrored teacher);
* :func:`slice_landscape`, :func:`gd_slice`: the loss on a grid and gradient
  descent from every grid point at once, in direct or rescaled coordinates;
* :func:`local_minima_grid`, :func:`refine_slice_minimum`, :func:`find_slice_minima`,
  :func:`bad_half_minimum`: minima, polished by Newton steps;
* :func:`boundary_points`, :func:`line_fit_residual`, :func:`gd_basins`: where
  the basins of the two minima meet, and whether that is the line ``a = b``;
* :func:`seed_study`: the same for many teachers, one row per seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from ..hessian import curvature_step_size, gradient, hessian, newton_minimize
from .kernels import _check_activation, equivariant_population_loss, gaussian_kernel, population_loss
from .reps import DTYPE, PermRep, equivariant_basis

__all__ = [
    "SlicePoint",
    "SliceProblem",
    "make_problem",
    "slice_landscape",
    "gd_slice",
    "local_minima_grid",
    "refine_slice_minimum",
    "find_slice_minima",
    "bad_half_minimum",
    "slice_step_size",
    "basin_study",
    "boundary_points",
    "line_fit_residual",
    "gd_basins",
    "seed_study",
]


class SlicePoint(NamedTuple):
    """A point of the slice: ``a``, ``b`` (0-d tensors) and the weights ``W = W(a, b)``."""

    a: torch.Tensor
    b: torch.Tensor
    W: torch.Tensor


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
        (:func:`~equivlib.hidden.equivariant_population_loss`); the value is the same, the cost
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

    @property
    def rescale_a(self) -> float:
        """``sqrt(n - 1)``: the ``scale_a`` of the rescaled coordinates, in which ``a = b`` is invariant."""
        return math.sqrt(self.n - 1)

    def mirrored_teacher(self) -> SlicePoint:
        """The teacher reflected across the line ``a = b``: ``a = b*``, ``b = a*``, all else the teacher's.

        It lies in the half of the slice that does not contain the teacher, at the
        same distance from the line.
        """
        kw = dict(dtype=self.W_rest.dtype, device=self.W_rest.device)
        a, b = torch.tensor(self.b_teacher, **kw), torch.tensor(self.a_teacher, **kw)
        return SlicePoint(a, b, self.W(a, b))

    def coordinate_loss(self, basis: torch.Tensor):
        """The loss as a function of coefficients ``theta (k,)`` on ``basis (k, h, d)``: ``theta -> L(sum theta_k B_k)``."""
        return lambda theta: self.loss_W(torch.einsum("k,khd->hd", theta, basis))

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


def refine_slice_minimum(problem: SliceProblem, a: float, b: float, iters: int = 50, tol: float = 1e-12):
    """Damped Newton iteration for a critical point of the slice loss.

    Returns
    -------
    dict with ``a``, ``b``, ``loss``, ``grad_norm`` and ``hess_eigs`` (2 values).
    """
    p = torch.tensor([a, b], dtype=problem.W_rest.dtype, device=problem.W_rest.device)
    f = lambda q: problem.loss_ab(q[0], q[1])
    p = newton_minimize(f, p, iters, tol)
    g = gradient(f, p)
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


def slice_step_size(problem: SliceProblem, scale_a: float) -> float:
    """``1 / (largest Hessian eigenvalue)`` of the slice loss in the coordinates ``(a / scale_a, b)``,
    at the teacher and at its mirror image (:func:`equivlib.hessian.curvature_step_size`)."""
    kw = dict(dtype=problem.W_rest.dtype, device=problem.W_rest.device)
    pts = [torch.tensor([problem.a_teacher / scale_a, problem.b_teacher], **kw),
           torch.tensor([problem.b_teacher / scale_a, problem.a_teacher], **kw)]
    return curvature_step_size(lambda q: problem.loss_ab(q[0] * scale_a, q[1]), pts)


def bad_half_minimum(problem: SliceProblem, *, steps: int, lr: float | None = None,
                     scale_a: float | None = None) -> dict:
    """The minimum of the half of the slice that does not contain the teacher.

    Gradient descent in rescaled coordinates (``scale_a``, default
    :attr:`SliceProblem.rescale_a`), which cannot cross ``a = b``, from
    :meth:`SliceProblem.mirrored_teacher`, then Newton polishing
    (:func:`refine_slice_minimum`).  Newton alone is not safe: its steps can jump
    across the line.

    Parameters
    ----------
    steps : int
        Gradient-descent steps before the Newton polish.
    lr : float, optional
        Step size; default ``1 / (largest Hessian eigenvalue)`` of the loss in the
        trained coordinates at the teacher and at its mirror image
        (:func:`equivlib.hessian.curvature_step_size`), stable for any teacher.

    Returns
    -------
    dict of :func:`refine_slice_minimum` plus ``lr``, ``dist_line`` (``|a - b| / sqrt 2``),
    ``bad_half`` (the end point is on the other side of ``a = b`` from the teacher) and
    ``is_minimum`` (``bad_half`` with a positive-definite Hessian and gradient norm
    below ``1e-8``).
    """
    sc = problem.rescale_a if scale_a is None else scale_a
    start = problem.mirrored_teacher()
    if lr is None:
        lr = slice_step_size(problem, sc)
    pre = gd_slice(problem, start.a, start.b, steps=steps, lr=lr, scale_a=sc)
    ref = refine_slice_minimum(problem, pre["a"].item(), pre["b"].item())
    bad = (ref["a"] - ref["b"]) * (problem.a_teacher - problem.b_teacher) < 0
    return {**ref, "lr": lr, "dist_line": abs(ref["a"] - ref["b"]) / math.sqrt(2), "bad_half": bad,
            "is_minimum": bad and min(ref["hess_eigs"]) > 0 and ref["grad_norm"] < 1e-8}


def gd_basins(problem: SliceProblem, grid: torch.Tensor, minima: Sequence[dict], *, steps: int, lr: float,
              scale_a: float = 1.0, converged_tol: float = 1e-2) -> dict:
    """Gradient descent from every point of ``grid x grid`` and the basins of two minima.

    Parameters
    ----------
    grid : torch.Tensor, shape ``(g,)``
        Values of both ``a`` and ``b``.
    minima : two dicts with keys ``a``, ``b``
        The teacher's minimum first, then the other one (e.g. from
        :func:`find_slice_minima`).
    scale_a : float
        ``1`` for direct coordinates, :attr:`SliceProblem.rescale_a` for rescaled ones.

    Returns
    -------
    dict with the output of :func:`gd_slice` (``a``, ``b``, ``loss``, each ``(g, g)``,
    rows indexed by the initial ``b``) and ``time`` (seconds of descent), ``label``
    (``(g, g)``: 0 when the end point is nearer the first minimum, 1 otherwise),
    ``converged`` (fraction ending within ``converged_tol`` of a minimum),
    ``boundary`` (:func:`boundary_points` of the labels, on the CPU), ``fit``
    (:func:`line_fit_residual` of the boundary) and ``disagree`` (fraction of the
    starting points off the line ``a = b`` that end in the basin on the other side
    of it).
    """
    if len(minima) != 2:
        raise ValueError(f"gd_basins needs exactly two minima, got {len(minima)}")
    first = minima[0]
    Bg, Ag = torch.meshgrid(grid, grid, indexing="ij")
    mins_xy = torch.tensor([[m["a"], m["b"]] for m in minima], dtype=grid.dtype, device=grid.device)
    t0 = time.time()
    r = gd_slice(problem, Ag, Bg, steps=steps, lr=lr, scale_a=scale_a)
    r["time"] = time.time() - t0
    dist = torch.cdist(torch.stack([r["a"], r["b"]], -1).reshape(-1, 2), mins_xy)
    r["label"] = dist.argmin(-1).reshape(Ag.shape)
    r["converged"] = (dist.min(-1).values < converged_tol).double().mean().item()
    r["boundary"] = boundary_points(r["label"], grid, grid).cpu()
    r["fit"] = line_fit_residual(r["boundary"])
    off_line = (Ag - Bg).abs() > 1e-12
    side_first = ((Ag - Bg) * (first["a"] - first["b"])) > 0
    r["disagree"] = ((r["label"] == 0) != side_first)[off_line].double().mean().item()
    return r


def seed_study(n: int, seeds: Sequence[int], grid: torch.Tensor, *, steps: int, n_in_trivial: int = 2,
               n_hidden_trivial: int = 2, activation: str = "relu", device=None) -> pd.DataFrame:
    """Both minima of the slice for one teacher per seed.

    For each seed: :func:`make_problem`, the minima inside the window
    ``grid x grid`` (:func:`find_slice_minima`) and, independently of the window,
    :func:`bad_half_minimum` with the curvature step.

    Returns
    -------
    pandas.DataFrame
        One row per seed with columns ``seed``, ``a*``, ``b*``, ``teacher dist``
        (from ``a = b``), ``minima in window``, ``bad-half min a``, ``bad-half min b``,
        ``bad-half dist``, ``bad-half loss``, ``is minimum`` (see :func:`bad_half_minimum`),
        ``dist ratio`` (bad-half distance over teacher distance) and ``note``, which
        for a seed whose bad-half search did not end at a minimum says why
        (``"left the bad half"`` or ``"not a non-degenerate minimum"``) and is empty otherwise.
    """
    rows = []
    for seed in seeds:
        p = make_problem(n, n_in_trivial=n_in_trivial, n_hidden_trivial=n_hidden_trivial,
                         activation=activation, seed=seed, device=device)
        ref = bad_half_minimum(p, steps=steps)
        rows.append({"seed": seed, "a*": p.a_teacher, "b*": p.b_teacher,
                     "teacher dist": abs(p.a_teacher - p.b_teacher) / math.sqrt(2),
                     "minima in window": len(find_slice_minima(p, grid, grid)),
                     "bad-half min a": ref["a"], "bad-half min b": ref["b"], "bad-half dist": ref["dist_line"],
                     "bad-half loss": ref["loss"], "is minimum": ref["is_minimum"],
                     "note": "" if ref["is_minimum"] else
                     ("left the bad half" if not ref["bad_half"] else "not a non-degenerate minimum")})
    df = pd.DataFrame(rows)
    df["dist ratio"] = df["bad-half dist"] / df["teacher dist"]
    return df[[c for c in df.columns if c != "note"] + ["note"]]


def basin_study(n: int, seeds: Sequence[int], grid: torch.Tensor, *, steps: int, lr: float, bad_half_steps: int,
                n_in_trivial: int = 2, n_hidden_trivial: int = 2, activation: str = "relu",
                device=None) -> pd.DataFrame:
    """Gradient descent from every grid point, per teacher seed, in both parameterizations.

    The grid search of the second paper (App. C.1.2) repeated over teachers: for each
    seed the two minima are the teacher and the bad half's minimum
    (:func:`bad_half_minimum`, independent of the window), and :func:`gd_basins`
    runs ``steps`` steps from every point of ``grid x grid`` in direct
    (``scale_a = 1``) and rescaled coordinates.  The step is ``lr``, lowered to
    :func:`slice_step_size` in that parameterization where that is smaller (a fixed
    step diverges for teachers with large output weights), and reported.  Seeds whose
    bad half has no non-degenerate minimum get one row with ``note`` saying so.

    Returns
    -------
    pandas.DataFrame, one row per ``(seed, parameterization)``: ``lr``,
    ``converged`` (fraction of end points within ``1e-2`` of one of the two minima),
    ``other end points`` (``1 - converged``: end points in neither basin, i.e. extra
    basins or unfinished descents), ``disagree`` (fraction of starts off ``a = b``
    that end on the other side), ``boundary angle`` (degrees; 45 is the line),
    ``boundary rms`` (grid spacings) and ``note``.
    """
    spacing = float(grid[1] - grid[0])
    rows = []
    for seed in seeds:
        p = make_problem(n, n_in_trivial=n_in_trivial, n_hidden_trivial=n_hidden_trivial,
                         activation=activation, seed=seed, device=device)
        ref = bad_half_minimum(p, steps=bad_half_steps)
        if not ref["is_minimum"]:
            rows.append({"seed": seed, "parameterization": "-", "note": "no bad-half minimum"})
            continue
        minima = [{"a": p.a_teacher, "b": p.b_teacher}, ref]
        for name, sc in (("direct", 1.0), ("rescaled", p.rescale_a)):
            step = min(lr, slice_step_size(p, sc))
            r = gd_basins(p, grid, minima, steps=steps, lr=step, scale_a=sc)
            rows.append({"seed": seed, "parameterization": name, "lr": step, "converged": r["converged"],
                         "other end points": 1 - r["converged"], "disagree": r["disagree"],
                         "boundary angle": r["fit"]["angle_deg"], "boundary rms": r["fit"]["rms"] / spacing,
                         "note": ""})
    return pd.DataFrame(rows)
