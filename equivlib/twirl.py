r"""Twisted predictions, twirls and the loss decomposition.

For a model ``f``, an input ``x`` and a group element ``g`` the *twisted
prediction* is :math:`Z_x(g) = g^{-1} f(g x)`; the *twirl* is its mean over the
group, :math:`\mu(x) = \mathbb E_g Z_x(g)`.  Under the mean-squared error

.. math::  L = \underbrace{\tfrac1D\|\mu(x) - y\|^2}_{L_\text{mean}}
             + \underbrace{\tfrac1D \mathbb E_g\|Z_x(g) - \mu(x)\|^2}_{L_\text{equiv}} .

Everything here is batched over group elements: the ``B·N`` transformed inputs go
through the model in as few forward passes as a memory budget allows.

Estimators
----------
With ``K`` independent blocks of ``m`` elements (see :class:`~equivlib.groups.GroupSample`),
block means :math:`\bar Z_k` and overall mean :math:`\hat\mu`:

* ``plugin``: :math:`\hat L_\text{mean} = \tfrac1D\|\hat\mu-y\|^2`,
  :math:`\hat L_\text{equiv} = \tfrac1{ND}\sum_i\|Z_i-\hat\mu\|^2`.  Exact for an
  exhaustive sample of a finite group, biased otherwise.
* ``unbiased``: the variance of :math:`\hat\mu` is estimated from the spread of the
  block means, :math:`\hat v = \tfrac1{K(K-1)}\sum_k\|\bar Z_k-\hat\mu\|^2/D`, and moved
  from the mean term to the equivariance term:
  :math:`\hat L_\text{mean} - \hat v`, :math:`\hat L_\text{equiv} + \hat v`.  For iid
  samples (``m = 1``) this is the Bessel correction ``N/(N-1)``; for rotated
  designs it is unbiased although the elements of a block are dependent.
  The total :math:`\hat L = \tfrac1{ND}\sum_i\|Z_i-y\|^2` is unbiased in every case.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .config import ParameterError
from .groups import Action, GroupError, GroupSample

__all__ = [
    "twisted_predictions",
    "twirl",
    "decompose",
    "decompose_model",
    "decompose_general",
    "decomposition_loss",
    "TERMS",
    "bootstrap_se",
    "Decomposition",
    "NonFiniteError",
    "estimate_bytes_per_input",
    "TwirledModel",
    "CPU_MAX_CHUNK",
]

Estimator = Literal["plugin", "unbiased"]


# --------------------------------------------------------------------------- memory probe
class _LiveBytes(TorchDispatchMode):
    """Track the peak of bytes held by tensors created inside the mode."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, n):
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t._base is None:
                n = t.untyped_storage().nbytes()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._release, n)
        return out


_BYTES_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_PROBE_MIN_INPUTS = 256  # passes with fewer transformed inputs than this are not probed ...
_PROBE_MIN_INPUT_MB = 16.0  # ... unless the transformed inputs alone exceed this many MiB (e.g. voxel grids)
#: on a CPU, the default chunk of :func:`twisted_predictions` holds at most this many transformed inputs
CPU_MAX_CHUNK = 256


def estimate_bytes_per_input(model: Callable, x: torch.Tensor, extras: Mapping | None = None) -> float:
    """Peak bytes of intermediate tensors per input in one no-grad forward pass.

    Measured by running ``model`` on 2 and 4 copies of the first input under a
    dispatch mode that tracks live tensor bytes; the slope is the per-input
    cost.  The global RNG state is restored afterwards.  Cached per model object
    (weakly) and input shape, dtype and device.  A model in training mode with
    batch-norm layers would update its running statistics here: measure models
    in eval mode.
    """
    key = (tuple(x.shape[1:]), x.dtype, x.device.type,
           tuple((k, tuple(v.shape[1:])) for k, v in sorted((extras or {}).items())))
    try:
        per_model = _BYTES_CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: do not cache
        per_model = {}
    if key not in per_model:
        peaks = []
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for c in (2, 4):
                xs = x[:1].expand(c, *x.shape[1:]).clone()
                ex = {k: v[:1].expand(c, *v.shape[1:]).clone() for k, v in (extras or {}).items()}
                probe = _LiveBytes()
                with torch.no_grad(), probe:
                    model(xs, **ex)
                peaks.append(probe.peak)
        per_model[key] = max((peaks[1] - peaks[0]) / 2, peaks[1] / 4, 1.0)
    return per_model[key]


