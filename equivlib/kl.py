"""Gradients of the loss decomposition: how much of ``∇L`` is ``∇L_equiv`` (chapter 4).

For a fixed batch with fixed group elements (:meth:`equivlib.tasks.Task.fixed_batch`)
the plug-in decomposition ``L = L_mean + L_equiv`` is exact, so ``∇L - ∇L_mean =
∇L_equiv`` exactly.  Section 4.1 of the first paper bounds the relative error of
descending on ``L`` instead of ``L_mean``, with ``eps = L_equiv / L_mean``:

* Prop. 2: ``‖∇L - ∇L_mean‖/‖∇L_mean‖ <= eps + (L_mean/‖∇L_mean‖) sqrt(2 M_eps eps)``
  (``M_eps``: a smoothness constant of ``eps``), :func:`prop2_bound`;
* Prop. 3: ``... <= sqrt(2 M_equiv / c) sqrt(L_equiv / L_mean^α)`` where
  ``‖∇L_mean‖² >= c L_mean^α`` (Kurdyka–Łojasiewicz) and ``‖∇L_equiv‖² <= 2 M_equiv
  L_equiv`` (self-bounding property of a non-negative ``M``-smooth function),
  :func:`prop3_bound`.

This module measures every quantity in these bounds on trained networks:

* :func:`gradient_stats` (one point), :func:`trajectory` (checkpoints) and
  :func:`perturbations` (random directions around a point): losses, gradient norms,
  their ratios, ``‖∇eps‖`` and the smallest constants for which the self-bounding
  inequalities hold at the point (``required_M_equiv``, ``required_M_eps``);
* :func:`smoothness`: the top Hessian eigenvalue of ``L_equiv`` or ``eps`` (a local
  smoothness constant, to compare with the required ones);
* :func:`fit_kl`: the KL exponent ``α`` and the empirical envelope ``c`` from points
  ``(L_mean, ‖∇L_mean‖)``;
* :func:`lag_correlations`: do changes of the loss ratio go with changes of the
  gradient ratio along a trajectory?

Every gradient is taken in float64 on a copy of the model (or by
``torch.func.functional_call``): the models passed in are never modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from .config import ParameterError, derived_generator
from .hessian import FlatParams, functional, select_parameters, subset_loss, top_eigenvalue
from .stats import Interval, correlation_ci, slope_ci
from .training import as_float64

__all__ = ["term_gradients", "gradient_stats", "trajectory", "perturbations", "smoothness", "KLFit", "fit_kl",
           "prop2_bound", "prop3_bound", "lag_correlations", "correlation_table", "BoundStudy", "bound_study"]

#: ``L_equiv <= ZERO_REL * L`` counts as zero: float64 rounding leaves an exactly equivariant
#: model a spread of ~1e-16 relative in its predictions, ~1e-32 relative in ``L_equiv``.
ZERO_REL = 1e-24


def _float64(model: torch.nn.Module, subset):
    """``(model, names)``: a float64 eval-mode copy unless ``model`` already is one, and the subset's names."""
    names = list(select_parameters(model, subset))  # names, so that tensors given as the subset map onto a copy
    return as_float64(model), names


def _gradients_at(model, flat: FlatParams, theta: torch.Tensor, batch) -> dict:
    from .twirl import decompose, twisted_predictions

    q = theta.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        params = flat.unflatten(q)
        Z = twisted_predictions(functional(model, params), batch.x, batch.sample, batch.action, extras=batch.extras,
                                memory_budget_mb=None)
        d = decompose(Z, batch.y, batch.sample, mask=batch.mask, estimator="plugin")
        L_mean, L_equiv = d.L_mean.mean(), d.L_equiv.mean()
        g_mean = torch.autograd.grad(L_mean, (q,), retain_graph=True, allow_unused=True)[0]
        g_equiv = torch.autograd.grad(L_equiv, (q,), allow_unused=True)[0]
    g_mean = torch.zeros_like(q) if g_mean is None else g_mean.detach()
    g_equiv = torch.zeros_like(q) if g_equiv is None else g_equiv.detach()
    Lm, Le = float(L_mean.detach()), float(L_equiv.detach())
    g_eps = (g_equiv * Lm - Le * g_mean) / Lm**2 if Lm > 0 else torch.full_like(q, float("nan"))
    return {"L_mean": Lm, "L_equiv": Le, "grad_mean": g_mean, "grad_equiv": g_equiv, "grad_eps": g_eps}


