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
# # Gradients and the Kurdyka–Łojasiewicz bound
#
# Once the equivariance error is a few percent of the loss, does the model descend on the
# twirled loss alone? The first paper answers with two bounds on how far $\nabla\mathcal L$ is
# from $\nabla\mathcal L_\text{mean}$, both functions of the loss ratio, and with correlations
# measured along training {cite}`shen2025training`. This chapter restates the bounds with every
# assumption in view, proves them, and measures each of their constants on chapter 2's runs.
# "KL" is the Kurdyka–Łojasiewicz inequality {cite}`kurdyka1998gradients`, not the
# Kullback–Leibler divergence.

# %% tags=["parameters"]
PROFILE = "quick"  # "quick": 2-core CPU in minutes; "full": the published book, one GPU
SEED = 0           # the seed of chapter 2's runs (loaded from the cache, not retrained)
DEVICE = "auto"    # "auto" | "cpu" | "cuda"

# %% tags=["hide-input"]
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from equivlib import kl
from equivlib.book import Claim, claims_table, glue, glue_claims, glue_headline, tally, verdict
from equivlib.config import chapter_setup
from equivlib.plans import chapter2_runs, chapter4_plan
from equivlib.plotting import new_figure, set_style
from equivlib.runs import get_run, train_runs
from equivlib.tasks import make_task

t_start = time.perf_counter()
device, gen = chapter_setup(globals(), known=[])
PLAN = chapter4_plan(PROFILE)
runs_plan = chapter2_runs(PROFILE, SEED)
TASK_NAMES = tuple(runs_plan.main)
LABELS = {"forces": "forces (EScAIP-style)", "flow": "flow matching (C-alpha)", "voxels": "voxel denoising (3D U-Net)"}
TOL = 1e-10  # stated tolerance (float64) for identities that hold exactly
set_style()
glue("ch4-device", str(device))
glue("ch4-profile", PROFILE)
glue("ch4-tol", TOL)

train_runs(list(runs_plan.main.values()), executor="auto", device=device, progress=False)  # cached by chapter 2
runs = {name: get_run(runs_plan.main[name], device=device, progress=False) for name in TASK_NAMES}
tasks = {name: make_task(name, PROFILE, SEED, device=device) for name in TASK_NAMES}
FLOW_T = tuple(tasks["flow"].times if PLAN["flow"]["times"] is None else PLAN["flow"]["times"])

