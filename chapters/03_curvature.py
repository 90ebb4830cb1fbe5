# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Curvature: is the equivariance error the easier landscape?
#
# Chapter {doc}`02_learning_dynamics` watched the equivariance error of three models fall to
# a few percent of their loss early in training. The first paper's explanation is geometric:
# the landscape of $\mathcal L_\text{equiv}$ is smoother and far better conditioned than that
# of $\mathcal L_\text{mean}$, so gradient descent removes it first {cite}`shen2025training`.
# This chapter derives what the two Hessians are made of, then measures their spectra on
# chapter 2's trained runs.

# %% tags=["parameters"]
PROFILE = "quick"  # "quick": 2-core CPU in minutes; "full": the published book, one GPU
SEED = 0           # the seed of chapter 2's runs (the same cached runs are loaded, not retrained)
DEVICE = "auto"    # "auto" | "cpu" | "cuda"
CUTOFF = 1e-6      # "positive" eigenvalue: above CUTOFF x the largest (the headline condition number)

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from equivlib import curvature as cv
from equivlib.book import Claim, claims_table, glue, glue_claims, glue_headline, tally, verdict
from equivlib.config import chapter_setup
from equivlib.plans import chapter2_runs, chapter3_plan, early_step, spread_steps
from equivlib.plotting import landscape_panel, new_figure, set_style
from equivlib.runs import get_run, train_runs
from equivlib.tasks import make_task

t_start = time.perf_counter()
device, gen = chapter_setup(globals(), known=["CUTOFF"])
if not (isinstance(CUTOFF, float) and 0 < CUTOFF < 1):
    raise ValueError(f"CUTOFF must be a float in (0, 1), got {CUTOFF!r}")
PLAN = chapter3_plan(PROFILE)
runs_plan = chapter2_runs(PROFILE, SEED)
TASK_NAMES = tuple(runs_plan.main)
LABELS = {"forces": "forces (EScAIP-style)", "flow": "flow matching (C-alpha)", "voxels": "voxel denoising (3D U-Net)"}
# the first paper's condition numbers at step 500 (L_mean, L_equiv) and subset sizes
PAPER = {"forces": (1e9, 1e6, "33k"), "flow": (2e10, 1e8, "1.5k"), "voxels": (5e9, 6e8, "6.9k")}
KAPPA = f"kappa@{CUTOFF:g}"
CUTOFFS = tuple(sorted({*cv.CUTOFFS, CUTOFF}))
TOL = 1e-10  # stated tolerance (relative, float64) for the Hessian formula check
set_style()
glue("ch3-device", str(device))
glue("ch3-profile", PROFILE)
glue("ch3-cutoff", CUTOFF)
glue("ch3-tol", TOL)

train_runs(list(runs_plan.main.values()), executor="auto", device=device, progress=False)  # cached by chapter 2
runs = {name: get_run(runs_plan.main[name], device=device, progress=False) for name in TASK_NAMES}
tasks = {name: make_task(name, PROFILE, SEED, device=device) for name in TASK_NAMES}
EARLY = {name: early_step(runs[name].checkpoint_steps) for name in TASK_NAMES}
models = {name: runs[name].load_model(EARLY[name]) for name in TASK_NAMES}
for name in TASK_NAMES:
    glue(f"ch3-{name}-early", EARLY[name])
    glue(f"ch3-{name}-steps", runs[name].config.steps)

