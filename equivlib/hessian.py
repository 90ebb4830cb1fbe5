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

Chapter 6 (hidden symmetries) uses these on exact population losses.  For
networks, the second half of the module works on a *subset* of a model's
parameters as one flat vector (:func:`select_parameters`, :func:`subset_loss`):

* :func:`hvp`: Hessian-vector products (double backward, or forward-over-reverse);
* :func:`lanczos_extremes`: extreme eigenpairs from HVPs alone (scipy's ``eigsh``);
* :func:`dense_hessian` / :func:`dense_spectrum`: the whole Hessian and spectrum for
  subsets of a few thousand parameters, from batched HVPs, which the Lanczos values
  are checked against;
* :func:`top_eigenvalue`: the largest eigenvalue alone (a local smoothness constant);
* :func:`condition_number` (``λ_max / λ_min⁺`` at a stated cutoff) and
  :func:`top_ratio` (``λ_1 / λ_k``, no cutoff).

The loss of one term of the decomposition (``L``, ``L_mean`` or ``L_equiv``) as a
function of the model is :func:`equivlib.twirl.decomposition_loss`::

    loss = decomposition_loss("L_equiv", x, y, sample, VectorAction(), mask=mask)
    f, flat = subset_loss(model, ["head"], loss)
    res = lanczos_extremes(f, flat.theta0, k=1)
    flat.unflatten(res["vectors_largest"][0])   # the top eigenvector, parameter-shaped
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import torch

from .config import ParameterError

__all__ = ["gradient", "hessian", "min_hessian_eigenvalue", "newton_minimize", "curvature_step_size",
           "select_parameters", "FlatParams", "functional", "subset_loss", "hvp", "dense_hessian", "dense_spectrum", "top_eigenvalue", "lanczos_extremes",
           "condition_number", "top_ratio"]

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


# --------------------------------------------------------------------------- large models
#
# For a network, the function of interest is a loss as a function of a *subset* of the
# model's parameters (a layer, a head), with everything else fixed.  ``subset_loss``
# builds that function on one flat vector; ``hvp`` multiplies its Hessian with a vector
# without forming it; ``lanczos_extremes`` finds the extreme eigenpairs from HVPs alone
# (scipy's ARPACK Lanczos, ``eigsh``, on a ``LinearOperator``: it needs nothing but a
# matrix-vector product, works in float64, and returns eigenvectors); ``dense_spectrum``
# forms the whole Hessian for subsets small enough (batched HVPs), which is what
# ``lanczos_extremes`` is checked against.  We use scipy rather than curvlinops because
# our losses are not a sum of per-sample losses of one network output: the terms of the
# loss decomposition couple every group element of a sample (``L_equiv`` is a spread),
# which curvlinops' loss-function interface does not express.

SubsetSpec = Union[str, Sequence[str], Sequence[torch.Tensor], None]


def _twice_differentiable():
    """Attention through the math kernel: the fused (flash, memory-efficient) kernels have no double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def select_parameters(model: torch.nn.Module, subset: SubsetSpec = None) -> dict[str, torch.nn.Parameter]:
    """The parameters of ``model`` named by ``subset``, in the model's order.

    Parameters
    ----------
    subset : None, str, list of str, or list of tensors
        ``None``: every parameter that requires a gradient.  A string or strings: a
        parameter name (``"head.weight"``) or a module name, which selects every
        parameter below it (``"head"``: ``head.weight`` and ``head.bias``).  Tensors:
        those parameters of ``model`` themselves.

    Raises
    ------
    ParameterError
        For an empty subset, an unknown name (the message lists the modules), or a
        tensor that is not a parameter of ``model``.
    """
    named = dict(model.named_parameters())
    if subset is None:
        sel = {n: p for n, p in named.items() if p.requires_grad}
    else:
        items = [subset] if isinstance(subset, (str, torch.Tensor)) else list(subset)
        if not items:
            raise ParameterError("the parameter subset is empty")
        if all(isinstance(s, torch.Tensor) for s in items):
            ids = {id(t) for t in items}
            sel = {n: p for n, p in named.items() if id(p) in ids}
            if len(sel) != len(ids):
                raise ParameterError(f"{len(ids) - len(sel)} of the given tensors are not parameters of the model")
        elif all(isinstance(s, str) for s in items):
            sel = {}
            for s in items:
                hits = {n: p for n, p in named.items() if n == s or n.startswith(s + ".")}
                if not hits:
                    modules = sorted({n.rsplit(".", 1)[0] for n in named if "." in n})
                    raise ParameterError(f"no parameter or module named {s!r}; modules with parameters: "
                                         f"{', '.join(modules[:30])}{' ...' if len(modules) > 30 else ''}")
                sel.update(hits)
            sel = {n: named[n] for n in named if n in sel}
        else:
            raise ParameterError("subset must be names or parameter tensors, not a mixture")
    if not sel:
        raise ParameterError("the parameter subset is empty (no parameter requires a gradient)")
    return sel


class FlatParams:
    """A parameter subset as one flat vector ``theta`` and back (``unflatten``)."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        self.names = list(params)
        self.shapes = [tuple(p.shape) for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.theta0 = torch.cat([p.detach().reshape(-1) for p in params.values()]).clone()

    @property
    def n(self) -> int:
        return int(sum(self.sizes))

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of ``theta`` with the parameters' shapes."""
        if theta.shape != (self.n,):
            raise ParameterError(f"theta must have shape ({self.n},), got {tuple(theta.shape)}")
        return {n: t.reshape(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}


def functional(model: torch.nn.Module, params: Mapping[str, torch.Tensor]) -> Callable:
    """A callable with ``model``'s signature that uses ``params`` (``{name: tensor}``) in place of those
    parameters (``torch.func.functional_call``); ``model`` itself is not modified."""
    return lambda *args, **kw: torch.func.functional_call(model, params, args, kw)


def subset_loss(model: torch.nn.Module, subset: SubsetSpec,
                loss: Callable[[Callable], torch.Tensor]) -> tuple[ScalarFn, FlatParams]:
    """``loss`` as a function of one flat vector of the parameters in ``subset``.

    ``loss(model_fn)`` computes a scalar from a callable with the model's signature
    (e.g. :func:`equivlib.twirl.decomposition_loss`).  Returns ``(f, flat)`` with
    ``f(theta)`` the loss of the model whose ``subset`` parameters are ``theta``
    (``flat.theta0``: their current values) and every other parameter and buffer as
    it is; the model itself is never modified (``torch.func.functional_call``).
    """
    flat = FlatParams(select_parameters(model, subset))

    def f(theta: torch.Tensor) -> torch.Tensor:
        params = flat.unflatten(theta)
        return loss(functional(model, params))

    return f, flat


def hvp(f: ScalarFn, theta: torch.Tensor, v: torch.Tensor, *, mode: str = "reverse") -> torch.Tensor:
    """Hessian-vector product ``∇²f(theta) v`` without forming the Hessian.

    ``mode="reverse"``: double backward (works for every differentiable op);
    ``"forward"``: forward-over-reverse with ``torch.func`` (one pass cheaper, needs
    forward-mode rules for every op of ``f``).
    """
    if v.shape != theta.shape:
        raise ParameterError(f"v has shape {tuple(v.shape)}, theta {tuple(theta.shape)}")
    if mode == "forward":
        with _twice_differentiable():
            return torch.func.jvp(torch.func.grad(f), (theta.detach(),), (v,))[1]
    if mode != "reverse":
        raise ParameterError(f"mode must be 'reverse' or 'forward', got {mode!r}")
    q = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad(), _twice_differentiable():
        out = f(q)
        if not out.requires_grad:
            raise ParameterError("the loss does not depend on the selected parameters")
        (g,) = torch.autograd.grad(out, (q,), create_graph=True)
        if not g.requires_grad:  # f is linear in theta
            return torch.zeros_like(q)
        (hv,) = torch.autograd.grad(g, (q,), grad_outputs=v, allow_unused=True)
    return torch.zeros_like(q) if hv is None else hv.detach()


def dense_hessian(f: ScalarFn, theta: torch.Tensor, *, chunk: int = 256) -> torch.Tensor:
    """The symmetrised ``(n, n)`` Hessian ``∇²f(theta)``, from batched HVPs.

    Formed ``chunk`` columns at a time (``is_grads_batched``; one at a time where a
    model has an op that cannot be batched this way); meant for subsets of up to a
    few thousand parameters.  Hessians of several terms of the decomposition add up
    (``L = L_mean + L_equiv``), so one of ``L`` needs no third pass.
    """
    q = theta.detach().clone().requires_grad_(True)
    n = q.numel()
    with torch.enable_grad(), _twice_differentiable():
        out = f(q)
        if not out.requires_grad:
            raise ParameterError("the loss does not depend on the selected parameters")
        (g,) = torch.autograd.grad(out, (q,), create_graph=True)
        eye = torch.eye(n, dtype=q.dtype, device=q.device)

        def rows(block):
            if block.shape[0] == 1:
                (h,) = torch.autograd.grad(g, (q,), grad_outputs=block[0], retain_graph=True, allow_unused=True)
                return None if h is None else h[None]
            (h,) = torch.autograd.grad(g, (q,), grad_outputs=block, retain_graph=True, is_grads_batched=True,
                                       allow_unused=True)
            return h

        cols, start = [], 0
        while start < n:
            block = eye[start:start + chunk]
            try:
                h = rows(block)
            except RuntimeError:
                if chunk == 1:
                    raise
                chunk = 1  # an op without a batching rule: one product at a time from here on
                continue
            cols.append(torch.zeros(block.shape[0], n, dtype=q.dtype, device=q.device) if h is None else h)
            start += block.shape[0]
    H = torch.cat(cols).detach()
    return 0.5 * (H + H.T)


def dense_spectrum(f: ScalarFn, theta: torch.Tensor, *, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenvalues (ascending) and eigenvectors (columns) of ``∇²f(theta)`` (:func:`dense_hessian`)."""
    return torch.linalg.eigh(dense_hessian(f, theta, chunk=chunk))


def top_eigenvalue(f: ScalarFn, theta: torch.Tensor, *, tol: float = 1e-3, maxiter: int | None = None,
                   seed: int = 0) -> dict:
    """The largest (algebraic) eigenvalue of ``∇²f(theta)`` by Lanczos (ARPACK ``which="LA"``), HVPs only.

    A local smoothness constant: ``∇f`` is ``λ``-Lipschitz near ``theta`` only if the
    Hessian's spectral norm, at least its top eigenvalue, is at most ``λ`` there.
    Returns ``{"value", "vector", "n_hvp", "seconds"}``.
    """
    import time

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = theta.numel()
    if n < 3:
        raise ParameterError(f"top_eigenvalue needs at least 3 parameters, got {n}; use dense_spectrum")
    count = [0]

    def matvec(v):
        count[0] += 1
        t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1), dtype=theta.dtype, device=theta.device)
        return hvp(f, theta, t).double().cpu().numpy()

    t0 = time.perf_counter()
    try:
        vals, vecs = eigsh(LinearOperator((n, n), matvec=matvec, dtype=np.float64), k=1, which="LA", tol=tol,
                           maxiter=maxiter, v0=np.random.default_rng(seed).standard_normal(n))
    except ArpackNoConvergence as e:
        raise RuntimeError(f"Lanczos did not converge after {count[0]} Hessian-vector products ({e}); "
                           "raise maxiter or tol") from None
    return {"value": float(vals[0]), "vector": torch.as_tensor(vecs[:, 0].copy(), dtype=theta.dtype, device=theta.device),
            "n_hvp": count[0], "seconds": time.perf_counter() - t0}


def lanczos_extremes(f: ScalarFn, theta: torch.Tensor, *, k: int = 1, tol: float = 1e-8, maxiter: int | None = None,
                     mode: str = "reverse", seed: int = 0) -> dict:
    """The ``k`` largest and ``k`` smallest eigenpairs of ``∇²f(theta)`` by Lanczos (HVPs only).

    One implicitly restarted Lanczos run (ARPACK ``which="BE"``) finds both ends of the
    spectrum; ``tol`` is ARPACK's relative accuracy of the eigenvalues.  Each HVP is
    computed in ``theta``'s dtype and handed to ARPACK in float64.

    Returns
    -------
    dict with ``largest`` (descending) and ``smallest`` (ascending) eigenvalues as
    NumPy arrays, ``vectors_largest`` / ``vectors_smallest`` (``(k, n)`` tensors,
    rows matching the values), ``n_hvp`` (products used) and ``seconds``.
    """
    import time

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = theta.numel()
    if not (1 <= k and 2 * k < n):
        raise ParameterError(f"k must be in [1, {(n - 1) // 2}] for {n} parameters, got {k}")
    count = [0]

    def matvec(v):
        count[0] += 1
        t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1), dtype=theta.dtype, device=theta.device)
        return hvp(f, theta, t, mode=mode).double().cpu().numpy()

    op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    t0 = time.perf_counter()
    try:
        vals, vecs = eigsh(op, k=2 * k, which="BE", tol=tol, maxiter=maxiter, v0=v0)
    except ArpackNoConvergence as e:
        raise RuntimeError(
            f"Lanczos did not converge after {count[0]} Hessian-vector products ({e}). A subset with a large null "
            "space (a linear head, whose loss is quadratic in it) converges slowly at the zero end: for a few "
            "thousand parameters or fewer use dense_spectrum; otherwise raise maxiter or tol") from None
    order = np.argsort(vals)
    vals, vecs = vals[order], vecs[:, order]
    as_rows = lambda m: torch.as_tensor(m.T.copy(), dtype=theta.dtype, device=theta.device)  # noqa: E731
    return {"largest": vals[::-1][:k].copy(), "smallest": vals[:k].copy(),
            "vectors_largest": as_rows(vecs[:, ::-1][:, :k]), "vectors_smallest": as_rows(vecs[:, :k]),
            "n_hvp": count[0], "seconds": time.perf_counter() - t0}


def condition_number(eigenvalues, cutoff: float = 1e-6) -> float:
    """``λ_max / λ_min⁺``: the largest eigenvalue over the smallest one above ``cutoff · λ_max``.

    The paper's definition needs a threshold for "positive"; the result moves with it
    (report it for several, or use :func:`top_ratio`).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=float))
    if lam.size == 0 or lam[-1] <= 0:
        raise ParameterError("no positive eigenvalue")
    pos = lam[lam > cutoff * lam[-1]]
    return float(lam[-1] / pos[0])


def top_ratio(eigenvalues, k: int) -> float:
    """``λ_1 / λ_k`` of the ``k`` largest eigenvalues: a spread that needs no cutoff."""
    lam = np.sort(np.asarray(eigenvalues, dtype=float))[::-1]
    if not 2 <= k <= lam.size:
        raise ParameterError(f"k must be in [2, {lam.size}], got {k}")
    if lam[k - 1] <= 0:
        raise ParameterError(f"the {k}-th largest eigenvalue is not positive ({lam[k - 1]:.3g})")
    return float(lam[0] / lam[k - 1])