# %% [markdown]
# This chapter was executed with the {glue:md}`ch4-profile` profile on
# {glue:md}`ch4-device`. Notation follows {doc}`../notation`.
#
# ## Setting
#
# As in {doc}`03_curvature`, fix a minibatch with its group elements. The plug-in split is then
# an identity of functions of the parameters, $\mathcal L = \mathcal L_\text{mean} +
# \mathcal L_\text{equiv}$, so $\nabla\mathcal L - \nabla\mathcal L_\text{mean} =
# \nabla\mathcal L_\text{equiv}$ exactly. Write
#
# $$
# \varepsilon(\theta) = \frac{\mathcal L_\text{equiv}(\theta)}{\mathcal L_\text{mean}(\theta)},
# \qquad
# \delta(\theta) = \frac{\lVert\nabla\mathcal L(\theta)-\nabla\mathcal L_\text{mean}(\theta)\rVert}
#                       {\lVert\nabla\mathcal L_\text{mean}(\theta)\rVert}
#               = \frac{\lVert\nabla\mathcal L_\text{equiv}\rVert}{\lVert\nabla\mathcal L_\text{mean}\rVert}
# $$
#
# for the loss ratio and the relative error of descending on $\mathcal L$ instead of
# $\mathcal L_\text{mean}$. A small $\delta$ means the two descent directions nearly agree:
#
# ```{prf:lemma} Relative error and angle
# :label: lem-angle
#
# If $\nabla\mathcal L_\text{mean}(\theta) \ne 0$ (so that $\delta$ is defined) and $\delta(\theta) < 1$,
# then $\cos\angle(\nabla\mathcal L, \nabla\mathcal L_\text{mean}) \ge \sqrt{1-\delta^2}$.
# ```
#
# ```{prf:proof}
# Write $a = \nabla\mathcal L_\text{mean}$ and $e = \nabla\mathcal L_\text{equiv}$ with
# $\lVert e\rVert = \delta\lVert a\rVert$. The component of $a + e$ orthogonal to $a$ has norm at
# most $\lVert e\rVert$, and the component along $a$ is at least $\lVert a\rVert - \lVert e\rVert
# > 0$. Among vectors $a + e$ with $\lVert e\rVert \le \delta\lVert a\rVert$, the angle to $a$ is
# largest when $a + e$ is tangent to the ball of radius $\delta\lVert a\rVert$ around $a$, where
# its sine is $\delta$. Hence the sine is at most $\delta$ and the cosine at least
# $\sqrt{1-\delta^2}$.
# ```
#
# ## Smoothness gives a self-bound
#
# The paper's Lemma 7 states that an analytic function is smooth on compact sets and that
# $\tfrac12\lVert\nabla f\rVert^2 \le M\,(f - f(x^*))$ follows for a minimum $x^*$. The second
# part needs more than a bounded Hessian on the set: the step that proves it leaves the set,
# and it needs a *global* lower bound at $f(x^*)$. We state the version we can prove, for the
# non-negative functions it is applied to ($\mathcal L_\text{equiv}$ and $\varepsilon$).
#
# ```{prf:lemma} Self-bounding gradient
# :label: lem-self-bound
#
# Let $f \ge 0$ be twice continuously differentiable on a convex open set containing the segment
# from $\theta$ to $\theta - \nabla f(\theta)/M$, with $\lVert\nabla^2 f\rVert_2 \le M$ on that
# segment for some $M > 0$. Then $\lVert\nabla f(\theta)\rVert^2 \le 2M f(\theta)$.
# ```
#
# ```{prf:proof}
# Let $g = \nabla f(\theta)$ and $\theta' = \theta - g/M$. Taylor's theorem with the integral
# remainder along the segment and the Hessian bound give $f(\theta') \le f(\theta) - \lVert
# g\rVert^2/M + \tfrac M2\lVert g/M\rVert^2 = f(\theta) - \lVert g\rVert^2/(2M)$. Since
# $f(\theta') \ge 0$, $\lVert g\rVert^2 \le 2Mf(\theta)$.
# ```
#
# A continuous Hessian is bounded on every compact set (extreme value theorem), so on a compact
# region that contains these segments such an $M$ exists: analyticity is more than needed, twice
# continuous differentiability suffices. With the inputs and group elements of the batch fixed,
# our losses are, as functions of the parameters, compositions of linear maps, SiLU, softmax
# attention and layer or group norms (whose variance carries an additive constant), hence
# $C^\infty$; the radial cutoff of the force model acts on the fixed positions only.
#
# ## Two bounds on the relative error
#
# ```{prf:proposition} Bound by smoothness of the loss ratio (Prop. 2 of the paper)
# :label: prop-bound-smooth
#
# Let $\mathcal L_\text{mean}(\theta) > 0$ and $\nabla\mathcal L_\text{mean}(\theta) \ne 0$, and
# let $\varepsilon$ satisfy the hypothesis of {prf:ref}`lem-self-bound` at $\theta$ with a
# constant $M_\varepsilon$. Then
# $\delta(\theta) \le \varepsilon(\theta) + \dfrac{\mathcal L_\text{mean}(\theta)}
# {\lVert\nabla\mathcal L_\text{mean}(\theta)\rVert}\sqrt{2M_\varepsilon\,\varepsilon(\theta)}$.
# ```
#
# ```{prf:proof}
# $\mathcal L_\text{equiv} = \varepsilon\,\mathcal L_\text{mean}$, so by the product rule
# $\nabla\mathcal L_\text{equiv} = \varepsilon\nabla\mathcal L_\text{mean} + \mathcal
# L_\text{mean}\nabla\varepsilon$. The triangle inequality gives $\lVert\nabla\mathcal
# L_\text{equiv}\rVert \le \varepsilon\lVert\nabla\mathcal L_\text{mean}\rVert + \mathcal
# L_\text{mean}\lVert\nabla\varepsilon\rVert$, and {prf:ref}`lem-self-bound` applied to
# $\varepsilon \ge 0$ bounds $\lVert\nabla\varepsilon\rVert \le \sqrt{2M_\varepsilon\varepsilon}$.
# Divide by $\lVert\nabla\mathcal L_\text{mean}\rVert$.
# ```
#
# The bound is uninformative near critical points of $\mathcal L_\text{mean}$, where the factor
# $\mathcal L_\text{mean}/\lVert\nabla\mathcal L_\text{mean}\rVert$ blows up. The second bound
# replaces that factor by an assumption on how fast $\mathcal L_\text{mean}$ falls.
#
# ```{prf:definition} Kurdyka–Łojasiewicz inequality
# :label: def-kl
#
# $\mathcal L_\text{mean}$ satisfies the KL inequality on a set $U$ with constants $c > 0$ and
# $\alpha \in [1, 2)$ if $\lVert\nabla\mathcal L_\text{mean}(\theta)\rVert^2 \ge
# c\,\mathcal L_\text{mean}(\theta)^\alpha$ for all $\theta \in U$.
# ```
#
# For a real-analytic function $f$ and a critical point $\theta^*$, Łojasiewicz's theorem
# {cite}`lojasiewicz1963propriete,kurdyka1998gradients` gives such constants for $f - f(\theta^*)$ on a neighbourhood of
# $\theta^*$. The definition above, with $\mathcal L_\text{mean}$ itself, is that statement only
# when $\mathcal L_\text{mean}(\theta^*) = 0$: a model that fits every target exactly. Flow
# matching and denoising have targets with irreducible noise, so their minimum is positive and
# the theorem does not give the inequality in this form; there we fit $c$ and $\alpha$ as
# empirical constants on the points we sample and say so.
#
# ```{prf:proposition} Bound by the KL inequality (Prop. 3 of the paper)
# :label: prop-bound-kl
#
# Let $\mathcal L_\text{mean}$ satisfy {prf:ref}`def-kl` on $U$ with $(c, \alpha)$, and let
# $\mathcal L_\text{equiv}$ satisfy the hypothesis of {prf:ref}`lem-self-bound` at every
# $\theta \in U$ with one constant $M$. Then for every $\theta \in U$ with
# $\mathcal L_\text{mean}(\theta) > 0$,
# $\delta(\theta) \le \sqrt{2M/c}\,\sqrt{\mathcal L_\text{equiv}(\theta)/\mathcal
# L_\text{mean}(\theta)^\alpha}$.
# ```
#
# ```{prf:proof}
# {prf:ref}`lem-self-bound` gives $\lVert\nabla\mathcal L_\text{equiv}\rVert^2 \le 2M\mathcal
# L_\text{equiv}$ and the KL inequality $\lVert\nabla\mathcal L_\text{mean}\rVert^2 \ge
# c\,\mathcal L_\text{mean}^\alpha > 0$. Divide the first by the second and take square roots.
# ```
#
# If the percent stays fixed while $\mathcal L_\text{mean} \to 0$, the right-hand side behaves
# like $\sqrt{\varepsilon}\,\mathcal L_\text{mean}^{(1-\alpha)/2}$, which grows for $\alpha > 1$:
# the bound is informative only while $\mathcal L_\text{equiv}$ falls faster than
# $\mathcal L_\text{mean}^\alpha$.
#
# ## Along training
#
# For each task we follow one fixed held-out batch through every checkpoint of chapter 2's run
# (flow matching: one batch per time $t$) and take the gradients of both terms with respect to
# all parameters, in float64.

