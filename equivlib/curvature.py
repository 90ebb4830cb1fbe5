"""Curvature of the loss decomposition on trained models (chapter 3).

On a :class:`~equivlib.tasks.FixedBatch` (held-out samples with fixed group elements)
the plug-in decomposition is exact, ``L = L_mean + L_equiv``, so its Hessians add up
too.  This module measures them on a parameter subset of a trained model:

* :func:`term_hessians`: the dense Hessians of ``L_mean``, ``L_equiv`` and ``L``;
* :func:`spectrum_row`: the numbers the chapter reports for one spectrum: the
  condition number ``λ_max / λ_min⁺`` at several cutoffs (the first paper's measure,
  which moves with the cutoff), ``λ_1 / λ_k`` (no cutoff) and how much of the
  spectrum is negative;
* :func:`condition_study` (several minibatches at one checkpoint),
  :func:`checkpoint_curvature` (one minibatch at several checkpoints) and
  :func:`condition_summary` (medians and intervals over minibatches);
* :func:`hessian_parts`: each Hessian as its Gauss–Newton part plus its residual
  part, computed separately (Jacobians and a second-order term), which checks the
  chapter's formula against the dense Hessian;
* :func:`landscape`: ``L_mean`` and ``L_equiv`` on one 2-D grid along the top and the
  smallest positive eigenvector of the total-loss Hessian (the paper's Fig. 1C).

Subsets are chosen by module name (:func:`equivlib.hessian.select_parameters`); the
Hessians are formed from batched Hessian-vector products, so subsets stay small
(hundreds of parameters on a CPU, thousands on a GPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import ParameterError
from .hessian import FlatParams, SubsetSpec, dense_hessian, functional, select_parameters, subset_loss, top_ratio
from .stats import mean_ci
from .tasks import FixedBatch, Task
from .training import as_float64
from .twirl import TERMS, _weights, twisted_predictions

__all__ = ["term_hessians", "spectrum_row", "condition_study", "checkpoint_curvature", "condition_summary",
           "hessian_parts", "Landscape", "landscape", "CUTOFFS"]

#: Relative cutoffs ``λ > cutoff · λ_max`` for "positive" in ``λ_max / λ_min⁺``.
CUTOFFS = (1e-8, 1e-6, 1e-4)


def term_hessians(model: torch.nn.Module, batch: FixedBatch, subset: SubsetSpec) -> dict[str, torch.Tensor]:
    """Dense Hessians ``{"L_mean", "L_equiv", "L"}`` of the batch's decomposition w.r.t. ``subset`` (float64).

    Two Hessians are formed; the third is their sum (exact for the plug-in split).
    """
    model = as_float64(model)
    H = {}
    for term in ("L_mean", "L_equiv"):
        f, flat = subset_loss(model, subset, batch.loss(term))
        H[term] = dense_hessian(f, flat.theta0)
    H["L"] = H["L_mean"] + H["L_equiv"]
    return H


def spectrum_row(eigenvalues, *, cutoffs: Sequence[float] = CUTOFFS, k: int = 10) -> dict:
    """Summary of one spectrum: ``lambda_max``, ``lambda_min``, ``neg_share`` (eigenvalues below
    ``-1e-8·λ_max``), ``kappa@c`` = ``λ_max / λ_min⁺`` with ``λ_min⁺`` the smallest eigenvalue above
    ``c·λ_max``, and ``top_ratio`` = ``λ_1 / λ_k`` (``k`` capped at the number of positive eigenvalues).
    """
    lam = np.sort(np.asarray(eigenvalues, dtype=float))
    if lam.size < 2 or not np.isfinite(lam).all():
        raise ParameterError("a spectrum needs at least two finite eigenvalues")
    top = lam[-1]
    if top <= 0:
        raise ParameterError(f"the largest eigenvalue is {top:.3g}: no positive curvature to condition")
    row = {"n": lam.size, "lambda_max": top, "lambda_min": lam[0], "neg_share": float(np.mean(lam < -1e-8 * top))}
    for c in cutoffs:
        pos = lam[lam > c * top]
        row[f"kappa@{c:g}"] = float(top / pos[0])
    n_pos = int((lam > 0).sum())
    row["top_k"] = min(k, n_pos)
    row["top_ratio"] = top_ratio(lam, row["top_k"]) if n_pos >= 2 else float("nan")
    return row


def _rows(H: dict, cutoffs, k) -> list[dict]:
    return [{"term": term, **spectrum_row(torch.linalg.eigvalsh(H[term]).cpu().numpy(), cutoffs=cutoffs, k=k)}
            for term in TERMS]


def condition_study(model: torch.nn.Module, task: Task, subset: SubsetSpec, *, n_batches: int, n_samples: int,
                    n_elements: int, cutoffs: Sequence[float] = CUTOFFS, k: int = 10,
                    progress: bool = False) -> pd.DataFrame:
    """Spectra of the three Hessians on ``n_batches`` disjoint held-out minibatches (one model).

    One row per ``(batch, term)`` with the columns of :func:`spectrum_row`; ``attrs["n_params"]``
    is the subset's size.
    """
    if isinstance(n_batches, bool) or not isinstance(n_batches, int) or n_batches < 1:
        raise ParameterError(f"n_batches must be a positive integer, got {n_batches!r}")
    model = as_float64(model)
    rows = []
    for b in tqdm(range(n_batches), desc=f"Hessians ({task.name})", disable=not progress, leave=False):
        H = term_hessians(model, task.fixed_batch(n_samples, n_elements, index=b), subset)
        rows += [{"batch": b, **r} for r in _rows(H, cutoffs, k)]
    out = pd.DataFrame(rows)
    out.attrs["n_params"] = int(H["L"].shape[0])
    return out


def checkpoint_curvature(load_model: Callable[[int], torch.nn.Module], steps: Sequence[int], task: Task,
                         subset: SubsetSpec, *, n_samples: int, n_elements: int,
                         cutoffs: Sequence[float] = CUTOFFS, k: int = 10, progress: bool = False) -> pd.DataFrame:
    """The same spectra on minibatch 0 at each checkpoint ``step`` (one row per ``(step, term)``)."""
    batch = task.fixed_batch(n_samples, n_elements, index=0)
    rows = []
    for s in tqdm(list(steps), desc=f"checkpoints ({task.name})", disable=not progress, leave=False):
        rows += [{"step": int(s), **r} for r in _rows(term_hessians(load_model(int(s)), batch, subset), cutoffs, k)]
    return pd.DataFrame(rows)


def condition_summary(table: pd.DataFrame, *, column: str = "kappa@1e-06", level: float = 0.95) -> pd.DataFrame:
    """Per term, over minibatches: the median of ``column`` and a CI of its geometric mean; then the
    per-minibatch ratio ``L_mean / L_equiv`` (geometric mean, CI, and how many minibatches have
    ``L_equiv`` the better conditioned).  Needs at least two minibatches."""
    if column not in table:
        raise ParameterError(f"no column {column!r}; have {list(table.columns)}")
    wide = table.pivot(index="batch", columns="term", values=column)
    if len(wide) < 2:
        raise ParameterError("condition_summary needs at least two minibatches")
    out = {}
    for term in TERMS:
        ci = mean_ci(np.log10(wide[term].to_numpy()), level=level)
        out[term] = {"median": float(wide[term].median()), "geo_mean": 10 ** ci.estimate,
                     "low": 10 ** ci.low, "high": 10 ** ci.high}
    ratio = np.log10((wide["L_mean"] / wide["L_equiv"]).to_numpy())
    ci = mean_ci(ratio, level=level)
    out["L_mean / L_equiv"] = {"median": float(10 ** np.median(ratio)), "geo_mean": 10 ** ci.estimate,
                               "low": 10 ** ci.low, "high": 10 ** ci.high,
                               "equiv_better": int((ratio > 0).sum()), "n_batches": len(ratio)}
    return pd.DataFrame(out).T


# --------------------------------------------------------------------------- Hessian parts
def _twisted_fn(model, flat: FlatParams, batch: FixedBatch):
    def Z(theta):
        params = flat.unflatten(theta)
        z = twisted_predictions(functional(model, params), batch.x, batch.sample, batch.action, extras=batch.extras, memory_budget_mb=None)
        return z.reshape(-1, *z.shape[2:])  # (N, B, *out)
    return Z


def hessian_parts(model: torch.nn.Module, batch: FixedBatch, subset: SubsetSpec) -> dict[str, dict[str, torch.Tensor]]:
    """Each term's Hessian as Gauss–Newton part + residual part, computed independently.

    With twisted predictions ``Z_g`` (N group elements), their mean ``μ``, Jacobians
    ``J_g = ∂Z_g/∂θ``, ``J̄`` their mean, weights ``w`` (the mask) and ``D`` valid entries:

    * ``L_equiv``: GN ``= mean_b 2/(N D) Σ_g (J_g − J̄)ᵀ W (J_g − J̄)``, residual
      ``= mean_b 2/(N D) Σ_g Σ_k w_k (Z_g − μ)_k ∇²Z_{g,k}``;
    * ``L_mean``: GN ``= mean_b 2/D J̄ᵀ W J̄``, residual ``= mean_b 2/D Σ_k w_k (μ − y)_k ∇²μ_k``.

    Jacobians by forward mode (dual numbers), residuals as dense Hessians of
    ``θ ↦ ⟨r, Z(θ)⟩`` with the coefficient ``r`` held fixed.  Returns
    ``{term: {"gauss_newton", "residual", "dense"}}``, ``dense`` from :func:`term_hessians`,
    so ``gauss_newton + residual == dense`` checks the formula.
    """
    model = as_float64(model)
    flat = FlatParams(select_parameters(model, subset))
    theta = flat.theta0
    Zf = _twisted_fn(model, flat, batch)
    y = batch.y
    w, D = _weights(batch.mask, y)  # the decomposition's entry weights and valid entries per sample
    B = y.shape[0]
    with torch.no_grad():
        Z = torch.where(w > 0, Zf(theta), 0.0)
    N = Z.shape[0]
    mu = Z.mean(0)
    shape = (B,) + (1,) * (y.ndim - 1)
    c_eq = (2.0 / (B * N * D)).reshape(shape) * w          # (B, *out)
    c_mn = (2.0 / (B * D)).reshape(shape) * w
    # forward mode, one product per parameter (autograd's dual numbers: torch.func would wrap the
    # group elements too, and the voxel action reads them on the host)
    import torch.autograd.forward_ad as fwAD
    cols = []
    with torch.no_grad(), fwAD.dual_level():
        for e in torch.eye(theta.numel(), dtype=theta.dtype, device=theta.device):
            cols.append(fwAD.unpack_dual(Zf(fwAD.make_dual(theta, e))).tangent)
    J = torch.stack(cols, -1)                                # (N, B, *out, n)
    J = J * (w > 0)[None, ..., None]
    Jbar = J.mean(0)
    dJ = (J - Jbar).flatten(1, -2)                           # (N, B·out, n)
    ce, cm = c_eq.reshape(-1), c_mn.reshape(-1)
    gn_eq = torch.einsum("gon,o,gom->nm", dJ, ce, dJ)
    Jb = Jbar.flatten(0, -2)
    gn_mn = torch.einsum("on,o,om->nm", Jb, cm, Jb)
    r_eq, r_mn = (c_eq * (Z - mu)).detach(), (c_mn * (mu - torch.where(w > 0, y, 0.0))).detach()
    res_eq = dense_hessian(lambda t: (r_eq * Zf(t)).sum(), theta)
    res_mn = dense_hessian(lambda t: (r_mn * Zf(t).mean(0)).sum(), theta)
    dense = term_hessians(model, batch, subset)
    return {"L_mean": {"gauss_newton": gn_mn, "residual": res_mn, "dense": dense["L_mean"]},
            "L_equiv": {"gauss_newton": gn_eq, "residual": res_eq, "dense": dense["L_equiv"]}}


# --------------------------------------------------------------------------- landscapes
@dataclass
class Landscape:
    """``L_mean`` and ``L_equiv`` on the grid ``θ + a·u + b·v`` (``a`` along ``u``: rows are ``b``).

    ``u``: top eigenvector of the total-loss Hessian, ``v``: its smallest eigenvector above
    ``cutoff · λ_max``; ``a``/``b`` in parameter units (``u``, ``v`` have unit norm).
    """

    a: np.ndarray
    b: np.ndarray
    L_mean: np.ndarray
    L_equiv: np.ndarray
    lambda_u: float
    lambda_v: float
    center: dict


def landscape(model: torch.nn.Module, batch: FixedBatch, subset: SubsetSpec, *, n: int = 9, extent: float = 0.5,
              cutoff: float = 1e-6, H: torch.Tensor | None = None) -> Landscape:
    """:class:`Landscape` on an ``n × n`` grid of half-width ``extent · ‖θ_subset‖`` in both directions.

    ``H``: the total-loss Hessian if already formed (else formed here).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3 or n % 2 == 0:
        raise ParameterError(f"n must be an odd integer >= 3 (the grid holds its centre), got {n!r}")
    if not extent > 0:
        raise ParameterError(f"extent must be positive, got {extent!r}")
    model = as_float64(model)
    flat = FlatParams(select_parameters(model, subset))
    H = term_hessians(model, batch, subset)["L"] if H is None else H
    lam, vec = torch.linalg.eigh(H)
    if lam[-1] <= 0:
        raise ParameterError("the total-loss Hessian has no positive eigenvalue")
    pos = torch.nonzero(lam > cutoff * lam[-1]).flatten()
    u, v = vec[:, -1], vec[:, pos[0]]
    half = extent * float(flat.theta0.norm())
    a = np.linspace(-half, half, n)
    grids = {t: np.empty((n, n)) for t in ("L_mean", "L_equiv")}
    with torch.no_grad():
        for i, bb in enumerate(a):
            for j, aa in enumerate(a):
                params = flat.unflatten(flat.theta0 + aa * u + bb * v)
                d = batch.decompose(functional(model, params))
                grids["L_mean"][i, j], grids["L_equiv"][i, j] = float(d.L_mean.mean()), float(d.L_equiv.mean())
    return Landscape(a, a.copy(), grids["L_mean"], grids["L_equiv"], float(lam[-1]), float(lam[pos[0]]),
                     batch.terms(model))
