"""The force head of the EScAIP-style model and its distance from the equivariant subspace (chapter 5).

:class:`~equivlib.models.EScAIPForceField` predicts ``o_k(i) = Σ_j u_ij,k · w_kᵀ h_ij`` from
invariant edge features ``h`` and edge unit vectors ``u``, with a bias-free head
``W = [w_x, w_y, w_z]`` (``(d, 3)``).  Its twisted predictions are linear in ``W``:
``Z_T = M_T vec(W)``, with (for a rotation ``R``)

    M_T[i, a, (c, k)] = R_ka · Σ_j u_ij,k(Rx) · h_ij,c(Rx),

so on a :class:`~equivlib.tasks.FixedBatch` the plug-in equivariance error is exactly a
quadratic form ``L_equiv = vec(W)ᵀ Q̄ vec(W)`` with ``Q̄ = mean_b 1/(N D_b) Σ_T (M_T − M̄)ᵀ
diag(mask) (M_T − M̄)``.  If the trunk is invariant, ``M_T vec(W_E)`` does not depend on
``T`` for ``W_E = [w̄, w̄, w̄]``, so ``Q̄`` vanishes on the equivariant subspace ``E`` and
``L_equiv = pᵀ Q̄ p`` with ``p = vec(W_E⊥)``: the first paper's Thm. 4 with ``λ_min``,
``λ_max`` the extreme eigenvalues of ``Q̄`` on ``E⊥``.

* :func:`split_head`, :func:`perp_basis`: ``W = W_E + W_E⊥`` and an orthonormal basis of ``E⊥``;
* :func:`head_design`: the matrices ``M_T`` (and the trunk's invariance check);
* :func:`head_form`: ``Q̄``, its restriction to ``E⊥`` and ``λ_min``, ``λ_max``;
* :func:`head_point`: the theorem's quantities at one model; :func:`head_trajectory` at
  checkpoints; :func:`head_perturbations` at random heads on a fixed trunk;
  :func:`lambda_vs_samples`: how ``λ_min`` depends on the number of molecules;
* :class:`TiltedTrunk`: the same model with an orientation-dependent feature added to the
  trunk, where the theorem's assumption fails.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from .config import ParameterError, derived_generator
from .models._common import zero_padded
from .tasks import FixedBatch
from .hessian import functional
from .training import as_float64
from .twirl import _weights

__all__ = ["split_head", "perp_basis", "head_design", "HeadForm", "head_form", "head_point", "head_trajectory",
           "head_perturbations", "lambda_vs_samples", "TiltedTrunk"]


def _check_model(model) -> torch.Tensor:
    W = getattr(model, "head", None)
    if not isinstance(W, torch.Tensor) or W.ndim != 2 or W.shape[1] != 3 or not hasattr(model, "edge_features"):
        raise ParameterError("the head theorem needs an EScAIP-style model: a bias-free head parameter `head` of shape "
                             f"(d, 3) and an `edge_features` method; got {type(model).__name__} with head "
                             f"{None if W is None else tuple(getattr(W, 'shape', ()))}")
    if any(n.startswith("head") and n != "head" and not n.endswith(".head") for n, _ in model.named_parameters()):
        raise ParameterError("the head has a bias or extra parameters; the theorem is for a bias-free linear head")
    return W


def split_head(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_E, W_E⊥)``: ``W_E = [w̄, w̄, w̄]`` with ``w̄`` the mean of the three columns, and the rest."""
    if W.ndim != 2 or W.shape[1] != 3:
        raise ParameterError(f"a head is (d, 3), got {tuple(W.shape)}")
    WE = W.mean(1, keepdim=True).expand_as(W)
    return WE, W - WE