# %% tags=["hide-input"]
traj = {}
for name in TASK_NAMES:
    p = PLAN[name]
    if name == "flow":
        for t in FLOW_T:
            traj[f"flow t={t:g}"] = kl.trajectory(runs[name].load_model, runs[name].checkpoint_steps,
                                                  tasks[name].fixed_batch(p["n_samples"], p["n_elements"], t=t))
    else:
        traj[name] = kl.trajectory(runs[name].load_model, runs[name].checkpoint_steps,
                                   tasks[name].fixed_batch(p["n_samples"], p["n_elements"]))
allpts = pd.concat([d.assign(run=k) for k, d in traj.items()], ignore_index=True)
inside = allpts[allpts["rel_error"] < 1]
angle_gap = float((np.sqrt(1 - inside["rel_error"] ** 2) - inside["cosine"]).max()) if len(inside) else float("nan")
glue("ch4-angle-n", len(inside))
glue("ch4-n-points", len(allpts))
glue("ch4-angle-gap", angle_gap)
glue("ch4-angle-ok", verdict(len(inside) > 0 and angle_gap <= TOL, yes="holds at every one of them",
                             no="fails at some of them"))
corr = kl.correlation_table(traj)
glue("ch4-corr-table", corr[["run", "n", "pearson", "pearson_low", "pearson_high", "spearman", "spearman_low",
                             "spearman_high"]].style.format({c: "{:.2f}" for c in ["pearson", "pearson_low",
                                                                                      "pearson_high", "spearman",
                                                                                      "spearman_low",
                                                                                      "spearman_high"]})
     .hide(axis="index"))