def term_gradients(model: torch.nn.Module, batch, *, subset=None) -> dict:
    """``L_mean``, ``L_equiv`` (floats) and the flat gradients ``grad_mean``, ``grad_equiv``, ``grad_eps``.

    One forward pass (twisted predictions, plug-in decomposition) serves both
    gradients; ``grad_eps`` is the quotient rule
    ``(∇L_equiv L_mean - L_equiv ∇L_mean) / L_mean²``.  ``names``: the parameters, in
    the order of the flat vectors.  ``∇L = grad_mean + grad_equiv``.
    """
    model, names = _float64(model, subset)
    flat = FlatParams(select_parameters(model, names))
    return {**_gradients_at(model, flat, flat.theta0, batch), "names": flat.names}


def _div(a: float, b: float) -> float:
    return a / b if b != 0 else float("nan")


def _stats(g: dict) -> dict:
    Lm, Le = g["L_mean"], g["L_equiv"]
    L = Lm + Le
    gm, ge = g["grad_mean"], g["grad_equiv"]
    gl = gm + ge
    n_mean, n_equiv, n_L = (float(v.norm()) for v in (gm, ge, gl))
    n_eps = float(g["grad_eps"].norm())
    eps = _div(Le, Lm)
    zero = Le <= ZERO_REL * L
    return {"L": L, "L_mean": Lm, "L_equiv": Le, "grad_L": n_L, "grad_mean": n_mean, "grad_equiv": n_equiv,
            "grad_ratio": _div(n_equiv, n_L), "rel_error": _div(n_equiv, n_mean),
            "cosine": float(np.clip(_div(float(gl @ gm), n_L * n_mean), -1.0, 1.0)),  # NaN stays NaN
            "loss_ratio": _div(Le, L), "eps": eps, "grad_eps": n_eps,
            "required_M_equiv": float("nan") if zero else n_equiv**2 / (2 * Le),
            "required_M_eps": float("nan") if zero or not eps > 0 else n_eps**2 / (2 * eps)}


def gradient_stats(model: torch.nn.Module, batch, *, subset=None) -> dict:
    """Losses and gradient norms of the decomposition at ``model``'s parameters, as floats.

    ``batch``: a :class:`~equivlib.tasks.FixedBatch` (inputs, targets, group elements).
    Gradients are with respect to ``subset`` (see :func:`equivlib.hessian.select_parameters`;
    ``None``: all), in float64.  Keys: ``L, L_mean, L_equiv``; the norms ``grad_L,
    grad_mean, grad_equiv``; ``grad_ratio = ‖∇L_equiv‖/‖∇L‖``; ``rel_error =
    ‖∇L - ∇L_mean‖/‖∇L_mean‖`` (the left side of Props. 2 and 3); ``cosine`` of
    ``∇L`` and ``∇L_mean``; ``loss_ratio = L_equiv/L``; ``eps = L_equiv/L_mean``;
    ``grad_eps = ‖∇eps‖``; ``required_M_equiv = ‖∇L_equiv‖²/(2 L_equiv)`` and
    ``required_M_eps = ‖∇eps‖²/(2 eps)``, the smallest constants for which the
    self-bounding inequalities hold at this point.  Ratios with a zero denominator are
    NaN; so are both ``required_M_*`` where ``L_equiv <= ZERO_REL · L`` (an equivariant
    model: the ratio is 0/0 up to rounding there, and every constant works).
    """
    return _stats(term_gradients(model, batch, subset=subset))


def trajectory(load_model: Callable[[int], torch.nn.Module], steps: Iterable[int], batch, *, subset=None,
               progress: bool = False) -> pd.DataFrame:
    """:func:`gradient_stats` at each checkpoint: one row per step (column ``step`` first)."""
    steps = list(steps)
    if progress:
        from tqdm.auto import tqdm
        steps_iter = tqdm(steps, desc="gradient stats")
    else:
        steps_iter = steps
    rows = [{"step": s, **gradient_stats(load_model(s), batch, subset=subset)} for s in steps_iter]
    return pd.DataFrame(rows, columns=["step", *_COLUMNS])


