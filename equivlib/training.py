"""One training loop for every task, and the equivariance monitor that rides along.

The monitor can also be dropped into any other loop::

    from equivlib import EquivarianceMonitor, VectorAction
    monitor = EquivarianceMonitor(model, x_val, y_val, VectorAction(), every=100,
                                  extras={"mask": m_val}, mask=m_val)
    for step in range(steps):
        ...                       # your optimiser step
        monitor(step)             # every 100 steps: L, L_mean, L_equiv, percent, SEs
    monitor.table()               # a tidy pandas DataFrame, one row per evaluation
"""
from __future__ import annotations

import copy
import math
import os
import time
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import capped, smoke_report, smoke_steps
from .groups import Action, sample_design, sample_finite, sample_haar, exhaustive, haar_so3
from .twirl import NonFiniteError, _expand_mask, decompose, twisted_predictions

__all__ = ["float64_copy", "log_cosh", "masked_mse", "EquivarianceMonitor", "rotation_augment", "random_batches", "train", "make_sampler"]


def masked_mse(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample MSE ``(1/D_b) Σ (pred - y)²`` averaged over the batch (``D_b`` valid entries of sample b)."""
    if pred.shape != y.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(y.shape)}")
    if mask is None:
        return ((pred - y) ** 2).flatten(1).mean(1).mean()
    w = mask.to(pred.dtype).reshape(*mask.shape, *([1] * (y.ndim - mask.ndim))).expand_as(y)
    per = (w * (pred - y) ** 2).flatten(1).sum(1) / w.flatten(1).sum(1)
    return per.mean()


def log_cosh(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean log-cosh loss ``mean(log cosh(pred - y))``: convex, quadratic near 0, linear in the tails.

    Written as ``|r| + softplus(-2|r|) - log 2`` so that it stays finite for large residuals.
    """
    r = (pred - y).abs()
    return (r + torch.nn.functional.softplus(-2 * r) - math.log(2)).mean()


def float64_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of ``model`` in eval mode, for equivariance measurements (the original is untouched)."""
    return copy.deepcopy(model).to(torch.float64).eval()


def as_float64(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself if it is already float64 (parameters and floating buffers) and in eval mode,
    else :func:`float64_copy`: for measurements that must not modify the caller's model."""
    floating = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if model.training or any(t.dtype != torch.float64 for t in floating):
        return float64_copy(model)
    return model


#: the monitor's modes: a float32 forward with sums in float64, or everything in float64
PRECISIONS = ("mixed", "exact")


def make_sampler(scheme: str, n: int, group: torch.Tensor | None = None) -> Callable:
    """A function ``(batch, generator, dtype, device) -> GroupSample``.

    ``scheme``: ``"haar"`` (n iid rotations), ``"design"`` (n turned copies of
    ``group``), ``"finite"`` (n uniform draws from ``group``), ``"exhaustive"``.
    """
    if scheme == "haar":
        return lambda B, gen, dtype, device: sample_haar(n, batch=B, generator=gen, dtype=dtype, device=device)
    if group is None:
        raise ValueError(f"scheme {scheme!r} needs a finite group")
    if scheme == "design":
        return lambda B, gen, dtype, device: sample_design(group, n, batch=B, generator=gen, dtype=dtype, device=device)
    if scheme == "finite":
        return lambda B, gen, dtype, device: sample_finite(group.to(dtype), n, batch=B, generator=gen, device=device)
    if scheme == "exhaustive":
        return lambda B, gen, dtype, device: exhaustive(group.to(dtype), device=device)
    raise ValueError(f"unknown scheme {scheme!r}; use 'haar', 'design', 'finite' or 'exhaustive'")


class EquivarianceMonitor:
    """Logs the loss decomposition on a fixed held-out set every ``every`` steps.

    Group elements are drawn from the monitor's own generator, and the global
    RNG state is saved and restored around each evaluation, so attaching a
    monitor does not change the training run.  The model is put in eval mode
    for the evaluation and restored afterwards.

    Parameters
    ----------
    model : nn.Module
    x, y : Tensor ``(B, ...)``
        Held-out inputs and targets.
    action_in, action_out : Action
    every : int
        Evaluate when ``step % every == 0`` (and at the steps in ``at``, if given).
    n_elements, scheme, group
        Group sample per evaluation (see :func:`make_sampler`); default 16 iid Haar rotations.
    extras, mask
        Extra model inputs and an output mask, as in :func:`~equivlib.twirl.decompose`.
    grad_norms : bool
        Also record ``‖∇L‖``, ``‖∇L_mean‖``, ``‖∇L_equiv‖`` and their ratio
        (one extra backward pass per component).
    split : (name, Tensor ``(B,)``), optional
        Report one record per distinct value of this per-sample label, tagged
        ``{name: value}`` (e.g. ``("t", times)`` for flow matching at several
        fixed times).  All samples go through one batched forward pass, which is
        much cheaper for small models than one monitor per value.
    seed : int
        Seed of the monitor's own generator.
    eval_dtype : torch.dtype
        Dtype of the measurement's reductions (default float64): held-out data,
        group elements and twisted predictions are converted to it before the
        decomposition's sums.  Floating ``x``, ``y`` and extras of another dtype
        (float32 training data, say) are converted once, at construction.
    precision : ``"mixed"`` (default) or ``"exact"``
        ``"mixed"`` runs the model's forward passes in float32 and the sums in
        ``eval_dtype``: 2-8x cheaper on a CPU than a float64 forward, and
        ``L_equiv`` moves by float32 round-off only
        (``benchmarks/bench_monitor_accuracy.py`` measures how far across chapter 2's
        checkpoints).  ``"exact"``
        runs the forward in ``eval_dtype`` too: for identity checks, and for models
        whose equivariance error is near float32 round-off (an exactly equivariant
        model reads about 1e-13 of its loss in mixed mode, about 1e-30 in exact
        mode).  A model in another dtype than the forward's is evaluated through a
        persistent copy cast to it; gradient norms are then those of the copy.

    Raises
    ------
    NonFiniteError
        At construction, if held-out inputs or targets hold NaN or inf (naming how
        many samples); at an evaluation, if twisted predictions do (naming the step).
    """

    def __init__(self, model, x, y, action_in: Action, action_out: Action | None = None, *, every: int = 100,
                 at: Iterable[int] = (), n_elements: int = 16, scheme: str = "haar", group=None,
                 extras: Mapping[str, torch.Tensor] | None = None, mask=None, grad_norms: bool = False,
                 estimator: str = "unbiased", split: tuple[str, torch.Tensor] | None = None,
                 pool_units: torch.Tensor | None = None, seed: int = 0, chunk_size: int | None = None, tag: Mapping | None = None,
                 eval_dtype: torch.dtype = torch.float64, precision: str = "mixed"):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.x, self.y = model, x, y
        self.action_in, self.action_out = action_in, action_out
        self.every, self.at = every, set(at)
        self.sampler = make_sampler(scheme, n_elements, group)
        self.extras, self.mask = dict(extras or {}), mask
        self.grad_norms, self.estimator = grad_norms, estimator
        self.generator = torch.Generator().manual_seed(seed)
        self.chunk_size = chunk_size
        self.tag = dict(tag or {})
        self.records: list[dict] = []
        self.seconds, self.evaluations = 0.0, 0
        if not (isinstance(eval_dtype, torch.dtype) and eval_dtype.is_floating_point):
            raise ValueError(f"eval_dtype must be a floating torch.dtype, got {eval_dtype!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.eval_dtype, self.precision = eval_dtype, precision
        self.forward_dtype = torch.float32 if precision == "mixed" else eval_dtype
        self._copy = None  # the copy of a model in another dtype than forward_dtype, made at first use
        self.split = None
        if split is not None:
            name, labels = split
            labels = torch.as_tensor(labels).detach().cpu()
            if labels.shape != (x.shape[0],):
                raise ValueError(f"split labels {name!r} must have shape ({x.shape[0]},), got {tuple(labels.shape)}")
            self.split = (str(name), labels, [v.item() for v in torch.unique(labels)])
        self.pool_units = None
        if pool_units is not None:
            if split is None:
                raise ValueError("pool_units pools the rows of a split: give split=(name, labels) too")
            pool_units = torch.as_tensor(pool_units).detach().to(x.device)
            if pool_units.shape != (x.shape[0],):
                raise ValueError(f"pool_units must have shape ({x.shape[0]},), got {tuple(pool_units.shape)}")
            self.pool_units = pool_units
        for name, t in (("inputs x", x), ("targets y", y)):
            if not t.is_floating_point():
                raise ValueError(f"monitor {name} must be floating point, got {t.dtype}")
            bad = (~torch.isfinite(t)).reshape(t.shape[0], -1).any(-1)
            if mask is not None and name == "targets y":  # padding may hold anything
                bad = ((~torch.isfinite(t)) & _expand_mask(mask, t)).reshape(t.shape[0], -1).any(-1)
            if bad.any():
                raise NonFiniteError(f"monitor {name}: {int(bad.sum())} of {t.shape[0]} held-out samples hold NaN or inf "
                                     f"(samples {torch.nonzero(bad).flatten().tolist()[:10]})")
        # equivariance is measured in eval_dtype: floating data of another dtype are converted once, here
        self.x, self.y = x.to(eval_dtype), y.to(eval_dtype)
        self.extras = {k: (v.to(eval_dtype) if v.is_floating_point() else v) for k, v in self.extras.items()}
        fd = self.forward_dtype  # the forward's copies of the inputs (the same tensors in exact mode)
        self._x_fwd = self.x.to(fd)
        self._extras_fwd = {k: (v.to(fd) if v.is_floating_point() else v) for k, v in self.extras.items()}

    def __call__(self, step: int) -> dict | None:
        if step % self.every == 0 or step in self.at:
            return self.measure(step)
        return None

    def measure(self, step: int) -> dict:
        t0 = time.perf_counter()
        devices = [self.x.device] if self.x.device.type == "cuda" else []
        was_training = self.model.training
        self.model.eval()
        model = self._eval_model()
        with torch.random.fork_rng(devices=devices):
            # drawn in eval_dtype whatever the forward's dtype: both modes see the same elements
            sample = self.sampler(self.x.shape[0], self.generator, self.eval_dtype, self.x.device)
            params = [p for p in model.parameters() if p.requires_grad]
            with torch.set_grad_enabled(self.grad_norms):
                Z = twisted_predictions(model, self._x_fwd, sample.to(dtype=self.forward_dtype), self.action_in,
                                        self.action_out, extras=self._extras_fwd,
                                        chunk_size=self.chunk_size).to(self.eval_dtype)
                try:
                    d = decompose(Z, self.y, sample, mask=self.mask, estimator=self.estimator)
                except NonFiniteError as e:
                    self.model.train(was_training)
                    raise NonFiniteError(f"monitor at step {step}: {e} (has training diverged?)") from None
            if self.split is None:
                parts = [(self.tag, d)]
            else:
                name, labels, values = self.split
                parts = [({**self.tag, name: v}, d.subset((labels == v).to(d.L.device))) for v in values]
                if self.pool_units is not None:  # the split's rows pooled, with units as the independent draws
                    pooled = d.pool(self.pool_units).summary()
                    parts = [({**tag, "pooled_percent": pooled["percent"], "pooled_se_percent": pooled["se_percent"]},
                              dp) for tag, dp in parts]
            recs = []
            for tag, dp in parts:
                rec = {"step": step, **tag, **dp.summary()}
                if self.grad_norms:
                    rec.update(self._grad_norms(dp, params))
                recs.append(rec)
        self.model.train(was_training)
        self.seconds += time.perf_counter() - t0
        self.evaluations += 1
        self.records.extend(recs)
        return recs[0] if self.split is None else recs

    def _eval_model(self) -> torch.nn.Module:
        """The model itself if it is in ``forward_dtype``, else a persistent copy cast to it, refreshed.

        The copy is made once and its parameters are overwritten at every
        evaluation (a deep copy per evaluation would also defeat the memory
        probe's per-model cache).  Buffers are copied too, except where the
        copy's value already rounds to the original's: constant buffers keep the
        precision of the cast (e3nn's Wigner-3j tables are recomputed in float64).
        """
        model = self.model
        if next(model.parameters()).dtype == self.forward_dtype:
            return model
        if self._copy is None:
            self._copy = copy.deepcopy(model).to(self.forward_dtype)
            return self._copy.eval()
        with torch.no_grad():
            for p64, p in zip(self._copy.parameters(), model.parameters()):
                p64.copy_(p)
            for b64, b in zip(self._copy.buffers(), model.buffers()):
                if b64.dtype == b.dtype or not torch.equal(b64.to(b.dtype), b):
                    b64.copy_(b)
        return self._copy.eval()

    @staticmethod
    def _grad_norms(d, params) -> dict:
        grads = {}
        for k in ("L_mean", "L_equiv"):
            g = torch.autograd.grad(getattr(d, k).mean(), params, retain_graph=True, allow_unused=True)
            grads[k] = torch.cat([(gi if gi is not None else torch.zeros_like(p)).flatten()
                                  for gi, p in zip(g, params)])
        gL = grads["L_mean"] + grads["L_equiv"]
        return dict(grad_L=float(gL.norm()), grad_L_mean=float(grads["L_mean"].norm()),
                    grad_L_equiv=float(grads["L_equiv"].norm()),
                    grad_ratio=float(grads["L_equiv"].norm() / grads["L_mean"].norm()),
                    grad_cos_L_Lmean=float(torch.nn.functional.cosine_similarity(gL, grads["L_mean"], dim=0)))

    def table(self) -> pd.DataFrame:
        """The records as a tidy DataFrame: one row per evaluation (with ``split``, per evaluation and label)."""
        return pd.DataFrame(self.records)

    def to_csv(self, path) -> None:
        self.table().to_csv(path, index=False)


def rotation_augment(positions_key: str = "x", vector_keys: Iterable[str] = ("y",)) -> Callable:
    """Random-rotation augmentation for per-atom vector data.

    Returns ``augment(batch: dict, generator) -> dict`` that rotates
    ``batch[positions_key]`` and every ``batch[k]`` for ``k in vector_keys``
    by one Haar rotation per sample.
    """
    keys = [positions_key, *vector_keys]

    def augment(batch: dict, generator: torch.Generator) -> dict:
        x = batch[positions_key]
        R = haar_so3(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        out = dict(batch)
        for k in keys:
            out[k] = torch.einsum("bij,baj->bai", R, batch[k])
        return out

    return augment


def random_batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatch indices: a fresh permutation of ``range(n)`` every epoch."""
    if batch_size < 1 or n < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield perm[i:i + batch_size]


def train(
    model: torch.nn.Module,
    data: Mapping[str, torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    forward: Callable[[torch.nn.Module, dict], torch.Tensor],
    loss: Callable[[torch.Tensor, dict], torch.Tensor],
    optimizer: str | Callable = "adam",
    lr: float = 1e-3,
    augment: Callable | None = None,
    monitor: EquivarianceMonitor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "train",
) -> pd.DataFrame:
    """Train ``model`` on ``data`` (a dict of tensors with a common leading size).

    Each step draws a minibatch (``batch_size`` rows, epochs without
    replacement), applies ``augment(batch, generator)`` if given, computes
    ``loss(forward(model, batch), batch)`` and takes an optimiser step.  The
    monitor is called at step 0 (before training) and after every step.
    Returns the training log as a DataFrame with columns ``step``, ``loss``
    and ``seconds``: the wall-clock time spent training up to and including
    that step, *without* the monitor's evaluations (so a held-out curve can be
    drawn against training time); the monitor keeps its own table.  Reading
    the loss value synchronises a GPU every step, so the clock is exact there too.

    In the smoke mode (:func:`~equivlib.config.smoke_steps`) ``steps`` is capped and the
    loop's cost per step and per monitor evaluation, with its planned size, goes to the
    smoke ledger (:func:`~equivlib.config.smoke_report`).
    """
    sizes = {k: v.shape[0] for k, v in data.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"data tensors must share their leading size, got {sizes}")
    steps = capped(steps)  # the smoke mode caps every loop, also one its caller did not cap
    n = next(iter(sizes.values()))
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    params = [p for p in model.parameters() if p.requires_grad]
    if callable(optimizer):
        opt = optimizer(params)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam', 'sgd' or a callable")
    batches = random_batches(n, batch_size, generator)
    log = []
    if monitor is not None:
        monitor(0)
    t0 = time.perf_counter()
    mon0 = monitor.seconds if monitor is not None else 0.0
    model.train()
    for step in tqdm(range(1, steps + 1), desc=desc, disable=not progress, mininterval=2):
        idx = next(batches)
        batch = {k: v[idx] for k, v in data.items()}
        if augment is not None:
            batch = augment(batch, generator)
        opt.zero_grad(set_to_none=True)
        value = loss(forward(model, batch), batch)
        if not torch.isfinite(value):
            raise FloatingPointError(f"{desc}: loss became {float(value.detach())} at step {step}")
        value.backward()
        opt.step()
        loss_value = float(value.detach())  # synchronises a GPU
        elapsed = time.perf_counter() - t0 - ((monitor.seconds - mon0) if monitor is not None else 0.0)
        log.append({"step": step, "loss": loss_value, "seconds": elapsed})
        if monitor is not None:
            monitor(step)
    model.eval()
    out = pd.DataFrame(log, columns=["step", "loss", "seconds"])
    out.attrs["seconds"] = time.perf_counter() - t0
    out.attrs["monitor_seconds"] = monitor.seconds if monitor is not None else 0.0
    if smoke_steps() is not None:
        _report_smoke(out, steps, monitor, desc, model)
    return out


def _planned_evaluations(monitor, planned: int) -> int:
    """The monitor evaluations of the planned (uncapped) loop: ``monitor.planned_evals`` if set, else its schedule."""
    if getattr(monitor, "planned_evals", None) is not None:
        return int(monitor.planned_evals)
    inner = getattr(monitor, "monitor", monitor)  # a wrapper (runs' checkpointing) around the monitor
    return len(set(range(0, planned + 1, inner.every)) | {int(s) for s in inner.at if s <= planned})


def _report_smoke(log: pd.DataFrame, steps: int, monitor, desc: str, model) -> None:
    """Smoke mode: report this loop's measured cost and its planned size to the ledger (:func:`~equivlib.config.smoke_report`)."""
    per_step = np.diff(np.concatenate([[0.0], log["seconds"].to_numpy()]))
    steady = per_step[2:] if len(per_step) > 3 else per_step  # the first steps warm up (allocations, lazy init)
    planned = int(getattr(steps, "planned", steps))
    entry = {"desc": desc, "steps": int(steps), "planned_steps": planned,
             "step_s": float(steady.mean()) if len(steady) else 0.0, "train_s": float(log["seconds"].iloc[-1]) if len(log) else 0.0,
             "device": str(next(model.parameters()).device), "pid": os.getpid()}
    if monitor is not None:
        inner = getattr(monitor, "monitor", monitor)  # a wrapper (runs' checkpointing) around the monitor
        n_eval = max(inner.evaluations, 1)
        entry.update(evals=n_eval, eval_s=monitor.seconds / n_eval,
                     planned_evals=_planned_evaluations(monitor, planned))
    smoke_report(entry)
