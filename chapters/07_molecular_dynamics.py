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
# # Downstream: molecular dynamics with a force field that is almost equivariant
#
# Chapter {doc}`02_learning_dynamics` trained a force field with rotation augmentation until its
# equivariance error was a fraction of a percent of its loss. Practitioners who run molecular
# dynamics with such models worry that the small residual accumulates along a trajectory, and
# some rotate the system randomly at every step to hide it. This chapter goes beyond both papers
# and measures what the residual does to a simulation: it integrates Newton's equations with
# chapter 2's models, with the same model twirled at every step, with one random rotation per
# step, with the exactly equivariant e3nn model, and with GFN2-xTB, the method the training
# forces came from {cite}`ch2_bannwarth2019gfn2`, through the Atomic Simulation Environment
# {cite}`larsen2017ase`.

# %% tags=["parameters"]
PROFILE = "quick"  # "quick": 2-core CPU in minutes; "full": the published book, one GPU
SEED = 0           # the seed of chapter 2's runs (loaded from the cache, trained if missing)
DEVICE = "auto"    # "auto" | "cpu" | "cuda"
THRESHOLD = 1e-3   # Å: a trajectory pair has diverged once the RMS distance exceeds this
BREAK_RATIO = 1.5  # a bond longer than this times its starting length counts as broken
ALPHA = 0.05       # level of the orientation tests (Bonferroni-corrected over fields and observables)

# %% tags=["hide-input"]
import time

import numpy as np

from equivlib import md
from equivlib.book import Claim, claims_table, glue, glue_claims, glue_headline, tally, verdict
from equivlib.config import by_profile, chapter_setup
from equivlib.plans import chapter2_runs
from equivlib.plotting import new_figure, set_style
from equivlib.runs import get_run

t_start = time.perf_counter()
device, gen = chapter_setup(globals(), known=["THRESHOLD", "BREAK_RATIO", "ALPHA"])
if not (isinstance(THRESHOLD, (int, float)) and THRESHOLD > 0):
    raise ValueError(f"THRESHOLD must be a positive number of Å, got {THRESHOLD!r}")
if not (isinstance(ALPHA, float) and 0 < ALPHA < 1):
    raise ValueError(f"ALPHA must be a number in (0, 1), got {ALPHA!r}")
FULL = dict(molecules=8, steps=2000, langevin_molecules=2, langevin_steps=4000, burn_in=400, blocks=10,
            orientations=128, rotations=32)
SIZES = by_profile(PROFILE, quick=dict(molecules=2, steps=40, langevin_molecules=1, langevin_steps=120, burn_in=20,
                                       blocks=5, orientations=32, rotations=16), full=FULL,
                   smoke=dict(molecules=2, steps=4, langevin_molecules=2, langevin_steps=12, burn_in=2, blocks=2,
                              orientations=4, rotations=4))
DT_FS, TEMPERATURE, FRICTION = 0.5, 300.0, 0.01   # fs, K, 1/fs (Langevin)
EXACT = 1e-8  # Å: stated tolerance for "rotated copies" (float64 forces, chaos amplifies round-off over the run)
set_style()
glue("ch7-device", str(device))
glue("ch7-profile", PROFILE)
glue("ch7-threshold", THRESHOLD)
glue("ch7-break", BREAK_RATIO)
glue("ch7-alpha", ALPHA)
glue("ch7-exact", EXACT)

plan = chapter2_runs(PROFILE, SEED)
aug = get_run(plan.main["forces"], device=device, progress=False)    # trained and cached by chapter 2
e3 = get_run(plan.gap["e3nn"][0], device=device, progress=False)     # the efficiency gap's first seed
scale = float(aug.config.make_task().info["force_scale"])            # eV/Å per model unit
molecules, elements = md.heldout_molecules(PROFILE, SEED, SIZES["molecules"])
fields = md.force_fields(aug.load_model(), e3.load_model(), force_scale=scale, elements=elements, seed=SEED,
                         residual=True)
HYBRID = "gfn2+residual"                       # GFN2-xTB plus the augmented model's non-equivariant part
nve_fields = {k: f for k, f in fields.items() if k != HYBRID}  # the hybrid enters the Langevin study only
learned = ["augmented", "twirled", "random", "e3nn"]
glue("ch7-n-mol", len(molecules))
glue("ch7-atoms", ", ".join(str(len(m["numbers"])) for m in molecules))
glue("ch7-steps", SIZES["steps"])
glue("ch7-dt", DT_FS)
glue("ch7-length", SIZES["steps"] * DT_FS)
glue("ch7-temperature", TEMPERATURE)
glue("ch7-aug-pct", float(aug.monitor.sort_values("step")["percent"].iloc[-1]))
glue("ch7-e3-steps", e3.config.steps)
glue("ch7-aug-steps", aug.config.steps)
glue("ch7-full-langevin", FULL["langevin_steps"] * DT_FS)

