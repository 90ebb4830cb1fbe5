"""Assertions for equivariance and invariance, for tests of your own models.

Like ``e3nn.util.test``: the checks run in float64, batched over every element
of a group sample (one call of :func:`equivlib.twirl.twisted_predictions`),
and fail with the largest error and the group element that produced it::

    from equivlib.testing import assert_equivariant
    from equivlib import VectorAction, sample_haar

    assert_equivariant(model, x, sample_haar(8, batch=len(x)), VectorAction(),
                       extras={"mask": mask}, mask=mask)

A ``torch.nn.Module`` with float32 parameters is checked through a float64 copy
(:func:`equivlib.training.float64_copy`; the module itself is not touched).
Errors are relative: for each group element ``g``,
``||g⁻¹ f(g x) - f(x)|| / ||f(x)||`` over the whole batch, which equals
``||f(g x) - g f(x)|| / ||f(x)||`` for the orthogonal actions of
:mod:`equivlib.groups` (rotations of vectors, cube rotations of voxel grids,
Wigner-D matrices, permutations).
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from .groups import Action, GroupSample
from .training import float64_copy
from .twirl import twisted_predictions

__all__ = ["relative_error", "equivariance_errors", "assert_equivariant", "assert_invariant"]

#: Default relative tolerance in float64: exact equivariance leaves ~1e-15, float32 constants ~1e-8.
TOL_FLOAT64 = 1e-10


def relative_error(a, b) -> float:
    """Relative error ``||a - b|| / ||b||`` over all entries, computed in float64.

    Parameters
    ----------
    a, b : torch.Tensor or array_like, same shape
        ``b`` is the reference.

    Returns
    -------
    float
        0 when ``a`` equals ``b`` (also when both are zero), ``inf`` when only
        ``b`` is zero.

    Raises
    ------
    ValueError
        ``a`` and ``b`` differ in shape.
    """
    b = torch.as_tensor(b).detach().to(torch.float64)
    a = torch.as_tensor(a).detach().to(dtype=torch.float64, device=b.device)
    if a.shape != b.shape:
        raise ValueError(f"relative_error needs tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    num, den = float((a - b).norm()), float(b.norm())
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else float("inf")


class _Trivial(Action):
    """The trivial action on outputs (for invariance): ``g⁻¹ y = y`` for every element."""

    def check_elements(self, g):
        pass

    def apply(self, g, x):
        return x.expand(g.shape[0], *x.shape)

    def apply_inverse(self, g, y):
        return y


def _as_sample(sample: GroupSample | torch.Tensor) -> GroupSample:
    if isinstance(sample, GroupSample):
        return sample
    if isinstance(sample, torch.Tensor):  # (N, *element_shape): every element, shared by all samples
        return GroupSample(sample[:, None, None], "iid")
    raise TypeError(f"sample must be a GroupSample or a tensor of group elements (N, ...), "
                    f"got {type(sample).__name__}")


def _float64(fn: Callable) -> Callable:
    if isinstance(fn, torch.nn.Module) and any(
            t.is_floating_point() and t.dtype != torch.float64 for t in (*fn.parameters(), *fn.buffers())):
        return float64_copy(fn)
    return fn


def _float64_inputs(x: torch.Tensor, extras: Mapping | None) -> tuple[torch.Tensor, dict]:
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating point tensor (it is cast to float64), got {x.dtype}")
    extras = {k: v.to(torch.float64) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
              for k, v in dict(extras or {}).items()}
    return x.to(torch.float64), extras


def _errors(fn, x, sample, action_in, action_out, extras, mask):
    """``(errors (N,), per-sample errors (N, B), elements (N, B, ...))`` of ``g⁻¹ f(g x)`` against ``f(x)``."""
    sample = _as_sample(sample)
    fn = _float64(fn)
    x, extras = _float64_inputs(x, extras)
    sample = sample.to(device=x.device, dtype=torch.float64)
    with torch.no_grad():
        y = fn(x, **extras)
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.float64):
            got = y.dtype if isinstance(y, torch.Tensor) else type(y).__name__
            raise TypeError(f"fn must return a float64 tensor for float64 inputs, got {got}")
        Z = twisted_predictions(fn, x, sample, action_in, action_out, extras=extras)
    B = x.shape[0]
    diff = Z.reshape(-1, *y.shape) - y  # (N, B, *out)
    if mask is not None:
        m = mask.to(device=y.device, dtype=torch.bool)
        if m.shape != y.shape[:m.ndim]:
            raise ValueError(f"mask must have the leading shape of the outputs {tuple(y.shape)}, "
                             f"got {tuple(m.shape)}")
        m = m.reshape(*m.shape, *([1] * (y.ndim - m.ndim)))
        diff, y = diff * m, y * m
    per_sample = diff.reshape(*diff.shape[:2], -1).norm(dim=-1)  # (N, B)
    scale = float(y.norm())
    total = per_sample.norm(dim=1)
    if scale > 0:
        errors, per_sample = total / scale, per_sample / scale
    else:  # zero output: exact (0) or infinitely wrong
        errors = torch.where(total > 0, torch.inf, 0.0).to(total)
        per_sample = torch.where(per_sample > 0, torch.inf, 0.0).to(per_sample)
    return errors, per_sample, sample.flat(B)


def equivariance_errors(
    fn: Callable,
    x: torch.Tensor,
    sample: GroupSample | torch.Tensor,
    action_in: Action,
    action_out: Action | None = None,
    *,
    extras: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relative equivariance error of ``fn`` for each group element, in float64.

    Parameters
    ----------
    fn : callable
        ``fn(x, **extras) -> y``; a module with non-float64 parameters is
        evaluated through a float64 copy.
    x : torch.Tensor, shape (B, *in_shape), floating point
        Inputs (cast to float64).
    sample : GroupSample or torch.Tensor
        Group elements, ``(K, m, B or 1, *element_shape)`` in a
        :class:`~equivlib.groups.GroupSample`, or a tensor ``(N, *element_shape)``
        of elements applied to every sample (e.g. ``cube_group()``).
    action_in, action_out : Action
        Actions on inputs and outputs (``action_out`` defaults to ``action_in``).
    extras : dict of torch.Tensor (B, ...), optional
        Invariant inputs passed as keywords (floating ones cast to float64).
    mask : torch.Tensor, bool, optional
        Leading shape of the outputs, e.g. ``(B, A)``: only ``True`` entries count.

    Returns
    -------
    torch.Tensor, shape (N,), float64
        ``||g⁻¹ f(g x) - f(x)|| / ||f(x)||`` over the batch, for the
        ``N = K m`` elements in the sample's flat order.
    """
    return _errors(fn, x, sample, action_in, action_out, extras, mask)[0]


