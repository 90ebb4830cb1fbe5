"""Curvature of small loss functions: gradients, dense Hessians and Newton steps.

Every function here takes a scalar function ``f`` of one parameter tensor
``p`` (a few dozen entries: the weights of a teacher-student network, the
coefficients of an equivariant layer, a point of a 2-D slice) and works by
double backward through ``f``; nothing is specific to one model.

* :func:`gradient` and :func:`hessian`: the gradient and the dense Hessian;
* :func:`min_hessian_eigenvalue`: is a critical point a minimum or a saddle?
* :func:`newton_minimize`: saddle-free damped Newton, to polish minima to
  machine precision;
* :func:`curvature_step_size`: a gradient-descent step that is stable for any
  scale of ``f`` (one over the largest Hessian eigenvalue).

Chapter 6 (hidden symmetries) uses these on exact population losses.  Chapters
3 and 4 will extend this module with Hessian-vector products and Lanczos
estimates of extreme eigenvalues for models too large for a dense Hessian; they
belong here, next to the dense versions they are checked against.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

__all__ = ["gradient", "hessian", "min_hessian_eigenvalue", "newton_minimize", "curvature_step_size"]

ScalarFn = Callable[[torch.Tensor], torch.Tensor]


def gradient(f: ScalarFn, p: torch.Tensor) -> torch.Tensor:
    """Gradient of a scalar function at ``p`` (same shape as ``p``), detached from any graph."""
    q = p.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        return torch.autograd.grad(f(q), (q,))[0]


def hessian(f: ScalarFn, p: torch.Tensor) -> torch.Tensor:
    """Dense Hessian of a scalar function by reverse-over-reverse autodiff.

    Parameters
    ----------
    f : callable mapping a tensor of shape ``S`` to a scalar
    p : torch.Tensor, shape ``(*S)``

    Returns
    -------
    torch.Tensor, shape ``(prod(S), prod(S))``
    """
    # Row by row with double backward: for the few dozen parameters used here this is
    # as fast as ``torch.func.hessian`` and avoids the slow first call of vmap over
    # custom autograd functions (such as the arc-cosine kernel's).
    q = p.detach().reshape(-1).clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(q.reshape(p.shape)), (q,), create_graph=True)
        rows = []
        for i in range(q.numel()):
            (r,) = torch.autograd.grad(g[i], (q,), retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(q) if r is None else r)
    return torch.stack(rows).detach()


def min_hessian_eigenvalue(f: ScalarFn, p: torch.Tensor) -> float:
    """Smallest eigenvalue of :func:`hessian` (negative: ``p`` is not a minimum)."""
    return torch.linalg.eigvalsh(hessian(f, p))[0].item()


def newton_minimize(f: ScalarFn, p0: torch.Tensor, iters: int = 100, tol: float = 1e-12) -> torch.Tensor:
    """Saddle-free damped Newton: step ``|H|^{-1} g`` with backtracking.

    Eigenvalues of the Hessian enter through their absolute values (floored at
    ``1e-8``), so the step always goes downhill; it is halved until the loss does
    not increase.  Stops when the gradient norm falls below ``tol``.

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
        g = gradient(f, p)
        if g.norm() < tol:
            break
        evals, evecs = torch.linalg.eigh(hessian(f, p))
        step = evecs @ ((evecs.T @ g) / evals.abs().clamp_min(1e-8))
        t, L0 = 1.0, f(p)
        while t > 1e-8 and f(p - t * step) > L0:
            t /= 2
        p = p - t * step
    return p


def curvature_step_size(f: ScalarFn, points: Iterable[torch.Tensor]) -> float:
    """``1 / max`` of the largest Hessian eigenvalue of ``f`` over ``points``.

    Gradient descent with this step is stable near every given point, whatever
    the scale of ``f`` (a fixed step diverges for losses with large curvature).
    """
    top = [torch.linalg.eigvalsh(hessian(f, q))[-1].item() for q in points]
    if not top:
        raise ValueError("curvature_step_size needs at least one point")
    if max(top) <= 0:
        raise ValueError(f"no positive curvature at the given points (largest eigenvalue {max(top):.3g})")
    return 1.0 / max(top)
