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
# # How to measure equivariance in your own training
#
# This page is a recipe rather than a chapter: it attaches `equivlib`'s equivariance monitor to
# a training loop you write yourself, then to a PyTorch Lightning `Trainer`, and reads what they
# record. The measurement is the split of {doc}`01_loss_decomposition`: on a fixed held-out set,
# every few steps, the monitor rotates each input by a few random rotations, maps the
# predictions back, and reports the share of the loss that is equivariance error,
# $100\,\mathcal L_\text{equiv}/\mathcal L$, with its standard error. The code cells are short on
# purpose: copy them. The model is chapter 1's coordinate transformer on Lennard-Jones clusters,
# trained in float32 as it would be in practice; the monitor converts the float32 held-out data
# itself.

# %% tags=["parameters"]
PROFILE = "quick"  # "quick": 2-core CPU in seconds; "full": longer training
SEED = 0
DEVICE = "auto"    # "auto" | "cpu" | "cuda"

# %% tags=["hide-input"]
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytorch_lightning as pl
import torch

import equivlib as eq
from equivlib.book import glue
from equivlib.config import by_profile, chapter_setup
from equivlib.data import lennard_jones_clusters
from equivlib.lightning import EquivarianceCallback, RotationAugmentedModule
from equivlib.models import AtomTransformer
from equivlib.plotting import new_figure, percent_panel, set_style
from equivlib.training import masked_mse, rotation_augment

t_start = time.perf_counter()
device, gen = chapter_setup(globals(), known=[])
set_style()
SIZES = by_profile(PROFILE, quick=dict(n_train=256, n_val=32, steps=200, every=20),
                   full=dict(n_train=2048, n_val=128, steps=3000, every=100))
train_set = lennard_jones_clusters(SIZES["n_train"], (6, 10), generator=gen, relax_steps=20)
val_set = lennard_jones_clusters(SIZES["n_val"], (6, 10), generator=gen, relax_steps=20)
scale = train_set.forces[train_set.mask].std()
# float32 data, as a training pipeline would hold them
x, y, m = (t.to(device) for t in (train_set.positions.float(), (train_set.forces / scale).float(), train_set.mask))
x_val, y_val, m_val = (t.to(device) for t in (val_set.positions.float(), (val_set.forces / scale).float(),
                                               val_set.mask))
glue("guide-n-train", SIZES["n_train"])
glue("guide-n-val", SIZES["n_val"])
glue("guide-steps", SIZES["steps"])
glue("guide-every", SIZES["every"])

# %% [markdown]
# ## In a plain PyTorch loop
#
# Create the monitor once, with the held-out inputs, targets and the action of rotations on them
# (here `VectorAction`: positions and forces are both 3-vectors per atom; the padding mask is an
# invariant extra input of the model and the mask of the loss). Then call it with the step
# number after every optimiser step: it evaluates only every `every` steps (and at the steps in
# `at`), draws its rotations from its own generator and restores the global random state, so
# the run is the same with or without it.

# %% tags=["hide-input"]
torch.manual_seed(SEED)
model = AtomTransformer(d_model=32, n_layers=2, device=device)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
monitor = eq.EquivarianceMonitor(model, x_val, y_val, eq.VectorAction(), every=SIZES["every"], at=[1, 2, 5, 10],
                                 extras={"mask": m_val}, mask=m_val, n_elements=8, seed=SEED)
augment = rotation_augment("x", ("y",))  # one Haar rotation of positions and forces per cluster
batches = torch.Generator().manual_seed(SEED)
for step in range(SIZES["steps"] + 1):
    monitor(step)  # evaluates at step 0, 1, 2, 5, 10 and every `every` steps
    if step == SIZES["steps"]:
        break
    idx = torch.randint(len(x), (16,), generator=batches).to(device)
    b = augment({"x": x[idx], "y": y[idx]}, batches)
    loss = masked_mse(model(b["x"], m[idx]), b["y"], m[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
table = monitor.table()
table.to_csv(Path(tempfile.mkdtemp()) / "equivariance.csv", index=False)  # or keep the DataFrame
final = table.iloc[-1]
glue("guide-plain-pct", float(final["percent"]))
glue("guide-plain-se", float(final["se_percent"]))
glue("guide-plain-pct0", float(table["percent"].iloc[0]))
glue("guide-monitor-s", monitor.seconds)
glue("guide-n-evals", len(table))

fig, axes = new_figure(1, 1, width=4.6, height=3.0)
ax = axes[0, 0]
percent_panel(ax, {"plain loop": table}, band=True, threshold=2.0)
ax.set_xscale("log")
glue("guide-fig-plain", fig)

# %% [markdown]
# ```{glue:figure} guide-fig-plain
# :name: fig-guide-plain
#
# The monitor's record of the plain loop: the share of the held-out loss that is equivariance
# error (band: ±2 standard errors over held-out clusters), log step axis.
# ```
#
# The transformer starts at {glue:text}`guide-plain-pct0:.1f` % and ends, after
# {glue:text}`guide-steps` steps, at {glue:text}`guide-plain-pct:.2f` ±
# {glue:text}`guide-plain-se:.2f` %. The {glue:text}`guide-n-evals` evaluations took
# {glue:text}`guide-monitor-s:.1f` s in all. By default the monitor runs the model in float32
# and sums in float64 (`precision="mixed"`); pass `precision="exact"` for a float64 forward too
# (see the README for what each costs).
#
# ## As a PyTorch Lightning callback
#
# `equivlib.lightning.EquivarianceCallback` (installed with `pip install "equivlib[lightning]"`)
# builds the same monitor on the LightningModule when fitting starts and calls it after every
# optimiser step, counting steps with the trainer's `global_step` (so gradient accumulation does
# not evaluate twice per step). It logs `equivariance/percent`, `equivariance/L_equiv`,
# `equivariance/L_mean` and `equivariance/L` to whatever logger the trainer has; here a
# `CSVLogger`.

# %% tags=["hide-input"]
pl.seed_everything(SEED, verbose=False)
# any LightningModule works; RotationAugmentedModule is equivlib's for per-atom vectors (augmentation + masked MSE)
module = RotationAugmentedModule(AtomTransformer(d_model=32, n_layers=2), lr=1e-3, seed=SEED)
callback = EquivarianceCallback(x_val, y_val, eq.VectorAction(), every=SIZES["every"], at=[1, 2, 5, 10],
                                extras={"mask": m_val}, mask=m_val, n_elements=8, seed=SEED)
logdir = Path(tempfile.mkdtemp())
trainer = pl.Trainer(max_steps=SIZES["steps"], accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                     callbacks=[callback], logger=pl.loggers.CSVLogger(logdir, name="run"),
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     log_every_n_steps=1)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.cpu(), y.cpu(), m.cpu()), batch_size=16,
                                     shuffle=True, generator=torch.Generator().manual_seed(SEED))