# %% [markdown]
# This chapter was executed with the {glue:md}`ch3-profile` profile on
# {glue:md}`ch3-device`. Notation follows {doc}`../notation`.
#
# ## The two Hessians
#
# Fix a minibatch: $B$ held-out samples, and for each sample $b$ a set of $N$ group elements
# drawn once. Write $Z_g = Z_{x_b}(g)$ for the twisted predictions (vectors of $D_b$ valid
# output entries), $\mu = \frac1N\sum_g Z_g$ for their plug-in mean and $J_g = \partial
# Z_g/\partial\theta$ for their Jacobians with respect to a parameter subset $\theta$, with
# mean $\bar J = \partial\mu/\partial\theta$. On this minibatch the plug-in split of
# {prf:ref}`prop-mse-split` is an identity of functions of $\theta$,
# $\mathcal L = \mathcal L_\text{mean} + \mathcal L_\text{equiv}$, with
# $\mathcal L_\text{mean} = \frac1B\sum_b \frac1{D_b}\lVert\mu-y\rVert^2$ and
# $\mathcal L_\text{equiv} = \frac1B\sum_b \frac1{N D_b}\sum_g\lVert Z_g-\mu\rVert^2$, so the
# Hessians add up too: $\nabla^2\mathcal L = \nabla^2\mathcal L_\text{mean} +
# \nabla^2\mathcal L_\text{equiv}$.
#
# ```{prf:proposition} Gauss–Newton and residual parts
# :label: prop-hessian-parts
#
# If every $Z_g$ is twice differentiable in $\theta$, then
#
# $$
# \nabla^2\mathcal L_\text{equiv} = \frac1B\sum_b \frac{2}{N D_b}\sum_g
#   \Big[(J_g-\bar J)^\top (J_g-\bar J) + \sum_k (Z_g-\mu)_k\,\nabla^2 (Z_g)_k\Big],
# \qquad
# \nabla^2\mathcal L_\text{mean} = \frac1B\sum_b \frac{2}{D_b}
#   \Big[\bar J^\top\bar J + \sum_k (\mu-y)_k\,\nabla^2\mu_k\Big].
# $$
#
# The first bracketed term of each is its *Gauss–Newton part* (positive semi-definite), the
# second its *residual part*.
# ```
#
# ```{prf:proof}
# For one sample, $\nabla \lVert Z_g-\mu\rVert^2 = 2(J_g-\bar J)^\top(Z_g-\mu)$. Differentiating
# again by the product rule gives $2(J_g-\bar J)^\top(J_g-\bar J) + 2\sum_k (Z_g-\mu)_k
# \nabla^2\big((Z_g)_k-\mu_k\big)$. Summed over $g$, the terms with $\nabla^2\mu_k$ carry the
# factor $\sum_g (Z_g-\mu)_k = 0$ (the plug-in mean is the mean of these $N$ elements), which
# leaves the stated form. The same two steps with $\mu - y$ in place of $Z_g-\mu$ give the
# Hessian of $\lVert\mu-y\rVert^2$; $y$ does not depend on $\theta$. Averaging over samples with
# the weights $1/(N D_b)$ and $1/D_b$ finishes the proof. Each Gauss–Newton part is a sum of
# matrices $A^\top A$, hence positive semi-definite.
# ```
#
# The two residual parts differ in what multiplies the second derivatives: the spread of the
# twisted predictions around their mean for $\mathcal L_\text{equiv}$, the error of the
# twirled prediction for $\mathcal L_\text{mean}$. The first is the quantity chapter 2 watched
# fall early.
#
# ```{prf:corollary} The residual part of the equivariance Hessian shrinks with the error
# :label: cor-residual-bound
#
# Let $S_g^2 = \sum_k \lVert\nabla^2(Z_g)_k\rVert_2^2$ and $\bar S^2 = \frac1B\sum_b
# \frac1{N D_b}\sum_g S_g^2$. Then the residual part $R_\text{equiv}$ of
# $\nabla^2\mathcal L_\text{equiv}$ satisfies
# $\lVert R_\text{equiv}\rVert_2 \le 2\sqrt{\mathcal L_\text{equiv}}\;\bar S$,
# and likewise $\lVert R_\text{mean}\rVert_2 \le 2\sqrt{\mathcal L_\text{mean}}\;\bar S_\mu$
# with $\bar S_\mu^2 = \frac1B\sum_b\frac1{D_b}\sum_k\lVert\nabla^2\mu_k\rVert_2^2$. If the
# twisted predictions are affine in $\theta$ (a linear head, a final linear layer), both
# residual parts vanish and both Hessians are positive semi-definite.
# ```
#
# ```{prf:proof}
# By the triangle inequality and Cauchy–Schwarz over $k$,
# $\lVert\sum_k (Z_g-\mu)_k\nabla^2(Z_g)_k\rVert_2 \le \lVert Z_g-\mu\rVert\,S_g$. With the
# weights $w_{bg} = 1/(BND_b)$, Cauchy–Schwarz for the weighted sum over $(b, g)$ gives
# $\sum_{b,g} w_{bg}\lVert Z_g-\mu\rVert S_g \le
# \big(\sum_{b,g} w_{bg}\lVert Z_g-\mu\rVert^2\big)^{1/2}
# \big(\sum_{b,g} w_{bg} S_g^2\big)^{1/2} = \sqrt{\mathcal L_\text{equiv}}\,\bar S$,
# and the factor 2 of {prf:ref}`prop-hessian-parts` gives the bound. The same argument with
# $\mu - y$, $\nabla^2\mu_k$ and the weights $1/(BD_b)$ gives the second. Affine $Z_g$ have zero second
# derivatives, so $\bar S = \bar S_\mu = 0$.
# ```
#
# So once $\mathcal L_\text{equiv}$ is a few percent of $\mathcal L$, its Hessian is close to
# a positive semi-definite Gauss–Newton matrix, while the Hessian of $\mathcal L_\text{mean}$
# keeps a residual part of the size of the remaining prediction error, which for noisy
# targets (flow matching, denoising) never vanishes. This is a statement about definiteness,
# not about the condition number: nothing here forces $\lambda_\text{max}/\lambda_\text{min}^+$
# of one to be smaller than of the other. That we measure.
#
# We first check the proposition on each task at its early checkpoint (step
# {glue:text}`ch3-forces-early` of {glue:text}`ch3-forces-steps` for forces,
# {glue:text}`ch3-flow-early` of {glue:text}`ch3-flow-steps` for flow matching,
# {glue:text}`ch3-voxels-early` of {glue:text}`ch3-voxels-steps` for voxels: the first checkpoint
# after a tenth of training, our analogue of the paper's step 500). The Gauss–Newton parts
# come from forward-mode Jacobians and the residual parts from a separate second-order
# computation; their sum is compared with the Hessian formed from Hessian-vector products.

