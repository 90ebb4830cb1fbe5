"""Do latent representations respect the symmetry?  Cosine-similarity probes.

For an encoder ``φ`` (any function from a batch of inputs to a batch of
latents) and group elements ``g``, :func:`latent_similarity` compares

* **same molecule, rotated**: ``cos(φ(g·x), ρ(g)·φ(x))`` where ``ρ`` is a
  stated action on the latent (``action_latent``).  With no latent action it is
  ``cos(φ(g·x), φ(x))``: a test of *invariance*.  With
  :class:`~equivlib.groups.VoxelAction` on a U-Net's bottleneck grid it is a
  test of equivariance with the feature channels transforming as scalar fields;
* **different molecules**: ``cos(φ(x_i), φ(x_j))`` over all pairs ``i < j``,
  the baseline that says how similar *unrelated* latents already are.

A latent that respects the symmetry gives ``same ≈ 1`` well above the
``different`` baseline; ``same`` within the ``different`` distribution means the
encoder treats a rotated molecule as a different molecule.

Latents are flattened per sample (entries beyond a sample's ``mask`` are
zeroed first, so padding contributes nothing) before the cosine.  All group
elements of all samples go through one batched call of ``φ``::

    sim = latent_similarity(unet.bottleneck, x, cube_group(), VoxelAction(), VoxelAction())
    sim.same            # (G, B) cosines
    sim.different       # (B (B-1) / 2,) cosines
    sim.table()         # tidy DataFrame for plotting
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch

from .groups import Action, GroupError

__all__ = ["LatentSimilarity", "latent_similarity", "latent_study", "pairwise_cosines"]


def pairwise_cosines(z: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair ``i < j`` of the rows of ``z (B, D)``, shape ``(B (B-1) / 2,)``."""
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"need at least two latent vectors (B, D), got shape {tuple(z.shape)}")
    u = torch.nn.functional.normalize(z, dim=1)
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
    return (u[i] * u[j]).sum(1)


@dataclass
class LatentSimilarity:
    """Cosines from :func:`latent_similarity`.

    ``same (G, B)``: rotated vs (transformed) original, per element and sample;
    ``different (P,)``: all pairs of distinct samples; ``labels``: one name per element.
    """

    same: torch.Tensor
    different: torch.Tensor
    labels: list

    def table(self) -> pd.DataFrame:
        """One row per cosine: ``kind`` (``"same"``/``"different"``), ``element`` label and ``cos``."""
        G, B = self.same.shape
        same = pd.DataFrame({"kind": "same", "element": [self.labels[g] for g in range(G) for _ in range(B)],
                             "sample": [b for _ in range(G) for b in range(B)],
                             "cos": self.same.detach().cpu().double().flatten().numpy()})
        diff = pd.DataFrame({"kind": "different", "element": "different molecules", "sample": -1,
                             "cos": self.different.detach().cpu().double().numpy()})
        return pd.concat([same, diff], ignore_index=True)

    def summary(self) -> dict:
        """Medians of ``same`` and ``different`` and the AUROC of telling them apart.

        ``auroc`` is P(a random ``same`` cosine > a random ``different`` one)
        (ties count half): 1 means rotated copies are always closer than
        unrelated molecules, 0.5 that they are indistinguishable.
        """
        s = self.same.detach().double().flatten()
        d = self.different.detach().double()
        greater = (s[:, None] > d[None, :]).double().mean() + 0.5 * (s[:, None] == d[None, :]).double().mean()
        return {"median_same": float(s.median()), "median_different": float(d.median()),
                "min_same": float(s.min()), "auroc": float(greater)}


