"""What each chapter trains, per profile: one home for the book's training plans.

Chapter 2 trains one run per task, a sweep on the force task (one setting changed at
a time) and an EScAIP-style vs e3nn pair for the efficiency gap.  The sizes of all of
them live in :data:`CHAPTER2`, and :func:`chapter2_runs` turns them into the
:class:`~equivlib.runs.RunConfig` objects the chapter passes to
:func:`~equivlib.runs.get_run`.  ``benchmarks/bench_profile.py`` times the same
configurations on a GPU to estimate what the ``full`` profile costs::

    plan = chapter2_runs("full", seed=0)
    for cfg in plan.configs():
        print(cfg.key, cfg.steps, cfg.batch_size)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .config import ParameterError, by_profile, smoke_steps
from .runs import RunConfig, checkpoint_steps

__all__ = ["CHAPTER2", "CHAPTER3", "CHAPTER4", "SMOKE", "TASK_NAMES", "Chapter2Runs", "chapter2_plan", "chapter2_runs",
           "chapter3_plan", "chapter4_plan", "early_step", "spread_steps"]

TASK_NAMES = ("forces", "flow", "voxels")

#: Chapter 2 per profile.  Per task: model size, training steps, batch size, learning
#: rate and the monitor's group sample; ``n_evals``: monitor evaluations per run
#: (log-spaced); ``sweep``: the force-task variants (each changes one setting of the
#: force run) with their cheaper monitor; ``task_sweep``: the same for the flow and voxel
#: runs (training-set size and model size, the paper's axes for those tasks; the task's own
#: monitor, ``n_evals`` evaluations); ``gap``: the efficiency-gap pair, repeated with
#: ``seeds`` training seeds (same data and held-out set);
#: ``voxsub``: the random-subset study of the voxel task (N values, repetitions,
#: subsets at every checkpoint, and ``n_split``: how many checkpoints the exact split covers, None: all).
CHAPTER2: dict[str, dict] = {
    "quick": dict(
        forces=dict(size="small", steps=300, batch=8, lr=1e-3, monitor=dict(n_elements=8)),
        flow=dict(size="small", steps=600, batch=8, lr=1e-3, monitor=dict(n_elements=8)),
        voxels=dict(size="small", steps=300, batch=8, lr=1e-3, monitor=dict(scheme="finite", n_elements=8)),
        n_evals=12,
        sweep=dict(n_train=[16, 48], batch=[1, 4], size=["medium"], optim=[("adam", 1e-4), ("sgd", 1e-2)],
                   monitor=dict(n_elements=4), n_evals=10),
        task_sweep=dict(flow=dict(n_train=[8], size=["medium"]), voxels=dict(n_train=[40], size=["medium"]),
                        n_evals=10),
        gap=dict(steps=600, n_evals=10, seeds=3),
        voxsub=dict(Ns=[2, 4, 8, 16], reps=10, n_check=8, n_split=None),
    ),
    "full": dict(
        forces=dict(size="base", steps=20000, batch=64, lr=5e-4, monitor=dict(n_elements=16)),
        flow=dict(size="base", steps=20000, batch=32, lr=5e-4, monitor=dict(n_elements=16)),
        voxels=dict(size="base", steps=10000, batch=16, lr=5e-4, monitor=dict(scheme="exhaustive", n_elements=24)),
        n_evals=20,
        sweep=dict(n_train=[256, 2048], batch=[1, 16], size=["small", "medium"],
                   optim=[("adam", 5e-5), ("sgd", 1e-2)], monitor=dict(n_elements=8), n_evals=16),
        task_sweep=dict(flow=dict(n_train=[32], size=["small", "medium"]),
                        voxels=dict(n_train=[1000], size=["small", "medium"]), n_evals=16),
        gap=dict(steps=20000, n_evals=20, seeds=3),
        voxsub=dict(Ns=[2, 4, 8, 16], reps=50, n_check=8, n_split=None),
    ),
}


#: What the smoke mode (:func:`~equivlib.config.smoke_steps`) shrinks in each chapter's full plan besides
#: the training steps: monitor evaluations, repetitions, Hessian batches and samples (within the smoke's
#: smaller held-out sets), grid points; the sweep's training-set sizes fit the smoke's 128 training
#: conformers (nested dicts merge).
SMOKE = {
    2: dict(n_evals=3, sweep=dict(n_train=[32, 64], n_evals=3), task_sweep=dict(voxels=dict(n_train=[8]), n_evals=3),
            gap=dict(n_evals=3),
            voxsub=dict(Ns=[2, 4], reps=2, n_check=2, n_split=2)),
    3: dict(forces=dict(n_batches=2, n_samples=2), flow=dict(n_batches=2, n_samples=1),
            voxels=dict(n_batches=2, n_samples=1), n_checkpoints=2, grid=3),
    4: dict(forces=dict(n_samples=4), flow=dict(n_samples=2), voxels=dict(n_samples=2), radii=[1e-3, 1e-2],
            n_directions=2, late=2, lags=[1]),
}


def _plan(table: dict, chapter: int, profile: str) -> dict:
    return copy.deepcopy(by_profile(profile, quick=table["quick"], full=table["full"], smoke=SMOKE[chapter]))


def chapter2_plan(profile: str) -> dict:
    """A copy of chapter 2's sizes for ``profile`` (see :data:`CHAPTER2`; the smoke mode shrinks it, :data:`SMOKE`)."""
    return _plan(CHAPTER2, 2, profile)