trainer.fit(module, loader)

# read back what the logger wrote (one row per logged step) and compare with the callback's own table
logged = pd.read_csv(next(logdir.rglob("metrics.csv"))).dropna(subset=["equivariance/percent"])
lt = callback.table()
merged = lt.merge(logged, on="step")
log_gap = float((merged["percent"] - merged["equivariance/percent"]).abs().max())
glue("guide-pl-pct", float(lt["percent"].iloc[-1]))
glue("guide-pl-se", float(lt["se_percent"].iloc[-1]))
glue("guide-pl-n", len(lt))
glue("guide-pl-logged", len(merged))
glue("guide-pl-gap", log_gap)
same = len(merged) == len(lt) and log_gap <= 1e-12 * float(lt["percent"].max())
glue("guide-pl-gap-text", "hold the same numbers" if same else f"differ (largest difference {log_gap:.2g} percentage points over {len(merged)} shared steps)")

fig, axes = new_figure(1, 1, width=4.6, height=3.0)
ax = axes[0, 0]
percent_panel(ax, {"plain loop": table, "Lightning": lt}, band=True, threshold=2.0)
ax.set_xscale("log")
glue("guide-fig-both", fig)
glue("guide-runtime", time.perf_counter() - t_start)

# %% [markdown]
# The callback recorded {glue:text}`guide-pl-n` evaluations and ended at
# {glue:text}`guide-pl-pct:.2f` ± {glue:text}`guide-pl-se:.2f` %. The CSV logger holds
# {glue:text}`guide-pl-logged` rows of these metrics, one per evaluation at the monitor's step,
# and they and the callback's table {glue:md}`guide-pl-gap-text`. The two runs differ in their
# minibatches and rotations, so their curves are two samples of the same training, not copies.
#
# ```{glue:figure} guide-fig-both
# :name: fig-guide-both
#
# Both records, read back as DataFrames: the plain loop's `monitor.table()` and the Lightning
# callback's `callback.table()` (bands: ±2 standard errors).
# ```
#
# ## Reading the record
#
# Each row of `monitor.table()` (or `callback.table()`) is one evaluation: `step`, the three
# terms `L`, `L_mean`, `L_equiv` averaged over held-out samples, `percent`, their standard
# errors (`se_*`) and `n_samples`. Save it with `to_csv`, plot it with
# `equivlib.plotting.percent_panel` as above, or pass it to `equivlib.curves` for the step at
# which the percent settles below a threshold. The page took {glue:text}`guide-runtime:.0f` s.

# %% [markdown]
# ## Library calls on this page
#
# This page's single source is {download}`guide_monitor.py <../../chapters/guide_monitor.py>`, a jupytext notebook
# (`make lab` opens it as one; the executed `.ipynb` is under the download button at the top).
#
# Every `equivlib` function and class this page's code calls, each linked to its entry in the
# {ref}`API reference <api>`:
# {py:func}`~equivlib.book.glue`, {py:func}`~equivlib.config.by_profile`,
# {py:func}`~equivlib.config.chapter_setup`, {py:func}`~equivlib.data.lennard_jones_clusters`,
# {py:class}`~equivlib.groups.VectorAction`, {py:class}`~equivlib.lightning.EquivarianceCallback`,
# {py:class}`~equivlib.lightning.RotationAugmentedModule`,
# {py:class}`~equivlib.models.AtomTransformer`, {py:func}`~equivlib.plotting.new_figure`,
# {py:func}`~equivlib.plotting.percent_panel`, {py:func}`~equivlib.plotting.set_style`,
# {py:class}`~equivlib.training.EquivarianceMonitor`, {py:func}`~equivlib.training.masked_mse`,
# {py:func}`~equivlib.training.rotation_augment`.
