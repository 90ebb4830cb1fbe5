"""Estimator studies: bias, standard error and cost of finite-sample twirls.

These are the experiments of chapter 1, kept here so that the chapter stays
readable and other chapters (and users) can run them on their own models.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import pandas as pd
import torch
from tqdm.auto import tqdm

from .groups import Action, GroupSample
from .twirl import TwirledModel, bootstrap_se, decompose, twisted_predictions

__all__ = ["resampling_study", "scheme_study", "twirled_inference_study"]


def _summ(d) -> dict:
    s = d.summary()
    return {k: s[k] for k in ("L", "L_mean", "L_equiv", "percent")}


def resampling_study(
    Z_pool: torch.Tensor,
    y: torch.Tensor,
    Ns,
    n_reps: int,
    *,
    generator: torch.Generator,
    mask: torch.Tensor | None = None,
    n_boot: int = 100,
) -> tuple[pd.DataFrame, dict]:
    """Bias and standard error of the estimators against an exactly known population.

    ``Z_pool (P, B, *out)`` holds twisted predictions for ``P`` iid group
    elements per sample.  The population is the uniform distribution on the
    pool, whose decomposition is known exactly (plug-in over the whole pool).
    Each repetition draws ``N`` elements per sample *with replacement* from the
    pool — an exact iid sample from that population — and records the plug-in
    and the unbiased estimates, plus the bootstrap standard error of the first
    repetition for each ``N`` (skipped with ``n_boot=0``).

    Returns ``(table, truth)``: one row per (N, repetition, estimator), and the
    population values.
    """
    P, B = Z_pool.shape[:2]
    truth = _summ(decompose(Z_pool[None], y, "exhaustive", mask=mask))
    rows = []
    for N in tqdm(list(Ns), desc="resampling N", mininterval=2):
        if N < 2:
            raise ValueError("the study needs N >= 2 (the unbiased estimator is undefined at N = 1)")
        for rep in range(n_reps):
            idx = torch.randint(P, (N, B), generator=generator)
            Z = torch.gather(Z_pool, 0, idx.reshape(N, B, *([1] * (Z_pool.ndim - 2))).expand(N, *Z_pool.shape[1:]))
            Z = Z[:, None]
            for est in ("plugin", "unbiased"):
                row = {"N": N, "rep": rep, "estimator": est, **_summ(decompose(Z, y, "iid", mask=mask, estimator=est))}
                if rep == 0 and n_boot > 0:
                    bs = bootstrap_se(Z, y, "iid", mask=mask, estimator=est, n_boot=n_boot, generator=generator)
                    row.update({f"boot_{k}": v for k, v in bs.items()})
                rows.append(row)
    return pd.DataFrame(rows), truth


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
