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
# # Equivariance error from the weights alone: the force-head theorem
#
# The force model of chapter {doc}`02_learning_dynamics` builds everything from distances and
# species, so its trunk is invariant, and only its last, linear head can break equivariance. For
# such a model the first paper proves that the equivariance error is pinned between two multiples
# of the squared distance of the head's weights from the equivariant ones {cite}`shen2025training`.
# This chapter proves a sharper statement (the error *is* a quadratic form in that distance),
# measures its constants on chapter 2's checkpoints, and shows what happens when the trunk is not
# invariant.

# %% tags=["parameters"]
PROFILE = "quick"  # "quick": 2-core CPU in minutes; "full": the published book, one GPU
SEED = 0           # the seed of chapter 2's runs (loaded from the cache, not retrained)
DEVICE = "auto"    # "auto" | "cpu" | "cuda"
TILT = 0.1         # strength of the orientation-dependent feature added to the trunk (last section)

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

import equivlib as eq
from equivlib import head as hd
from equivlib import subspace as sp
from equivlib.book import Claim, claims_table, glue, glue_claims, glue_headline, tally, verdict
from equivlib.config import by_profile, chapter_setup
from equivlib.plans import chapter2_runs
from equivlib.plotting import new_figure, set_style
from equivlib.runs import get_run
from equivlib.stats import correlation_ci
from equivlib.tasks import make_task
from equivlib.training import float64_copy

t_start = time.perf_counter()
device, gen = chapter_setup(globals(), known=["TILT"])
if not (isinstance(TILT, (int, float)) and TILT > 0):
    raise ValueError(f"TILT must be a positive number, got {TILT!r}")
SIZES = by_profile(PROFILE, quick=dict(n_samples=4, n_elements=8, n_perturb=5, ns=[1, 2, 4, 8, 16], copies=2,
                                      toy_n=64, toy_eval=16, toy_steps=300),
                   full=dict(n_samples=32, n_elements=16, n_perturb=100, ns=[1, 2, 4, 8, 16, 32, 64], copies=4,
                             toy_n=512, toy_eval=128, toy_steps=3000),
                   # make smoke: the full shapes with fewer samples (8 held out) and perturbations
                   smoke=dict(n_samples=4, n_perturb=2, toy_n=128, toy_eval=32))
TOL = 1e-10  # stated tolerance (relative, float64) for identities that hold exactly
set_style()
glue("ch5-device", str(device))
glue("ch5-profile", PROFILE)
glue("ch5-tol", TOL)

config = chapter2_runs(PROFILE, SEED).main["forces"]
run = get_run(config, device=device, progress=False)  # trained and cached by chapter 2
task = make_task("forces", PROFILE, SEED, device=device)
batch = task.fixed_batch(SIZES["n_samples"], SIZES["n_elements"])
final = float64_copy(run.load_model())
glue("ch5-n-samples", SIZES["n_samples"])
glue("ch5-n-elements", SIZES["n_elements"])
glue("ch5-d", int(final.head.shape[0]))