# %% tags=["hide-input"]
parts = {name: cv.hessian_parts(models[name], tasks[name].fixed_batch(PLAN[name]["n_samples"],
                                                                       PLAN[name]["n_elements"]),
                                PLAN[name]["subset"])
         for name in TASK_NAMES}
part_rows = []
for name, pp in parts.items():
    for term, d in pp.items():
        scale = float(d["dense"].abs().max())
        part_rows.append({"task": name, "term": term, "parameters": d["dense"].shape[0],
                          "formula error": float((d["gauss_newton"] + d["residual"] - d["dense"]).abs().max()) / scale,
                          "residual / Gauss-Newton": float(np.linalg.norm(d["residual"].numpy(), 2)
                                                           / np.linalg.norm(d["gauss_newton"].numpy(), 2))})
part_table = pd.DataFrame(part_rows)
formula_err = float(part_table["formula error"].max())
glue("ch3-formula-err", formula_err)
glue("ch3-formula-ok", verdict(formula_err < TOL, yes="agree", no="disagree"))
glue("ch3-parts-table", part_table.style.format({"formula error": "{:.1e}", "residual / Gauss-Newton": "{:.3f}"})
     .hide(axis="index"))
rf = part_table.set_index(["task", "term"])["residual / Gauss-Newton"]
glue("ch3-forces-res-equiv", float(rf[("forces", "L_equiv")]))
glue("ch3-forces-res-mean", float(rf[("forces", "L_mean")]))
glue("ch3-linear-res", float(rf[["flow", "voxels"]].max()))