# %% [markdown]
# This chapter was executed with the {glue:md}`ch7-profile` profile on {glue:md}`ch7-device`.
# Notation follows {doc}`../notation`. The augmented model is chapter 2's force run, whose
# equivariance error was {glue:text}`ch7-aug-pct:.2f`% of its held-out loss at its last
# checkpoint; the e3nn model is the first seed of chapter 2's efficiency gap
# ({glue:text}`ch7-e3-steps` steps).
#
# ## What the symmetries of a force field guarantee
#
# A force field $F = (F_1, \dots, F_A)$ drives the atoms by $m_i \ddot x_i = F_i(x)$. Two
# different symmetries are easily conflated: equivariance of $F$ under rotations, and the
# conservation laws that hold when $F$ is the gradient of an invariant energy.
#
# ```{prf:proposition} Equivariance, conservation and the first divergence
# :label: prop-ch7-md
#
# Let $F$ be continuously differentiable, and let every $F_i$ depend on the positions only
# through their differences (the models here see centred positions).
#
# 1. If $F(Rx) = R\,F(x)$ for a rotation $R$ and all $x$, then the solution started from
#    $(Rx_0, Rv_0)$ is $R\,x(t)$, where $x(t)$ is the solution started from $(x_0, v_0)$.
# 2. If $F = -\nabla E$ with $E$ invariant under translations, the total momentum
#    $P = \sum_i m_i \dot x_i$ is conserved; if $E$ is also invariant under rotations, so is the
#    angular momentum $L = \sum_i m_i (x_i - X) \times \dot x_i$ about the centre of mass $X$.
# 3. Equivariance alone implies neither: the net force $N(x) = \sum_i F_i(x)$ and the net torque
#    $\tau(x) = \sum_i (x_i - X) \times F_i(x)$ of an equivariant $F$ satisfy $N(Rx) = R\,N(x)$ and
#    $\tau(Rx) = R\,\tau(x)$, which does not make them zero.
# 4. For any $F$, two trajectories started from $(x_0, v_0)$ and $(Rx_0, Rv_0)$ separate as
#    $R\,x(t) - x'(t) = \tfrac{t^2}{2} M^{-1}\big(R F(x_0) - F(Rx_0)\big) + O(t^3)$,
#    so the root-mean-square distance over atoms starts as $\tfrac{t^2}{2}$ times the
#    root-mean-square of $\lvert \delta F_i \rvert / m_i$, with $\delta F = F(Rx_0) - R F(x_0)$.
# ```
#
# ```{prf:proof}
# (1) Put $y(t) = R\,x(t)$. Then $m_i \ddot y_i = R\, m_i \ddot x_i = R\,F_i(x) = F_i(Rx) = F_i(y)$,
# and $y(0) = Rx_0$, $\dot y(0) = Rv_0$. $F$ is $C^1$, hence locally Lipschitz, so the solution of
# the initial value problem is unique and equals $y$.
#
# (2) $\dot P = \sum_i F_i$. Translation invariance gives
# $0 = \tfrac{d}{ds} E(x_1 + s a, \dots, x_A + s a)\big|_{s=0} = -\sum_i F_i \cdot a$ for every
# $a \in \mathbb R^3$, so $\sum_i F_i = 0$ and $P$ is constant; the centre of mass then moves
# uniformly, $\dot X = P / M$. With $u_i = x_i - X$,
# $\dot L = \sum_i m_i \dot u_i \times \dot x_i + \sum_i u_i \times F_i$, and the first sum is
# $\sum_i m_i \dot x_i \times \dot x_i - \dot X \times P = 0 - P \times P / M = 0$. For the rotations
# $e^{s\Omega}$ about $X$ with $\Omega$ skew, $\Omega u = \omega \times u$, invariance (under
# rotations about the origin and translations, hence about $X$) gives
# $0 = \tfrac{d}{ds} E(X + e^{s\Omega} u)\big|_{s=0} = -\sum_i F_i \cdot (\omega \times u_i)
# = -\omega \cdot \sum_i u_i \times F_i$ for every $\omega$, so the torque vanishes and $L$ is constant.
#
# (3) $N(Rx) = \sum_i R F_i(x) = R N(x)$, and with $X(Rx) = R X(x)$ for a rotation about the
# origin, $\tau(Rx) = \sum_i R(x_i - X) \times R F_i(x) = R\,\tau(x)$ because a proper rotation
# preserves cross products. An equivariant vector-valued function need not vanish; the twirled
# and e3nn models below are explicit examples with both $N \neq 0$ and $\tau \neq 0$.
#
# (4) Both solutions are $C^3$ in $t$ (their second derivative is $M^{-1}F$ along a $C^1$ path).
# Taylor's theorem gives $x(t) = x_0 + v_0 t + \tfrac{t^2}{2} M^{-1}F(x_0) + O(t^3)$ and
# $x'(t) = Rx_0 + Rv_0 t + \tfrac{t^2}{2} M^{-1}F(Rx_0) + O(t^3)$; apply $R$ to the first and
# subtract. The velocity-Verlet integrator reproduces the $t^2$ term exactly in its first step.
# ```
#
# Part 4 ties the onset of the divergence to the force discrepancy $\delta F$ at the start, and
# the discrepancy is what the equivariance error of chapter 1 measures, on average:
#
# ```{prf:lemma} The force discrepancy is twice the equivariance error
# :label: lem-ch7-discrepancy
#
# Let $F: \mathbb R^{A \times 3} \to \mathbb R^{A \times 3}$ be measurable with
# $\mathbb E_g \lVert F(gx) \rVert^2 < \infty$, where $g$ is Haar-distributed on $SO(3)$ and acts on
# every atom's vector. Write $Z_x(g) = g^{-1} F(gx)$ for the twisted predictions,
# $\mu(x) = \mathbb E_g Z_x(g)$ for the twirl, $V(x) = \mathbb E_g \lVert Z_x(g) - \mu(x) \rVert^2$
# for their spread and $D = 3A$. Let $R$ be Haar-distributed and independent of $x$.
#
# 1. For every $x$: $\mathbb E_R \lVert F(Rx) - R F(x) \rVert^2 = V(x) + \lVert F(x) - \mu(x) \rVert^2$.
# 2. If the law of $x$ is invariant under rotations and $\mathbb E_x \mathbb E_g \lVert F(gx) \rVert^2 < \infty$,
#    $\mathbb E_{x,R} \lVert F(Rx) - R F(x) \rVert^2 = 2\,\mathbb E_x V(x) = 2 D\, \mathcal L_\text{equiv}$,
#    with $\mathcal L_\text{equiv}$ as in {prf:ref}`prop-mse-split`.
# ```
#
# ```{prf:proof}
# (1) $R$ is orthogonal, so $\lVert F(Rx) - RF(x) \rVert = \lVert Z_x(R) - F(x) \rVert$. Write
# $Z_x(R) - F(x) = (Z_x(R) - \mu(x)) - (F(x) - \mu(x))$ and expand the square. The first term has
# mean $V(x)$, the second does not depend on $R$, and the cross term has mean zero because
# $\mathbb E_R Z_x(R) = \mu(x)$.
#
# (2) For a fixed rotation $h$, $Z_{hx}(g) = g^{-1} F(ghx) = h\,(gh)^{-1} F(ghx) = h\, Z_x(gh)$, and
# $gh$ is Haar-distributed when $g$ is; hence $\mu(hx) = h\,\mu(x)$ and $V(hx) = V(x)$. Since $hx$ has the
# law of $x$ for every $h$, we may average over a Haar $h$:
# $\mathbb E_x \lVert F(x) - \mu(x) \rVert^2 = \mathbb E_{x,h} \lVert F(hx) - \mu(hx) \rVert^2
# = \mathbb E_{x,h} \lVert h\,(Z_x(h) - \mu(x)) \rVert^2 = \mathbb E_x V(x)$. Taking $\mathbb E_x$ of (1)
# gives $2\,\mathbb E_x V(x)$, and $\mathbb E_x V(x) / D$ is $\mathcal L_\text{equiv}$, the mean over data
# and rotations of $\tfrac1D \lVert Z_x(g) - \mu(x) \rVert^2$.
# ```
#
# At one orientation of one molecule the two terms of part 1 need not be equal; over the
# orientations of the molecule (a rotation-invariant law for every fixed molecule) they are.
# The tests of `equivlib.md` check parts 1, 3 and 4 of {prf:ref}`prop-ch7-md` and part 2 of
# {prf:ref}`lem-ch7-discrepancy` on small models, and the same parts are checked on chapter 2's
# models below.