# %% [markdown]
# This chapter was executed with the {glue:md}`ch5-profile` profile on {glue:md}`ch5-device`.
# Notation follows {doc}`../notation`.
#
# ## The head and its equivariant subspace
#
# For an atom $i$ with neighbours $j$, edge unit vectors $u_{ij} \in \mathbb R^3$ and edge
# features $h_{ij} \in \mathbb R^d$, the model predicts the force component
# $o_k(i) = \sum_j u_{ij,k}\, w_k^\top h_{ij}$ for $k \in \{x, y, z\}$, with the head
# $W = [w_x, w_y, w_z] \in \mathbb R^{d\times 3}$ and no bias. Let
# $\bar w = \tfrac13(w_x+w_y+w_z)$, $W_E = [\bar w, \bar w, \bar w]$ and $W_{E^\perp} = W - W_E$.
# The set $E = \{[v, v, v]\}$ is a linear subspace and $W \mapsto W_E$ is the orthogonal projection
# onto it (Frobenius inner product), since $W_{E^\perp}$ has rows summing to zero and is therefore
# orthogonal to every $[v, v, v]$.
#
# ```{prf:theorem} The equivariance error is a quadratic form in the head's distance from E
# :label: thm-head
#
# Fix a finite batch of molecules with $D_b$ valid force entries each, and for each molecule a set
# of $N$ rotations; let $\mathcal L_\text{equiv}$ be the plug-in equivariance error on it. Assume
# the trunk is invariant: $h_{ij}(Rx) = h_{ij}(x)$ for every rotation $R$ in the batch (and $u_{ij}(Rx) =
# R\,u_{ij}(x)$, which holds for edge vectors). Then there is a symmetric positive semi-definite
# matrix $\bar Q$, depending on the data and the trunk but not on $W$, with
#
# $$
# \mathcal L_\text{equiv}(W) = \operatorname{vec}(W_{E^\perp})^\top \bar Q\,
#   \operatorname{vec}(W_{E^\perp}),
# \qquad\text{hence}\qquad
# \lambda_\text{min}\lVert W_{E^\perp}\rVert_F^2 \le \mathcal L_\text{equiv}(W) \le
# \lambda_\text{max}\lVert W_{E^\perp}\rVert_F^2 ,
# $$
#
# where $\lambda_\text{min}, \lambda_\text{max}$ are the extreme eigenvalues of $\bar Q$ restricted
# to $E^\perp$. Moreover $\nabla_W\mathcal L_\text{equiv} = 2\bar Q\operatorname{vec}(W_{E^\perp})$,
# so $2\lambda_\text{min}\lVert W_{E^\perp}\rVert_F \le \lVert\nabla_W\mathcal L_\text{equiv}\rVert
# \le 2\lambda_\text{max}\lVert W_{E^\perp}\rVert_F$. The lower bounds are positive exactly when
# $\bar Q$ is positive definite on $E^\perp$ ("non-degenerate data").
# ```
#
# ```{prf:proof}
# For a rotation $R$ the twisted prediction is $Z_R = R^\top o(Rx)$. By the assumption,
# $o_k(i; Rx) = \sum_j (R u_{ij})_k\, w_k^\top h_{ij}$, so $Z_R(i)_a = \sum_k R_{ka}\sum_j (R
# u_{ij})_k\, w_k^\top h_{ij}$, which is linear in $W$: $Z_R = M_R\operatorname{vec}(W)$ for a
# matrix $M_R$ built from $R$, the edge vectors and the features. With $\bar M$ the mean of $M_R$
# over the molecule's $N$ rotations, the plug-in error of one molecule is
# $\tfrac1{ND_b}\sum_R\lVert (M_R-\bar M)\operatorname{vec}(W)\rVert^2$, and averaging over
# molecules gives $\mathcal L_\text{equiv} = \operatorname{vec}(W)^\top\bar Q\operatorname{vec}(W)$
# with $\bar Q = \tfrac1B\sum_b\tfrac1{ND_b}\sum_R (M_R-\bar M)^\top(M_R-\bar M)$, symmetric and
# positive semi-definite. For $W = W_E$, $Z_R(i)_a = \sum_k R_{ka}(R u_{ij})_k\,\bar w^\top h_{ij}$
# summed over $j$, and $\sum_k R_{ka}(Ru)_k = (R^\top R u)_a = u_a$: the twisted predictions do not
# depend on $R$, so $(M_R - \bar M)\operatorname{vec}(W_E) = 0$ for every $R$, i.e. $\bar Q$
# vanishes on $E$. Writing $W = W_E + W_{E^\perp}$ and expanding the quadratic form, every term
# containing $W_E$ is zero, which gives the identity. The bounds are the Rayleigh quotient of
# $\bar Q$ on $E^\perp$. The gradient of $\operatorname{vec}(W)^\top\bar Q\operatorname{vec}(W)$
# is $2\bar Q\operatorname{vec}(W) = 2\bar Q\operatorname{vec}(W_{E^\perp})$ since $\bar Q$
# vanishes on $E$; it lies in $E^\perp$ (the range of a symmetric matrix is orthogonal to its
# kernel), where $\lVert\bar Q p\rVert$ is between $\lambda_\text{min}\lVert p\rVert$ and
# $\lambda_\text{max}\lVert p\rVert$ because $\bar Q$ maps $E^\perp$ to itself.
# ```
#
# The paper's Thm. 4 states the two bounds with positive constants for "a non-degenerate dataset";
# the identity shows what non-degeneracy means here (positive definiteness of $\bar Q$ on $E^\perp$,
# a property of finitely many molecules and rotations that we can measure) and that the bounds are
# the extremes of an exact quadratic form. The gradient statement is the head case of the paper's
# Thm. 6, here with both a lower and an upper constant.
#
# ## The identity, checked
#
# On {glue:text}`ch5-n-samples` held-out molecules, each with {glue:text}`ch5-n-elements` Haar
# rotations, we form $\bar Q$ from the trunk's features and compare the quadratic form with the
# decomposition of {doc}`01_loss_decomposition`, at every checkpoint of chapter 2's force run (the
# trunk, hence $\bar Q$, changes along training).

