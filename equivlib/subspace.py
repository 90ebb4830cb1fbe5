"""The equivariant parameter subspace of a network with group-representation hidden layers (chapter 5).

For a network whose layers act between spaces carrying orthogonal representations of a
finite group ``G`` and whose non-linearity commutes with the hidden representation, the
parameters that make every layer an intertwiner form a linear subspace ``E``, and averaging
each weight over the group (the Reynolds operator) is the orthogonal projection onto it
(after Nordenfors et al., the framework of the first paper's App. A.1).

:class:`RegularMLP` is the smallest such network that is not trivially equivariant:
``f(x) = W2 silu(W1 x + b1)`` per atom, ``x ∈ R³`` rotated by ``G`` (a rotation group such
as the 24 cube rotations), hidden ``R^{c|G|}`` carrying ``c`` copies of the left-regular
representation (``P_g e_h = e_{gh}``), on which SiLU acts entry-wise and so commutes with
every ``P_g``.  Then

* :func:`project` returns ``θ_E`` (``W1 ↦ mean_g P_gᵀ W1 R_g``, ``b1 ↦ mean_g P_gᵀ b1``,
  ``W2 ↦ mean_g R_gᵀ W2 P_g``) and :func:`projection_matrix` the same map on the flat
  parameter vector;
* :func:`path_study` follows ``θ_E + t θ_E⊥`` from the projected to the given weights and
  returns ``L_equiv`` (exact: every element of ``G``) and ``‖∇L_equiv‖`` along it;
* :func:`perp_hessian` is the Hessian of ``L_equiv`` at ``θ_E`` on ``E⊥``: its extreme
  eigenvalues are the constants of the quadratic law near ``E``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from .config import ParameterError, derived_generator
from .groups import VectorAction, element_indices, exhaustive
from .hessian import dense_hessian, functional
from .stats import slope_ci
from .training import rotation_augment, train
from .twirl import decompose, twisted_predictions

__all__ = ["left_regular", "RegularMLP", "project", "projection_matrix", "path_study", "perp_hessian", "toy_data",
           "train_regular_mlp"]


def left_regular(group: torch.Tensor) -> torch.Tensor:
    """Permutation matrices ``(|G|, |G|, |G|)`` of the left-regular representation: ``P_g e_h = e_{gh}``."""
    n = group.shape[0]
    prod = torch.einsum("gij,hjk->ghik", group, group).reshape(n * n, 3, 3)
    idx = element_indices(group, prod).reshape(n, n)  # idx[g, h] = index of g·h
    P = torch.zeros(n, n, n, dtype=group.dtype)
    P[torch.arange(n)[:, None], idx, torch.arange(n)[None, :]] = 1.0
    return P


class RegularMLP(nn.Module):
    """``f(x) = W2 silu(W1 x + b1)`` on ``(B, A, 3)`` vectors; hidden: ``copies`` regular representations of ``group``.

    Parameters are drawn from torch's global generator (a fresh model is not equivariant).
    """

    def __init__(self, group: torch.Tensor, copies: int = 2, dtype: torch.dtype = torch.float64):
        super().__init__()
        if group.ndim != 3 or group.shape[1:] != (3, 3):
            raise ParameterError(f"group must be (|G|, 3, 3) rotation matrices, got {tuple(group.shape)}")
        if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
            raise ParameterError(f"copies must be a positive integer, got {copies!r}")
        n = group.shape[0]
        self.register_buffer("R", group.to(dtype))
        P = left_regular(group.to(torch.float64)).to(dtype)
        self.register_buffer("P", torch.stack([torch.kron(torch.eye(copies, dtype=dtype), p) for p in P]))
        h = copies * n
        self.W1 = nn.Parameter(torch.randn(h, 3, dtype=dtype) / 3**0.5)
        self.b1 = nn.Parameter(0.1 * torch.randn(h, dtype=dtype))
        self.W2 = nn.Parameter(torch.randn(3, h, dtype=dtype) / h**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x @ self.W1.T + self.b1) @ self.W2.T


def _params(model: RegularMLP) -> dict[str, torch.Tensor]:
    return {k: getattr(model, k).detach() for k in ("W1", "b1", "W2")}


def project(model: RegularMLP, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``θ_E``: every weight averaged over the group (the orthogonal projection onto ``E``).

    ``params`` (``{"W1", "b1", "W2"}``) projects those weights instead of the model's own.
    """
    R, P = model.R, model.P
    params = _params(model) if params is None else params
    W1, b1, W2 = params["W1"], params["b1"], params["W2"]
    return {"W1": torch.einsum("gji,jk,gkl->il", P, W1, R) / len(R),
            "b1": torch.einsum("gji,j->i", P, b1) / len(R),
            "W2": torch.einsum("gji,jk,gkl->il", R, W2, P) / len(R)}


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([params[k].reshape(-1) for k in ("W1", "b1", "W2")])


def _unflat(model: RegularMLP, theta: torch.Tensor) -> dict:
    out, i = {}, 0
    for k in ("W1", "b1", "W2"):
        p = getattr(model, k)
        out[k] = theta[i:i + p.numel()].reshape(p.shape)
        i += p.numel()
    return out