cf = corr.set_index("run")
flow_rows = cf.loc[[k for k in cf.index if k.startswith("flow")]]
glue("ch4-forces-r", float(cf.loc["forces", "pearson"]))
glue("ch4-forces-r-low", float(cf.loc["forces", "pearson_low"]))
glue("ch4-forces-r-high", float(cf.loc["forces", "pearson_high"]))
glue("ch4-voxels-r", float(cf.loc["voxels", "pearson"]))
glue("ch4-flow-r-min", float(flow_rows["pearson"].min()))
glue("ch4-flow-r-max", float(flow_rows["pearson"].max()))
glue("ch4-flow-sig", int((flow_rows["pearson_low"] > 0).sum()))
glue("ch4-flow-nt", len(flow_rows))
glue("ch4-npts", int(cf["n"].min()))

fig, axes = new_figure(3, 1, width=3.8, height=3.4)
for ax, name in zip(axes[0], TASK_NAMES):
    d = allpts[allpts["run"].str.startswith(name)]
    sns.scatterplot(data=d, x="loss_ratio", y="grad_ratio", hue="run" if name == "flow" else "step",
                    palette="viridis", ax=ax, s=25, legend=(name != "voxels"))
    ax.set(xscale="log", yscale="log", title=LABELS[name], xlabel="loss ratio L_equiv / L",
           ylabel="gradient ratio |∇L_equiv| / |∇L|" if name == "forces" else "")
    if ax.get_legend():
        ax.legend(fontsize=6, title_fontsize=7)
glue("ch4-scatter-fig", fig, display=False)
plt.close(fig)

fig, axes = new_figure(3, 2, width=3.8, height=2.9, sharex="col")
for j, name in enumerate(TASK_NAMES):
    d = allpts[allpts["run"].str.startswith(name)].assign(step=lambda t: t["step"].clip(lower=0.5))
    for i, (col, label) in enumerate([("cosine", "cos(∇L, ∇L_mean)"), ("required_M_equiv", "|∇L_equiv|² / (2 L_equiv)")]):
        sns.lineplot(data=d, x="step", y=col, hue="run" if name == "flow" else None, ax=axes[i, j], marker="o",
                     legend=(name == "flow" and i == 0))
        axes[i, j].set(xscale="log", yscale="log" if i == 1 else "linear", ylabel=label if j == 0 else "",
                       xlabel="training step (0 drawn at 0.5)" if i == 1 else "")
    axes[0, j].set_title(LABELS[name])