# %% tags=["hide-input"]
traj = hd.head_trajectory(run.load_model, run.checkpoint_steps, batch)
ident_err = float(((traj["quad"] - traj["L_equiv"]).abs() / traj["L_equiv"]).max())
on_E = float(traj["on_E"].max())
inside_traj = int(((traj["L_equiv"] >= traj["lower"] * (1 - 1e-12)) & (traj["L_equiv"] <= traj["upper"] * (1 + 1e-12))).sum())
grad_inside = int(((traj["grad"] >= traj["grad_lower"] * (1 - 1e-9)) & (traj["grad"] <= traj["grad_upper"] * (1 + 1e-9))).sum())
glue("ch5-ident-err", ident_err)
glue("ch5-on-E", on_E)
glue("ch5-ident-ok", verdict(ident_err < TOL and on_E < TOL, yes="holds", no="does not hold"))
glue("ch5-n-ckpt", len(traj))
glue("ch5-inside-traj", inside_traj)
glue("ch5-grad-inside", grad_inside)
pear = correlation_ci(traj["dist"], traj["L_equiv"], method="pearson")
spear = correlation_ci(traj["dist"], traj["L_equiv"], method="spearman")
glue("ch5-pearson", pear.text())
glue("ch5-spearman", spear.text())
glue("ch5-ratio-last", float(traj["lambda_max"].iloc[-1] / traj["lambda_min"].iloc[-1]))
glue("ch5-dist-change", float(100 * (traj["dist"].iloc[-1] / traj["dist"].iloc[0] - 1)))
le_ratio = float(traj["L_equiv"].iloc[0] / traj["L_equiv"].iloc[-1])
glue("ch5-Lequiv-change", f"falls by a factor {le_ratio:.3g}" if le_ratio >= 1 else f"rises by a factor {1 / le_ratio:.3g}")
glue("ch5-lmin-min", float(traj["lambda_min"].min()))
glue("ch5-lmin-last", float(traj["lambda_min"].iloc[-1]))
glue("ch5-lmax-last", float(traj["lambda_max"].iloc[-1]))