# %% [markdown]
# ```{glue:figure} ch3-parts-table
# :name: tbl-ch3-parts
#
# Hessian parts at the early checkpoint, one minibatch per task. *Formula error*: largest
# entry of Gauss–Newton + residual − dense Hessian, relative to the largest entry of the
# dense Hessian. *Residual / Gauss–Newton*: ratio of spectral norms.
# ```
#
# The two computations {glue:md}`ch3-formula-ok` to a relative {glue:text}`ch3-formula-err:.1e`
# (tolerance {glue:text}`ch3-tol:.0e`). On the force model's non-linear layer the residual part is
# {glue:text}`ch3-forces-res-equiv:.3f` of the Gauss–Newton part for $\mathcal L_\text{equiv}$
# and {glue:text}`ch3-forces-res-mean:.3f` for $\mathcal L_\text{mean}$. For the flow head and
# the U-Net's final layer, whose outputs are linear in the subset, the corollary says it vanishes;
# the largest measured ratio there is {glue:text}`ch3-linear-res:.1e`.
#
# ## Condition numbers at the early checkpoint
#
# ```{prf:definition} Condition numbers of a Hessian
# :label: def-condition
#
# For a symmetric matrix with largest eigenvalue $\lambda_\text{max} > 0$ and a cutoff
# $c \in (0, 1)$, $\kappa_c = \lambda_\text{max}/\lambda_\text{min}^+$ where
# $\lambda_\text{min}^+$ is the smallest eigenvalue above $c\,\lambda_\text{max}$. The
# cutoff-free spread is $\lambda_1/\lambda_k$, the ratio of the largest to the $k$-th largest
# eigenvalue.
# ```
#
# The paper reports $\kappa$ with "positive" left undefined; in floating point a Hessian with
# a null space has eigenvalues of order $10^{-16}\lambda_\text{max}$ of either sign, so $\kappa$
# depends on where one starts to count. We report it at the cutoffs $10^{-8}$, $10^{-6}$ and
# $10^{-4}$ (headline: {glue:text}`ch3-cutoff:.0e`) and beside it $\lambda_1/\lambda_{10}$,
# which needs no cutoff. Each task's Hessians are formed on disjoint held-out minibatches
# (the paper used training minibatches) with the group elements fixed per minibatch.

# %% tags=["hide-input"]
cond = {name: cv.condition_study(models[name], tasks[name], PLAN[name]["subset"], n_batches=PLAN[name]["n_batches"],
                                 n_samples=PLAN[name]["n_samples"], n_elements=PLAN[name]["n_elements"],
                                 cutoffs=CUTOFFS, k=PLAN["k"])
        for name in TASK_NAMES}
summ = {name: cv.condition_summary(cond[name], column=KAPPA) for name in TASK_NAMES}
summ_top = {name: cv.condition_summary(cond[name], column="top_ratio") for name in TASK_NAMES}
rows = []
for name in TASK_NAMES:
    s, st = summ[name], summ_top[name]
    r = s.loc["L_mean / L_equiv"]
    rows.append({"task": name, "subset": f"{PLAN[name]['kind']}, {cond[name].attrs['n_params']} parameters",
                 "minibatches": int(r["n_batches"]),
                 "κ L_mean": s.loc["L_mean", "median"], "κ L_equiv": s.loc["L_equiv", "median"],
                 "κ ratio (95% CI)": f"{r['geo_mean']:.3g} ({r['low']:.2g} to {r['high']:.2g})",
                 "L_equiv better in": f"{int(r['equiv_better'])} of {int(r['n_batches'])}",
                 "λ1/λ10 ratio": st.loc["L_mean / L_equiv", "geo_mean"],
                 "paper κ L_mean": PAPER[name][0], "paper κ L_equiv": PAPER[name][1],
                 "paper ratio": PAPER[name][0] / PAPER[name][1], "paper subset": PAPER[name][2]})
kappa_table = pd.DataFrame(rows)
glue("ch3-kappa-table", kappa_table.style.format({c: "{:.2g}" for c in ["κ L_mean", "κ L_equiv", "λ1/λ10 ratio",
                                                                          "paper κ L_mean", "paper κ L_equiv",
                                                                          "paper ratio"]}).hide(axis="index"))