glue("ch4-cosine-fig", fig, display=False)
plt.close(fig)
req = allpts.groupby(allpts["run"].str.split(" ").str[0])["required_M_equiv"]
for name in TASK_NAMES:
    glue(f"ch4-{name}-reqM-min", float(req.min()[name]))
    glue(f"ch4-{name}-reqM-max", float(req.max()[name]))

# %% [markdown]
# The measured cosines against {prf:ref}`lem-angle`: over the {glue:text}`ch4-angle-n` of
# {glue:text}`ch4-n-points` checkpoints with $\delta < 1$, the largest value of
# $\sqrt{1-\delta^2} - \cos$ is {glue:text}`ch4-angle-gap:.1e` (the lemma needs it $\le 0$; we
# allow {glue:text}`ch4-tol:.0e`), so the lemma {glue:md}`ch4-angle-ok`.
#
# ```{glue:figure} ch4-scatter-fig
# :name: fig-ch4-scatter
#
# Gradient ratio against loss ratio at every checkpoint, log-log (colour: training step;
# flow matching: the time $t$).
# ```
#
# ```{glue:figure} ch4-cosine-fig
# :name: fig-ch4-cosine
#
# Top: cosine between the gradient of the loss and the gradient of the twirled loss over
# training. Bottom: the smallest smoothness constant of $\mathcal L_\text{equiv}$ each checkpoint
# requires, $\lVert\nabla\mathcal L_\text{equiv}\rVert^2/(2\mathcal L_\text{equiv})$ (all
# parameters).
# ```
#
# Along training the self-bounding constant that {prf:ref}`lem-self-bound` needs ranges from
# {glue:text}`ch4-forces-reqM-min:.2g` to {glue:text}`ch4-forces-reqM-max:.2g` for forces,
# {glue:text}`ch4-flow-reqM-min:.2g` to {glue:text}`ch4-flow-reqM-max:.2g` for flow matching and
# {glue:text}`ch4-voxels-reqM-min:.2g` to {glue:text}`ch4-voxels-reqM-max:.2g` for voxels: one
# constant for the whole trajectory has to be at least the largest of these, which is why the
# bounds below are evaluated only near the end of training.
#
# ```{glue:figure} ch4-corr-table
# :name: tbl-ch4-corr
#
# Log-log correlation between the loss ratio and the gradient ratio over the checkpoints of
# each run, with 95% intervals (Fisher's z; Bonett–Wright for Spearman).
# ```
#
# The paper reports a log-log Pearson correlation of 0.75 for EScAIP and 0.23 to 0.95 across
# times for Proteína. Over our {glue:text}`ch4-npts` checkpoints per run we measure
# {glue:text}`ch4-forces-r:.2f` ({glue:text}`ch4-forces-r-low:.2f` to
# {glue:text}`ch4-forces-r-high:.2f`) for forces, {glue:text}`ch4-voxels-r:.2f` for voxels, and
# {glue:text}`ch4-flow-r-min:.2f` to {glue:text}`ch4-flow-r-max:.2f` across flow-matching times,
# of which {glue:text}`ch4-flow-sig` of {glue:text}`ch4-flow-nt` have an interval above zero.
#
# The paper also finds the correlation stronger at short lags: changes of the two ratios
# between nearby checkpoints move together more than changes far apart.

# %% tags=["hide-input"]
lags = pd.concat([kl.lag_correlations(d, lags=PLAN["lags"]).assign(run=k) for k, d in traj.items()
                  if (d["loss_ratio"] > 0).all()], ignore_index=True)
glue("ch4-lag-table", lags.pivot(index="run", columns="lag", values="r").style.format("{:.2f}", na_rep="n/a"))
mean_by_lag = lags.groupby("lag")["r"].mean()
lag_falls = bool(mean_by_lag.dropna().is_monotonic_decreasing and mean_by_lag.notna().sum() >= 2)
glue("ch4-lag1", float(mean_by_lag.iloc[0]))
glue("ch4-lagN", float(mean_by_lag.iloc[-1]))
glue("ch4-lag-max", int(mean_by_lag.index[-1]))
glue("ch4-lag-verdict", verdict(lag_falls, yes="falls", no="does not fall steadily"))

