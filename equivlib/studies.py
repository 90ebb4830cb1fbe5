"""Estimator studies: bias, standard error and cost of finite-sample twirls.

These are the experiments of chapter 1, kept here so that the chapter stays
readable and other chapters (and users) can run them on their own models.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .curves import check_curve, crossover, dip_step, loss_at
from .groups import Action, GroupSample, element_indices, exhaustive
from .training import float64_copy
from .twirl import TwirledModel, bootstrap_se, decompose, decompose_general, decompose_model, twisted_predictions

__all__ = ["identity_check", "resampling_study", "ratio_bias", "scheme_study", "se_ratio_table",
           "twirled_inference_study", "checkpoint_split_study", "CheckpointSplit", "sweep_table", "race_table"]


def _summ(d) -> dict:
    s = d.summary()
    return {k: s[k] for k in ("L", "L_mean", "L_equiv", "percent")}


def identity_check(model: Callable, x: torch.Tensor, y: torch.Tensor, sample: GroupSample, action: Action, *,
                   mask: torch.Tensor | None = None, extras: Mapping[str, torch.Tensor] | None = None) -> dict:
    """The plug-in decomposition of ``model`` on ``(x, y)`` and how exactly ``L = L_mean + L_equiv`` holds.

    Returns the means ``L``, ``L_mean``, ``L_equiv``, the ``percent``, the largest per-sample
    violation ``max |L-L_mean-L_equiv|`` and the smallest per-sample term ``min term`` (the
    plug-in terms are non-negative).  Runs without gradients; evaluate a float64 model.
    """
    with torch.no_grad():
        d = decompose_model(model, x, y, sample, action, mask=mask, extras=extras, estimator="plugin")
    return {"L": d.L.mean().item(), "L_mean": d.L_mean.mean().item(), "L_equiv": d.L_equiv.mean().item(),
            "percent": d.percent, "max |L-L_mean-L_equiv|": (d.L - d.L_mean - d.L_equiv).abs().max().item(),
            "min term": min(d.L_mean.min().item(), d.L_equiv.min().item())}


def resampling_study(
    Z_pool: torch.Tensor,
    y: torch.Tensor,
    Ns,
    n_reps: int,
    *,
    generator: torch.Generator,
    mask: torch.Tensor | None = None,
    n_boot: int = 100,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Bias and standard error of the estimators against an exactly known population.

    ``Z_pool (P, B, *out)`` holds twisted predictions for ``P`` iid group
    elements per sample.  The population is the uniform distribution on the
    pool, whose decomposition is known exactly (plug-in over the whole pool).
    Each repetition draws ``N`` elements per sample *with replacement* from the
    pool — an exact iid sample from that population — and records the plug-in
    and the unbiased estimates, plus the bootstrap standard error of the first
    repetition for each ``N`` (skipped with ``n_boot=0``).

    ``loss_fn`` (a per-sample loss, as in :func:`~equivlib.twirl.decompose_general`)
    replaces the MSE: the estimates are then :func:`~equivlib.twirl.decompose_general`'s plug-in and
    second-order corrected ones, and no bootstrap is run.  Padding must contribute
    zero to ``loss_fn`` (zero-padded predictions and targets do for log-cosh); ``mask``
    is not used with it.

    Returns ``(table, truth)``: one row per (N, repetition, estimator), and the
    population values.
    """
    P, B = Z_pool.shape[:2]
    if loss_fn is not None and mask is not None:
        raise ValueError("resampling_study: mask applies to the MSE only; pass loss_fn or mask, not both")

    def split(Z, scheme, est):
        if loss_fn is None:
            return decompose(Z, y, scheme, mask=mask, estimator=est)
        return decompose_general(Z, y, loss_fn, scheme, estimator=est)

    truth = _summ(split(Z_pool[None], "exhaustive", "plugin"))
    rows = []
    for N in tqdm(list(Ns), desc="resampling N", mininterval=2):
        if N < 2:
            raise ValueError("the study needs N >= 2 (the unbiased estimator is undefined at N = 1)")
        for rep in range(n_reps):
            idx = torch.randint(P, (N, B), generator=generator)
            Z = torch.gather(Z_pool, 0, idx.reshape(N, B, *([1] * (Z_pool.ndim - 2))).expand(N, *Z_pool.shape[1:]))
            Z = Z[:, None]
            for est in ("plugin", "unbiased"):
                row = {"N": N, "rep": rep, "estimator": est, **_summ(split(Z, "iid", est))}
                if rep == 0 and n_boot > 0 and loss_fn is None:
                    bs = bootstrap_se(Z, y, "iid", mask=mask, estimator=est, n_boot=n_boot, generator=generator)
                    row.update({f"boot_{k}": v for k, v in bs.items()})
                rows.append(row)
    return pd.DataFrame(rows), truth