# %% tags=["hide-input"]
study = md.orientation_study(nve_fields, molecules, steps=SIZES["steps"], dt_fs=DT_FS, temperature_K=TEMPERATURE,
                             threshold=THRESHOLD, seed=SEED, progress=False)
tab = study.table
by = tab.groupby("field", sort=False)
exact_fields = ["twirled", "e3nn", "gfn2"]
max_exact = {f: float(by.get_group(f)["divergence_end"].max()) for f in exact_fields}
for f, v in max_exact.items():
    glue(f"ch7-div-{f}", v)
onset = by.get_group("augmented")[["onset_fs", "onset_predicted_fs"]]
glue("ch7-onset-aug", ", ".join(f"{v:g}" for v in onset["onset_fs"]))
glue("ch7-onset-pred", ", ".join(f"{v:g}" for v in onset["onset_predicted_fs"]))
ratio = (onset["onset_fs"] / onset["onset_predicted_fs"]).to_numpy()
law_ok = bool(np.isfinite(ratio).all() and ((ratio >= 0.5) & (ratio <= 2)).all())
glue("ch7-onset-ratio", ", ".join(f"{r:.2f}" for r in ratio))
aug_end = by.get_group("augmented")["divergence_end"]
rand_end = by.get_group("random")["divergence_end"]
glue("ch7-div-aug", ", ".join(f"{v:.2g}" for v in aug_end))
glue("ch7-div-random", ", ".join(f"{v:.2g}" for v in rand_end))
rand_onset = by.get_group("random")["onset_fs"]
glue("ch7-onset-random", ", ".join("never" if np.isnan(v) else f"{v:g}" for v in rand_onset))
glue("ch7-exact-text", "every exactly equivariant field kept the two runs rotated copies of each other to within "
     f"{EXACT:g} Å" if max(max_exact.values()) < EXACT else
     "an exactly equivariant field let the runs separate by more than the stated tolerance ("
     + ", ".join(f"{f}: {v:.1e} Å" for f, v in max_exact.items() if v >= EXACT) + ")")
glue("ch7-law-text", "within a factor 2 of the prediction for every molecule" if law_ok else
     "off the prediction by more than a factor 2 for at least one molecule")
later = bool((rand_onset.to_numpy() > onset["onset_fs"].to_numpy()).all())
glue("ch7-random-text", "does not remove the orientation dependence: the two runs separate as well"
     + (", only later" if later else "")
     if (rand_end > THRESHOLD).all() else
     "kept the runs within the threshold" + ("" if (rand_end <= THRESHOLD).all() else " for some molecules only"))

fig, axes = new_figure(len(molecules), width=3.6, height=3.0)
colors = {"augmented": "C0", "twirled": "C2", "random": "C1", "e3nn": "C4", "gfn2": "black", HYBRID: "C3"}
for ax, mol in zip(axes.flat, molecules):
    for f in nve_fields:
        d = study.divergence[(mol["molecule"], f)]
        ax.plot(study.times[1:], np.maximum(d[1:], 1e-17), color=colors[f], label=f)
        if (mol["molecule"], f) in study.predicted and f == "augmented":
            ax.plot(study.times[1:], study.predicted[(mol["molecule"], f)][1:], ls="--", color=colors[f], lw=1,
                    label="augmented: $t^2/2$ prediction")
    ax.axhline(THRESHOLD, ls=":", color="grey", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="time (fs)", ylabel="RMS $|R x_t - x'_t|$ (Å)",
           title=f"{len(mol['numbers'])} atoms: {mol['smiles'][:28]}")
axes.flat[0].legend(fontsize=7)
glue("ch7-fig-divergence", fig)