better = {name: summ[name].loc["L_mean / L_equiv"] for name in TASK_NAMES}
for name in TASK_NAMES:
    glue(f"ch3-{name}-ratio", float(better[name]["geo_mean"]))
    glue(f"ch3-{name}-ratio-low", float(better[name]["low"]))
    glue(f"ch3-{name}-ratio-high", float(better[name]["high"]))
    glue(f"ch3-{name}-better", int(better[name]["equiv_better"]))
    glue(f"ch3-{name}-nb", int(better[name]["n_batches"]))
    glue(f"ch3-{name}-kmean", float(summ[name].loc["L_mean", "median"]))
    glue(f"ch3-{name}-kequiv", float(summ[name].loc["L_equiv", "median"]))
significant = [n for n in TASK_NAMES if better[n]["low"] > 1]
cutoff_move = max(float((cond[n][f"kappa@{CUTOFFS[0]:g}"] / cond[n][f"kappa@{CUTOFFS[-1]:g}"]).max())
                  for n in TASK_NAMES)
glue("ch3-cutoff-move", cutoff_move)
glue("ch3-cutoff-lo", CUTOFFS[0])
glue("ch3-cutoff-hi", CUTOFFS[-1])
opposite = [n for n in TASK_NAMES if better[n]["high"] < 1]
top_kappa = max(max(summ[n].loc["L_mean", "median"], summ[n].loc["L_equiv", "median"]) for n in TASK_NAMES)
glue("ch3-kappa-verdict",
     f"The equivariance Hessian is the better conditioned one, with an interval that excludes a ratio of 1, on "
     f"{len(significant)} of {len(TASK_NAMES)} tasks" + (f" ({', '.join(significant)})" if significant else "")
     + (f"; on {', '.join(opposite)} it is significantly the worse conditioned" if opposite else "")
     + f". Our largest median condition number is {top_kappa:.2g}, "
     + ("below" if top_kappa < 1e6 else "within") + " the paper's range of 1e6 to 2e10.")

fig, axes = new_figure(3, 1, width=3.8, height=3.4)
for ax, name in zip(axes[0], TASK_NAMES):
    long = cond[name].melt(id_vars=["batch", "term"], value_vars=[f"kappa@{c:g}" for c in CUTOFFS] + ["top_ratio"],
                           var_name="measure", value_name="value")
    sns.stripplot(data=long, x="measure", y="value", hue="term", dodge=True, ax=ax, size=4, log_scale=True,
                  hue_order=["L", "L_mean", "L_equiv"])
    ax.set(title=LABELS[name], xlabel="", ylabel="condition number / spread" if name == "forces" else "")
    ax.set_xticks(ax.get_xticks(), [f"κ {c:g}" for c in CUTOFFS] + ["λ1/λ10"], rotation=30)
    if name != "voxels":
        ax.get_legend().remove()