@dataclass(frozen=True)
class Chapter2Runs:
    """Chapter 2's run configurations.

    Attributes
    ----------
    main : dict[str, RunConfig]
        One augmented run per task (``forces``, ``flow``, ``voxels``).
    sweep : list[tuple[str, str, RunConfig]]
        ``(axis, label, config)``: the force run with one setting changed (axes
        ``training set``, ``batch size``, ``model size``, ``optimiser``).
    task_sweeps : dict[str, list[tuple[str, str, RunConfig]]]
        The same for the ``flow`` and ``voxels`` runs (axes ``training set`` and ``model size``).
    gap : dict[str, list[RunConfig]]
        ``escaip`` and ``e3nn``: the force run trained longer with each architecture, one
        configuration per training seed (``train_seed``), in the same order for both.
    """

    main: dict
    sweep: list
    task_sweeps: dict
    gap: dict

    def configs(self) -> list[RunConfig]:
        """Every configuration once, in training order (main, sweeps, gap)."""
        out, seen = [], set()
        for cfg in [*self.main.values(), *(c for _, _, c in self.sweep),
                    *(c for sw in self.task_sweeps.values() for _, _, c in sw),
                    *(c for pair in zip(*self.gap.values()) for c in pair)]:
            if cfg.key not in seen:
                seen.add(cfg.key)
                out.append(cfg)
        return out