# %% [markdown]
# ```{glue:figure} ch7-fig-divergence
# :name: fig-ch7-divergence
#
# Distance between a trajectory and the trajectory started from the same state turned by a
# random rotation (turned back before comparing), for each force field and held-out molecule.
# Dashed: part 4 of {prf:ref}`prop-ch7-md` for the augmented model; dotted: the threshold.
# Values below $10^{-17}$ Å are drawn at $10^{-17}$.
# ```
#
# We ran {glue:text}`ch7-n-mol` held-out molecules of chapter 2's data
# ({glue:md}`ch7-atoms` atoms) for {glue:text}`ch7-steps` velocity-Verlet steps of
# {glue:text}`ch7-dt` fs ({glue:text}`ch7-length` fs) from Maxwell-Boltzmann velocities at
# {glue:text}`ch7-temperature` K, each twice: as drawn and turned by a random rotation. For
# part 1 of {prf:ref}`prop-ch7-md`, {glue:md}`ch7-exact-text` (largest distance at
# the end: twirled {glue:text}`ch7-div-twirled:.1e` Å, e3nn {glue:text}`ch7-div-e3nn:.1e` Å,
# GFN2-xTB {glue:text}`ch7-div-gfn2:.1e` Å). The augmented model's two runs crossed
# {glue:text}`ch7-threshold` Å after {glue:md}`ch7-onset-aug` fs, where part 4 predicts
# {glue:md}`ch7-onset-pred` fs from the force discrepancy at the first frame (ratios
# {glue:md}`ch7-onset-ratio`, both read at the {glue:text}`ch7-dt` fs steps):
# {glue:md}`ch7-law-text`. At the end they were
# {glue:md}`ch7-div-aug` Å apart. One random rotation per step {glue:md}`ch7-random-text`
# (onsets {glue:md}`ch7-onset-random` fs; {glue:md}`ch7-div-random` Å at the end): each run
# sees its own random rotations, so it follows a randomly perturbed force field rather than an
# equivariant one.
#
# ## The force discrepancy against the equivariance error
#
# {prf:ref}`lem-ch7-discrepancy` can be checked on the augmented model without any dynamics: for
# each molecule, draw orientations $Q$, and at each $Qx$ estimate the left side of part 1 from the
# calculator's forces (random $R$) and $2D\,\mathcal L_\text{equiv}(Qx)$ from equivlib's
# decomposition (other random rotations, the unbiased estimator). Their difference has mean zero
# over $Q$ by part 2.

# %% tags=["hide-input"]
check = md.discrepancy_check(fields["augmented"], molecules, n_orientations=SIZES["orientations"],
                             n_rotations=SIZES["rotations"], seed=SEED)
covered = bool(((check["diff_low"] <= 0) & (check["diff_high"] >= 0)).all())
glue("ch7-dc-orientations", SIZES["orientations"])
glue("ch7-dc-rotations", SIZES["rotations"])
glue("ch7-dc-ratio", ", ".join(f"{r:.3f}" for r in check["ratio"]))
glue("ch7-dc-a", ", ".join(f"{v:.3g}" for v in check["a"]))
glue("ch7-dc-ci", "; ".join(f"{lo:.3g} to {hi:.3g}" for lo, hi in zip(check["diff_low"], check["diff_high"])))
glue("ch7-dc-text", "contains zero for every molecule, as the lemma requires" if covered else
     "excludes zero for at least one molecule, against the lemma")
glue("ch7-dc-table", check.rename(columns={
    "a": "mean |F(Rx) - R F(x)|² (eV²/Å²)", "b": "2 D L_equiv (eV²/Å²)", "diff": "difference",
    "diff_low": "95% CI low", "diff_high": "95% CI high", "a_start": "at the molecule's own orientation"})
     .drop(columns=["n_orientations", "n_rotations"]).style.format(precision=4).hide(axis="index"))

# %% [markdown]
# ```{glue:figure} ch7-dc-table
# :name: tab-ch7-discrepancy
#
# The two sides of part 2 of {prf:ref}`lem-ch7-discrepancy` for the augmented model, per held-out
# molecule, with the t interval of their difference over the orientations.
# ```
#
# Over {glue:text}`ch7-dc-orientations` orientations per molecule ({glue:text}`ch7-dc-rotations`
# rotations each), the mean squared force discrepancy was {glue:md}`ch7-dc-a` eV²/Å², and its
# ratio to $2D\,\mathcal L_\text{equiv}$ was {glue:md}`ch7-dc-ratio`. The 95 % interval of their
# difference ({glue:md}`ch7-dc-ci` eV²/Å²) {glue:md}`ch7-dc-text`. The onset of the divergence
# is therefore set by the same quantity that chapter 2 watched fall during training: by part 4 of
# {prf:ref}`prop-ch7-md` the onset time scales as $\mathcal L_\text{equiv}^{-1/4}$ when the
# discrepancy's distribution over the atoms stays the same.
#
# ## Momentum, angular momentum and where their drift comes from

# %% tags=["hide-input"]
summary = by[["net_force", "net_torque", "P_drift", "L_drift", "max_speed", "s_per_step"]].mean()
for f, r in summary.iterrows():
    glue(f"ch7-net-force-{f}", float(r["net_force"]))
    glue(f"ch7-net-torque-{f}", float(r["net_torque"]))
    glue(f"ch7-P-{f}", float(r["P_drift"]))
    glue(f"ch7-speed-{f}", float(r["max_speed"]))
    glue(f"ch7-ms-{f}", 1e3 * float(r["s_per_step"]))
equivariant_share = float(summary.loc[["twirled", "e3nn"], "net_force"].min() / summary.loc["augmented", "net_force"])
glue("ch7-net-share", equivariant_share)
drift_from_equiv = equivariant_share < 0.1
glue("ch7-drift-text",
     "the exactly equivariant fields push with a net force of the same order as the augmented model's, so the drift "
     "comes from their being direct, non-conservative force fields, not from their equivariance error"
     if not drift_from_equiv else
     "the exactly equivariant fields have a far smaller net force than the augmented model, so most of the drift "
     "comes from its equivariance error")
glue("ch7-conservation-table", summary.rename(columns={
    "net_force": "|net force| (eV/Å)", "net_torque": "|net torque| (eV)", "P_drift": "|ΔP| (amu Å/fs)",
    "L_drift": "|ΔL| (amu Å²/fs)", "max_speed": "fastest atom (Å/fs)", "s_per_step": "s per step"})
     .style.format("{:.2e}"))
cost = summary["s_per_step"] / summary.loc["augmented", "s_per_step"]
glue("ch7-twirl-cost", float(cost["twirled"]))
glue("ch7-gfn2-cost", float(cost["gfn2"]))
glue("ch7-e3-cost", float(cost["e3nn"]))
conserves = bool(summary.loc["gfn2", "net_force"] < 1e-8 and summary.loc["gfn2", "P_drift"] < 1e-8)
glue("ch7-part2-text", "holds" if conserves else "does not hold to 1e-8")
heat = float(summary.loc[learned, "max_speed"].min() / summary.loc["gfn2", "max_speed"])
glue("ch7-heat-text", f"after {SIZES['steps'] * DT_FS:g} fs the fastest atom of every learned model, equivariant or "
     f"not, moves at least {heat:.1f} times as fast as with GFN2-xTB: with chapter 2's small models in this profile "
     "the molecules heat up and drift as a whole" if heat > 2 else
     f"the learned models' fastest atoms move at most {heat:.1f} times as fast as with GFN2-xTB, so this short run "
     "shows no heating beyond the reference")
