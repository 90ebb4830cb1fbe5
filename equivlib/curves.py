"""Statistics of training curves: when the equivariance share settles, dips and how runs compare.

A *curve* is a monitor table (:meth:`equivlib.training.EquivarianceMonitor.table`,
or ``run.monitor`` of a cached run) with one row per evaluated step and at least
the columns ``step`` and ``percent`` (the percent of the held-out loss that is
equivariance error); some functions also read ``L``, ``L_mean``, ``L_equiv``,
``se_percent`` or ``train_seconds``.  A flow-matching monitor has one row per
(step, time); :func:`pool_over` turns it into one row per step, and
:func:`split_by` into one curve per time.

::

    curve = run.monitor
    settle_step(curve, 2.0)      # first step from which every evaluation is below 2 %
    dip_step(curve, 10)          # first step at which the percent fell to a tenth of its initial value
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["check_curve", "settle_step", "settle_text", "dip_step", "pool_over", "split_by", "curve_summary",
           "after_dip_text", "loss_at", "time_to", "crossover"]


def check_curve(curve: pd.DataFrame, columns: Iterable[str] = ("step", "percent")) -> pd.DataFrame:
    """The curve sorted by step with a fresh index; a clear error if it is empty, lacks a column or repeats a step."""
    if not isinstance(curve, pd.DataFrame):
        raise TypeError(f"a curve must be a pandas DataFrame, got {type(curve).__name__}")
    missing = [c for c in columns if c not in curve.columns]
    if missing:
        raise ValueError(f"curve has no column(s) {missing}; it has {list(curve.columns)}")
    if curve.empty:
        raise ValueError("curve is empty")
    if curve["step"].duplicated().any():
        extra = [c for c in curve.columns if c not in ("step", "percent", "L", "L_mean", "L_equiv", "se_percent",
                                                         "train_seconds")]
        raise ValueError(f"curve has several rows per step (label column(s) {extra}?): pool them with pool_over "
                         "or split them with split_by")
    return curve.sort_values("step").reset_index(drop=True)


def settle_step(curve: pd.DataFrame, threshold: float, *, start: int = 0) -> int | None:
    """The first evaluated step from which every evaluation is below ``threshold`` percent.

    Only evaluations at ``step >= start`` count (``start=1`` ignores the
    initialisation).  Returns the first counted step when none is at or above
    the threshold, and ``None`` when the last evaluation still is.
    """
    c = check_curve(curve)
    c = c[c["step"] >= start]
    if c.empty:
        raise ValueError(f"curve has no evaluation at step >= {start}")
    above = c.loc[c["percent"] >= threshold, "step"]
    if above.empty:
        return int(c["step"].iloc[0])
    later = c.loc[c["step"] > above.max(), "step"]
    return int(later.min()) if len(later) else None


def settle_text(curve: pd.DataFrame, threshold: float) -> str:
    """:func:`settle_step` in words: "settled below 2 % at step 40", "did not settle ... within 300 steps"."""
    s = settle_step(curve, threshold)
    last = int(curve["step"].max())
    if s is None:
        return f"did not settle below {threshold:g} % within {last} steps"
    if s == int(curve["step"].min()):
        return f"was below {threshold:g} % at every evaluation, from initialisation on"
    return f"settled below {threshold:g} % at step {s}"


def dip_step(curve: pd.DataFrame, factor: float = 10) -> int | None:
    """The first evaluated step at which the percent is at most its first value divided by ``factor`` (None: never)."""
    if not factor > 1:
        raise ValueError(f"the dip factor must be > 1, got {factor!r}")
    c = check_curve(curve)
    hit = c.loc[c["percent"] <= c["percent"].iloc[0] / factor, "step"]
    return None if hit.empty else int(hit.iloc[0])


def pool_over(table: pd.DataFrame, label: str = "t") -> pd.DataFrame:
    """One row per step from a monitor table with one row per (step, ``label``).

    ``L``, ``L_mean`` and ``L_equiv`` are averaged over the label values and
    ``percent`` is ``100 Σ L_equiv / Σ L`` (a weighted mean of the per-label
    percents with weights ``w = L / Σ L``).  Its standard error cannot be built
    from the per-label rows (the weights are random too, and the same samples
    appear under every label), so it is read from the columns
    ``pooled_percent`` / ``pooled_se_percent`` that a monitor with
    ``pool_units`` records (delta method over the independent units, e.g.
    flow-matching chains; :meth:`equivlib.twirl.Decomposition.pool`); the
    recorded pooled percent must agree with the one computed here.
    """
    need = ["step", label, "L", "L_mean", "L_equiv", "pooled_percent", "pooled_se_percent"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise ValueError(f"pool_over({label!r}): the table has no column(s) {missing}"
                         + (" (record them with EquivarianceMonitor(..., split=..., pool_units=...))"
                            if "pooled_se_percent" in missing else ""))
    counts = table.groupby("step")[label].nunique()
    if counts.nunique() != 1:
        raise ValueError(f"pool_over({label!r}): steps have different numbers of {label} values: "
                         f"{counts.to_dict()}")
    def pool(g: pd.DataFrame) -> pd.Series:
        if g["pooled_se_percent"].nunique() != 1 or g["pooled_percent"].nunique() != 1:
            raise ValueError(f"pool_over({label!r}): rows of one step disagree on the recorded pooled values")
        percent = 100 * g["L_equiv"].sum() / g["L"].sum()
        if abs(percent - g["pooled_percent"].iloc[0]) > 1e-9 * max(1.0, abs(percent)):
            raise ValueError(f"pool_over({label!r}): pooled percent {percent} differs from the recorded "
                             f"{g['pooled_percent'].iloc[0]} (unequal numbers of samples per {label}?)")
        return pd.Series({"L": g["L"].mean(), "L_mean": g["L_mean"].mean(), "L_equiv": g["L_equiv"].mean(),
                          "percent": percent, "se_percent": float(g["pooled_se_percent"].iloc[0])})

    t = table.sort_values(["step", label]).reset_index(drop=True)
    out = t.groupby("step")[["L", "L_mean", "L_equiv", "pooled_percent", "pooled_se_percent"]].apply(pool)
    return out.reset_index()


def split_by(table: pd.DataFrame, label: str = "t") -> dict:
    """``{value: curve}``, one curve per value of ``label`` (e.g. per flow-matching time)."""
    if label not in table.columns:
        raise ValueError(f"split_by({label!r}): the table has no such column")
    return {float(v) if isinstance(v, (float, np.floating)) else v:
            g.drop(columns=[label]).sort_values("step").reset_index(drop=True) for v, g in table.groupby(label)}


def curve_summary(curve: pd.DataFrame, threshold: float) -> dict:
    """First, lowest and last percent of a curve, the step of the lowest, and :func:`settle_step`."""
    c = check_curve(curve, ("step", "percent", "se_percent"))
    i = int(c["percent"].idxmin())
    return {"pct0": float(c["percent"].iloc[0]), "pct_min": float(c.loc[i, "percent"]),
            "step_min": int(c.loc[i, "step"]), "pct_final": float(c["percent"].iloc[-1]),
            "se_final": float(c["se_percent"].iloc[-1]), "settle": settle_step(c, threshold),
            "last_step": int(c["step"].iloc[-1])}


def after_dip_text(curve: pd.DataFrame) -> str:
    """What happened between the lowest percent and the last evaluation, in words with numbers."""
    c = check_curve(curve, ("step", "percent", "L_mean", "L_equiv"))
    i, last = int(c["percent"].idxmin()), c.iloc[-1]
    lo = c.loc[i]
    if int(lo["step"]) == int(last["step"]):
        return f"the percent is lowest at the last evaluation, {last['percent']:.2f} %"
    return (f"after its minimum of {lo['percent']:.2f} % at step {int(lo['step'])} the percent "
            f"{'rose' if last['percent'] > lo['percent'] else 'fell'} to {last['percent']:.2f} % by step "
            f"{int(last['step'])}, while the twirled error L_mean fell {lo['L_mean'] / last['L_mean']:.1f}-fold and "
            f"the equivariance error L_equiv changed by a factor {last['L_equiv'] / lo['L_equiv']:.2f}")


def _timed(curve: pd.DataFrame) -> pd.DataFrame:
    c = check_curve(curve, ("step", "L", "train_seconds"))
    c = c[c["train_seconds"] > 0]
    if c.empty:
        raise ValueError("curve has no evaluation after training started (train_seconds > 0)")
    return c


def loss_at(curve: pd.DataFrame, seconds: float) -> float:
    """Held-out loss ``L`` at a training time, interpolated on log-log axes between evaluations.

    Times outside the evaluated range take the nearest evaluation's loss.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    c = _timed(curve)
    return float(np.exp(np.interp(np.log(seconds), np.log(c["train_seconds"]), np.log(c["L"]))))


