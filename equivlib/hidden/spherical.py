"""Spherical signals with e3nn: the ``0e + l`` model of Xie & Smidt's App. C.3.

Functions on the sphere form a permutation representation of ``SO(3)``, so a
network that applies a pointwise nonlinearity to spherical signals has hidden
symmetries too.  The input ``(x_0, x_l)`` in ``0e + l`` becomes the signal
``s(r) = w0 x0 Y_0(r) + wl x_l . Y_l(r)`` on an S^2 grid, passes through ReLU
pointwise and is projected back to harmonics; the output is their squared norm.
The constant signals (``wl = 0``) are the hidden fixed points: for odd ``l`` the
inversion ``wl -> -wl`` is a symmetry of the model, for even ``l`` nothing
relates the two halves and the one without the teacher holds a spurious minimum.

* :class:`SphericalSignalModel`: the model on an e3nn grid;
* :func:`s2_landscape`, :func:`s2_loss_fn`, :func:`s2_minima`: the empirical loss
  over ``(w0, wl)`` and its refined minima;
* :func:`s2_aliasing_error`: how far the grid nonlinearity is from equivariant;
* :func:`s2_degree_study`: all of it for several degrees ``l``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..groups import haar_so3, wigner_D
from ..hessian import newton_minimize
from .reps import DTYPE
from .slice_problem import local_minima_grid

__all__ = ["s2_line_gradient", "SphericalSignalModel", "s2_landscape", "s2_loss_fn", "s2_minima", "s2_aliasing_error",
           "s2_degree_study"]


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

    The rotations come from :func:`equivlib.groups.haar_so3` and their Wigner-D
    matrices from :func:`equivlib.groups.wigner_D` (accurate to ~1e-15, so the
    measured error is the grid's, not the Wigner matrices').

    Returns
    -------
    dict with ``coeff_rel_err`` (pooled ``sqrt(sum err^2 / sum ref^2)``),
    ``coeff_rel_err_worst`` (largest per-sample ratio, samples with tiny reference
    excluded) and ``output_rel_err`` (mean absolute change of the output over its
    mean).
    """
    dt = model.dtype
    c = torch.randn(n_signals, (model.lmax_in + 1) ** 2, generator=generator, dtype=dt)
    R = haar_so3(n_rotations, generator=generator, device=model.device)
    Din = wigner_D(model.irreps_in, R).to(dt)  # (R, din, din), float64-accurate
    Dout = wigner_D(model.irreps_out, R).to(dt)
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


def s2_line_gradient(model: SphericalSignalModel, x: torch.Tensor, w_teacher: torch.Tensor, w0_values,
                     h: float = 1e-4) -> dict:
    """The loss gradient across the constant-signal line ``wl = 0``, by autograd and by central differences.

    On ``wl = 0`` the signal ``s = w0 x0 Y_0`` is constant on the sphere, so
    ``relu(s)`` and the indicator ``1[s > 0]`` are constants and
    ``∂f/∂wl = 2 <F relu(s), F(1[s>0] x_l·Y_l)>`` pairs a degree-0 coefficient
    vector with a degree-``l`` one: it vanishes for every input, and so does
    ``∂L/∂wl``.  Returned: the largest ``|∂L/∂wl|`` on the line by autograd
    (``line_autograd``) and by central differences with step ``h``
    (``line_fd``), and for scale the largest gradient norm over the same
    ``w0`` values (``grad_norm``).
    """
    f = s2_loss_fn(model, x, w_teacher)
    auto, fd, norm = [], [], []
    for w0 in torch.as_tensor(w0_values, dtype=x.dtype).tolist():
        w = torch.tensor([w0, 0.0], dtype=x.dtype, device=x.device, requires_grad=True)
        g = torch.autograd.grad(f(w), w)[0]
        auto.append(abs(g[1].item()))
        norm.append(g.norm().item())
        with torch.no_grad():
            up = f(torch.tensor([w0, h], dtype=x.dtype, device=x.device))
            down = f(torch.tensor([w0, -h], dtype=x.dtype, device=x.device))
        fd.append(abs((up - down).item()) / (2 * h))
    return {"line_autograd": max(auto), "line_fd": max(fd), "grad_norm": max(norm)}