energy = md.energy_check(fields["gfn2"], molecules, time_fs=SIZES["steps"] * DT_FS, dt_fs=DT_FS,
                         temperature_K=TEMPERATURE, seed=SEED)
energy_ok = bool(energy["ratio"].between(3, 5).all())   # 4 for a second-order integrator of a conservative field
glue("ch7-E-spread", float(energy["E_spread"].max()))
glue("ch7-U-range", float(energy["U_range"].min()))
glue("ch7-E-ratio", ", ".join(f"{r:.2f}" for r in energy["ratio"]))
glue("ch7-energy-text", "the excursion is the integrator's second-order error, not a drift of the dynamics"
     if energy_ok else "the excursion does not shrink as the integrator's second-order error would")
glue("ch7-twirl-text", ("Twirling at inference removed the orientation dependence to round-off"
                        if max_exact["twirled"] < EXACT else
                        "Twirling at inference did not remove the orientation dependence to the stated tolerance"))

fig, axes = new_figure(2, width=4.0, height=3.0)
names = list(summary.index)
for ax, col, label in ((axes[0, 0], "net_force", "mean |net force| (eV/Å)"),
                       (axes[0, 1], "s_per_step", "seconds per MD step")):
    ax.bar(names, np.maximum(summary[col], 1e-16), color=[colors[n] for n in names])
    ax.set(yscale="log", ylabel=label)
    ax.tick_params(axis="x", rotation=30)
glue("ch7-fig-conservation", fig)

# %% [markdown]
# ```{glue:figure} ch7-fig-conservation
# :name: fig-ch7-conservation
#
# Left: the net force $\sum_i F_i$ along the unturned runs, averaged over steps and molecules
# (GFN2-xTB's is given in the text). Right: the cost of one MD step with each force field on this
# machine.
# ```
#
# ```{glue:figure} ch7-conservation-table
# :name: tab-ch7-conservation
#
# Per force field, averaged over the molecules: net force and net torque along the run, the
# change of total momentum and of angular momentum between its first and last frame, the speed
# of the fastest atom at the end, and the wall-clock time per step.
# ```
#
# GFN2-xTB is a conservative force field with an invariant energy, and for it part 2 of
# {prf:ref}`prop-ch7-md` {glue:md}`ch7-part2-text`: its net force is {glue:text}`ch7-net-force-gfn2:.1e` eV/Å
# and its momentum changed by {glue:text}`ch7-P-gfn2:.1e` amu Å/fs. The learned models predict
# forces directly, and the net force is {glue:text}`ch7-net-force-augmented:.2f` eV/Å for the
# augmented model, {glue:text}`ch7-net-force-twirled:.2f` eV/Å twirled and
# {glue:text}`ch7-net-force-e3nn:.2f` eV/Å for the e3nn model: {glue:md}`ch7-drift-text`
# (part 3 of {prf:ref}`prop-ch7-md`). Their momentum changed by
# {glue:text}`ch7-P-augmented:.2f`, {glue:text}`ch7-P-twirled:.2f` and
# {glue:text}`ch7-P-e3nn:.2f` amu Å/fs, and the fastest atom ends at
# {glue:text}`ch7-speed-augmented:.3f` Å/fs (augmented) against {glue:text}`ch7-speed-gfn2:.3f` Å/fs with
# GFN2-xTB: {glue:md}`ch7-heat-text`.
#
# Total energy is conserved by any force field $F = -\nabla E$, invariant or not, and only GFN2-xTB
# defines an energy here. Along the velocity-Verlet runs its total energy stayed within
# {glue:text}`ch7-E-spread:.2e` eV of its start while the potential energy swung by at least
# {glue:text}`ch7-U-range:.2f` eV, and halving the step shrank that excursion by a factor
# {glue:md}`ch7-E-ratio` (4 for a second-order integrator of a conservative field):
# {glue:md}`ch7-energy-text`. The learned fields
# predict forces without an energy, so no energy is conserved or even defined for them; the
# heating above is what their non-conservative forces do instead.
#
# {glue:md}`ch7-twirl-text`, at
# {glue:text}`ch7-twirl-cost:.1f` times the augmented model's time per step (24 batched
# evaluations); the e3nn model costs {glue:text}`ch7-e3-cost:.1f` times and GFN2-xTB
# {glue:text}`ch7-gfn2-cost:.1f` times as much.
#
# ## Structure under a thermostat
#
# Part 1 of {prf:ref}`prop-ch7-md` extends to Langevin dynamics,
# $m_i\,dv_i = F_i(x)\,dt - \gamma m_i v_i\,dt + \sqrt{2\gamma m_i k_B T}\,dW_i$: the friction is a scalar
# multiple of the velocity, and if $W$ is a standard Brownian motion in $\mathbb R^3$ per atom, so
# is $RW$. Turning a solution by $R$ therefore gives a solution driven by $RW$ from the turned start
# when $F$ is equivariant, and the law of the trajectory started from $(Rx_0, Rv_0)$ is the law
# started from $(x_0, v_0)$, turned. (ASE's integrator draws its per-atom Gaussian increments
# independently per component, a rotation-invariant law, so the same holds step by step.) Bond
# lengths and angles are invariant, so their distribution along the run cannot depend on the
# starting orientation. For a field that is not
# equivariant it can, and this is the downstream question a practitioner asks. Besides the five
# fields above we ran a sixth, `gfn2+residual`: GFN2-xTB plus the augmented model's
# non-equivariant part, computed exactly with the design twirl (a good force field that carries
# exactly the augmented model's equivariance error). We ran Langevin dynamics from the two turned
# starts of {glue:text}`ch7-lv-n-mol` held-out molecule(s), with independent thermostat noise,
# for {glue:text}`ch7-lv-steps` steps of {glue:text}`ch7-dt` fs at {glue:text}`ch7-temperature` K
# (friction {glue:text}`ch7-friction`/fs), discarded the first
# {glue:text}`ch7-lv-burn` steps, and compared the per-frame mean bond length and mean bond angle
# between the two runs by Welch's test on {glue:text}`ch7-lv-blocks` block means each
# ({py:func}`~equivlib.stats.block_test`: successive frames are correlated, and the test on the
# frames themselves rejects far too often; `tests/test_stats.py` measures both). How far each
# field's distribution is from GFN2-xTB's is the Wasserstein-1 distance between the pooled values.