def ratio_bias(study: pd.DataFrame, truth: dict, estimator: str = "unbiased") -> pd.DataFrame:
    """Bias of the percent (a ratio of two estimates) per ``N``, measured and by the delta method.

    ``study`` and ``truth`` are :func:`resampling_study`'s.  The percent is
    ``100 a / b`` with ``a`` the estimate of ``L_equiv`` and ``b`` that of ``L``;
    even when both are unbiased the ratio is not, and to second order
    ``E[a/b] - A/B = (A Var b / B - Cov(a, b)) / B²`` (``A``, ``B`` the true values),
    while exactly ``E[a/b] - A/B = -Cov(a/b, b) / B`` (for ``b > 0``), so by
    Cauchy-Schwarz ``|bias| <= sd(a/b) sd(b) / B``.
    Columns: ``N``, ``percent`` (mean over repetitions), ``bias`` and ``bias_se``
    (percentage points, Monte-Carlo standard error), ``delta_method`` (the
    second-order prediction from the repetitions' variances), ``cs_bound`` (the
    Cauchy-Schwarz bound from the repetitions' standard deviations), ``n_reps``.
    """
    A, B = truth["L_equiv"], truth["L"]
    rows = []
    for N, g in study[study["estimator"] == estimator].groupby("N"):
        a, b = g["L_equiv"].to_numpy(), g["L"].to_numpy()
        cov = np.cov(a, b)
        rows.append({"N": int(N), "percent": float(g["percent"].mean()),
                     "bias": float(g["percent"].mean() - truth["percent"]),
                     "bias_se": float(g["percent"].std(ddof=1) / np.sqrt(len(g))),
                     "delta_method": float(100 * (A * cov[1, 1] / B - cov[0, 1]) / B**2),
                     "cs_bound": float(g["percent"].std(ddof=1) * np.sqrt(cov[1, 1]) / B), "n_reps": len(g)})
    return pd.DataFrame(rows)


def scheme_study(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    action: Action,
    samplers: Mapping[str, Callable[[int, torch.Generator], GroupSample]],
    n_reps: int,
    *,
    generator: torch.Generator,
    extras: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    action_out: Action | None = None,
) -> pd.DataFrame:
    """Repeat the unbiased decomposition with fresh group samples from several schemes.

    ``samplers[name](B, generator)`` returns a :class:`GroupSample`; the spread
    of the estimates across ``n_reps`` repetitions is the standard error of that
    scheme (with the data held fixed).  One row per (scheme, repetition).
    """
    rows = []
    with torch.no_grad():
        for name, sampler in tqdm(list(samplers.items()), desc="schemes", mininterval=2):
            for rep in range(n_reps):
                s = sampler(x.shape[0], generator)
                Z = twisted_predictions(model, x, s.to(device=x.device, dtype=x.dtype), action, action_out,
                                        extras=extras)
                d = decompose(Z, y, s, mask=mask, estimator="unbiased")
                rows.append({"scheme": name, "N": s.n_elements, "rep": rep, **_summ(d)})
    return pd.DataFrame(rows)


def se_ratio_table(schemes: pd.DataFrame, kinds: Mapping[str, str], reference: str, *, seed: int,
                   column: str = "L_equiv") -> pd.DataFrame:
    """Standard error of each kind of sample at each ``N``, and its gain over ``reference`` with an interval.

    ``schemes`` is :func:`scheme_study`'s table; ``kinds`` maps each of its scheme names
    to a kind (e.g. ``"independent Haar"``, ``"rotated design ×2"``), ``reference`` is the
    kind every other is compared with.  One row per ``N``: the SE (spread over the
    repetitions) of ``column`` and of the percent per kind, and for every other kind
    ``"<kind>: SE ratio"`` = SE(reference) / SE(kind) with its 95 % BCa interval
    (:func:`~equivlib.stats.sd_ratio_ci`, seeded from ``seed`` and ``N``; ``inf`` when
    the kind's estimates do not vary at all).  ``NaN`` where a kind has no sample at that ``N``.
    """
    from .config import ParameterError, derived_seed
    from .stats import sd_ratio_ci

    missing = sorted(set(schemes["scheme"]) - set(kinds))
    if missing:
        raise ParameterError(f"no kind given for the schemes {missing}")
    if reference not in set(kinds.values()):
        raise ParameterError(f"reference kind {reference!r} is none of {sorted(set(kinds.values()))}")
    df = schemes.assign(kind=schemes["scheme"].map(kinds))
    others = [k for k in dict.fromkeys(kinds.values()) if k != reference]
    rows = []
    for n, at_n in df.groupby("N"):
        row = {"N": int(n)}
        by_kind = {k: g for k, g in at_n.groupby("kind")}
        for k in [reference, *others]:
            g = by_kind.get(k)
            row[f"{k}: SE"] = float(g[column].std(ddof=1)) if g is not None else np.nan
            row[f"{k}: SE of percent"] = float(g["percent"].std(ddof=1)) if g is not None else np.nan
        ref = by_kind.get(reference)
        for k in others:
            g = by_kind.get(k)
            ratio = lo = hi = np.nan
            if g is not None and ref is not None:
                if np.std(g[column]) == 0:
                    ratio = lo = hi = np.inf
                else:
                    ci = sd_ratio_ci(ref[column], g[column], seed=derived_seed(seed, f"se-ratio-{k}-{n}"))
                    ratio, lo, hi = ci.estimate, ci.low, ci.high
            row.update({f"{k}: SE ratio": ratio, f"{k}: 95% CI low": lo, f"{k}: 95% CI high": hi})
        rows.append(row)
    return pd.DataFrame(rows).set_index("N")