def perp_basis(d: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Orthonormal basis ``(3d, 2d)`` of ``E⊥`` in ``vec(W)`` (row-major: index ``3c + k``)."""
    U = torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]], dtype=dtype, device=device).T
    U = (U / U.norm(dim=0, keepdim=True)).contiguous()  # (3, 2): orthonormal, orthogonal to (1, 1, 1)
    return torch.kron(torch.eye(d, dtype=dtype, device=device), U)


def head_design(model: nn.Module, batch: FixedBatch, *, check_invariance: bool = True,
                tol: float = 1e-10) -> torch.Tensor:
    """``M`` of shape ``(N, B, A, 3, 3d)``: twisted predictions ``Z_T = M_T vec(W)`` (zero at padding).

    ``check_invariance``: raise when ``h(Rx)`` differs from ``h(x)`` by more than ``tol``
    (relative), i.e. when the trunk is not invariant and the theorem does not apply.
    """
    model = as_float64(model)
    _check_model(model)
    x, mask, species = batch.x, batch.extras.get("mask"), batch.extras.get("species")
    R = batch.sample.elements
    R = R.expand(*R.shape[:2], x.shape[0], 3, 3).reshape(-1, x.shape[0], 3, 3)  # (N, B, 3, 3)
    N, B = R.shape[:2]
    X = torch.einsum("nbij,baj->nbai", R, x).reshape(N * B, *x.shape[1:])
    rep = (lambda t: None if t is None else t[None].expand(N, *t.shape).reshape(N * B, *t.shape[1:]))  # noqa: E731
    with torch.no_grad():
        h, unit, _ = model.edge_features(X, rep(mask), rep(species))
        if check_invariance:
            h0, _, _ = model.edge_features(x, mask, species)
            h0 = h0[None].expand(N, *h0.shape).reshape(h.shape)
            err = float((h - h0).abs().max() / h0.abs().max().clamp_min(1e-300))
            if err > tol:
                raise ParameterError(f"the trunk is not rotation-invariant (relative change of its edge features "
                                     f"{err:.1e} > {tol:g}); the head theorem assumes an invariant trunk")
    d = h.shape[-1]
    S = torch.einsum("eijk,eijc->eick", unit, h).reshape(N, B, x.shape[1], d, 3)  # Σ_j u_ij,k h_ij,c
    M = torch.einsum("nbka,nbick->nbiack", R, S).reshape(N, B, x.shape[1], 3, 3 * d)
    if mask is not None:
        M = M * mask[None, :, :, None, None]
    return M


@dataclass
class HeadForm:
    """``Q̄`` (``(3d, 3d)``), its restriction ``Q_perp`` to ``E⊥`` (basis ``basis``) and its extreme eigenvalues."""

    Q: torch.Tensor
    Q_perp: torch.Tensor
    basis: torch.Tensor
    lambda_min: float
    lambda_max: float
    on_E: float  # largest |Q̄ v| over unit v in E, relative to lambda_max: 0 for an invariant trunk

    def value(self, W: torch.Tensor) -> float:
        w = W.reshape(-1).to(self.Q.dtype)
        return float(w @ self.Q @ w)


def head_form(model: nn.Module, batch: FixedBatch, **kw) -> HeadForm:
    """The quadratic form of ``L_equiv`` in the head on ``batch`` (see the module docstring)."""
    M = head_design(model, batch, **kw)
    N, B, A = M.shape[:3]
    _, D = _weights(batch.mask, batch.y)  # valid force entries per molecule, as the decomposition counts them
    dM = (M - M.mean(0)).reshape(N, B, A * 3, -1)
    w = (1.0 / (B * N * D.to(M.dtype))).reshape(1, B, 1, 1)
    Q = torch.einsum("nbop,nboq->pq", dM * w, dM)
    Q = 0.5 * (Q + Q.T)
    d = Q.shape[0] // 3
    P = perp_basis(d, Q.dtype, Q.device)
    Qp = P.T @ Q @ P
    lam = torch.linalg.eigvalsh(Qp)
    E = torch.kron(torch.eye(d, dtype=Q.dtype, device=Q.device), torch.ones(3, 1, dtype=Q.dtype) / 3**0.5)
    on_E = float(torch.linalg.matrix_norm(Q @ E, ord=2) / lam[-1].clamp_min(1e-300))
    return HeadForm(Q, Qp, P, float(lam[0]), float(lam[-1]), on_E)


def _with_head(model, W):
    return functional(model, {n: (W if p is model.head else p) for n, p in model.named_parameters()})


def head_point(model: nn.Module, batch: FixedBatch, *, form: HeadForm | None = None, check_invariance=True) -> dict:
    """The theorem at ``model``: ``dist2 = ‖W_E⊥‖²``, ``L_equiv`` (decomposition), ``quad = pᵀQ̄p``, the bounds
    ``lower = λ_min·dist2`` and ``upper = λ_max·dist2``, and ``‖∇_W L_equiv‖`` with its bounds
    ``2λ_min‖p‖``, ``2λ_max‖p‖``."""
    model = as_float64(model)
    W = _check_model(model).detach()
    form = head_form(model, batch, check_invariance=check_invariance) if form is None else form
    _, Wp = split_head(W)
    dist2 = float((Wp * Wp).sum())
    q = W.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = batch.loss("L_equiv")(_with_head(model, q))  # the plug-in L_equiv of the batch, and its gradient
        (g,) = torch.autograd.grad(loss, (q,))
    L_equiv = float(loss.detach())
    return {"dist": dist2**0.5, "dist2": dist2, "L_equiv": L_equiv, "quad": form.value(Wp), "quad_full": form.value(W),
            "lambda_min": form.lambda_min, "lambda_max": form.lambda_max, "lower": form.lambda_min * dist2,
            "upper": form.lambda_max * dist2, "grad": float(g.norm()), "grad_lower": 2 * form.lambda_min * dist2**0.5,
            "grad_upper": 2 * form.lambda_max * dist2**0.5, "on_E": form.on_E}


def head_trajectory(load_model: Callable[[int], nn.Module], steps: Sequence[int], batch: FixedBatch) -> pd.DataFrame:
    """:func:`head_point` at each checkpoint (the trunk, hence ``Q̄``, changes with it)."""
    return pd.DataFrame([{"step": int(s), **head_point(load_model(int(s)), batch)} for s in steps])


def head_perturbations(model: nn.Module, batch: FixedBatch, *, n: int, scales: Sequence[float] = (0.1, 1.0, 10.0),
                       seed: int = 0) -> pd.DataFrame:
    """Random heads on the model's trunk: ``W + s·‖W‖·G/‖G‖`` (``G`` Gaussian, both subspaces), ``n`` per scale.

    Columns as :func:`head_point` plus ``scale`` and ``inside`` (``lower ≤ L_equiv ≤ upper`` up to
    ``1e-12`` relative) and ``position`` = ``(L_equiv − lower)/(upper − lower)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"n must be a positive integer, got {n!r}")
    model = as_float64(model)
    W = _check_model(model).detach()
    form = head_form(model, batch)
    gen = derived_generator(seed, "head-perturbations")
    rows = []
    for s in scales:
        for _ in range(n):
            G = torch.randn(W.shape, generator=gen, dtype=W.dtype)
            Wn = W + float(s) * float(W.norm()) * G / G.norm()
            _, Wp = split_head(Wn)
            dist2 = float((Wp * Wp).sum())
            with torch.no_grad():
                d = batch.decompose(_with_head(model, Wn))
            Le = float(d.L_equiv.mean())
            lo, hi = form.lambda_min * dist2, form.lambda_max * dist2
            rows.append({"scale": float(s), "dist2": dist2, "L_equiv": Le, "quad": form.value(Wp), "lower": lo,
                         "upper": hi, "inside": bool(lo * (1 - 1e-12) <= Le <= hi * (1 + 1e-12)),
                         "position": (Le - lo) / (hi - lo) if hi > lo else float("nan")})
    return pd.DataFrame(rows)