# %% tags=["hide-input"]
obs = md.observable_study(fields, molecules[:SIZES["langevin_molecules"]], steps=SIZES["langevin_steps"],
                          burn_in=SIZES["burn_in"], n_blocks=SIZES["blocks"], dt_fs=DT_FS, temperature_K=TEMPERATURE,
                          friction_per_fs=FRICTION, break_ratio=BREAK_RATIO, seed=SEED, progress=False)
ot = obs.table
errors = md.force_errors(fields, molecules)
rel = errors.groupby("field")["relative"]
glue("ch7-force-rel", f"{rel.min()[learned].min():.2f}-{rel.max()[learned].max():.2f}")
glue("ch7-force-rel-hybrid", f"{rel.min()[HYBRID]:.1e}-{rel.max()[HYBRID]:.1e}")
glue("ch7-force-rms-ref", f"{errors['rms_reference'].min():.2f}-{errors['rms_reference'].max():.2f}")
glue("ch7-lv-n-mol", SIZES["langevin_molecules"])
glue("ch7-friction", FRICTION)
glue("ch7-lv-steps", SIZES["langevin_steps"])
glue("ch7-lv-burn", SIZES["burn_in"])
glue("ch7-lv-blocks", SIZES["blocks"])
glue("ch7-lv-length", SIZES["langevin_steps"] * DT_FS)
n_tests = int((ot["field"] != "gfn2").sum())
level = ALPHA / n_tests                                   # Bonferroni over the learned fields' tests
glue("ch7-lv-level", level)
glue("ch7-lv-tests", n_tests)
learned_rows = ot[ot["field"] != "gfn2"]
detected = learned_rows[learned_rows["p_value"] < level]
glue("ch7-lv-detected-text", "no field" if detected.empty else
     ", ".join(f"{r.field} ({r.observable}, p = {r.p_value:.2g})" for r in detected.itertuples()))
glue("ch7-lv-p", "; ".join(f"{f}: " + ", ".join(f"{g.observable} {g.p_value:.2f}" for g in grp.itertuples())
                            for f, grp in ot.groupby("field", sort=False)))
per = obs.by_field()                                      # over molecules, per force field
intact = per.index[~per["broken"]].tolist()
dissociated = per.index[per["broken"]].tolist()
broke_learned = [f for f in dissociated if f in learned]
glue("ch7-lv-intact", ", ".join(intact) if intact else "none")
glue("ch7-lv-broken-text", "every force field kept every bond within "
     f"{BREAK_RATIO:g} times its starting length" if not dissociated else
     "a bond broke after " + ", ".join(f"{per.loc[f, 'first_break_fs']:g} fs with {f}" for f in dissociated)
     + f" (the longest bond reached {per.loc[dissociated, 'max_stretch'].min():.1f}"
     + (f"-{per.loc[dissociated, 'max_stretch'].max():.1f}" if len(dissociated) > 1 else "")
     + " times its starting length)")
glue("ch7-lv-w", ", ".join(f"{f} {v:.2f} Å" for f, v in per.loc[learned, "w_bond"].items()))
hyb = per.loc[HYBRID]
hybrid_intact = not bool(hyb["broken"])
hybrid_seen = bool(hybrid_intact and min(hyb["p_bond"], hyb["p_angle"]) < level)
glue("ch7-hy-p-bond", float(hyb["p_bond"]))
glue("ch7-hy-p-angle", float(hyb["p_angle"]))
glue("ch7-hy-w", float(hyb["w_bond"]))
glue("ch7-hy-width", float(hyb["width_bond"]))
glue("ch7-hy-width-angle", float(hyb["width_angle"]))
glue("ch7-gfn2-width", float(per.loc["gfn2", "width_bond"]))
glue("ch7-hy-ms", 1e3 * float(hyb["s_per_step"]))
glue("ch7-lv-gfn2-ms", 1e3 * float(per.loc["gfn2", "s_per_step"]))
glue("ch7-hy-text",
     "kept every bond intact, and the starting orientation changed its sampled structure detectably"
     if hybrid_seen else
     "kept every bond intact, and the starting orientation did not change its sampled structure detectably"
     if hybrid_intact else f"broke a bond after {hyb['first_break_fs']:g} fs, so the test compares broken molecules")
glue("ch7-lv-gfn2-bond", float(per.loc["gfn2", "mean_bond"]))
glue("ch7-lv-power-text",
     f"With {', '.join(broke_learned)} the molecule fell apart, so its bond lengths wander far more than with "
     "GFN2-xTB and the test has little power there: its interval for the bond-length difference is at least "
     f"{float(per.loc[broke_learned, 'width_bond'].min() / per.loc['gfn2', 'width_bond']):.0f} times as wide as "
     "GFN2-xTB's" if broke_learned and "gfn2" in intact else
     "The molecule stayed intact with every learned field, so the tests compare like with like"
     if not broke_learned else "GFN2-xTB itself broke a bond, so the reference is not a stable baseline here")
glue("ch7-lv-table", per.drop(columns=["broken", "mean_bond"]).rename(columns={
    "p_bond": "p (orientations), bond", "p_angle": "p (orientations), angle", "w_bond": "W₁ to GFN2-xTB, bond (Å)",
    "w_angle": "W₁ to GFN2-xTB, angle (°)", "width_bond": "CI width, bond (Å)", "width_angle": "CI width, angle (°)",
    "max_stretch": "longest bond / start", "first_break_fs": "first broken bond (fs)", "s_per_step": "s per step"})
     .style.format(precision=3, na_rep="never"))