# %% [markdown]
# ```{glue:figure} ch4-lag-table
# :name: tbl-ch4-lag
#
# Spearman correlation between the changes of log loss ratio and log gradient ratio over a lag
# of 1, 2, … checkpoints (checkpoints are log-spaced in steps). Longer lags overlap, so their
# intervals, not shown, are optimistic.
# ```
#
# Averaged over runs, the lag correlation is {glue:text}`ch4-lag1:.2f` at lag 1 and
# {glue:text}`ch4-lagN:.2f` at lag {glue:text}`ch4-lag-max`; with the lag it
# {glue:md}`ch4-lag-verdict`.
#
# ## The constants near the end of training
#
# Now the bounds themselves. Around each run's last checkpoint we sample a neighbourhood $U$:
# the checkpoint, random perturbations of chapter 3's parameter subset at several relative radii,
# and the last checkpoints before it, all on one fixed batch (flow matching: all times together,
# the training objective). On these points we fit the KL constants, taking for $\alpha$ the
# least-squares slope of $\log\lVert\nabla\mathcal L_\text{mean}\rVert^2$ on $\log\mathcal
# L_\text{mean}$ clipped into $[1, 2)$ and for $c$ the largest value for which the inequality
# holds at every point (so the KL inequality holds on the sample by construction). The
# smoothness constants are measured separately, as the top Hessian eigenvalues of
# $\mathcal L_\text{equiv}$ and of $\varepsilon$ at the last checkpoint (Lanczos); the
# self-bounding inequality can then fail elsewhere in $U$, which is the check.

# %% tags=["hide-input"]
bounds = {name: kl.bound_study(runs[name].load_model, runs[name].checkpoint_steps,
                               tasks[name].fixed_batch(PLAN[name]["n_samples"], PLAN[name]["n_elements"]),
                               subset=PLAN[name]["subset"], radii=PLAN["radii"], n_directions=PLAN["n_directions"],
                               late=PLAN["late"], seed=SEED)
          for name in TASK_NAMES}
bsum = pd.DataFrame({name: b.summary() for name, b in bounds.items()}).T
glue("ch4-kl-table", bsum[["n", "alpha_fit", "alpha_low", "alpha_high", "alpha", "c", "M_equiv",
                           "max_required_M_equiv", "M_eps", "max_required_M_eps"]]
     .style.format("{:.3g}").format({"n": "{:.0f}"}))
glue("ch4-bound-table", bsum[["prop2_holds", "prop2_tightness", "prop2_uninformative", "prop3_holds",
                              "prop3_tightness", "prop3_uninformative"]].style.format("{:.2f}"))
for name in TASK_NAMES:
    s = bounds[name].summary()
    glue(f"ch4-{name}-alpha-fit", s["alpha_fit"])
    glue(f"ch4-{name}-c", s["c"])
    glue(f"ch4-{name}-p3-holds", 100 * s["prop3_holds"])
    glue(f"ch4-{name}-p3-useless", 100 * s["prop3_uninformative"])
    glue(f"ch4-{name}-p3-tight", s["prop3_tightness"])
outside = [n for n in TASK_NAMES if not 1 <= bsum.loc[n, "alpha_fit"] < 2]
m_short = [n for n in TASK_NAMES if bsum.loc[n, "max_required_M_equiv"] > bsum.loc[n, "M_equiv"]]
glue("ch4-alpha-verdict",
     (f"The fitted exponent falls outside [1, 2) for {', '.join(outside)}, so there the KL form with these "
      f"points is an envelope, not a fit" if outside else "Every fitted exponent lies in [1, 2)") + ".")
glue("ch4-m-verdict",
     (f"For {', '.join(m_short)} some sampled point needs a larger smoothness constant than the top eigenvalue at "
      f"the last checkpoint: the local curvature there underestimates the supremum over the neighbourhood"
      if m_short else "At every sampled point the top eigenvalue at the last checkpoint covers the constant the "
                      "point requires") + ".")