def chapter2_runs(profile: str = "quick", seed: int = 0) -> Chapter2Runs:
    """Chapter 2's runs for ``profile`` and ``seed`` (the configurations, nothing trained).

    In the smoke mode each run is the capped one, with ``extra["smoke"]`` holding the
    steps and monitor evaluations of the full-profile run it stands for; its monitor
    evaluates at the first and the last step only, and the sweep and gap runs take one step.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    runs = _chapter2_runs(chapter2_plan(profile), profile, seed)
    if profile != "full" or smoke_steps() is None:
        return runs
    planned = _chapter2_runs(copy.deepcopy(CHAPTER2["full"]), profile, seed)

    def mark(cfg: RunConfig, full: RunConfig, steps: int | None = None) -> RunConfig:
        # the monitor at the first and last step only (an evaluation of the full voxel monitor costs about a
        # minute on a CPU); the checkpoints stay at every step, for the chapters that follow them
        steps = cfg.steps if steps is None else steps
        return cfg.replace(steps=steps, eval_every=steps, monitor={"at": []},
                           extra={**cfg.extra, "checkpoints": checkpoint_steps(steps),
                                  "smoke": {"steps": full.steps, "evals": len(full.eval_steps())}})

    # the sweeps and the gap pairs take one step: only chapter 2 reads them, at their first and last step
    def marked(sweep, full_sweep):
        return [(a, lab, mark(c, f, 1)) for (a, lab, c), (_, _, f) in zip(sweep, full_sweep)]

    return Chapter2Runs(main={k: mark(c, planned.main[k]) for k, c in runs.main.items()},
                        sweep=marked(runs.sweep, planned.sweep),
                        task_sweeps={k: marked(sw, planned.task_sweeps[k]) for k, sw in runs.task_sweeps.items()},
                        gap={k: [mark(c, f, 1) for c, f in zip(cs, planned.gap[k])] for k, cs in runs.gap.items()})


def _chapter2_runs(s: dict, profile: str, seed: int) -> Chapter2Runs:
    # checkpoints: at every monitor evaluation (chapters 3 and 4 follow curvature and gradients
    # along training) and at the default log-spaced steps (chapter 2's exact voxel split)
    main = {name: RunConfig(name, model_size=t["size"], profile=profile, seed=seed, steps=t["steps"],
                            batch_size=t["batch"], lr=t["lr"], eval_every=max(1, t["steps"] // 3), augment=True,
                            extra={"monitor": {**t["monitor"], "at": checkpoint_steps(t["steps"], s["n_evals"])},
                                   "checkpoints": sorted({*checkpoint_steps(t["steps"], s["n_evals"]),
                                                          *checkpoint_steps(t["steps"])})})
            for name, t in ((n, s[n]) for n in TASK_NAMES)}
    ref, sw, gap = main["forces"], s["sweep"], s["gap"]
    # each sweep run: the reference with one setting changed, and a cheaper monitor
    monitor = {**sw["monitor"], "at": checkpoint_steps(ref.steps, sw["n_evals"])}
    variants = ([("training set", f"{n} conformers", dict(n_train=n)) for n in sw["n_train"]]
                + [("batch size", f"batch {b}", dict(batch_size=b)) for b in sw["batch"]]
                + [("model size", size, dict(model_size=size)) for size in sw["size"] if size != ref.model_size]
                + [("optimiser", f"{o} lr {lr:g}", dict(optimizer=o, lr=lr)) for o, lr in sw["optim"]])
    sweep = [(axis, label, ref.replace(monitor=monitor, **change)) for axis, label, change in variants]
    # flow and voxels: the task's own monitor (its times, its group scheme) at fewer evaluations
    ts = s["task_sweep"]
    task_sweeps = {}
    for name in ("flow", "voxels"):
        base, t = main[name], ts[name]
        at = {"at": checkpoint_steps(base.steps, ts["n_evals"])}
        task_sweeps[name] = (
            [("training set", f"{n} {'chains' if name == 'flow' else 'molecules'}",
              base.replace(n_train=n, monitor=at, extra={"monitor": base.extra["monitor"]})) for n in t["n_train"]]
            + [("model size", size, base.replace(model_size=size, monitor=at, extra={"monitor": base.extra["monitor"]}))
               for size in t["size"] if size != base.model_size])
    es = ref.replace(steps=gap["steps"], eval_every=gap["steps"],
                     monitor={**sw["monitor"], "at": checkpoint_steps(gap["steps"], gap["n_evals"])})
    # replicates: the same data and held-out set (seed), other initialisations and minibatches (train_seed)
    es = [es.replace(train_seed=None if k == 0 else seed + k) for k in range(gap["seeds"])]
    # the e3nn model is equivariant to round-off: its monitor runs in float64 throughout, where
    # the mixed default would read float32 round-off (~1e-12 %) as its equivariance error
    e3 = [c.replace(arch="e3nn", monitor={"precision": "exact"}) for c in es]
    return Chapter2Runs(main=main, sweep=sweep, task_sweeps=task_sweeps, gap={"escaip": es, "e3nn": e3})


#: Chapter 3 (curvature) per profile.  Per task: the parameter subset whose Hessians are
#: formed (module names), a phrase naming it, and the held-out minibatches
#: (``n_samples`` samples x ``n_elements`` group elements, ``n_batches`` of them);
#: ``n_checkpoints``: checkpoints in the over-training figure; ``grid``/``extent``: the
#: landscape's points per axis and half-width (relative to the subset's norm); ``k``:
#: the ``λ_1/λ_k`` measure.  Subsets are of the first paper's kinds: a non-linear layer of
#: the force model, the flow model's linear head, the U-Net's final layer.
CHAPTER3: dict[str, dict] = {
    "quick": dict(
        forces=dict(subset=["layers.0.norm_ffn"], kind="the feed-forward block's layer norm (non-linear)",
                    n_samples=1, n_elements=4, n_batches=4),
        flow=dict(subset=["head"], kind="the linear head", n_samples=2, n_elements=8, n_batches=8),
        voxels=dict(subset=["out"], kind="the final (1x1x1) convolution", n_samples=1, n_elements=4, n_batches=4),
        n_checkpoints=4, grid=7, extent=0.5, k=10,
    ),
    "full": dict(
        forces=dict(subset=["layers.2.norm_ffn", "layers.2.ffn.2.bias", "norm_out"],
                    kind="the last block's layer norm, feed-forward bias and the output norm (non-linear)",
                    n_samples=2, n_elements=8, n_batches=20),
        flow=dict(subset=["head"], kind="the linear head", n_samples=4, n_elements=8, n_batches=20),
        voxels=dict(subset=["out"], kind="the final (1x1x1) convolution", n_samples=2, n_elements=8, n_batches=20),
        n_checkpoints=8, grid=21, extent=0.5, k=10,
    ),
}

#: Chapter 4 (gradients, KL bound) per profile.  Per task the fixed held-out batch whose
#: gradients are followed along training (``n_samples`` x ``n_elements``; flow: one batch per
#: time in ``times``) and the subset (chapter 3's) on which the bounds' constants are
#: measured; ``radii`` (relative to the subset's norm) and ``n_directions``: the random
#: perturbations around the final checkpoint; ``late``: trailing checkpoints that join them
#: in the KL fit; ``lags``: the lag analysis.
CHAPTER4: dict[str, dict] = {
    "quick": dict(
        forces=dict(n_samples=2, n_elements=4), flow=dict(n_samples=4, n_elements=8, times=[0.2, 0.9, 0.99]),
        voxels=dict(n_samples=2, n_elements=4),
        radii=[1e-3, 1e-2, 3e-2], n_directions=3, late=4, lags=[1, 2, 3],
    ),
    "full": dict(
        forces=dict(n_samples=8, n_elements=16), flow=dict(n_samples=8, n_elements=16, times=None),
        voxels=dict(n_samples=4, n_elements=8),
        radii=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1], n_directions=8, late=6, lags=[1, 2, 3, 4],
    ),
}


def chapter3_plan(profile: str) -> dict:
    """A copy of chapter 3's sizes for ``profile`` (see :data:`CHAPTER3`; the smoke mode shrinks it, :data:`SMOKE`)."""
    return _plan(CHAPTER3, 3, profile)


def chapter4_plan(profile: str) -> dict:
    """A copy of chapter 4's sizes for ``profile`` (see :data:`CHAPTER4`); the subsets are chapter 3's."""
    out = _plan(CHAPTER4, 4, profile)
    for name in TASK_NAMES:
        out[name]["subset"] = CHAPTER3[profile][name]["subset"]
    return out


def early_step(steps) -> int:
    """The "early" checkpoint: the first at or after a tenth of training (the paper's step 500 analogue)."""
    steps = sorted(int(s) for s in steps)
    if not steps:
        raise ParameterError("no checkpoints")
    return next(s for s in steps if s >= steps[-1] / 10)


def spread_steps(steps, n: int | None) -> list[int]:
    """``n`` checkpoints spread evenly (by index) over ``steps``, always the first and the last (``None``: all)."""
    steps = sorted(int(s) for s in steps)
    if n is None or n < 2 or len(steps) <= n:
        return steps
    return sorted({steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, n)})