def perturbations(model: torch.nn.Module, batch, *, radii, n_directions: int, seed: int = 0,
                  subset=None) -> pd.DataFrame:
    """:func:`gradient_stats` at random points around the model's parameters.

    ``n_directions`` Gaussian directions over the subset (seeded by
    ``derived_generator(seed, "kl-perturbations")``) are drawn once and used at every
    radius, each scaled so that ``‖δ‖ = radius · ‖θ_subset‖`` (relative radii).  Rows:
    the unperturbed point first (``radius = 0``, ``direction = -1``), then
    ``(radius, direction)`` for each radius in order and direction ``0 .. n-1``.
    The model is not modified (``torch.func.functional_call``).
    """
    radii = np.asarray(radii, dtype=float).reshape(-1)
    if radii.size == 0 or not np.isfinite(radii).all() or (radii <= 0).any():
        raise ParameterError(f"radii must be positive and finite (radius 0 is always included), got {radii.tolist()}")
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ParameterError(f"n_directions must be an integer >= 1, got {n_directions!r}")
    model, names = _float64(model, subset)
    flat = FlatParams(select_parameters(model, names))
    theta0 = flat.theta0
    scale = float(theta0.norm())
    if scale == 0:
        raise ParameterError("the parameter subset is zero: relative radii are undefined")
    z = torch.randn(n_directions, flat.n, generator=derived_generator(seed, "kl-perturbations"), dtype=torch.float64)
    z = (z / z.norm(dim=1, keepdim=True)).to(dtype=theta0.dtype, device=theta0.device)
    rows = [{"radius": 0.0, "direction": -1, **_stats(_gradients_at(model, flat, theta0, batch))}]
    for r in radii:
        for j in range(n_directions):
            g = _gradients_at(model, flat, theta0 + float(r) * scale * z[j], batch)
            rows.append({"radius": float(r), "direction": j, **_stats(g)})
    return pd.DataFrame(rows, columns=["radius", "direction", *_COLUMNS])


def smoothness(model: torch.nn.Module, batch, *, term: str = "L_equiv", subset=None, tol: float = 1e-3) -> dict:
    """Top Hessian eigenvalue of ``term`` (``"L_equiv"``, ``"eps"``, ``"L_mean"`` or ``"L"``) at the model.

    ``eps = L_equiv / L_mean`` as a function of the subset's flat parameters; the
    eigenvalue is :func:`equivlib.hessian.top_eigenvalue` (Lanczos, relative accuracy
    ``tol``).  Returns ``{"value", "n_hvp", "seconds"}``.
    """
    if term not in ("L", "L_mean", "L_equiv", "eps"):
        raise ParameterError(f"term must be 'L', 'L_mean', 'L_equiv' or 'eps', got {term!r}")
    model, names = _float64(model, subset)
    if term == "eps":
        f_equiv, flat = subset_loss(model, names, batch.loss("L_equiv"))
        f_mean, _ = subset_loss(model, names, batch.loss("L_mean"))
        f = lambda theta: f_equiv(theta) / f_mean(theta)  # noqa: E731
    else:
        f, flat = subset_loss(model, names, batch.loss(term))
    res = top_eigenvalue(f, flat.theta0, tol=tol)
    return {k: res[k] for k in ("value", "n_hvp", "seconds")}


_COLUMNS = ["L", "L_mean", "L_equiv", "grad_L", "grad_mean", "grad_equiv", "grad_ratio", "rel_error", "cosine",
            "loss_ratio", "eps", "grad_eps", "required_M_equiv", "required_M_eps"]


# --------------------------------------------------------------------------- the bounds
@dataclass(frozen=True)
class KLFit:
    """The KL inequality ``‖∇L_mean‖² >= c L_mean^α`` fitted to points (:func:`fit_kl`)."""

    alpha: float
    c: float
    alpha_fit: float
    slope_interval: Interval
    n: int


def _positive(a, name: str, *, allow_zero: bool = False) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if not np.isfinite(a).all():
        raise ParameterError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite values")
    bad = (a < 0) if allow_zero else (a <= 0)
    if bad.any():
        raise ParameterError(f"{name} must be {'non-negative' if allow_zero else 'positive'}; "
                             f"{int(bad.sum())} values are not (smallest {a.min():.3g})")
    return a


def _check_alpha(alpha) -> np.ndarray:
    a = np.asarray(alpha, dtype=float)
    if not (np.isfinite(a).all() and (a >= 1).all() and (a < 2).all()):
        raise ParameterError(f"alpha must be in [1, 2), got {alpha!r}")
    return a