def time_to(curve: pd.DataFrame, target: float) -> float | None:
    """Training seconds at the first evaluation with ``L <= target`` (None: never)."""
    c = _timed(curve)
    hit = c[c["L"] <= target]
    return None if hit.empty else float(hit["train_seconds"].iloc[0])


def crossover(curve_a: pd.DataFrame, curve_b: pd.DataFrame, n: int = 200) -> dict:
    """Compare two runs' held-out loss against training time on a common log-spaced grid.

    Returns ``t_common`` (the shorter run's training time), ``L_a`` and ``L_b``
    at that time, ``b_ahead`` (``"always"``, ``"never at the end"`` or
    ``"from"``) and ``t_cross``: with ``"from"``, the grid time from which ``b``
    has the lower loss up to ``t_common``.
    """
    a, b = _timed(curve_a), _timed(curve_b)
    t_common = min(float(a["train_seconds"].max()), float(b["train_seconds"].max()))
    t_lo = max(float(a["train_seconds"].min()), float(b["train_seconds"].min()))
    if not t_lo < t_common:
        raise ValueError(f"the runs' timed evaluations do not overlap ({t_lo:.3g} s to {t_common:.3g} s)")
    grid = np.geomspace(t_lo, t_common, n)
    ahead = np.array([loss_at(b, t) < loss_at(a, t) for t in grid])
    out = {"t_common": t_common, "L_a": loss_at(a, t_common), "L_b": loss_at(b, t_common), "t_cross": None}
    if ahead.all():
        out["b_ahead"] = "always"
    elif not ahead[-1]:
        out["b_ahead"] = "never at the end"
    else:
        out["b_ahead"] = "from"
        out["t_cross"] = float(grid[np.flatnonzero(~ahead)[-1] + 1])
    return out