def latent_similarity(
    encode: Callable,
    x: torch.Tensor,
    elements: torch.Tensor,
    action_in: Action,
    action_latent: Action | None = None,
    *,
    extras: Mapping[str, torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    labels=None,
    center: bool = False,
) -> LatentSimilarity:
    """Cosine similarities of latents under group elements (see module docstring).

    Parameters
    ----------
    encode : callable
        ``encode(x_batch, **extras_batch) -> latents (batch, ...)``.
    x : Tensor ``(B, ...)``
        Inputs (``B >= 2``).
    elements : Tensor ``(G, *element_shape)``
        Group elements, each applied to every sample.
    action_in : Action
        Action on the inputs.
    action_latent : Action, optional
        Action on the latents (``ρ``); ``None`` tests invariance.
    extras : dict of Tensor ``(B, ...)``
        Invariant extra inputs of ``encode`` (masks, times...), repeated per element.
    mask : Tensor ``(B, L)``, optional
        Valid positions along the latent's first axis after the batch (e.g.
        residues); latents are zeroed elsewhere before the cosine.
    labels : list of str, optional
        A name per element (default ``"g0"``, ``"g1"``, ...).
    center : bool
        Subtract the mean latent of the ``B`` untransformed samples from every
        latent first (after the latent action), so that a large shared offset
        (biases, the average molecule) does not make everything look similar.
    """
    if x.ndim < 1 or x.shape[0] < 2:
        raise ValueError(f"latent_similarity needs at least two samples, got x of shape {tuple(x.shape)}")
    B = x.shape[0]
    if elements.ndim != 1 + len(action_in.element_shape) or tuple(elements.shape[1:]) != tuple(action_in.element_shape):
        raise GroupError(f"elements must have shape (G, {', '.join(map(str, action_in.element_shape))}), "
                         f"got {tuple(elements.shape)}")
    G = elements.shape[0]
    labels = [f"g{i}" for i in range(G)] if labels is None else list(labels)
    if len(labels) != G:
        raise ValueError(f"{len(labels)} labels for {G} group elements")
    extras = dict(extras or {})
    for k, v in extras.items():
        if not isinstance(v, torch.Tensor) or v.shape[:1] != (B,):
            raise ValueError(f"extra input {k!r} must be a tensor with leading size {B}")
    if mask is not None and mask.shape[0] != B:
        raise ValueError(f"mask must have leading size {B}, got {tuple(mask.shape)}")
    g = elements.to(dtype=x.dtype, device=x.device)[:, None].expand(G, B, *elements.shape[1:])
    xg = action_in.apply(g, x).reshape(G * B, *x.shape[1:])  # element-major
    rep = {k: v.repeat(G, *([1] * (v.ndim - 1))) for k, v in extras.items()}
    z0 = encode(x, **extras)
    zg = encode(xg, **rep).reshape(G, B, *z0.shape[1:])
    target = z0[None].expand(G, *z0.shape) if action_latent is None else action_latent.apply(g, z0)

    def flat(z):  # (..., B, *latent) -> (..., B, D), zero beyond the mask
        if mask is not None:
            m = mask.to(z.dtype).reshape(*mask.shape, *([1] * (z0.ndim - mask.ndim)))
            z = z * m
        return z.reshape(*z.shape[:z.ndim - z0.ndim + 1], -1)

    zg, target, z0 = flat(zg), flat(target), flat(z0)
    if center:
        mu = z0.mean(0)
        zg, target, z0 = zg - mu, target - mu, z0 - mu
    same = torch.nn.functional.cosine_similarity(zg, target, dim=-1)
    return LatentSimilarity(same, pairwise_cosines(z0), labels)


def latent_study(
    probes: Mapping[tuple, tuple[Callable, Action | None]],
    x: torch.Tensor,
    elements: torch.Tensor,
    action_in: Action,
    *,
    key_names: Sequence[str] = ("when", "probe"),
    **kwargs,
) -> tuple[pd.DataFrame, dict]:
    """:func:`latent_similarity` for several encoders (checkpoints, latents) on the same inputs.

    ``probes[key] = (encode, action_latent)``, where each key is a tuple with
    one entry per name in ``key_names`` (e.g. ``("trained", "pooled")``).
    ``kwargs`` go to :func:`latent_similarity` (``labels``, ``extras``,
    ``mask``...).  Returns the tables of all probes concatenated, with one
    column per key name, and ``{key: summary}``.  Runs without gradients.
    """
    if not probes:
        raise ValueError("latent_study needs at least one probe")
    tables, summaries = [], {}
    for key, (encode, action_latent) in probes.items():
        key = tuple(key)
        if len(key) != len(key_names):
            raise ValueError(f"probe key {key!r} must have one entry per key name {tuple(key_names)}")
        with torch.no_grad():
            sim = latent_similarity(encode, x, elements, action_in, action_latent, **kwargs)
        tables.append(sim.table().assign(**dict(zip(key_names, key))))
        summaries[key] = sim.summary()
    return pd.concat(tables, ignore_index=True), summaries