def fit_kl(L_mean, grad_mean, *, alpha: float | None = None, level: float = 0.95) -> KLFit:
    """Fit ``‖∇L_mean‖² >= c L_mean^α`` to points ``(L_mean_i, ‖∇L_mean‖_i)``.

    ``alpha_fit`` is the least-squares slope of ``log ‖∇L_mean‖²`` on ``log L_mean``
    (``slope_interval``: its t interval, :func:`equivlib.stats.slope_ci`); ``alpha``
    is the given value or ``alpha_fit`` clipped into ``[1, 2)`` (at the top, to the
    largest float below 2).  ``c = min_i ‖∇L_mean‖_i² / L_mean_i^α`` is an empirical
    envelope: the largest constant for which the inequality holds at every given
    point, not an estimate of a population constant (it only falls as points are
    added).  Needs at least 3 positive, finite points with ``L_mean`` not constant.
    """
    L, g = _positive(L_mean, "L_mean").reshape(-1), _positive(grad_mean, "grad_mean").reshape(-1)
    if L.size != g.size:
        raise ParameterError(f"L_mean and grad_mean differ in length: {L.size} vs {g.size}")
    if L.size < 3:
        raise ParameterError(f"fit_kl needs at least 3 points, got {L.size}")
    if np.ptp(L) == 0:
        raise ParameterError("L_mean is constant: the exponent cannot be fitted")
    ci = slope_ci(np.log(L), np.log(g**2), level=level)
    if alpha is None:
        a = float(min(max(ci.estimate, 1.0), np.nextafter(2.0, 0.0)))
    else:
        a = float(_check_alpha(alpha))
    c = float(np.min(g**2 / L**a))
    return KLFit(a, c, float(ci.estimate), ci, int(L.size))


def prop2_bound(eps, L_mean, grad_mean, M_eps) -> np.ndarray:
    """Prop. 2's bound ``eps + (L_mean / ‖∇L_mean‖) sqrt(2 M_eps eps)`` on ``rel_error`` (broadcast)."""
    eps, L = _positive(eps, "eps", allow_zero=True), _positive(L_mean, "L_mean", allow_zero=True)
    g, M = _positive(grad_mean, "grad_mean"), _positive(M_eps, "M_eps", allow_zero=True)
    return np.asarray(eps + L / g * np.sqrt(2 * M * eps))


def prop3_bound(L_equiv, L_mean, M_equiv, c, alpha) -> np.ndarray:
    """Prop. 3's bound ``sqrt(2 M_equiv / c) sqrt(L_equiv / L_mean^α)`` on ``rel_error`` (broadcast)."""
    Le, L = _positive(L_equiv, "L_equiv", allow_zero=True), _positive(L_mean, "L_mean")
    M, c, a = _positive(M_equiv, "M_equiv", allow_zero=True), _positive(c, "c"), _check_alpha(alpha)
    return np.asarray(np.sqrt(2 * M / c) * np.sqrt(Le / L**a))


# --------------------------------------------------------------------------- along a trajectory
def lag_correlations(df: pd.DataFrame, x: str = "loss_ratio", y: str = "grad_ratio", lags=(1, 2, 3),
                     method: str = "spearman", level: float = 0.95) -> pd.DataFrame:
    """Correlation of ``Δlog x`` with ``Δlog y`` between rows ``i`` and ``i + k`` (sorted by ``step``).

    One row per lag with ``lag, r, low, high, n, p_value, note``
    (:func:`equivlib.stats.correlation_ci`).  A lag with fewer than 4 pairs, or with
    constant changes, gets NaN and says so in ``note`` (empty otherwise).  For
    ``k > 1`` consecutive pairs overlap, so the changes are not independent and the
    interval is optimistic.
    """
    for col in ("step", x, y):
        if col not in df.columns:
            raise ParameterError(f"column {col!r} missing; the frame has {list(df.columns)}")
    d = df.sort_values("step")
    logs = {}
    for col in (x, y):
        v = d[col].to_numpy(dtype=float)
        if not np.isfinite(v).all() or (v <= 0).any():
            raise ParameterError(f"column {col!r} must be positive and finite for log changes")
        logs[col] = np.log(v)
    rows = []
    for k in lags:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParameterError(f"lags must be integers >= 1, got {k!r}")
        dx, dy = logs[x][k:] - logs[x][:-k], logs[y][k:] - logs[y][:-k]
        n = int(dx.size)
        row = {"lag": int(k), "r": np.nan, "low": np.nan, "high": np.nan, "n": n, "p_value": np.nan, "note": ""}
        if n < 4:
            row["note"] = f"too few pairs ({n} < 4)"
        elif np.ptp(dx) == 0 or np.ptp(dy) == 0:
            row["note"] = f"constant changes of {x if np.ptp(dx) == 0 else y}"
        else:
            cor = correlation_ci(dx, dy, method=method, level=level)
            row.update(r=cor.r, low=cor.interval.low, high=cor.interval.high, p_value=cor.p_value)
        rows.append(row)
    return pd.DataFrame(rows, columns=["lag", "r", "low", "high", "n", "p_value", "note"])