fig, axes = new_figure(len(fields), 2, width=2.3, height=2.3)
mol0 = molecules[0]["molecule"]
for col, f in enumerate(fields):
    for row, (o, unit) in enumerate(md.OBSERVABLES.items()):
        ax = axes[row, col]
        ref = np.concatenate(obs.samples[(mol0, "gfn2", o)])
        a, b = obs.samples[(mol0, f, o)]
        lo, hi = np.percentile(np.concatenate([ref, a, b]), [0.5, 99.5])
        bins = np.linspace(lo, hi, 50)
        ax.hist(ref, bins=bins, density=True, color="lightgrey", label="GFN2-xTB")
        ax.hist(a, bins=bins, density=True, histtype="step", color=colors[f], label="as drawn")
        ax.hist(b, bins=bins, density=True, histtype="step", color=colors[f], ls="--", label="turned")
        ax.set(xlabel=f"{'bond length' if o == 'bond' else 'bond angle'} ({unit})", ylabel="density" if col == 0 else "",
               title=f if row == 0 else "")
axes[0, 0].legend(fontsize=7)
glue("ch7-fig-structure", fig)

# %% [markdown]
# ```{glue:figure} ch7-fig-structure
# :name: fig-ch7-structure
#
# Bond lengths (top) and bond angles (bottom) of the first held-out molecule over the Langevin runs
# after the burn-in, for each force field (`gfn2+residual`: GFN2-xTB plus the augmented model's
# non-equivariant part): from the start as drawn (solid) and turned (dashed), over GFN2-xTB's
# distribution (grey, both runs pooled). The axis covers 99 % of the values.
# ```
#
# ```{glue:figure} ch7-lv-table
# :name: tab-ch7-structure
#
# Per force field, over the molecules: the smallest p-value of the block test between the two
# starting orientations, the width of the widest 95 % interval of their difference, the mean
# Wasserstein-1 distance of the field's pooled distribution to GFN2-xTB's, the longest bond
# relative to its start, the first time a bond of either run exceeded
# {glue:text}`ch7-break` times its starting length, and the wall-clock time per Langevin step.
# ```
#
# Over {glue:text}`ch7-lv-length:g` fs, {glue:md}`ch7-lv-broken-text`; the fields that kept the
# molecule intact: {glue:md}`ch7-lv-intact`. GFN2-xTB's mean bond length was
# {glue:text}`ch7-lv-gfn2-bond:.3f` Å, and the learned fields' bond-length distributions were
# {glue:md}`ch7-lv-w` from it (Wasserstein-1). At the Bonferroni level
# {glue:text}`ch7-lv-level:.4f` ({glue:text}`ch7-alpha` over {glue:text}`ch7-lv-tests` tests), the
# starting orientation changed the structure for {glue:md}`ch7-lv-detected-text` (p-values
# {glue:md}`ch7-lv-p`). {glue:md}`ch7-lv-power-text`. Why: at the held-out molecules' own
# geometries the learned fields' squared force error is {glue:md}`ch7-force-rel` of the squared
# GFN2-xTB forces (whose RMS is {glue:md}`ch7-force-rms-ref` eV/Å); a model trained for
# {glue:text}`ch7-aug-steps` steps in this profile has not learned the forces that hold a molecule
# together, so on these fields an orientation effect of the size of the force discrepancy above
# would be hidden under their far larger error against the reference.
#
# The hybrid field asks the practitioners' question without that confound: GFN2-xTB's forces plus
# the augmented model's non-equivariant part $F - \mu(F)$, exactly the part whose spread is
# $\mathcal L_\text{equiv}$ ({prf:ref}`lem-ch7-discrepancy`). Its squared force error against
# GFN2-xTB is {glue:md}`ch7-force-rel-hybrid` of the squared forces, and it
# {glue:md}`ch7-hy-text`: p = {glue:text}`ch7-hy-p-bond:.2f` for the mean bond length and
# p = {glue:text}`ch7-hy-p-angle:.2f` for the mean angle, with a 95 % interval of width
# {glue:text}`ch7-hy-width:.4f` Å for the bond-length difference (GFN2-xTB's own:
# {glue:text}`ch7-gfn2-width:.4f` Å). Its bond-length distribution is
# {glue:text}`ch7-hy-w:.4f` Å from GFN2-xTB's (Wasserstein-1). It costs
# {glue:text}`ch7-hy-ms:.0f` ms per step against {glue:text}`ch7-lv-gfn2-ms:.0f` ms for GFN2-xTB alone
# (the exact twirl inside it is the expensive part). A difference in mean bond length
# between orientations much smaller than that interval width is not excluded by runs of this
# length.
#
# ## What this chapter found

