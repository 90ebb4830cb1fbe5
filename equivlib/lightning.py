"""The equivariance monitor as a PyTorch Lightning callback (``pip install "equivlib[lightning]"``).

::

    from equivlib.lightning import EquivarianceCallback
    from equivlib import VectorAction

    cb = EquivarianceCallback(x_val, y_val, VectorAction(), every=100,
                              extras={"mask": m_val}, mask=m_val)
    trainer = pl.Trainer(max_steps=5000, callbacks=[cb])
    trainer.fit(module, loader)
    cb.table()          # one row per evaluation: step, L, L_mean, L_equiv, percent, SEs

The callback builds an :class:`~equivlib.training.EquivarianceMonitor` on the
LightningModule (or on ``model_of(module)``, e.g. the network inside it) when
fitting starts, evaluates it at optimiser step 0 and then whenever the trainer's
``global_step`` reaches a multiple of ``every`` (or a step in ``at``), and logs
``percent``, ``L_equiv``, ``L_mean`` and ``L`` under ``{prefix}/...`` to every
logger of the trainer, one record per evaluation at the monitor's step, and into
``trainer.callback_metrics`` (from the first batch on).  With a ``split``
monitor (one record per label) the first label's record is logged and all are in
:meth:`EquivarianceCallback.table`.  Each ``fit`` starts a new monitor.  The monitor
draws group elements from its own generator and restores the global RNG, so the
callback does not change the training run.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import pandas as pd
import torch

try:
    import pytorch_lightning as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('equivlib.lightning needs PyTorch Lightning: pip install "equivlib[lightning]" '
                      "(or pytorch-lightning)") from exc

from .groups import Action
from .training import EquivarianceMonitor, masked_mse, rotation_augment

__all__ = ["EquivarianceCallback", "RotationAugmentedModule", "LOGGED"]

#: the monitor's columns that the callback logs
LOGGED = ("percent", "L_equiv", "L_mean", "L")


class EquivarianceCallback(pl.Callback):
    """Runs :class:`~equivlib.training.EquivarianceMonitor` inside ``Trainer.fit``.

    Parameters
    ----------
    x, y : Tensor ``(B, ...)``
        Held-out inputs and targets (any floating dtype; moved to the module's device).
    action_in, action_out : Action
    every : int
        Evaluate when ``global_step % every == 0`` (step 0 included).
    at : iterable of int
        Further optimiser steps to evaluate at (e.g. log-spaced early steps).
    model_of : callable, optional
        ``model_of(module) -> nn.Module`` picks the network to measure (default: the
        LightningModule itself, called as ``module(x, **extras)``).
    prefix : str
        Logged names are ``{prefix}/percent`` etc.; ``log=False`` logs nothing.
    **monitor_kwargs
        Passed to :class:`~equivlib.training.EquivarianceMonitor` (``n_elements``,
        ``scheme``, ``group``, ``extras``, ``mask``, ``precision``, ``seed``...).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, action_in: Action, action_out: Action | None = None, *,
                 every: int = 100, at: Iterable[int] = (), model_of: Callable | None = None,
                 prefix: str = "equivariance", log: bool = True, **monitor_kwargs):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.x, self.y, self.action_in, self.action_out = x, y, action_in, action_out
        self.every, self.at = every, set(int(s) for s in at)
        # (not self.log: Lightning binds the module's log method onto callbacks under that name)
        self.model_of, self.prefix, self.logs = model_of, prefix, log
        self.monitor_kwargs = dict(monitor_kwargs)
        self.monitor: EquivarianceMonitor | None = None
        self._last_step: int | None = None
        self._in_batch = False

    def _model(self, module):
        model = module if self.model_of is None else self.model_of(module)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model_of must return an nn.Module, got {type(model).__name__}")
        return model

    def on_fit_start(self, trainer, pl_module) -> None:
        device = pl_module.device

        def to(t):
            return t.to(device) if isinstance(t, torch.Tensor) else t

        kw = dict(self.monitor_kwargs)
        if kw.get("extras") is not None:
            kw["extras"] = {k: to(v) for k, v in kw["extras"].items()}
        for k in ("mask", "pool_units"):
            if kw.get(k) is not None:
                kw[k] = to(kw[k])
        self.monitor = EquivarianceMonitor(self._model(pl_module), to(self.x), to(self.y), self.action_in,
                                           self.action_out, every=self.every, at=self.at, **kw)

    def on_train_start(self, trainer, pl_module) -> None:
        self._in_batch = False
        self._evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._in_batch = True
        self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer, pl_module) -> None:
        step = int(trainer.global_step)
        if step == self._last_step:  # gradient accumulation: several batches per optimiser step
            return
        self._last_step = step
        recs = self.monitor(step)
        if recs is None or not self.logs:
            return
        rec = recs if isinstance(recs, Mapping) else recs[0]
        metrics = {f"{self.prefix}/{k}": float(rec[k]) for k in LOGGED}
        # to the loggers directly, at the monitor's step: Lightning's own on-step logging would record them
        # at the batch index (one less) and repeat them at every step until the next evaluation
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        if self._in_batch:  # trainer.callback_metrics (progress bar, checkpoint monitors); refused before training
            pl_module.log_dict(metrics, on_step=True, on_epoch=False, logger=False)

    @property
    def records(self) -> list[dict]:
        return [] if self.monitor is None else self.monitor.records

    def table(self) -> pd.DataFrame:
        """The monitor's records: one row per evaluation (see :meth:`~equivlib.training.EquivarianceMonitor.table`)."""
        return pd.DataFrame(self.records)


class RotationAugmentedModule(pl.LightningModule):
    """A LightningModule that trains ``net(positions, mask)`` to predict per-atom vectors with augmentation.

    Batches are ``(positions, targets, mask)``: ``(B, atoms, 3)``, ``(B, atoms, 3)``
    and ``(B, atoms)`` bool.  Every training step rotates positions and targets by
    one Haar rotation per sample (:func:`~equivlib.training.rotation_augment`, from the
    module's own generator seeded with ``seed``) and minimises the masked MSE
    (:func:`~equivlib.training.masked_mse`) with Adam at ``lr``; the loss is logged as
    ``train_loss``.  ``module(positions, mask)`` is ``net(positions, mask)``.
    """

    def __init__(self, net: torch.nn.Module, *, lr: float = 1e-3, seed: int = 0):
        super().__init__()
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.net, self.lr = net, float(lr)
        self.augment = rotation_augment("x", ("y",))
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, positions, mask=None):
        """``net(positions, mask)``."""
        return self.net(positions, mask)

    def training_step(self, batch, batch_idx):
        """The masked MSE on the batch rotated by one Haar rotation per sample."""
        x, y, mask = batch
        b = self.augment({"x": x, "y": y}, self.generator)
        loss = masked_mse(self(b["x"], mask), b["y"], mask)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self):
        """Adam at ``lr`` over every parameter."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)
