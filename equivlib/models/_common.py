"""Helpers shared by the models of :mod:`equivlib.models` (no model imports another).

Input checks, zero padding, the smooth radial cutoff and attention key masks.
Every model module imports what it needs from here, and nothing here imports a
model module, so the models never import each other.
"""
from __future__ import annotations

import math

import torch

from ..data.lj import check_positions_mask

__all__ = ["check_positions_mask", "check_species", "zero_padded", "smooth_cutoff", "key_padding_mask", "lazy_module"]


class lazy_module:  # noqa: N801 - reads like the module it stands for
    """A module imported on first attribute access (for heavy optional imports such as e3nn)."""

    def __init__(self, name: str):
        self._name, self._module = name, None

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._module is None:
            import importlib
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def check_species(species: torch.Tensor | None, mask: torch.Tensor, n_species: int) -> torch.Tensor:
    """Validate ``species (B, A)`` (integer indices ``< n_species``); return it as long.

    Parameters
    ----------
    species : torch.Tensor, shape (B, A), integer, optional
        ``None`` means a single species (index 0 everywhere).
    mask : torch.Tensor, shape (B, A), bool
        Entries at padded atoms (``mask`` False) are ignored (replaced by 0).
    n_species : int

    Returns
    -------
    torch.Tensor, shape (B, A), long
    """
    B, A = mask.shape
    if species is None:
        return torch.zeros(B, A, dtype=torch.long, device=mask.device)
    if not isinstance(species, torch.Tensor) or tuple(species.shape) != (B, A) or species.is_floating_point():
        shape = tuple(species.shape) if isinstance(species, torch.Tensor) else type(species).__name__
        raise ValueError(f"species must be an integer tensor of shape (B, A) = {(B, A)}, got {shape}")
    species = torch.where(mask, species.long(), torch.zeros((), dtype=torch.long, device=species.device))
    if species.numel() and (int(species.min()) < 0 or int(species.max()) >= n_species):
        raise ValueError(f"species must lie in [0, n_species={n_species}) at real atoms, got range "
                         f"[{int(species.min())}, {int(species.max())}]")
    return species


def zero_padded(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x (B, N, ...)`` with every padded entry (``mask (B, N)`` False) set to exactly zero.

    ``torch.where`` (not multiplication), so NaN/inf at padded entries cannot leak,
    nor into gradients.
    """
    return torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def smooth_cutoff(r: torch.Tensor, r_max: float) -> torch.Tensor:
    """Cosine envelope of distances ``r`` (any shape): 1 at r=0, 0 for r >= r_max, C^1 at both ends."""
    u = (r / r_max).clamp(max=1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * u))


def key_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """``src_key_padding_mask`` (True = ignore) for a transformer over ``mask (B, N)``.

    Padded tokens are ignored as keys, except in a sample with no real token,
    where every key masked would give a NaN softmax: such a sample attends to its
    (zeroed) padding instead, and its outputs must be zeroed by the caller.
    """
    empty = ~mask.any(dim=1, keepdim=True)
    return ~(mask | empty)