def s2_minima(f, Z: torch.Tensor, w0_values: torch.Tensor, wl_values: torch.Tensor,
              merge_tol: float = 1e-4) -> list[torch.Tensor]:
    """Local minima of a ``(w0, wl)`` landscape, refined by Newton steps and deduplicated.

    Parameters
    ----------
    f : callable ``w (2,) -> loss`` (:func:`s2_loss_fn`)
    Z : torch.Tensor, shape ``(len(wl_values), len(w0_values))`` (:func:`s2_landscape`)

    Returns
    -------
    list of tensors ``(w0, wl)``, sorted by loss.
    """
    found = []
    for i, j in local_minima_grid(Z).tolist():
        q = newton_minimize(f, torch.stack([w0_values[j], wl_values[i]]))
        if not any((q - p).abs().sum() < merge_tol for p in found):
            found.append(q)
    return sorted(found, key=lambda q: f(q).item())


def _lowest(f, found, sign: float) -> float:
    """The lowest loss ``f`` among the minima ``found`` with ``sign * wl > 0`` (NaN if none)."""
    vals = [f(q).item() for q in found if sign * q[1].item() > 0]
    return min(vals) if vals else float("nan")


def s2_degree_study(degrees: Sequence[int], w_teacher: torch.Tensor, w_values: torch.Tensor, *,
                    n_samples: int, res_factor: int, n_rotations: int, generator: torch.Generator,
                    lmax_extra: int = 2, n_alias_signals: int = 32):
    """Aliasing error, landscape and minima of the ``0e + l`` model for each degree ``l``.

    For each ``l``: the model with ``lmax_out = l + lmax_extra`` on a square grid of
    ``2 res_factor (lmax_out + 1)`` points a side, its :func:`s2_aliasing_error`
    (``n_alias_signals`` signals, ``n_rotations`` rotations), a Gaussian input sample
    of ``n_samples``, the landscape over ``w_values x w_values`` and its minima.
    ``generator`` is used in that order, degree after degree.

    Returns
    -------
    table : pandas.DataFrame, one row per degree: ``l``, ``grid``, ``aliasing (coeff.)``,
        ``aliasing (output)``, ``asymmetry wl->-wl`` (``max |L(w0, wl) - L(w0, -wl)| / max L``),
        ``|dL/dwl| on wl=0`` and ``(finite diff.)`` (:func:`s2_line_gradient` over ``w_values`` away
        from ``w0 = 0``, where ``relu`` has a kink), ``max |grad L|`` there for scale, ``minima``, ``losses at minima``, ``wl at minima`` (the last two as text),
        ``lowest loss, teacher's side`` and ``lowest loss, other side`` (the lowest loss of the minima with
        ``wl`` of the teacher's sign, and of the other sign; NaN where there is none).
    landscapes : dict ``l -> (Z, minima)`` with ``Z`` from :func:`s2_landscape` and the
        minima from :func:`s2_minima`.
    """
    rows, landscapes = [], {}
    side = 1.0 if float(w_teacher[1]) >= 0 else -1.0  # the teacher's half of the (w0, wl) plane
    for l in degrees:
        lmax = l + lmax_extra
        res = 2 * res_factor * (lmax + 1)
        model = SphericalSignalModel(l, lmax, (res, res))
        alias = s2_aliasing_error(model, n_alias_signals, n_rotations, generator)
        x = torch.randn(n_samples, 2 * l + 2, generator=generator, dtype=DTYPE)
        Z = s2_landscape(model, x, w_values, w_values, w_teacher)
        f = s2_loss_fn(model, x, w_teacher)
        found = s2_minima(f, Z, w_values, w_values)
        landscapes[l] = (Z, found)
        line = s2_line_gradient(model, x, w_teacher, w_values[w_values.abs() > 1e-3])
        rows.append({"l": l, "grid": f"{res}x{res}", "aliasing (coeff.)": alias["coeff_rel_err"],
                     "aliasing (output)": alias["output_rel_err"],
                     "asymmetry wl->-wl": ((Z - Z.flip(0)).abs().max() / Z.max()).item(),
                     "|dL/dwl| on wl=0": line["line_autograd"], "(finite diff.)": line["line_fd"],
                     "max |grad L|": line["grad_norm"],
                     "minima": len(found),
                     "losses at minima": ", ".join(f"{f(q).item():.2e}" for q in found),
                     "wl at minima": ", ".join(f"{q[1].item():+.3f}" for q in found),
                     "lowest loss, teacher's side": _lowest(f, found, side),
                     "lowest loss, other side": _lowest(f, found, -side)})
    return pd.DataFrame(rows), landscapes
