"""Training under the equivariance constraint, and releasing it.

An exactly equivariant network trained from the mirrored teacher converges to a
spurious minimum of the constrained problem.  For the unconstrained network the
same point is (typically) a saddle: releasing the constraint lets gradient
descent escape to the global minimum of a *different*, conjugated hidden
representation, i.e. to the teacher with its hidden neurons permuted.

* :func:`constrained_descent`: gradient descent on the coefficients of an
  orthonormal basis of the equivariant subspace (optionally Newton-polished);
* :func:`relax`: plain gradient descent on all weights from a kicked start,
  logging loss, equivariance errors and the smallest Hessian eigenvalue;
* :func:`match_hidden_permutation`: which permutation of hidden neurons maps
  the result onto the teacher;
* :func:`trap_study`: for several ``n`` and teachers, is the constrained
  minimum in the bad half spurious, and is it a saddle once relaxed?
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..hessian import curvature_step_size, gradient, hessian, min_hessian_eigenvalue, newton_minimize
from .reps import conjugate_equivariance_error, equivariance_error, equivariant_basis
from .slice_problem import SliceProblem, make_problem

__all__ = ["constrained_descent", "relax", "match_hidden_permutation", "trap_study"]


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
    ``grad_norm``, ``steps`` and, for a single ``W0``, ``hess_eigs``: the eigenvalues
    (ascending) of the constrained Hessian in the ``theta`` coordinates at the end point.
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
    out = {}
    if theta.dim() == 1:
        f = problem.coordinate_loss(basis)
        if newton_iters:
            theta = newton_minimize(f, theta, newton_iters)
            gnorm = gradient(f, theta).norm()
        out["hess_eigs"] = torch.linalg.eigvalsh(hessian(f, theta))
    W = torch.einsum("...k,khd->...hd", theta, basis)
    return {"W": W, "theta": theta, "loss": problem.loss_W(W), "grad_norm": gnorm.item(), "steps": t + 1, **out}


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


def trap_study(ns: Sequence[int], seeds: Sequence[int], *, steps: int, newton_iters: int,
               spurious_tol: float, n_in_trivial: int = 2, n_hidden_trivial: int = 2, device=None) -> pd.DataFrame:
    """Is the bad half's constrained minimum spurious, and a saddle of the unconstrained network?

    For every ``n`` in ``ns`` and every teacher seed: :func:`constrained_descent`
    from the mirrored teacher (orthonormal coordinates, so the run stays in the
    bad half) with step ``1 / (largest Hessian eigenvalue)`` at the teacher and at
    its mirror image, ``newton_iters`` Newton steps, and the smallest eigenvalue of
    the unconstrained Hessian at the end point.

    Parameters
    ----------
    spurious_tol : float
        A minimum is spurious if its loss exceeds ``spurious_tol`` times
        ``E ||f*(x)||^2`` (the teacher term).

    Returns
    -------
    pandas.DataFrame
        One row per ``(n, seed)`` with columns ``n``, ``seed``, ``bad half``,
        ``constrained min`` (positive-definite constrained Hessian, gradient norm below
        ``1e-8``), ``relative loss``, ``full-Hessian min eig``, ``spurious`` (all three
        conditions), ``saddle when relaxed`` (negative smallest eigenvalue) and
        ``reason``, which is ``"spurious"`` or the first condition that failed
        (``"left the bad half"``, ``"not a constrained minimum"``, or ``"zero loss"``
        when the bad half holds a global minimum).
    """
    rows = []
    for n in ns:
        for seed in seeds:
            p = make_problem(n, n_in_trivial=n_in_trivial, n_hidden_trivial=n_hidden_trivial, seed=seed,
                             device=device)
            Wm = p.mirrored_teacher().W
            basis = equivariant_basis(p.rep_in, p.rep_hidden, device=device)
            lr = curvature_step_size(p.coordinate_loss(basis),
                                     [torch.einsum("hd,khd->k", Wx, basis) for Wx in (p.W_teacher, Wm)])
            c = constrained_descent(p, Wm, steps=steps, lr=lr, basis=basis, newton_iters=newton_iters)
            rows.append({"n": n, "seed": seed,
                         "bad half": ((c["W"][0, 0] - c["W"][0, 1]) * (p.a_teacher - p.b_teacher)).item() < 0,
                         "constrained min": c["hess_eigs"].min().item() > 0 and c["grad_norm"] < 1e-8,
                         "relative loss": c["loss"].item() / p.teacher_term.item(),
                         "full-Hessian min eig": min_hessian_eigenvalue(p.loss_W, c["W"])})
    df = pd.DataFrame(rows)
    df["spurious"] = df["bad half"] & df["constrained min"] & (df["relative loss"] > spurious_tol)
    df["saddle when relaxed"] = df["full-Hessian min eig"] < 0
    df["reason"] = np.select([df["spurious"], ~df["bad half"], ~df["constrained min"]],
                             ["spurious", "left the bad half", "not a constrained minimum"], "zero loss")
    return df