# --------------------------------------------------------------------------- twisting
def _check_extras(extras, B):
    extras = dict(extras or {})
    for k, v in extras.items():
        if not isinstance(v, torch.Tensor) or v.ndim == 0 or v.shape[0] != B:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise GroupError(f"extra model input {k!r} must be a tensor with leading batch size {B}, got {shape}")
    return extras


def twisted_predictions(
    model: Callable,
    x: torch.Tensor,
    sample: GroupSample,
    action_in: Action,
    action_out: Action | None = None,
    *,
    extras: Mapping[str, torch.Tensor] | None = None,
    chunk_size: int | None = None,
    memory_budget_mb: float | None = 1024.0,
    cpu_max_chunk: int | None = CPU_MAX_CHUNK,
) -> torch.Tensor:
    """Twisted predictions ``g⁻¹ f(g x)`` for every sample and group element.

    Parameters
    ----------
    model : callable
        ``model(x_batch, **extras_batch) -> y_batch``.
    x : Tensor ``(B, *in_shape)``
        Untransformed inputs.
    sample : GroupSample
        Group elements, ``(K, m, B or 1, *element_shape)``.
    action_in, action_out : Action
        Actions on inputs and outputs (``action_out`` defaults to ``action_in``).
    extras : dict of Tensor ``(B, ...)``, optional
        Invariant model inputs (masks, atom types, times…) passed as keywords,
        repeated for every group element.
    chunk_size : int, optional
        Transformed inputs per forward pass.  By default it is chosen so that one
        pass stays under ``memory_budget_mb`` (estimated by
        :func:`estimate_bytes_per_input` when there are at least 256 transformed
        inputs or they take 16 MiB or more; smaller passes are not split);
        ``memory_budget_mb=None`` means no memory limit.
    cpu_max_chunk : int or None
        On a CPU, the default chunk also holds at most this many transformed
        inputs, but never fewer than ``B`` (one group element for every sample, the
        chunk of a loop over elements), so the batched path never makes more
        forward passes than that loop.  One very large pass can be slower on a CPU
        than a few smaller ones: with 512 transformed inputs, two passes of 256 were
        the fastest for the transformer of ``benchmarks/bench_twirl.py`` and for the
        flow-matching monitor, while the quick force and voxel monitors (128 and 64
        inputs) cost about the same at any chunk.
        ``None`` removes the cap; on CUDA it does not apply.

    Returns
    -------
    Tensor ``(K, m, B, *out_shape)``
        Differentiable with respect to the model's parameters.
    """
    action_out = action_in if action_out is None else action_out
    if x.ndim < 1:
        raise GroupError("x must have a leading batch dimension")
    B = x.shape[0]
    extras = _check_extras(extras, B)
    sample.check_for(action_in)  # validated once per sample: the checks cost ~0.15 ms at small B
    if action_out is not action_in:
        sample.check_for(action_out)
    g = sample.flat(B).to(x.device)  # (N, B, *elem)
    N = g.shape[0]
    total = N * B
    if chunk_size is None:
        input_mb = total * x[:1].numel() * x.element_size() / 2**20
        if memory_budget_mb is None or (total < _PROBE_MIN_INPUTS and input_mb < _PROBE_MIN_INPUT_MB):
            chunk_size = total
        else:
            # probe on one transformed input: validates x against the action before the model runs
            per = estimate_bytes_per_input(model, action_in.apply(g[:1, :1], x[:1])[0], extras)
            chunk_size = max(1, int(memory_budget_mb * 2**20 // per))
        if cpu_max_chunk is not None and x.device.type == "cpu":
            if isinstance(cpu_max_chunk, bool) or not isinstance(cpu_max_chunk, int) or cpu_max_chunk < 1:
                raise GroupError(f"cpu_max_chunk must be a positive int or None, got {cpu_max_chunk!r}")
            chunk_size = min(chunk_size, max(cpu_max_chunk, B))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise GroupError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if chunk_size >= total:  # one pass: every element applied to every sample at once, no gather
        y = model(action_in.apply(g, x).reshape(total, *x.shape[1:]),
                  **{k: v.expand(N, *v.shape).reshape(total, *v.shape[1:]) for k, v in extras.items()})
        Z = action_out.apply_inverse(g, y.reshape(N, B, *y.shape[1:]))
        return Z.reshape(sample.n_blocks, sample.block_size, B, *Z.shape[2:])
    g_flat = g.reshape(total, *g.shape[2:])
    b_idx = torch.arange(B, device=x.device).repeat(N)  # element e ↔ (n = e // B, b = e % B)
    outs = []
    for start in range(0, total, chunk_size):
        sl = slice(start, min(start + chunk_size, total))
        gs, bs = g_flat[sl][None], b_idx[sl]
        xin = action_in.apply(gs, x[bs])[0]
        y = model(xin, **{k: v[bs] for k, v in extras.items()})
        outs.append(action_out.apply_inverse(gs, y[None])[0])
    Z = torch.cat(outs) if len(outs) > 1 else outs[0]
    return Z.reshape(sample.n_blocks, sample.block_size, B, *Z.shape[1:])


def twirl(model, x, sample, action_in, action_out=None, **kwargs) -> torch.Tensor:
    """Finite-sample twirled prediction ``mean_g g⁻¹ f(g x)``, shape ``(B, *out_shape)``."""
    Z = twisted_predictions(model, x, sample, action_in, action_out, **kwargs)
    return Z.mean(dim=(0, 1))


class TwirledModel(torch.nn.Module):
    """Wrap a model so that it predicts its own twirl over a group sample.

    ``sampler(batch_size, device)`` returns a fresh :class:`GroupSample` for every
    call (e.g. an exhaustive finite group, or a randomly turned design).  The
    result is exactly equivariant for an exhaustive finite group and
    approximately so otherwise; its cost is ``N`` forward passes.
    """

    def __init__(self, model, sampler, action_in, action_out=None, **kwargs):
        super().__init__()
        self.model, self.sampler = model, sampler
        self.action_in, self.action_out, self.kwargs = action_in, action_out, kwargs

    def forward(self, x, **extras):
        sample = self.sampler(x.shape[0], x.device)
        return twirl(self.model, x, sample, self.action_in, self.action_out, extras=extras, **self.kwargs)


# --------------------------------------------------------------------------- decomposition
@dataclass
class Decomposition:
    """Per-sample loss decomposition ``L = L_mean + L_equiv``.

    Attributes
    ----------
    L, L_mean, L_equiv : Tensor ``(B,)``
        Per-sample estimates (each normalised by that sample's number of valid
        output entries ``D``).  Unbiased per-sample ``L_mean`` can be negative.
    scheme, estimator : str
        How the group elements were drawn and which estimator was used.
    n_elements : int
        Group elements per sample.
    """

    L: torch.Tensor
    L_mean: torch.Tensor
    L_equiv: torch.Tensor
    scheme: str
    estimator: str
    n_elements: int
    extra: dict = field(default_factory=dict)

    @property
    def percent(self) -> float:
        """``100 · mean(L_equiv) / mean(L)`` (ratio of unbiased means, Prop. 8 form)."""
        return float(100 * self.L_equiv.sum() / self.L.sum())

    def summary(self) -> dict:
        """Means over samples, percent, and analytic standard errors over samples.

        The standard errors treat the ``B`` samples as independent draws (data
        and group elements drawn independently per sample); the percent's
        error uses the delta method for a ratio of means.
        """
        self = self.detach()
        B = self.L.shape[0]
        out = {"L": float(self.L.mean()), "L_mean": float(self.L_mean.mean()),
               "L_equiv": float(self.L_equiv.mean()), "percent": self.percent,
               "n_samples": B, "n_elements": self.n_elements, "scheme": self.scheme,
               "estimator": self.estimator}
        if B > 1:
            sq = math.sqrt(B)
            for k in ("L", "L_mean", "L_equiv"):
                out[f"se_{k}"] = float(getattr(self, k).std() / sq)
            r = self.L_equiv.mean() / self.L.mean()
            out["se_percent"] = float(100 * (self.L_equiv - r * self.L).std() / sq / self.L.mean())
        else:
            for k in ("L", "L_mean", "L_equiv", "percent"):
                out[f"se_{k}"] = float("nan")
        return out

    def subset(self, index) -> "Decomposition":
        """The decomposition of the samples ``index`` (a boolean mask or indices over ``B``)."""
        return Decomposition(self.L[index], self.L_mean[index], self.L_equiv[index],
                             self.scheme, self.estimator, self.n_elements, self.extra)

    def pool(self, units) -> "Decomposition":
        """One row per *unit*: the mean of each unit's samples (e.g. a flow-matching chain seen at every time).

        When samples are not independent across a label (the same chains and
        noise evaluated at several times), the independent draws are the
        units, and a percent pooled over the label is a ratio of means over
        units.  ``pool(units).summary()`` gives that percent,
        ``100 Σ L_equiv / Σ L``, with its delta-method standard error over
        units.  ``units (B,)`` labels each sample; every unit must hold the same
        number of samples (so that the pooled percent weighs samples equally).
        """
        units = torch.as_tensor(units, device=self.L.device)
        if units.shape != self.L.shape:
            raise ValueError(f"units must have shape {tuple(self.L.shape)} (one per sample), got {tuple(units.shape)}")
        _, inverse, counts = torch.unique(units, return_inverse=True, return_counts=True)
        if (counts != counts[0]).any():
            raise ValueError(f"every unit must hold the same number of samples, got counts {counts.tolist()}")

        def means(v):
            return torch.zeros(len(counts), dtype=v.dtype, device=v.device).index_add(0, inverse, v) / counts.to(v.dtype)

        return Decomposition(means(self.L), means(self.L_mean), means(self.L_equiv), self.scheme, self.estimator,
                             self.n_elements, self.extra)

    def detach(self) -> "Decomposition":
        return Decomposition(self.L.detach(), self.L_mean.detach(), self.L_equiv.detach(),
                             self.scheme, self.estimator, self.n_elements, self.extra)


def _expand_mask(mask, y):
    """``mask`` over the leading dims of ``y`` broadcast to ``y``'s shape (``None`` stays ``None``)."""
    if mask is None:
        return None
    if mask.shape[0] != y.shape[0] or mask.ndim > y.ndim or tuple(mask.shape) != tuple(y.shape[: mask.ndim]):
        raise GroupError(f"mask of shape {tuple(mask.shape)} does not match the leading dims of "
                         f"targets {tuple(y.shape)}")
    return mask.reshape(*mask.shape, *([1] * (y.ndim - mask.ndim))).expand_as(y)


def _weights(mask, y):
    """Entry weights ``(B, *out)`` and per-sample counts ``D (B,)``."""
    w = torch.ones_like(y) if mask is None else _expand_mask(mask, y).to(y.dtype)
    D = w.reshape(w.shape[0], -1).sum(-1)
    if (D == 0).any():
        raise GroupError("a sample has no valid output entries (mask is all False)")
    return w, D


def _sqnorm(t, w):
    """Weighted squared norm over output dims; ``t (..., B, *out)``, ``w (B, *out)`` → ``(..., B)``."""
    return (w * t * t).flatten(-w.ndim + 1).sum(-1) if w.ndim > 1 else w * t * t


@dataclass
class _Blocks:
    """Sufficient statistics of a twisted sample, per block: what every estimator needs."""

    mean: torch.Tensor     # (K, B, *out)  block means  Z̄_k
    err: torch.Tensor      # (K, B)        mean_i∈k ||Z_i - y||² / D
    within: torch.Tensor   # (K, B)        mean_i∈k ||Z_i - Z̄_k||² / D
    m: int


def _block_stats(Z, y, w, D) -> _Blocks:
    if Z.ndim < 3 or tuple(Z.shape[2:]) != tuple(y.shape):
        raise GroupError(f"twisted predictions {tuple(Z.shape)} must be (K, m, *targets.shape) "
                         f"with targets {tuple(y.shape)}")
    Zbar = Z.mean(1)
    err = _sqnorm(Z - y, w).mean(1) / D
    within = _sqnorm(Z - Zbar[:, None], w).mean(1) / D
    return _Blocks(Zbar, err, within, Z.shape[1])


def _estimate(blk: _Blocks, y, w, D, scheme, estimator):
    """Estimates from block statistics; leading dims of ``blk`` tensors may include a bootstrap axis."""
    K = blk.mean.shape[-y.ndim - 1]
    mu = blk.mean.mean(-y.ndim - 1)
    L = blk.err.mean(-2)
    L_mean = _sqnorm(mu - y, w) / D
    between = _sqnorm(blk.mean - mu.unsqueeze(-y.ndim - 1), w) / D  # (..., K, B)
    L_equiv = blk.within.mean(-2) + between.mean(-2)
    if estimator == "unbiased" and scheme != "exhaustive":
        if K < 2:
            raise GroupError(
                "the unbiased estimator needs at least 2 independent blocks: N >= 2 iid elements, "
                "or 2 independently turned copies of a design"
            )
        v = between.sum(-2) / (K * (K - 1))
        L_mean, L_equiv = L_mean - v, L_equiv + v
    return L, L_mean, L_equiv


class NonFiniteError(ValueError):
    """NaN or inf in data or predictions where a decomposition needs finite numbers."""


def _as_floating(t: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    if not t.is_floating_point():
        raise GroupError(f"{what} must be floating point, got {t.dtype}")
    return t if t.dtype == dtype else t.to(dtype)


def _check_finite(Z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> None:
    """Raise :class:`NonFiniteError` naming how many samples hold NaN or inf (targets, twisted predictions)."""
    if bool(torch.isfinite(Z).all()) and bool(torch.isfinite(y).all()):  # the common case, in two reductions
        _expand_mask(mask, y)  # still validates the mask's shape
        return
    B = y.shape[0]
    valid = _expand_mask(mask, y)
    bad_y = ~torch.isfinite(y)
    bad_Z = ~torch.isfinite(Z)
    if valid is not None:
        bad_y = bad_y & valid
        bad_Z = bad_Z & valid
    by = bad_y.reshape(B, -1).any(-1)
    bz = bad_Z.reshape(-1, B, *y.shape[1:]).transpose(0, 1).reshape(B, -1).any(-1)
    if by.any() or bz.any():
        idx = torch.nonzero(by | bz).flatten().tolist()
        raise NonFiniteError(f"{int(by.sum())} of {B} samples have non-finite targets and {int(bz.sum())} non-finite "
                             f"twisted predictions (samples {idx[:10]}{' ...' if len(idx) > 10 else ''})")


def _check_estimator(estimator):
    if estimator not in ("plugin", "unbiased"):
        raise GroupError(f"estimator must be 'plugin' or 'unbiased', got {estimator!r}")


def decompose(
    Z: torch.Tensor,
    y: torch.Tensor,
    scheme: str | GroupSample,
    *,
    mask: torch.Tensor | None = None,
    estimator: Estimator = "unbiased",
) -> Decomposition:
    """Split the MSE of twisted predictions into ``L_mean + L_equiv`` per sample.

    Parameters
    ----------
    Z : Tensor ``(K, m, B, *out)``
        Twisted predictions (from :func:`twisted_predictions`).
    y : Tensor ``(B, *out)``
        Targets in the original frame.
    scheme : str or GroupSample
        ``"iid"``, ``"design"`` or ``"exhaustive"`` (or the sample itself).
    mask : Tensor, optional
        Boolean mask over the leading dims of ``y`` (e.g. ``(B, atoms)`` for
        ``(B, atoms, 3)`` targets); padded entries are ignored and ``D`` counts
        the valid entries of each sample.
    estimator : ``"unbiased"`` (default) or ``"plugin"``
    """
    _check_estimator(estimator)
    scheme = scheme.scheme if isinstance(scheme, GroupSample) else scheme
    y = _as_floating(y, Z.dtype, "targets y")
    if Z.ndim < 3 or tuple(Z.shape[2:]) != tuple(y.shape):
        raise GroupError(f"twisted predictions {tuple(Z.shape)} must be (K, m, *targets.shape) "
                         f"with targets {tuple(y.shape)}")
    w, D = _weights(mask, y)
    _check_finite(Z, y, mask)
    if mask is not None:  # padding may hold anything (even NaN): only valid entries enter the sums
        Z, y = torch.where(w > 0, Z, 0.0), torch.where(w > 0, y, 0.0)
    blk = _block_stats(Z, y, w, D)
    L, L_mean, L_equiv = _estimate(blk, y, w, D, scheme, estimator)
    return Decomposition(L, L_mean, L_equiv, scheme, estimator, Z.shape[0] * Z.shape[1])


def decompose_model(model, x, y, sample, action_in, action_out=None, *, mask=None,
                    estimator: Estimator = "unbiased", extras=None, **kwargs) -> Decomposition:
    """:func:`twisted_predictions` followed by :func:`decompose`.

    Floating inputs and targets of another dtype are converted to the model's (the
    dtype of its first floating parameter, when it has one): float32 data can be
    measured on a float64 copy of a model (:func:`equivlib.training.float64_copy`).
    """
    dtype = next((p.dtype for p in getattr(model, "parameters", lambda: [])() if p.is_floating_point()), None)
    if dtype is not None:
        x = _as_floating(x, dtype, "inputs x")
        y = _as_floating(y, dtype, "targets y")
    if not torch.isfinite(x).all():
        n = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(-1).sum())
        raise NonFiniteError(f"{n} of {x.shape[0]} samples have non-finite inputs")
    Z = twisted_predictions(model, x, sample, action_in, action_out, extras=extras, **kwargs)
    return decompose(Z, y, sample, mask=mask, estimator=estimator)


TERMS = ("L", "L_mean", "L_equiv")


def decomposition_loss(term: str, x: torch.Tensor, y: torch.Tensor, sample: GroupSample, action_in: Action,
                       action_out: Action | None = None, *, mask: torch.Tensor | None = None,
                       extras: Mapping[str, torch.Tensor] | None = None,
                       estimator: Estimator = "plugin",
                       dtype: torch.dtype = torch.float64) -> Callable[[Callable], torch.Tensor]:
    """One term of the decomposition as a function of the model, for curvature and gradients.

    Returns ``loss(model) -> scalar``: the mean over samples of ``term`` (``"L"``,
    ``"L_mean"`` or ``"L_equiv"``) of :func:`decompose` on the model's twisted
    predictions for the fixed ``sample``, differentiable in the model's parameters
    (see :func:`equivlib.hessian.subset_loss`).  With the default plug-in estimator
    the three terms add up exactly, ``L = L_mean + L_equiv``, so their gradients and
    Hessians do too.  Floating ``x``, ``y`` and extras are converted to ``dtype``
    (float64 by default, the dtype equivariance is measured in; the model must be
    in it too, e.g. :func:`equivlib.training.float64_copy`).
    """
    if term not in TERMS:
        raise ParameterError(f"term must be one of {TERMS}, got {term!r}")
    _check_estimator(estimator)
    x, y = _as_floating(x, dtype, "inputs x"), _as_floating(y, dtype, "targets y")
    extras = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in (extras or {}).items()}

    def loss(model: Callable) -> torch.Tensor:
        Z = twisted_predictions(model, x, sample, action_in, action_out, extras=extras, memory_budget_mb=None)
        return getattr(decompose(Z, y, sample, mask=mask, estimator=estimator), term).mean()

    return loss


def bootstrap_se(
    Z: torch.Tensor,
    y: torch.Tensor,
    scheme: str | GroupSample,
    *,
    mask: torch.Tensor | None = None,
    estimator: Estimator = "unbiased",
    n_boot: int = 200,
    generator: torch.Generator | None = None,
) -> dict:
    """Standard errors over the group elements alone, by bootstrap.

    The data are held fixed; for every sample the ``K`` independent blocks are
    resampled with replacement (independently per sample) and the dataset-level
    ``L``, ``L_mean``, ``L_equiv`` and percent recomputed.  When ``scheme`` is a
    :class:`GroupSample` shared by all samples (drawn with ``batch=None``), the
    same blocks are resampled for every sample, since their errors are then
    correlated (pass the sample, not its scheme name, in that case).  Returns
    ``{"se_L", "se_L_mean", "se_L_equiv", "se_percent"}``.
    """
    _check_estimator(estimator)
    shared = isinstance(scheme, GroupSample) and scheme.batch == 1
    scheme = scheme.scheme if isinstance(scheme, GroupSample) else scheme
    if scheme == "exhaustive":
        raise GroupError("an exhaustive sample has no sampling noise over group elements to bootstrap")
    if n_boot < 2:
        raise GroupError(f"n_boot must be at least 2, got {n_boot}")
    w, D = _weights(mask, y)
    blk = _block_stats(Z, y, w, D)
    K, B = blk.err.shape
    stats = []
    chunk = max(1, int(2**27 // max(1, blk.mean.numel())))  # gathered block means: nb·K·B·D
    for start in range(0, n_boot, chunk):
        nb = min(chunk, n_boot - start)
        idx = torch.randint(K, (nb, K, 1 if shared else B), generator=generator).to(Z.device).expand(nb, K, B)
        gidx = idx.reshape(nb, K, B, *([1] * (y.ndim - 1))).expand(nb, K, *y.shape)
        sub = _Blocks(torch.gather(blk.mean.expand(nb, *blk.mean.shape), 1, gidx),
                      torch.gather(blk.err.expand(nb, K, B), 1, idx),
                      torch.gather(blk.within.expand(nb, K, B), 1, idx), blk.m)
        L, Lm, Le = _estimate(sub, y, w, D, scheme, estimator)
        L, Lm, Le = L.mean(-1), Lm.mean(-1), Le.mean(-1)
        stats.append(torch.stack([L, Lm, Le, 100 * Le / L], -1))
    s = torch.cat(stats).std(0)
    return {"se_L": float(s[0]), "se_L_mean": float(s[1]), "se_L_equiv": float(s[2]), "se_percent": float(s[3])}


# --------------------------------------------------------------------------- general losses
def _quadratic_forms(loss_fn, mu, y, deltas):
    """``δᵀ H_l(μ, y) δ`` for ``deltas (J, B, *out)`` via Hessian-vector products → ``(J, B)``."""

    def one(mu_b, y_b, d_b):
        g = torch.func.grad(lambda z: loss_fn(z, y_b))
        _, hv = torch.func.jvp(g, (mu_b,), (d_b,))
        return (hv * d_b).sum()

    per_sample = torch.func.vmap(one)
    return torch.func.vmap(per_sample, in_dims=(None, None, 0))(mu, y, deltas)


def decompose_general(
    Z: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheme: str | GroupSample,
    *,
    estimator: Estimator = "unbiased",
) -> Decomposition:
    """Decomposition for a general per-sample loss ``loss_fn(z, y) -> scalar``.

    ``L = mean_g l(Z_g, y)``, ``L_mean = l(μ̂, y)`` and ``L_equiv = L - L_mean``
    (non-negative for convex losses by Jensen).  The second-order Taylor form
    ``½ mean_g (Z_g-μ̂)ᵀ H_l(μ̂, y) (Z_g-μ̂)`` is returned in ``extra["taylor"]``,
    computed with Hessian-vector products.  The unbiased variant moves the
    second-order estimate of the bias of ``l(μ̂, y)``, ``½ tr(H_l Var μ̂)``,
    from ``L_mean`` to ``L_equiv`` (for iid samples this is the ``N/(N-1)``
    correction, accurate to second order).

    ``Z`` is ``(K, m, B, *out)`` and ``loss_fn`` acts on single samples
    ``(*out)`` (it is vmapped).
    """
    _check_estimator(estimator)
    scheme = scheme.scheme if isinstance(scheme, GroupSample) else scheme
    if Z.ndim < 3 or tuple(Z.shape[2:]) != tuple(y.shape):
        raise GroupError(f"twisted predictions {tuple(Z.shape)} must be (K, m, *targets.shape)")
    K, m = Z.shape[:2]
    lossv = torch.func.vmap(loss_fn)
    Zf = Z.reshape(K * m, *y.shape)
    L = torch.stack([lossv(z, y) for z in Zf]).mean(0)
    mu = Zf.mean(0)
    L_mean = lossv(mu, y)
    L_equiv = L - L_mean
    taylor = 0.5 * _quadratic_forms(loss_fn, mu, y, Zf - mu).mean(0)
    if estimator == "unbiased" and scheme != "exhaustive":
        if K < 2:
            raise GroupError("the unbiased estimator needs at least 2 independent blocks")
        bias = 0.5 * _quadratic_forms(loss_fn, mu, y, Z.mean(1) - mu).sum(0) / (K * (K - 1))
        L_mean, L_equiv, taylor = L_mean - bias, L_equiv + bias, taylor + bias
    return Decomposition(L, L_mean, L_equiv, scheme, estimator, K * m, extra={"taylor": taylor})