def lambda_vs_samples(model: nn.Module, task, ns: Sequence[int], n_elements: int) -> pd.DataFrame:
    """``λ_min``, ``λ_max`` of ``Q̄`` on ``E⊥`` from the first ``n`` held-out molecules, for each ``n``."""
    rows = []
    for n in ns:
        f = head_form(model, task.fixed_batch(int(n), n_elements))
        rows.append({"molecules": int(n), "lambda_min": f.lambda_min, "lambda_max": f.lambda_max,
                     "ratio": f.lambda_max / f.lambda_min if f.lambda_min > 0 else float("inf")})
    return pd.DataFrame(rows)


class TiltedTrunk(nn.Module):
    """An EScAIP-style model whose edge features get an orientation-dependent term.

    ``h'_ij = h_ij + strength · u_ij,z · v`` with a fixed random unit vector ``v`` (seeded): the
    trunk is no longer invariant, so the head theorem's assumption fails.  Shares ``base``'s
    parameters (``self.head`` is ``base.head``).
    """

    def __init__(self, base: nn.Module, strength: float, seed: int = 0):
        super().__init__()
        _check_model(base)
        self.base = base
        d = base.head.shape[0]
        v = torch.randn(d, generator=derived_generator(seed, "tilted-trunk"), dtype=torch.float64)
        self.register_buffer("v", (v / v.norm()).to(base.head.dtype))
        self.strength = float(strength)

    @property
    def head(self) -> nn.Parameter:
        return self.base.head

    def edge_features(self, positions, mask=None, species=None):
        h, unit, edge = self.base.edge_features(positions, mask, species)
        return h + self.strength * unit[..., 2:3] * self.v, unit, edge

    def forward(self, positions, mask=None, species=None):
        h, unit, _ = self.edge_features(positions, mask, species)
        out = torch.einsum("bijk,bijd,dk->bik", unit, h, self.head)
        return out if mask is None else zero_padded(out, mask)