fig, axes = new_figure(3, 1, width=3.8, height=3.4)
for ax, name in zip(axes[0], TASK_NAMES):
    p = bounds[name].points
    for col, mk in (("prop2", "o"), ("prop3", "s")):
        ax.scatter(p["rel_error"], p[col], marker=mk, s=20, label=f"{col[:4]}. {col[4]}", alpha=0.8)
    lo, hi = np.nanmin(p[["rel_error", "prop2", "prop3"]].to_numpy()), np.nanmax(p[["rel_error", "prop2", "prop3"]].to_numpy())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="bound = measured")
    ax.axhline(1.0, color="grey", lw=0.6, ls=":")
    ax.set(xscale="log", yscale="log", title=LABELS[name], xlabel="measured δ",
           ylabel="bound on δ" if name == "forces" else "")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7)
glue("ch4-bound-fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} ch4-kl-table
# :name: tbl-ch4-kl
#
# Constants near the last checkpoint, per task: number of sampled points, fitted KL exponent
# with its 95% interval, the exponent used (clipped into [1, 2)), the envelope $c$; the top Hessian
# eigenvalue of $\mathcal L_\text{equiv}$ (and of ε) at the last checkpoint beside the largest
# constant any sampled point requires, $\lVert\nabla\mathcal L_\text{equiv}\rVert^2/(2\mathcal
# L_\text{equiv})$ (and the same for ε).
# ```
#
# ```{glue:figure} ch4-bound-fig
# :name: fig-ch4-bounds
#
# The two bounds against the measured relative error δ at the sampled points; above the dashed
# line the bound holds, above the dotted line it is uninformative (≥ 1).
# ```
#
# ```{glue:figure} ch4-bound-table
# :name: tbl-ch4-bounds
#
# Share of sampled points where each bound holds, its median ratio to the measured δ
# (tightness: 1 is exact), and the share where it is ≥ 1.
# ```
#
# {glue:md}`ch4-alpha-verdict` {glue:md}`ch4-m-verdict` The KL bound holds at
# {glue:text}`ch4-forces-p3-holds:.0f`% of the sampled points for forces,
# {glue:text}`ch4-flow-p3-holds:.0f`% for flow matching and {glue:text}`ch4-voxels-p3-holds:.0f`%
# for voxels; where it holds it exceeds the measured error by a median factor of
# {glue:text}`ch4-forces-p3-tight:.1f`, {glue:text}`ch4-flow-p3-tight:.1f` and
# {glue:text}`ch4-voxels-p3-tight:.1f`, and it is uninformative (≥ 1) at
# {glue:text}`ch4-forces-p3-useless:.0f`%, {glue:text}`ch4-flow-p3-useless:.0f`% and
# {glue:text}`ch4-voxels-p3-useless:.0f`% of the points.
#
# ## What reproduced

# %% tags=["hide-input"]
f_r = cf.loc["forces"]
claims = claims_table([
    Claim("strong log-log correlation of loss ratio and gradient ratio over training (forces: Pearson 0.75)",
          f"forces {f_r['pearson']:.2f} ({f_r['pearson_low']:.2f} to {f_r['pearson_high']:.2f}), "
          f"n = {int(f_r['n'])}",
          verdict(f_r["pearson_low"] > 0 and f_r["pearson"] >= 0.5, partly=f_r["pearson_low"] > 0,
                  no="not reproduced")),
    Claim("flow matching: significant correlations at all times (0.23 to 0.95)",
          f"{flow_rows['pearson'].min():.2f} to {flow_rows['pearson'].max():.2f}; "
          f"{int((flow_rows['pearson_low'] > 0).sum())} of {len(flow_rows)} times significant",
          verdict(bool((flow_rows["pearson_low"] > 0).all()), partly=bool((flow_rows["pearson_low"] > 0).any()),
                  no="not reproduced")),
    Claim("stronger correlation at smaller lags", "mean Spearman by lag: " + ", ".join(
          f"{k}: {v:.2f}" for k, v in mean_by_lag.items()), verdict(lag_falls, no="not reproduced")),
    Claim("the KL bound (Prop. 3) holds near the optimum",
          "; ".join(f"{n}: {100 * bsum.loc[n, 'prop3_holds']:.0f}% of points" for n in TASK_NAMES),
          verdict(bool((bsum["prop3_holds"] == 1).all()), partly=bool((bsum["prop3_holds"] > 0).any()),
                  yes="holds", no="does not hold")),
    Claim("(ours) the KL bound is informative (< 1) near the optimum",
          "; ".join(f"{n}: {100 * (1 - bsum.loc[n, 'prop3_uninformative']):.0f}% of points" for n in TASK_NAMES),
          verdict(bool((bsum["prop3_uninformative"] == 0).all()),
                  partly=bool((bsum["prop3_uninformative"] < 1).any()), yes="holds", no="does not hold")),
    Claim("KL exponent α in [1, 2)", "; ".join(f"{n}: {bsum.loc[n, 'alpha_fit']:.2f}" for n in TASK_NAMES),
          verdict(not outside, partly=len(outside) < len(TASK_NAMES), yes="holds", no="does not hold")),
], claim_header="claim (Shen et al.)")
glue_claims("ch4-claims", claims)
glue_headline("ch4", question="Do the gradients of the equivariance error track its share of the loss, as the "
              "Kurdyka-Łojasiewicz bound says?",
              answer=f"The log-log Pearson correlation of loss ratio and gradient ratio over training is "
              f"{f_r['pearson']:.2f} (95% CI {f_r['pearson_low']:.2f} to {f_r['pearson_high']:.2f}) for forces, "
              f"{cf.loc['voxels', 'pearson']:.2f} for voxels and {flow_rows['pearson'].min():.2f} to "
              f"{flow_rows['pearson'].max():.2f} for flow matching; of the paper's claims: {tally(claims)}.",
              figure="ch4-scatter-fig")
glue("ch4-runtime", time.perf_counter() - t_start)

# %% [markdown]
# ```{glue:figure} ch4-claims
# :name: tbl-ch4-summary
#
# Claims of the first paper about gradients, what this chapter measured, and the verdict.
# ```
#
# The chapter ran in {glue:text}`ch4-runtime:.0f` s. The neighbourhoods are small samples (a
# handful of directions on a parameter subset), so the constants are estimates of the
# neighbourhood's, not suprema over it; the perturbations' radii and number are in
# `equivlib.plans.CHAPTER4` and grow with `PROFILE="full"`.

# %% [markdown]
# ## Library calls on this page
#
# This page's single source is {download}`04_gradients_kl.py <../../chapters/04_gradients_kl.py>`, a jupytext notebook
# (`make lab` opens it as one; the executed `.ipynb` is under the download button at the top).
#
# Every `equivlib` function and class this page's code calls, each linked to its entry in the
# {ref}`API reference <api>`:
# {py:class}`~equivlib.book.Claim`, {py:func}`~equivlib.book.claims_table`,
# {py:func}`~equivlib.book.glue`, {py:func}`~equivlib.book.glue_claims`,
# {py:func}`~equivlib.book.glue_headline`, {py:func}`~equivlib.book.tally`,
# {py:func}`~equivlib.book.verdict`, {py:func}`~equivlib.config.chapter_setup`,
# {py:func}`~equivlib.kl.bound_study`, {py:func}`~equivlib.kl.correlation_table`,
# {py:func}`~equivlib.kl.lag_correlations`, {py:func}`~equivlib.kl.trajectory`,
# {py:func}`~equivlib.plans.chapter2_runs`, {py:func}`~equivlib.plans.chapter4_plan`,
# {py:func}`~equivlib.plotting.new_figure`, {py:func}`~equivlib.plotting.set_style`,
# {py:func}`~equivlib.runs.get_run`, {py:func}`~equivlib.runs.train_runs`,
# {py:func}`~equivlib.tasks.make_task`.