def projection_matrix(model: RegularMLP) -> torch.Tensor:
    """The projection onto ``E`` as an ``(n, n)`` matrix on the flat parameters ``(W1, b1, W2)``."""
    n = sum(getattr(model, k).numel() for k in ("W1", "b1", "W2"))
    cols = []
    for e in torch.eye(n, dtype=model.W1.dtype):
        cols.append(_flat(project(model, _unflat(model, e))))
    return torch.stack(cols, 1)


def _equiv_loss(model: RegularMLP, x: torch.Tensor, y: torch.Tensor):
    """``θ ↦ L_equiv`` over every element of the model's group (exact twirl), plug-in split."""
    sample = exhaustive(model.R)

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params = _unflat(model, theta)
        Z = twisted_predictions(functional(model, params), x, sample, VectorAction(), memory_budget_mb=None)
        return decompose(Z, y, sample, estimator="plugin").L_equiv.mean()

    return loss


def toy_data(n: int, atoms: int, seed: int, noise: float = 0.05) -> dict[str, torch.Tensor]:
    """Vectors ``x (n, atoms, 3)`` and an SO(3)-equivariant target ``y = x·|x| + noise`` (float64, seeded)."""
    g = derived_generator(seed, "regular-mlp-data")
    x = torch.randn(n, atoms, 3, generator=g, dtype=torch.float64)
    y = x * x.norm(dim=-1, keepdim=True) + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return {"x": x, "y": y}


def _forward(model, batch):
    return model(batch["x"])


def _mse(pred, batch):
    return ((pred - batch["y"]) ** 2).mean()


def train_regular_mlp(model: RegularMLP, data: dict, *, steps: int, batch_size: int = 16, lr: float = 1e-2,
                      seed: int = 0) -> pd.DataFrame:
    """Train with random-rotation augmentation (:func:`equivlib.training.train`); returns the log."""
    return train(model, data, steps=steps, batch_size=batch_size, forward=_forward, loss=_mse, lr=lr,
                 augment=rotation_augment("x", ("y",)), generator=derived_generator(seed, "regular-mlp-train"),
                 progress=False)


def path_study(model: RegularMLP, x: torch.Tensor, y: torch.Tensor, ts) -> tuple[pd.DataFrame, dict]:
    """``L_equiv`` and ``‖∇_θ L_equiv‖`` at ``θ_E + t θ_E⊥`` for each ``t`` (``t = 1``: the model's weights).

    Returns the table (``t``, ``dist = t‖θ_E⊥‖``, ``L_equiv``, ``grad``) and log-log slopes of
    ``L_equiv`` and of the gradient norm against the distance (t intervals) over the given ``t``.
    """
    ts = np.asarray(ts, dtype=float)
    if ts.size < 3 or (ts <= 0).any():
        raise ParameterError("ts must hold at least three positive values")
    theta = _flat(_params(model))
    thE = _flat(project(model))
    perp = theta - thE
    f = _equiv_loss(model, x, y)
    rows = []
    for t in ts:
        q = (thE + float(t) * perp).clone().requires_grad_(True)
        with torch.enable_grad():
            L = f(q)
            (g,) = torch.autograd.grad(L, (q,))
        rows.append({"t": float(t), "dist": float(t * perp.norm()), "L_equiv": float(L.detach()), "grad": float(g.norm())})
    df = pd.DataFrame(rows)
    fits = {"L_equiv": slope_ci(np.log(df["dist"]), np.log(df["L_equiv"])),
            "grad": slope_ci(np.log(df["dist"]), np.log(df["grad"]))}
    return df, fits


def perp_hessian(model: RegularMLP, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Hessian of ``L_equiv`` at ``θ_E``, restricted to ``E⊥``; ``L_equiv ≈ ½ pᵀHp`` near ``E``.

    Returns ``lambda_min``, ``lambda_max`` of ``½H`` on ``E⊥`` (the quadratic law's constants),
    ``on_E`` (``‖H Π‖ / ‖H‖``: zero when ``L_equiv`` is flat along ``E``), ``dim_E``, ``dim_perp`` and
    ``n_null`` (eigenvalues on ``E⊥`` below ``1e-10 λ_max``: directions the data do not see).
    """
    Pi = projection_matrix(model)
    thE = _flat(project(model))
    H = dense_hessian(_equiv_loss(model, x, y), thE)
    vals, vecs = torch.linalg.eigh(torch.eye(len(Pi), dtype=Pi.dtype) - Pi)
    B = vecs[:, vals > 0.5]  # orthonormal basis of E⊥
    lam = torch.linalg.eigvalsh(0.5 * B.T @ H @ B)
    top = float(torch.linalg.matrix_norm(H, ord=2))
    return {"lambda_min": float(lam[0]), "lambda_max": float(lam[-1]), "dim_perp": int(B.shape[1]),
            "n_null": int((lam <= 1e-10 * lam[-1]).sum()),
            "dim_E": int(len(Pi) - B.shape[1]), "on_E": float(torch.linalg.matrix_norm(H @ Pi, ord=2)) / top}