def twirled_inference_study(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    action: Action,
    inference_samplers: Mapping[str, Callable[[int, torch.device], GroupSample]],
    eval_sampler: Callable[[int, torch.Generator], GroupSample],
    *,
    generator: torch.Generator,
    extras: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    repeats: int = 3,
) -> pd.DataFrame:
    """Twirled post-processing: decomposition and cost of ``x ↦ mean_g g⁻¹ f(g x)``.

    For each named inference sampler the model is wrapped in a
    :class:`~equivlib.twirl.TwirledModel`; its loss decomposition is measured
    with ``eval_sampler`` and its forward time on ``x`` (median of ``repeats``)
    is compared with the plain model's.  The row ``"none"`` is the plain model.
    """
    rows = []
    with torch.no_grad():
        models = {"none": model}
        models.update({k: TwirledModel(model, s, action) for k, s in inference_samplers.items()})
        for name, m in models.items():
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                m(x, **(extras or {}))
                times.append(time.perf_counter() - t0)
            s = eval_sampler(x.shape[0], generator)
            Z = twisted_predictions(m, x, s.to(device=x.device, dtype=x.dtype), action, extras=extras,
                                    memory_budget_mb=None)
            d = decompose(Z, y, s, mask=mask)
            n_inner = 1 if name == "none" else inference_samplers[name](1, x.device).n_elements
            rows.append({"twirl": name, "inner_N": n_inner, "seconds": sorted(times)[len(times) // 2], **_summ(d)})
    df = pd.DataFrame(rows)
    df["cost_ratio"] = df["seconds"] / float(df.loc[df["twirl"] == "none", "seconds"].iloc[0])
    return df


@dataclass
class CheckpointSplit:
    """Result of :func:`checkpoint_split_study`.

    ``table``: one row per checkpoint with the exact percent over the whole
    group (``exact %``), the plug-in percent over the fixed subset (``subset %``,
    when a subset was given) and the mean and sd of the unbiased estimate from
    ``n_check`` random elements (``random: mean``, ``random: sd``).  ``final``
    and ``truth``: the :func:`resampling_study` table and exact values at the
    last checkpoint, over all of ``Ns``; ``subset_final``: the subset
    decomposition there (None without a subset).
    """

    table: pd.DataFrame
    final: pd.DataFrame
    truth: dict
    subset_final: object
    n_check: int


def checkpoint_split_study(
    load_model: Callable[[int], torch.nn.Module],
    steps: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    action: Action,
    group: torch.Tensor,
    *,
    Ns: Sequence[int],
    n_reps: int,
    n_check: int,
    generator: torch.Generator,
    subset: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> CheckpointSplit:
    """The exact split over a finite group at every checkpoint, against cheaper estimates.

    For each step, ``load_model(step)`` is evaluated (through a float64 copy) on
    all elements of ``group`` at once; the exact decomposition over the group is
    compared with the unbiased estimate from ``n_check`` elements drawn with
    replacement (``n_reps`` repetitions, :func:`resampling_study`) and, when
    ``subset`` (matrices that must belong to ``group``) is given, with the plug-in
    split over that fixed subset (e.g. the 16 quarter-turn products used for
    voxels in the literature, which are not a subgroup).  At the last step the
    resampling study runs over all of ``Ns`` (which must contain ``n_check``).
    """
    steps = [int(s) for s in steps]
    if not steps:
        raise ValueError("checkpoint_split_study needs at least one step")
    if n_check not in Ns:
        raise ValueError(f"n_check={n_check} must be one of Ns={list(Ns)} (the final study reports it)")
    idx = None
    if subset is not None:
        idx = element_indices(group, subset)
        if len(set(idx.tolist())) != len(idx):
            raise ValueError("the subset repeats group elements")
    rows, final = [], None
    for step in steps:
        model = float64_copy(load_model(step))
        with torch.no_grad():
            Z = twisted_predictions(model, x, exhaustive(group), action)[0]  # (G, B, ...)
        last = step == steps[-1]
        table, truth = resampling_study(Z, y, Ns if last else [n_check], n_reps, generator=generator, n_boot=0,
                                        mask=mask)
        sub = None if idx is None else decompose(Z[idx][None], y, "exhaustive", estimator="plugin", mask=mask)
        est = table[(table["estimator"] == "unbiased") & (table["N"] == n_check)]["percent"]
        row = {"step": step, "exact %": truth["percent"]}
        if sub is not None:
            row["subset %"] = sub.percent
        rows.append({**row, "random: mean": est.mean(), "random: sd": est.std()})
        if last:
            final = (table, truth, sub)
    return CheckpointSplit(pd.DataFrame(rows), final[0], final[1], final[2], n_check)


def sweep_table(runs: Mapping[tuple[str, str], object], reference, n_examples: int, dip_factor: float = 10,
                curve: Callable | None = None) -> pd.DataFrame:
    """One row per run of a one-setting-at-a-time sweep: dip step and epoch, minimum and final percent.

    ``runs`` maps ``(axis, setting label)`` to a cached :class:`~equivlib.runs.Run`;
    ``reference`` is the run the others vary (it may appear under several axes);
    ``n_examples`` the training-set size of runs with ``config.n_train=None``.
    The column ``dip step`` is :func:`equivlib.curves.dip_step` with ``dip_factor``;
    ``dip epoch`` converts it with ``batch_size / n_train``; ``_curve`` keeps each
    sorted monitor table for plotting.  Rows are sorted by axis, reference first.
    ``curve`` maps a run to its curve (default: its monitor table; a monitor with one
    row per step and label, such as flow matching's times, needs :func:`~equivlib.curves.pool_over`).
    """
    rows = []
    for (axis, label), run in runs.items():
        c = check_curve(run.monitor if curve is None else curve(run))
        n_ex = run.config.n_train or n_examples
        epoch = run.config.batch_size / n_ex  # epochs per step
        d = dip_step(c, dip_factor)
        rows.append({"axis": axis, "setting": label, "reference": run is reference,
                     "% at step 0": c["percent"].iloc[0], "dip step": d,
                     "dip epoch": None if d is None else d * epoch, "min %": c["percent"].min(),
                     "final %": c["percent"].iloc[-1], "final loss": c["L"].iloc[-1],
                     "epochs": run.config.steps * epoch, "_curve": c})
    df = pd.DataFrame(rows).sort_values(["axis", "reference"], ascending=[True, False]).reset_index(drop=True)
    if not (df["min %"].notna().all() and (df["final loss"] > 0).all()):
        raise ValueError("a sweep run has a non-finite percent or a non-positive loss")
    return df


def race_table(pairs: Sequence[tuple[object, object]]) -> pd.DataFrame:
    """Two models raced on held-out loss against training time, one row per replicate.

    ``pairs`` holds ``(run_a, run_b)`` cached :class:`~equivlib.runs.Run` pairs (e.g. one
    per training seed), each monitored with ``train_seconds``.  Columns: ``ms_a``/``ms_b``
    (training milliseconds per step), ``speed_ratio`` (``ms_b / ms_a``), ``final_a``/``final_b``
    (held-out loss at the last step), ``percent_a`` (``a``'s final equivariance percent), and
    from :func:`~equivlib.curves.crossover`: ``t_common`` (the shorter run's training time),
    ``L_a``/``L_b`` (the losses then), ``b_ahead`` and ``t_cross``; ``late_fall_a``/``late_fall_b``:
    the fraction of its loss each run lost over the last doubling of its training time
    (``1 - L(T) / L(T/2)``, interpolated by :func:`~equivlib.curves.loss_at`), which says which is
    still improving faster when the race ends.
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("race_table needs at least one (run_a, run_b) pair")
    rows = []
    for k, (a, b) in enumerate(pairs):
        ca, cb = check_curve(a.monitor), check_curve(b.monitor)
        ms_a, ms_b = 1e3 * a.train_seconds / a.config.steps, 1e3 * b.train_seconds / b.config.steps
        race = crossover(ca, cb)
        late = [1 - float(c["L"].iloc[-1]) / loss_at(c, float(c["train_seconds"].max()) / 2) for c in (ca, cb)]
        rows.append({"replicate": k, "ms_a": ms_a, "ms_b": ms_b, "speed_ratio": ms_b / ms_a,
                     "final_a": float(ca["L"].iloc[-1]), "final_b": float(cb["L"].iloc[-1]),
                     "percent_a": float(ca["percent"].iloc[-1]), **race, "late_fall_a": late[0],
                     "late_fall_b": late[1]})
    return pd.DataFrame(rows)