def _check(errors, per_sample, elements, tol, what):
    worst = int(torch.argmax(errors))
    err = float(errors[worst])
    if not err <= tol:  # also fails on NaN
        b = int(torch.argmax(per_sample[worst]))
        g = elements[worst, b]
        g_text = g.tolist() if g.numel() <= 16 else f"tensor of shape {tuple(g.shape)}"
        raise AssertionError(
            f"not {what}: max relative error {err:.3g} > tol {tol:g}, at group element {worst} of "
            f"{len(errors)} (worst data sample {b}: {float(per_sample[worst, b]):.3g}); element = {g_text}")


def assert_equivariant(
    fn: Callable,
    x: torch.Tensor,
    sample: GroupSample | torch.Tensor,
    action_in: Action,
    action_out: Action | None = None,
    *,
    tol: float = TOL_FLOAT64,
    extras: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> float:
    """Assert ``fn(g·x) = g·fn(x)`` for every element of ``sample``, in float64.

    Parameters are those of :func:`equivariance_errors`, plus ``tol``, the
    largest relative error allowed (default ``1e-10``).

    Returns
    -------
    float
        The largest relative error (at most ``tol``).

    Raises
    ------
    AssertionError
        Naming the largest error, the group element (index in the sample's
        flat order, and the data sample where it is worst) and the element.
    """
    errors, per_sample, elements = _errors(fn, x, sample, action_in, action_out, extras, mask)
    _check(errors, per_sample, elements, tol, "equivariant")
    return float(errors.max())


def assert_invariant(
    fn: Callable,
    x: torch.Tensor,
    sample: GroupSample | torch.Tensor,
    action_in: Action,
    *,
    tol: float = TOL_FLOAT64,
    extras: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
) -> float:
    """Assert ``fn(g·x) = fn(x)`` for every element of ``sample``, in float64.

    As :func:`assert_equivariant` with the trivial action on the outputs (any
    output shape, e.g. energies ``(B,)`` or latent features).  Returns the
    largest relative error.
    """
    errors, per_sample, elements = _errors(fn, x, sample, action_in, _Trivial(), extras, mask)
    _check(errors, per_sample, elements, tol, "invariant")
    return float(errors.max())