glue("ch3-kappa-fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} ch3-kappa-table
# :name: tbl-ch3-kappa
#
# Condition numbers (cutoff {glue:text}`ch3-cutoff:.0e`, median over minibatches) at the early
# checkpoint, beside the paper's values at step 500. *κ ratio*: geometric mean over minibatches
# of κ(L_mean)/κ(L_equiv) with a t interval on the log scale; above 1 means the equivariance
# Hessian is the better conditioned. *λ1/λ10 ratio*: the same for the cutoff-free spread.
# ```
#
# ```{glue:figure} ch3-kappa-fig
# :name: fig-ch3-kappa
#
# Every minibatch's condition number at each cutoff and its cutoff-free spread λ1/λ10,
# for the total loss and its two parts.
# ```
#
# {glue:md}`ch3-kappa-verdict` Per task, the ratio κ(L_mean)/κ(L_equiv) is
# {glue:text}`ch3-forces-ratio:.2g` (95% CI {glue:text}`ch3-forces-ratio-low:.2g` to
# {glue:text}`ch3-forces-ratio-high:.2g`) for forces, {glue:text}`ch3-flow-ratio:.2g`
# ({glue:text}`ch3-flow-ratio-low:.2g` to {glue:text}`ch3-flow-ratio-high:.2g`) for flow
# matching and {glue:text}`ch3-voxels-ratio:.2g` ({glue:text}`ch3-voxels-ratio-low:.2g` to
# {glue:text}`ch3-voxels-ratio-high:.2g`) for voxels; the equivariance Hessian is the better
# conditioned in {glue:text}`ch3-forces-better` of {glue:text}`ch3-forces-nb`,
# {glue:text}`ch3-flow-better` of {glue:text}`ch3-flow-nb` and {glue:text}`ch3-voxels-better`
# of {glue:text}`ch3-voxels-nb` minibatches. The figure shows how much of each number is the
# cutoff: between the cutoffs {glue:text}`ch3-cutoff-lo:.0e` and {glue:text}`ch3-cutoff-hi:.0e`
# a condition number moves by up to a factor
# {glue:text}`ch3-cutoff-move:.2g`, while λ1/λ10 does not depend on one.
#
# ## Over training
#
# The same spectra on one minibatch at checkpoints spread over each run:

# %% tags=["hide-input"]
ckpt = {name: cv.checkpoint_curvature(runs[name].load_model, spread_steps(runs[name].checkpoint_steps,
                                                                          PLAN["n_checkpoints"]),
                                      tasks[name], PLAN[name]["subset"], n_samples=PLAN[name]["n_samples"],
                                      n_elements=PLAN[name]["n_elements"], cutoffs=CUTOFFS, k=PLAN["k"])
        for name in TASK_NAMES}
fig, axes = new_figure(3, 2, width=3.8, height=2.8, sharex="col")
for j, name in enumerate(TASK_NAMES):
    d = ckpt[name].assign(step=lambda t: t["step"].clip(lower=0.5))
    for i, col in enumerate([KAPPA, "top_ratio"]):
        sns.lineplot(data=d, x="step", y=col, hue="term", hue_order=["L", "L_mean", "L_equiv"], marker="o",
                     ax=axes[i, j], legend=(i == 0 and j == 2))
        axes[i, j].set(xscale="log", yscale="log", ylabel=("κ" if i == 0 else "λ1/λ10") if j == 0 else "",
                       xlabel="training step (0 drawn at 0.5)" if i == 1 else "")
    axes[0, j].set_title(LABELS[name])
glue("ch3-ckpt-fig", fig, display=False)
plt.close(fig)
wide = {name: ckpt[name].pivot(index="step", columns="term", values=KAPPA) for name in TASK_NAMES}
n_ck = sum(len(w) for w in wide.values())
n_equiv_better = sum(int((w["L_equiv"] < w["L_mean"]).sum()) for w in wide.values())
glue("ch3-ckpt-n", n_ck)
glue("ch3-ckpt-better", n_equiv_better)

# %% [markdown]
# ```{glue:figure} ch3-ckpt-fig
# :name: fig-ch3-ckpt
#
# Condition number at cutoff {glue:text}`ch3-cutoff:.0e` (top) and cutoff-free spread (bottom)
# of the three Hessians over training, one held-out minibatch.
# ```
#
# Over all {glue:text}`ch3-ckpt-n` checkpoints of the three runs, the equivariance Hessian
# has the smaller condition number at {glue:text}`ch3-ckpt-better`.
#
# ## Landscapes
#
# Finally the picture the paper draws: both losses on one grid through the early checkpoint,
# spanned by the top eigenvector $u$ and the smallest positive eigenvector $v$ of the
# total-loss Hessian, each of unit norm, the grid's half-width half the subset's norm.

# %% tags=["hide-input"]
lands = {name: cv.landscape(models[name], tasks[name].fixed_batch(PLAN[name]["n_samples"], PLAN[name]["n_elements"]),
                            PLAN[name]["subset"], n=PLAN["grid"], extent=PLAN["extent"], cutoff=CUTOFF)
         for name in TASK_NAMES}
fig, axes = new_figure(3, 2, width=3.8, height=3.2)
land_rows = []
for j, name in enumerate(TASK_NAMES):
    ls = lands[name]
    for i, term in enumerate(["L_mean", "L_equiv"]):
        Zg = getattr(ls, term)
        ax = axes[i, j]
        landscape_panel(ax, ls.a, ls.b, Zg, title=LABELS[name] if i == 0 else "", points=[(0.0, 0.0)],
                        xlabel="along u (top)" if i == 1 else "", ylabel=f"{term}: along v (smallest +)" if j == 0 else "",
                        cbar_label="log10 " + term, aspect="auto")
        land_rows.append({"task": name, "term": term, "centre": ls.center[term], "range over grid": float(Zg.max() - Zg.min()),
                          "range / centre": float((Zg.max() - Zg.min()) / ls.center[term])})
glue("ch3-land-fig", fig, display=False)
plt.close(fig)
land_table = pd.DataFrame(land_rows)
lt = land_table.set_index(["task", "term"])["range over grid"]
flatter = [n for n in TASK_NAMES if lt[(n, "L_equiv")] < lt[(n, "L_mean")]]
glue("ch3-land-table", land_table.style.format({"centre": "{:.3g}", "range over grid": "{:.3g}",
                                                "range / centre": "{:.3g}"}).hide(axis="index"))
glue("ch3-land-verdict", f"{len(flatter)} of {len(TASK_NAMES)}" + (f" ({', '.join(flatter)})" if flatter else ""))
rel = land_table.set_index(["task", "term"])["range / centre"]
rel_more = [n for n in TASK_NAMES if rel[(n, "L_equiv")] > rel[(n, "L_mean")]]
glue("ch3-land-rel", f"{len(rel_more)} of {len(TASK_NAMES)}")
glue("ch3-land-centre-ratio", float(np.median([lands[n].center["L_mean"] / lands[n].center["L_equiv"]
                                               for n in TASK_NAMES])))

# %% [markdown]
# ```{glue:figure} ch3-land-fig
# :name: fig-ch3-landscape
#
# The twirled error (top) and the equivariance error (bottom) on the same grid around the
# early checkpoint (red cross); each panel has its own colour scale.
# ```
#
# ```{glue:figure} ch3-land-table
# :name: tbl-ch3-landscape
#
# How much each loss varies over the grid, absolutely and relative to its value at the centre.
# ```
#
# On the same grid, the equivariance error varies over a smaller range than the twirled error
# on {glue:md}`ch3-land-verdict` tasks. Relative to its own value at the centre, which is
# {glue:text}`ch3-land-centre-ratio:.0f` times smaller than the twirled error's (median over
# tasks), it varies more on {glue:md}`ch3-land-rel` tasks.
#
# ## What reproduced

# %% tags=["hide-input"]
claims = claims_table([
    Claim("L_equiv's Hessian is far better conditioned than L_mean's at an early checkpoint "
          "(1000x forces, 100x flow, 10x voxels)",
          "; ".join(f"{n}: {better[n]['geo_mean']:.2g}x ({better[n]['low']:.2g} to {better[n]['high']:.2g})"
                    for n in TASK_NAMES),
          verdict(len(significant) == len(TASK_NAMES) and all(better[n]["geo_mean"] >= PAPER[n][0] / PAPER[n][1] / 10
                                                             for n in TASK_NAMES),
                  partly=len(significant) > 0, no="not reproduced")),
    Claim("condition numbers of order 1e6 to 1e10",
          "medians " + ", ".join(f"{n}: {summ[n].loc['L_mean', 'median']:.1e} / {summ[n].loc['L_equiv', 'median']:.1e}"
                                 for n in TASK_NAMES),
          verdict(all(summ[n].loc["L_equiv", "median"] >= 1e6 for n in TASK_NAMES))),
    Claim("(ours) the condition number does not depend on where 'positive' starts",
          f"κ moves by up to {cutoff_move:.2g}x between cutoffs {CUTOFFS[0]:g} and {CUTOFFS[-1]:g}",
          verdict(cutoff_move < 2, yes="holds", no="does not hold")),
    Claim("L_equiv's landscape is smoother than L_mean's (Fig. 1C)",
          f"smaller range on the same grid on {len(flatter)} of {len(TASK_NAMES)} tasks",
          verdict(len(flatter) == len(TASK_NAMES), partly=len(flatter) > 0, no="not reproduced")),
    Claim("(ours) Hessian = Gauss-Newton + residual parts", f"max relative error {formula_err:.1e}",
          verdict(formula_err < TOL, yes="holds", no="does not hold")),
], claim_header="claim (Shen et al.)")
glue_claims("ch3-claims", claims)
glue_headline("ch3", question="Is the equivariance error's landscape better conditioned than the rest of the loss?",
              answer="κ(L_mean)/κ(L_equiv) at an early checkpoint is "
              + "; ".join(f"{n} {better[n]['geo_mean']:.2g} (95% CI {better[n]['low']:.2g} to {better[n]['high']:.2g})"
                          for n in TASK_NAMES)
              + f", so L_equiv is significantly the better conditioned term on {len(significant)} of {len(TASK_NAMES)} "
              f"tasks; of the paper's claims: {tally(claims)}.", figure="ch3-kappa-fig")
glue("ch3-runtime", time.perf_counter() - t_start)

# %% [markdown]
# ```{glue:figure} ch3-claims
# :name: tbl-ch3-summary
#
# Claims of the first paper about curvature, what this chapter measured, and the verdict.
# ```
#
# The chapter ran in {glue:text}`ch3-runtime:.0f` s. The subsets here are tiny (tens to a
# hundred parameters on the CPU profile, against the paper's thousands), so the condition
# numbers cannot reach the paper's magnitudes; the *ratio* between the two parts is what the
# table compares. Rerun with `papermill chapters/03_curvature.ipynb out.ipynb -p CUTOFF 1e-8`
# to move the cutoff, or with `-p PROFILE full` on a GPU for larger subsets and twenty
# minibatches per task.

# %% [markdown]
# ## Library calls on this page
#
# This page's single source is {download}`03_curvature.py <../../chapters/03_curvature.py>`, a jupytext notebook
# (`make lab` opens it as one; the executed `.ipynb` is under the download button at the top).
#
# Every `equivlib` function and class this page's code calls, each linked to its entry in the
# {ref}`API reference <api>`:
# {py:class}`~equivlib.book.Claim`, {py:func}`~equivlib.book.claims_table`,
# {py:func}`~equivlib.book.glue`, {py:func}`~equivlib.book.glue_claims`,
# {py:func}`~equivlib.book.glue_headline`, {py:func}`~equivlib.book.tally`,
# {py:func}`~equivlib.book.verdict`, {py:func}`~equivlib.config.chapter_setup`,
# {py:func}`~equivlib.curvature.checkpoint_curvature`,
# {py:func}`~equivlib.curvature.condition_study`,
# {py:func}`~equivlib.curvature.condition_summary`, {py:func}`~equivlib.curvature.hessian_parts`,
# {py:func}`~equivlib.curvature.landscape`, {py:func}`~equivlib.plans.chapter2_runs`,
# {py:func}`~equivlib.plans.chapter3_plan`, {py:func}`~equivlib.plans.early_step`,
# {py:func}`~equivlib.plans.spread_steps`, {py:func}`~equivlib.plotting.landscape_panel`,
# {py:func}`~equivlib.plotting.new_figure`, {py:func}`~equivlib.plotting.set_style`,
# {py:func}`~equivlib.runs.get_run`, {py:func}`~equivlib.runs.train_runs`,
# {py:func}`~equivlib.tasks.make_task`.