# %% tags=["hide-input"]
claims = claims_table([
    Claim("an exactly equivariant force field gives rotated trajectories from rotated starts (part 1)",
          ", ".join(f"{f}: {v:.1e} Å" for f, v in max_exact.items()),
          verdict(max(max_exact.values()) < EXACT, yes="seen", no="not seen")),
    Claim("a model trained with augmentation makes the trajectory depend on the starting orientation",
          f"{THRESHOLD:g} Å crossed after {', '.join(f'{v:g}' for v in onset['onset_fs'])} fs",
          verdict(bool(onset["onset_fs"].notna().all()), partly=bool(onset["onset_fs"].notna().any()),
                  yes="seen", no="not seen")),
    Claim("the divergence starts as t²/2 times the force discrepancy (part 4)",
          f"measured / predicted onset {', '.join(f'{r:.2f}' for r in ratio)}",
          verdict(law_ok, yes="seen", no="not seen")),
    Claim("one random rotation per step removes the orientation dependence",
          f"{', '.join(f'{v:.2g}' for v in rand_end)} Å apart at the end",
          verdict(bool((rand_end <= THRESHOLD).all()), partly=bool((rand_end <= THRESHOLD).any()),
                  yes="seen", no="not seen")),
    Claim("momentum drift comes from the equivariance error",
          f"net force of the exactly equivariant fields / augmented: {equivariant_share:.2f}",
          verdict(drift_from_equiv, yes="seen", no="not seen")),
    Claim("the mean squared force discrepancy is 2·D·L_equiv (lemma, part 2)",
          f"ratio {', '.join(f'{r:.3f}' for r in check['ratio'])}; difference CI "
          + "; ".join(f"{lo:.3g} to {hi:.3g}" for lo, hi in zip(check["diff_low"], check["diff_high"])),
          verdict(covered, yes="holds", no="does not hold")),
    Claim("with GFN2-xTB, the total energy moves only by velocity Verlet's O(dt²) error",
          f"halving the step shrinks the largest excursion by {', '.join(f'{r:.2f}' for r in energy['ratio'])}",
          verdict(energy_ok, yes="seen", no="not seen")),
    Claim("under a thermostat, the augmented model's structure depends on the starting orientation",
          ", ".join(f"{r.observable} p = {r.p_value:.2f}" for r in ot[ot["field"] == "augmented"].itertuples())
          + ("" if "augmented" in intact else f"; a bond broke after {per.loc['augmented', 'first_break_fs']:g} fs"),
          verdict(bool((detected["field"] == "augmented").any()),
                  yes="seen", no="not seen" if "augmented" in intact else "not at this scale")),
    Claim("on a force field that holds the molecule together, an equivariance error of the augmented model's size "
          "makes the sampled structure depend on the starting orientation",
          f"gfn2+residual: bond p = {hyb['p_bond']:.2f}, angle p = {hyb['p_angle']:.2f} "
          f"(bond CI width {hyb['width_bond']:.3g} Å)",
          verdict(hybrid_seen, yes="seen", no="not seen" if hybrid_intact else "not at this scale")),
    Claim("the learned force fields sample GFN2-xTB's bond lengths",
          "W₁ " + ", ".join(f"{f} {v:.2f} Å" for f, v in per.loc[learned, "w_bond"].items()),
          verdict(bool(set(learned) <= set(intact) and (per.loc[learned, "w_bond"] < 0.05).all()),
                  yes="seen", no="not seen")),
])
glue_claims("ch7-claims", claims)
glue("ch7-verdict-counts", tally(claims))
glue_headline("ch7", question="Does the small equivariance error of a model trained with augmentation matter in "
              "molecular dynamics?",
              answer=f"Trajectories of the augmented model started in two orientations cross {THRESHOLD:g} Å after "
              f"{onset['onset_fs'].min():g}-{onset['onset_fs'].max():g} fs ("
              + ("as" if law_ok else "not as") + " predicted from the force discrepancy); twirling, at "
              f"{cost['twirled']:.1f} times the cost per step, keeps them "
              + ("rotated copies to round-off" if max_exact["twirled"] < EXACT else "apart beyond the tolerance")
              + f"; the learned direct force fields have a net force of "
              f"{summary.loc[learned, 'net_force'].min():.2f}-{summary.loc[learned, 'net_force'].max():.2f} eV/Å, and "
              f"{'the equivariant ones about as much as the augmented one' if not drift_from_equiv else 'the equivariant ones far less'}"
              f" (ratio {equivariant_share:.2f})"
              + ("; GFN2-xTB carrying the augmented model's non-equivariant part samples bond lengths and angles "
                 + ("that depend" if hybrid_seen else "that do not depend detectably") + " on the starting orientation "
                 f"(p = {hyb['p_bond']:.2f}, {hyb['p_angle']:.2f})" if hybrid_intact else "")
              + (f"; under a thermostat every learned field breaks a bond within "
                 f"{per.loc[broke_learned, 'first_break_fs'].max():g} fs" if set(learned) <= set(broke_learned)
                 else "")
              + ".", figure="ch7-fig-divergence")
glue("ch7-runtime", time.perf_counter() - t_start)

# %% [markdown]
# ```{glue:figure} ch7-claims
# :name: tab-ch7-claims
#
# What this chapter checked. The statements are not from the two papers: they are the
# practitioners' worries, the parts of {prf:ref}`prop-ch7-md` and {prf:ref}`lem-ch7-discrepancy`.
# ```
#
# Of the checks above, {glue:md}`ch7-verdict-counts`. The chapter's computations took
# {glue:text}`ch7-runtime:.0f` s.
#
# ## Where to go next
#
# * `-p PROFILE full` runs {doc}`02_learning_dynamics`'s larger models, trained far longer, on
#   more molecules, for longer NVE runs and {glue:text}`ch7-full-langevin` fs Langevin runs. Whether a
#   better-trained model keeps its molecules intact, so that the structural test gains the power it
#   lacks here, and whether its net force falls below the thermal forces, are the questions the
#   quick profile cannot answer.
# * `-p THRESHOLD 1e-2` moves the onset threshold.
#
# ## Library calls on this page
#
# This page's single source is {download}`07_molecular_dynamics.py <../../chapters/07_molecular_dynamics.py>`, a jupytext notebook
# (`make lab` opens it as one; the executed `.ipynb` is under the download button at the top).
#
# Every `equivlib` function and class this page's code calls, each linked to its entry in the
# {ref}`API reference <api>`:
# {py:class}`~equivlib.book.Claim`, {py:func}`~equivlib.book.claims_table`,
# {py:func}`~equivlib.book.glue`, {py:func}`~equivlib.book.glue_claims`,
# {py:func}`~equivlib.book.glue_headline`, {py:func}`~equivlib.book.tally`,
# {py:func}`~equivlib.book.verdict`, {py:func}`~equivlib.config.by_profile`,
# {py:func}`~equivlib.config.chapter_setup`, {py:func}`~equivlib.md.discrepancy_check`,
# {py:func}`~equivlib.md.energy_check`, {py:func}`~equivlib.md.force_errors`, {py:func}`~equivlib.md.force_fields`,
# {py:func}`~equivlib.md.heldout_molecules`, {py:data}`~equivlib.md.OBSERVABLES`,
# {py:func}`~equivlib.md.observable_study`, {py:func}`~equivlib.md.orientation_study`,
# {py:func}`~equivlib.plans.chapter2_runs`, {py:func}`~equivlib.plotting.new_figure`,
# {py:func}`~equivlib.plotting.set_style`, {py:func}`~equivlib.runs.get_run`.