fig, axes = new_figure(2, 1, width=4.6, height=3.6)
ax = axes[0, 0]
t = traj.assign(step=traj["step"].clip(lower=0.5))
ax.plot(t["step"], t["L_equiv"], "o-", label="L_equiv (decomposition)")
ax.fill_between(t["step"], t["lower"], t["upper"], alpha=0.25, label="λ_min‖W_E⊥‖² to λ_max‖W_E⊥‖²")
ax.set(xscale="log", yscale="log", xlabel="training step (0 drawn at 0.5)", ylabel="held-out L_equiv")
ax.legend(fontsize=7)
ax = axes[0, 1]
sc = ax.scatter(traj["dist"], traj["L_equiv"], c=np.log10(t["step"]), cmap="viridis")
ax.set(yscale="log", xlabel="‖W_E⊥‖_F", ylabel="L_equiv")
ax.ticklabel_format(axis="x", style="plain", useOffset=False)
fig.colorbar(sc, ax=ax, label="log10 step")
glue("ch5-traj-fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# Over all {glue:text}`ch5-n-ckpt` checkpoints the quadratic form equals the decomposition's
# $\mathcal L_\text{equiv}$ to a relative {glue:text}`ch5-ident-err:.1e`, and $\bar Q$ restricted to
# $E$ is {glue:text}`ch5-on-E:.1e` of $\lambda_\text{max}$: the identity {glue:md}`ch5-ident-ok`
# (tolerance {glue:text}`ch5-tol:.0e`). The error lies between the bounds at
# {glue:text}`ch5-inside-traj` of {glue:text}`ch5-n-ckpt` checkpoints and the gradient norm between
# its bounds at {glue:text}`ch5-grad-inside`.
#
# ```{glue:figure} ch5-traj-fig
# :name: fig-ch5-traj
#
# Left: the equivariance error over training inside the band the theorem allows at each
# checkpoint. Right: error against the head's distance from the equivariant subspace.
# ```
#
# At the final checkpoint the band spans $\lambda_\text{max}/\lambda_\text{min} =$
# {glue:text}`ch5-ratio-last:.3g` ($\lambda_\text{min} =$ {glue:text}`ch5-lmin-last:.2e`,
# $\lambda_\text{max} =$ {glue:text}`ch5-lmax-last:.2e`; the smallest $\lambda_\text{min}$ over
# training is {glue:text}`ch5-lmin-min:.1e`). Because $\bar Q$ moves with the trunk, the distance
# alone does not fix the error: from the first to the last checkpoint $\lVert W_{E^\perp}\rVert_F$
# changes by {glue:text}`ch5-dist-change:.1f`% while $\mathcal L_\text{equiv}$
# {glue:md}`ch5-Lequiv-change`. Over training the paper reports a Pearson correlation of 0.94 and a Spearman
# correlation of 0.99 between the two, and we measure Pearson {glue:md}`ch5-pearson` and Spearman
# {glue:md}`ch5-spearman`.
#
# ## Random heads on a fixed trunk
#
# With the trunk of the final checkpoint fixed, the bounds are the same for every head. We draw
# heads at random around the trained one, at distances from {glue:text}`ch5-scale-lo:g` to
# {glue:text}`ch5-scale-hi:g` times its norm.

# %% tags=["hide-input"]
SCALES = (0.1, 1.0, 10.0)  # random heads at these multiples of the trained head's norm from it
pert = hd.head_perturbations(final, batch, n=SIZES["n_perturb"], scales=SCALES, seed=SEED)
glue("ch5-scale-lo", SCALES[0])
glue("ch5-scale-hi", SCALES[-1])
frac_inside = float(pert["inside"].mean())
glue("ch5-n-pert", len(pert))
glue("ch5-frac-inside", 100 * frac_inside)
glue("ch5-pert-ok", verdict(bool(pert["inside"].all()), yes="every one", no="not every one"))
glue("ch5-pos-median", float(pert["position"].median()))
glue("ch5-pos-min", float(pert["position"].min()))
glue("ch5-pos-max", float(pert["position"].max()))
fig, axes = new_figure(1, 1, width=4.6, height=3.2)
sns.histplot(pert, x="position", hue="scale", bins=20, ax=axes[0, 0], palette="viridis", multiple="stack")
axes[0, 0].set(xlabel="(L_equiv − lower) / (upper − lower)", xlim=(0, 1))
glue("ch5-pert-fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# {glue:md}`ch5-pert-ok` of the {glue:text}`ch5-n-pert` random heads lies inside the interval
# ({glue:text}`ch5-frac-inside:.0f`%). Where in the interval they fall shows how tight it is: the
# median relative position is {glue:text}`ch5-pos-median:.3f` (range
# {glue:text}`ch5-pos-min:.3f` to {glue:text}`ch5-pos-max:.3f`), where 0 is the lower and 1 the
# upper bound; only a deviation along the extreme eigenvectors of $\bar Q$ reaches either.
#
# ```{glue:figure} ch5-pert-fig
# :name: fig-ch5-pert
#
# Where the error of random heads falls between the two bounds (0: the lower bound, 1: the upper).
# ```
#
# ## How many molecules make the data non-degenerate?
#
# $\bar Q$ on $E^\perp$ is a $2d \times 2d$ matrix built from finitely many molecules and rotations;
# with too few it is singular and the lower bound is zero.

# %% tags=["hide-input"]
lam_n = hd.lambda_vs_samples(final, task, [n for n in SIZES["ns"] if n <= task.heldout.x.shape[0]],
                             SIZES["n_elements"])
glue("ch5-lam-table", lam_n.style.format({"lambda_min": "{:.2e}", "lambda_max": "{:.2e}", "ratio": "{:.3g}"})
     .hide(axis="index"))
first_pd = lam_n.loc[lam_n["lambda_min"] > 1e-12 * lam_n["lambda_max"], "molecules"]
glue("ch5-first-pd", "with " + (f"{int(first_pd.iloc[0])} molecule(s)" if len(first_pd) else "none of the tested sizes"))
glue("ch5-2d", 2 * int(final.head.shape[0]))

# %% [markdown]
# ```{glue:figure} ch5-lam-table
# :name: tbl-ch5-lambda
#
# Extreme eigenvalues of $\bar Q$ on $E^\perp$ from the first molecules of the held-out set
# (final checkpoint).
# ```
#
# $\bar Q$ on $E^\perp$ (dimension {glue:text}`ch5-2d`) is first positive definite (smallest
# eigenvalue above $10^{-12}\lambda_\text{max}$) {glue:md}`ch5-first-pd`.
#
# ## When the trunk is not invariant
#
# Add to every edge feature a term that depends on the orientation, $h'_{ij} = h_{ij} +
# \tau\,u_{ij,z}\,v$ for a fixed unit vector $v$ (here $\tau =$ {glue:text}`ch5-tilt`). The
# twisted predictions are still linear in $W$, so the error is still a quadratic form
# $\operatorname{vec}(W)^\top\bar Q\operatorname{vec}(W)$, but $\bar Q$ no longer vanishes on $E$:
# the projected head $W_E$ is not equivariant, and the theorem's identity fails.

# %% tags=["hide-input"]
glue("ch5-tilt", float(TILT))
tilted = hd.TiltedTrunk(final, TILT, seed=SEED)
try:
    hd.head_form(tilted, batch)
    refused = False
except ValueError:
    refused = True
tilt_form = hd.head_form(tilted, batch, check_invariance=False)
tilt_pt = hd.head_point(tilted, batch, form=tilt_form, check_invariance=False)
WE, _ = hd.split_head(final.head.detach())
floor = tilt_form.value(WE)
glue("ch5-tilt-refused", verdict(refused, yes="refuses", no="does not refuse"))
glue("ch5-tilt-floor", floor)
glue("ch5-tilt-Lequiv", tilt_pt["L_equiv"])
glue("ch5-tilt-quad", tilt_pt["quad"])
glue("ch5-tilt-onE", tilt_form.on_E)
glue("ch5-tilt-floor-share", 100 * floor / tilt_pt["L_equiv"])
glue("ch5-tilt-full-err", abs(tilt_pt["quad_full"] - tilt_pt["L_equiv"]) / tilt_pt["L_equiv"])
glue("ch5-tilt-verdict", "with this trunk the projected head is not equivariant, and the distance from E "
     "does not measure the error." if floor > TOL * tilt_pt["L_equiv"]
     else "at this strength the projected head is still equivariant to the tolerance.")

# %% [markdown]
# The library {glue:md}`ch5-tilt-refused` the theorem's form for this model (it checks the trunk's
# invariance first). Computed anyway, $\bar Q$ on $E$ is {glue:text}`ch5-tilt-onE:.2g` of its top
# eigenvalue instead of zero. The projected head alone now has an equivariance error of
# {glue:text}`ch5-tilt-floor:.2e`, {glue:text}`ch5-tilt-floor-share:.0f`% of the model's
# {glue:text}`ch5-tilt-Lequiv:.2e`. The full quadratic form $\operatorname{vec}(W)^\top\bar Q
# \operatorname{vec}(W)$ differs from the decomposition by a relative {glue:text}`ch5-tilt-full-err:.1e`,
# while the part in $W_{E^\perp}$ alone gives {glue:text}`ch5-tilt-quad:.2e`: {glue:md}`ch5-tilt-verdict`
#
# ## Beyond the head: the quadratic law near the equivariant subspace
#
# The head theorem is exact because the output is linear in $W$. For a whole network the same
# picture holds to second order around the set of equivariant parameters, provided that set is a
# linear subspace $E$ (the framework of the paper's App. A.1: a compact group acting on every
# layer's space by orthogonal matrices, non-linearities that commute with those actions, an
# invariant loss); the paper states this as its Thms. 5 and 6. The Hessian formula of
# {prf:ref}`prop-hessian-parts` gives a short proof.
#
# ```{prf:theorem} Quadratic law and linear gradient near E
# :label: thm-quadratic-law
#
# On a fixed batch, let $E$ be a linear subspace of parameters on which the twisted predictions
# do not depend on the group element ($Z_g(\theta) = \mu(\theta)$ for all $g$ in the batch and all
# $\theta \in E$), and let every $Z_g$ be three times continuously differentiable. For $\theta_E
# \in E$ let $H = \nabla^2\mathcal L_\text{equiv}(\theta_E)$ and let $\lambda_\text{min},
# \lambda_\text{max}$ be the extreme eigenvalues of $\tfrac12 H$ on $E^\perp$. Then for $p \in
# E^\perp$, as $p \to 0$,
#
# $$
# \lambda_\text{min}\lVert p\rVert^2 + O(\lVert p\rVert^3) \le \mathcal L_\text{equiv}(\theta_E + p)
#   \le \lambda_\text{max}\lVert p\rVert^2 + O(\lVert p\rVert^3),
# \qquad
# \lVert\nabla\mathcal L_\text{equiv}(\theta_E + p)\rVert \le 2\lambda_\text{max}\lVert p\rVert
#   + O(\lVert p\rVert^2).
# $$
#
# Moreover $H$ is the Gauss–Newton part alone, $H = \frac1B\sum_b\frac{2}{ND_b}\sum_g (J_g-\bar
# J)^\top(J_g-\bar J)$, it vanishes on $E$, and the lower constant is positive exactly when no
# direction of $E^\perp$ leaves all twisted predictions equal to first order.
# ```
#
# ```{prf:proof}
# $\mathcal L_\text{equiv} \ge 0$ and it vanishes on $E$, so every $\theta_E$ is a minimiser and
# $\nabla\mathcal L_\text{equiv}(\theta_E) = 0$. At $\theta_E$ the residual part of
# {prf:ref}`prop-hessian-parts` carries the factor $Z_g - \mu = 0$, which leaves the Gauss–Newton
# part; it is positive semi-definite. Since $E$ is a linear subspace, $t \mapsto \mathcal
# L_\text{equiv}(\theta_E + te)$ is zero for $e \in E$, so $e^\top He = 0$, and for a positive
# semi-definite matrix this forces $He = 0$: $H$ vanishes on $E$ and, being symmetric, maps
# $E^\perp$ into itself. Taylor's theorem with a third-order remainder (bounded near $\theta_E$ because
# the third derivatives are continuous) gives $\mathcal L_\text{equiv}(\theta_E + p) =
# \tfrac12 p^\top Hp + O(\lVert p\rVert^3)$ and $\nabla\mathcal L_\text{equiv}(\theta_E + p) = Hp +
# O(\lVert p\rVert^2)$; the Rayleigh quotient of $\tfrac12 H$ on $E^\perp$ and $\lVert Hp\rVert \le
# 2\lambda_\text{max}\lVert p\rVert$ finish the proof. Finally $p^\top Hp = 0$ exactly when
# $(J_g - \bar J)p = 0$ for every $g$ and sample.
# ```
#
# We check it on the smallest network where $E$ is a non-trivial subspace: per atom,
# $f(x) = W_2\,\mathrm{silu}(W_1x + b_1)$ with $x \in \mathbb R^3$ and a hidden layer carrying
# {glue:text}`ch5-copies` copies of the regular representation of the 24 cube rotations (SiLU acts
# entry-wise, so it commutes with the permutations of that representation). Averaging each weight
# over the group projects onto $E$. We train it briefly with random rotations on a target
# $y = x\lvert x\rvert$ plus noise, then follow the straight path $\theta_E + t\,\theta_{E^\perp}$ from
# the projected ($t = 0$) to the trained weights ($t = 1$), with the error measured exactly over all
# 24 elements.

# %% tags=["hide-input"]
torch.manual_seed(SEED)
reg = sp.RegularMLP(eq.cube_group(), copies=SIZES["copies"])
toy = sp.toy_data(SIZES["toy_n"], 4, seed=SEED)
reg_log = sp.train_regular_mlp(reg, toy, steps=SIZES["toy_steps"], seed=SEED)
xe, ye = toy["x"][:SIZES["toy_eval"]], toy["y"][:SIZES["toy_eval"]]  # the batch the theorem is checked on
ts = np.geomspace(1e-3, 1.0, 13)
NEAR = 0.03  # "near E": up to this fraction of the trained deviation
path, fits = sp.path_study(reg, xe, ye, ts[ts <= NEAR])
path_all, _ = sp.path_study(reg, xe, ye, ts)
hq = sp.perp_hessian(reg, xe, ye)
q_small = (path["L_equiv"] / path["dist"] ** 2)
bracket = bool(((q_small >= hq["lambda_min"] * (1 - 1e-2)) & (q_small <= hq["lambda_max"] * (1 + 1e-2))).all())
glue("ch5-copies", SIZES["copies"])
glue("ch5-near", 100 * NEAR)
glue("ch5-dimE", hq["dim_E"])
glue("ch5-dimperp", hq["dim_perp"])
glue("ch5-exp", fits["L_equiv"].text(".3f"))
glue("ch5-exp-grad", fits["grad"].text(".3f"))
glue("ch5-q-lmin", hq["lambda_min"])
glue("ch5-q-lmax", hq["lambda_max"])
glue("ch5-q-onE", hq["on_E"])
glue("ch5-bracket", verdict(bracket, yes="lies inside", no="does not lie inside"))
rq = path_all["L_equiv"] / path_all["dist"] ** 2  # Rayleigh quotient along the path
end_ratio = float(rq.iloc[-1] / rq.iloc[0])
glue("ch5-end-ratio", end_ratio)
glue("ch5-rq0", float(rq.iloc[0]))
glue("ch5-rq0-frac", float(rq.iloc[0] / hq["lambda_max"]))
glue("ch5-end-verdict", "the quadratic law holds to within 10% all the way to the trained weights"
     if abs(end_ratio - 1) < 0.1 else "the quadratic law is local: it bends away before the trained weights")
glue("ch5-n-null", hq["n_null"])
glue("ch5-toy-eval", SIZES["toy_eval"])
fig, axes = new_figure(2, 1, width=4.2, height=3.2)
axes[0, 0].loglog(path_all["dist"], path_all["L_equiv"], "o-", label="L_equiv")
axes[0, 0].loglog(path_all["dist"], hq["lambda_max"] * path_all["dist"] ** 2, "k--", lw=0.8, label="λ_max d²")
axes[0, 0].set(xlabel="distance d from E", ylabel="L_equiv (all 24 elements)")
axes[0, 0].legend(fontsize=7)
axes[0, 1].loglog(path_all["dist"], path_all["grad"], "o-")
axes[0, 1].set(xlabel="distance d from E", ylabel="|∇L_equiv|")
glue("ch5-path-fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} ch5-path-fig
# :name: fig-ch5-path
#
# The regular-representation network along the path from its projection onto $E$ to its trained
# weights: equivariance error (left, with the quadratic law's upper constant; the lower one is zero
# here) and its gradient norm
# (right) against the distance from $E$.
# ```
#
# Here $E$ has dimension {glue:text}`ch5-dimE` inside {glue:text}`ch5-dimperp` + {glue:text}`ch5-dimE`
# parameters, and the Hessian at the projection is {glue:text}`ch5-q-onE:.1e` of its norm on $E$.
# Near $E$ (distances up to {glue:text}`ch5-near:.0f`% of the trained deviation) the log-log slope
# of $\mathcal
# L_\text{equiv}$ against the distance is {glue:md}`ch5-exp` and that of the gradient norm
# {glue:md}`ch5-exp-grad`; the theorem predicts 2 and 1. The ratio $\mathcal L_\text{equiv}/d^2$
# there {glue:md}`ch5-bracket` $[\lambda_\text{min}, \lambda_\text{max}] =$
# [{glue:text}`ch5-q-lmin:.2e`, {glue:text}`ch5-q-lmax:.2e`]; it is {glue:text}`ch5-rq0:.2e`, a
# fraction {glue:text}`ch5-rq0-frac:.1e` of $\lambda_\text{max}$, so the trained deviation has most of
# its weight on directions where $H$ is small. At the trained
# weights $\mathcal L_\text{equiv}/d^2$ is {glue:text}`ch5-end-ratio:.2f` times its value near $E$:
# {glue:md}`ch5-end-verdict`.
# {glue:text}`ch5-n-null` eigenvalues of $\tfrac12H$ on $E^\perp$ are zero to rounding (below
# $10^{-10}\lambda_\text{max}$): on these {glue:text}`ch5-toy-eval` samples the data are degenerate for
# this network, so the lower constant is zero and only the upper bound constrains the error.
#
# ## What reproduced

# %% tags=["hide-input"]
claims = claims_table([
    Claim("λ_min ‖W_E⊥‖² ≤ L_equiv ≤ λ_max ‖W_E⊥‖² (Thm. 4)",
          f"identity to {ident_err:.1e}; inside at {inside_traj} of {len(traj)} checkpoints and "
          f"{100 * frac_inside:.0f}% of {len(pert)} random heads",
          verdict(ident_err < TOL and inside_traj == len(traj) and bool(pert["inside"].all()), yes="holds",
                  no="does not hold")),
    Claim("over training, ‖W_E⊥‖ and L_equiv correlate (Pearson 0.94, Spearman 0.99)",
          f"Pearson {pear.text()}; Spearman {spear.text()}",
          verdict(pear.interval.low > 0.5 and spear.interval.low > 0.5, partly=pear.interval.low > 0,
                  no="not reproduced")),
    Claim("gradient norm linear in the distance (Thm. 6, head case)",
          f"between 2λ_min‖p‖ and 2λ_max‖p‖ at {grad_inside} of {len(traj)} checkpoints",
          verdict(grad_inside == len(traj), yes="holds", no="does not hold")),
    Claim("(ours) the theorem needs an invariant trunk",
          f"tilted trunk: projected head's error {floor:.1e} ({100 * floor / tilt_pt['L_equiv']:.0f}% of L_equiv)",
          verdict(floor > TOL * tilt_pt["L_equiv"], yes="holds", no="does not hold")),
    Claim("near E, L_equiv is quadratic in the distance (Thm. 5)", f"log-log slope {fits['L_equiv'].text('.3f')}",
          verdict(fits["L_equiv"].contains(2.0) or abs(fits["L_equiv"].estimate - 2) < 0.05, yes="holds",
                  no="does not hold")),
    Claim("near E, the gradient norm is linear in the distance (Thm. 6)", f"log-log slope {fits['grad'].text('.3f')}",
          verdict(fits["grad"].contains(1.0) or abs(fits["grad"].estimate - 1) < 0.05, yes="holds",
                  no="does not hold")),
], claim_header="claim (Shen et al.)")
glue_claims("ch5-claims", claims)
glue_headline("ch5", question="Can the equivariance error of the force head be read off its weights alone?",
              answer=f"With an invariant trunk it {'is' if ident_err < TOL else 'is not (to tolerance)'} a quadratic "
              f"form in the weights' distance from the equivariant subspace (identity to {ident_err:.1e}); over training, distance and error correlate with Pearson "
              f"{pear.text()} and Spearman {spear.text()}; of the paper's claims: {tally(claims)}.",
              figure="ch5-traj-fig")
glue("ch5-runtime", time.perf_counter() - t_start)

# %% [markdown]
# ```{glue:figure} ch5-claims
# :name: tbl-ch5-summary
#
# Claims of the first paper about the force head, what this chapter measured, and the verdict.
# ```
#
# The chapter ran in {glue:text}`ch5-runtime:.0f` s.

# %% [markdown]
# ## Library calls on this page
#
# This page's single source is {download}`05_head_theorem.py <../../chapters/05_head_theorem.py>`, a jupytext notebook
# (`make lab` opens it as one; the executed `.ipynb` is under the download button at the top).
#
# Every `equivlib` function and class this page's code calls, each linked to its entry in the
# {ref}`API reference <api>`:
# {py:class}`~equivlib.book.Claim`, {py:func}`~equivlib.book.claims_table`,
# {py:func}`~equivlib.book.glue`, {py:func}`~equivlib.book.glue_claims`,
# {py:func}`~equivlib.book.glue_headline`, {py:func}`~equivlib.book.tally`,
# {py:func}`~equivlib.book.verdict`, {py:func}`~equivlib.config.by_profile`,
# {py:func}`~equivlib.config.chapter_setup`, {py:func}`~equivlib.groups.cube_group`,
# {py:class}`~equivlib.head.TiltedTrunk`, {py:func}`~equivlib.head.head_form`,
# {py:func}`~equivlib.head.head_perturbations`, {py:func}`~equivlib.head.head_point`,
# {py:func}`~equivlib.head.head_trajectory`, {py:func}`~equivlib.head.lambda_vs_samples`,
# {py:func}`~equivlib.head.split_head`, {py:func}`~equivlib.plans.chapter2_runs`,
# {py:func}`~equivlib.plotting.new_figure`, {py:func}`~equivlib.plotting.set_style`,
# {py:func}`~equivlib.runs.get_run`, {py:func}`~equivlib.stats.correlation_ci`,
# {py:class}`~equivlib.subspace.RegularMLP`, {py:func}`~equivlib.subspace.path_study`,
# {py:func}`~equivlib.subspace.perp_hessian`, {py:func}`~equivlib.subspace.toy_data`,
# {py:func}`~equivlib.subspace.train_regular_mlp`, {py:func}`~equivlib.tasks.make_task`,
# {py:func}`~equivlib.training.float64_copy`.