def correlation_table(trajectories: dict, x: str = "loss_ratio", y: str = "grad_ratio",
                      level: float = 0.95) -> pd.DataFrame:
    """Log-log Pearson and Spearman correlations of ``x`` and ``y`` per trajectory (one row per key).

    Checkpoints where either is not positive (an exactly equivariant start) are left out
    and counted in ``dropped``.
    """
    rows = []
    for label, df in trajectories.items():
        d = df[(df[x] > 0) & (df[y] > 0)]
        row = {"run": label, "n": len(d), "dropped": len(df) - len(d)}
        for method in ("pearson", "spearman"):
            cor = correlation_ci(d[x], d[y], method=method, level=level, log=True)
            row.update({method: cor.r, f"{method}_low": cor.interval.low, f"{method}_high": cor.interval.high,
                        f"{method}_p": cor.p_value})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class BoundStudy:
    """Props. 2 and 3 checked on points near a trained model (:func:`bound_study`).

    ``points``: :func:`gradient_stats` on the subset at the final checkpoint, at random
    perturbations of it and at the last checkpoints before it (``source``), with the two
    bounds (``prop2``, ``prop3``) beside the measured ``rel_error``; ``fit``: the KL fit on
    these points; ``M_equiv``, ``M_eps``: top Hessian eigenvalues of ``L_equiv`` and
    ``eps`` at the final checkpoint (local smoothness constants, measured independently of
    the gradients); ``seconds``.
    """

    points: pd.DataFrame
    fit: KLFit
    M_equiv: float
    M_eps: float
    seconds: float

    def summary(self) -> dict:
        """Fractions of points where each bound holds, where it is uninformative (>= 1), and
        its median ratio to the measured error; whether the measured smoothness constants cover
        the constants the points require."""
        p = self.points
        out = {"n": len(p), "alpha": self.fit.alpha, "alpha_fit": self.fit.alpha_fit,
               "alpha_low": self.fit.slope_interval.low, "alpha_high": self.fit.slope_interval.high, "c": self.fit.c,
               "M_equiv": self.M_equiv, "max_required_M_equiv": float(p["required_M_equiv"].max()),
               "M_eps": self.M_eps, "max_required_M_eps": float(p["required_M_eps"].max())}
        for b in ("prop2", "prop3"):
            out[f"{b}_holds"] = float((p["rel_error"] <= p[b] * (1 + 1e-9)).mean())
            out[f"{b}_uninformative"] = float((p[b] >= 1).mean())
            out[f"{b}_tightness"] = float((p[b] / p["rel_error"]).median())
        return out


def bound_study(load_model: Callable[[int], torch.nn.Module], steps, batch, *, subset, radii, n_directions: int,
                late: int, seed: int = 0, tol: float = 1e-3) -> BoundStudy:
    """Measure every constant of Props. 2 and 3 near the last checkpoint and evaluate both bounds.

    The neighbourhood ``U`` is sampled by the final checkpoint, ``n_directions`` random
    perturbations at each relative radius in ``radii`` (:func:`perturbations`) and the
    ``late`` checkpoints before the last.  On these points: the KL fit (:func:`fit_kl`, so
    the KL inequality holds on them by construction), and the top Hessian eigenvalues of
    ``L_equiv`` and ``eps`` at the final checkpoint as the smoothness constants (so the
    self-bounding inequalities may fail at other points, which the summary reports).
    """
    import time

    steps = sorted(int(s) for s in steps)
    if isinstance(late, bool) or not isinstance(late, int) or not 0 <= late < len(steps):
        raise ParameterError(f"late must be an integer in [0, {len(steps) - 1}], got {late!r}")
    t0 = time.perf_counter()
    final = load_model(steps[-1])
    pts = perturbations(final, batch, radii=radii, n_directions=n_directions, seed=seed, subset=subset)
    pts.insert(0, "source", np.where(pts["radius"] == 0, "final checkpoint", "perturbed"))
    pts.insert(1, "step", steps[-1])
    if late:
        tr = trajectory(load_model, steps[-1 - late:-1], batch, subset=subset)
        tr.insert(0, "source", "late checkpoint")
        pts = pd.concat([pts, tr.assign(radius=np.nan, direction=-1)], ignore_index=True)
    fit = fit_kl(pts["L_mean"], pts["grad_mean"])
    M_equiv = smoothness(final, batch, term="L_equiv", subset=subset, tol=tol)["value"]
    M_eps = smoothness(final, batch, term="eps", subset=subset, tol=tol)["value"]
    pts["prop2"] = prop2_bound(pts["eps"], pts["L_mean"], pts["grad_mean"], max(M_eps, 0.0))
    pts["prop3"] = prop3_bound(pts["L_equiv"], pts["L_mean"], max(M_equiv, 0.0), fit.c, fit.alpha)
    return BoundStudy(pts, fit, M_equiv, M_eps, time.perf_counter() - t0)
