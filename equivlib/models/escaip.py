"""A small EScAIP-style graph-transformer force field.

EScAIP (Qu & Krishnapriyan, 2024) keeps every hidden representation
rotation-*invariant* (built from interatomic distances, radial bases and atom
species only) and injects direction information only in its last, linear
force head (eq. 17 of the source paper):

.. math::

    o_k(i) = \\sum_{e \\in E(i)} e_k \\, \\mathbf w_k^\\top \\mathbf h(e, x),
    \\qquad k \\in \\{x, y, z\\},

with ``e`` the unit vector of an edge leaving atom ``i`` and
``W = [w_x, w_y, w_z]`` of shape ``(d, 3)``.  The model is exactly
rotation-equivariant if and only if ``w_x = w_y = w_z`` (for non-degenerate
``h``): the equivariant subspace is ``W_E = [w̄, w̄, w̄]`` with
``w̄ = (w_x + w_y + w_z) / 3`` and the non-equivariant part is ``W - W_E``.
Theorem 4 of the paper bounds the equivariance error between two multiples of
``||W - W_E||_F²`` for fixed upstream parameters.

:class:`EScAIPForceField` is a compact re-implementation of that structure
(not the original code): edge tokens ``h_ij`` for every pair of real atoms
closer than ``r_max``; per layer, the edges of each atom attend to each other
(multi-head self-attention over the neighbour list of the atom, keys weighted
by a smooth envelope), node features are envelope-weighted sums of their edges,
and an edge feed-forward block mixes in both end nodes.  Pairs are handled in
a dense ``(B, A, A)`` layout (meant for A <= 64 or so).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._common import check_positions_mask, check_species, smooth_cutoff, zero_padded

__all__ = ["EScAIPForceField"]


class _NeighbourLayer(nn.Module):
    """One EScAIP-style block on edge tokens ``e (B, A, A, d)`` [receiver i, neighbour j].

    1. neighbour self-attention: for every atom ``i`` the tokens ``e_i·`` attend
       to each other (keys restricted to the edges of ``i``, logits shifted by
       ``log envelope`` so a neighbour fades out smoothly at ``r_max``);
    2. node features ``n_i = Σ_j env_ij e_ij / sqrt(avg_neighbors)``;
    3. edge feed-forward on ``LN(e_ij) + P_i n_i + P_j n_j``.

    Every operation acts on invariant scalars only.
    """

    def __init__(self, d: int, n_heads: int, ffn: int, avg_neighbors: float, dtype, device) -> None:
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.n_heads = n_heads
        self.norm_attn = nn.LayerNorm(d, **kw)
        self.qkv = nn.Linear(d, 3 * d, **kw)
        self.out = nn.Linear(d, d, **kw)
        self.node = nn.Linear(d, d, **kw)
        self.to_recv = nn.Linear(d, d, bias=False, **kw)
        self.to_send = nn.Linear(d, d, bias=False, **kw)
        self.norm_ffn = nn.LayerNorm(d, **kw)
        self.ffn = nn.Sequential(nn.Linear(d, ffn, **kw), nn.SiLU(), nn.Linear(ffn, d, **kw))
        self.scale = 1.0 / math.sqrt(avg_neighbors)

    def forward(self, e: torch.Tensor, edge: torch.Tensor, bias: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        B, A, _, d = e.shape
        H = self.n_heads
        q, k, v = self.qkv(self.norm_attn(e)).reshape(B * A, A, 3, H, d // H).permute(2, 0, 3, 1, 4)
        # bias (B*A, 1, 1, A): broadcast over heads and queries.
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B*A, H, A, d/H)
        e = e + self.out(att.transpose(1, 2).reshape(B, A, A, d))
        e = torch.where(edge[..., None], e, torch.zeros((), dtype=e.dtype, device=e.device))
        n = self.node(torch.einsum("bij,bijd->bid", env, e) * self.scale)  # (B, A, d)
        mix = self.norm_ffn(e) + self.to_recv(n)[:, :, None, :] + self.to_send(n)[:, None, :, :]
        e = e + self.ffn(mix)
        return torch.where(edge[..., None], e, torch.zeros((), dtype=e.dtype, device=e.device))


class EScAIPForceField(nn.Module):
    """Graph-transformer force field with invariant trunk and an EScAIP linear head.

    Parameters
    ----------
    d_model : int
        Width ``d`` of the edge tokens (and of ``h(e, x)``).
    n_layers : int
        Number of neighbour-attention blocks (>= 0).
    n_heads : int
        Attention heads (must divide ``d_model``).
    n_rbf : int
        Gaussian radial basis functions on ``[0, r_max]``.
    r_max : float
        Neighbour cutoff (same unit as the positions, Å for the molecule data).
    n_species : int
        Size of the species embedding; species are indices in ``[0, n_species)``
        (the atomic numbers of :class:`equivlib.data.forces.MoleculeBatch` fit
        in the default 36, which covers H to Br).
    ffn_mult : int
        Hidden width of the edge feed-forward blocks is ``ffn_mult * d_model``.
    avg_neighbors : float
        Sums over neighbours are divided by ``sqrt(avg_neighbors)``.
    dtype, device
        Dtype and device of the parameters.

    Notes
    -----
    Inputs ``positions (B, A, 3)``, ``mask (B, A)`` bool (``True`` = real atom),
    ``species (B, A)`` long; output forces ``(B, A, 3)``, exactly zero at padded
    atoms.  Edges ``i -> j`` join distinct real atoms with ``|x_j - x_i| < r_max``;
    the edge unit vector is ``(x_j - x_i) / |x_j - x_i|``.

    The trunk uses only distances and species, so :meth:`edge_features` is
    invariant to rotations, translations and reflections (and permutation
    equivariant); the model is translation-invariant and permutation-equivariant,
    and rotation-equivariant exactly when the head lies in ``W_E``
    (see :meth:`project_head_`).  The cosine envelope (the one
    :class:`~equivlib.models.E3ForceField` uses) multiplies ``h`` and biases the attention
    logits by ``log envelope``, so forces are continuous as atoms cross ``r_max``.

    Parameters are drawn from torch's global generator; the three head columns
    are drawn independently, so a fresh model is *not* equivariant.
    """

    def __init__(self, d_model: int = 32, n_layers: int = 2, n_heads: int = 4, n_rbf: int = 16,
                 r_max: float = 5.0, n_species: int = 36, ffn_mult: int = 2, avg_neighbors: float = 16.0, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model}), both >= 1")
        if n_layers < 0 or n_rbf < 1 or n_species < 1 or ffn_mult < 1 or not r_max > 0 or not avg_neighbors > 0:
            raise ValueError(f"bad EScAIPForceField arguments: n_layers={n_layers}, n_rbf={n_rbf}, "
                             f"n_species={n_species}, ffn_mult={ffn_mult}, r_max={r_max}, "
                             f"avg_neighbors={avg_neighbors}")
        kw = dict(dtype=dtype, device=device)
        self.d_model, self.r_max, self.n_species = int(d_model), float(r_max), int(n_species)
        self.register_buffer("rbf_centers", torch.linspace(0.0, self.r_max, n_rbf, **kw), persistent=False)
        self.rbf_width = self.r_max / max(n_rbf - 1, 1)
        self.species_embed = nn.Embedding(n_species, d_model, **kw)
        self.edge_embed = nn.Sequential(
            nn.Linear(n_rbf + 2 * d_model, d_model, **kw), nn.SiLU(), nn.Linear(d_model, d_model, **kw))
        self.layers = nn.ModuleList(
            _NeighbourLayer(d_model, n_heads, ffn_mult * d_model, avg_neighbors, dtype, device)
            for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(d_model, **kw)
        self.scale = 1.0 / math.sqrt(avg_neighbors)
        # EScAIP head: W = [w_x, w_y, w_z], no bias.
        self.head = nn.Parameter(torch.randn(d_model, 3, **kw) / math.sqrt(d_model))

    # ------------------------------------------------------------------ trunk
    def _geometry(self, positions: torch.Tensor, mask: torch.Tensor):
        B, A, _ = positions.shape
        x = zero_padded(positions, mask)  # NaN/inf at padding cannot leak (nor into gradients)
        eye = torch.eye(A, dtype=torch.bool, device=x.device)
        vec = x[:, None, :, :] - x[:, :, None, :]  # (B, A, A, 3): x_j - x_i
        d2 = (vec * vec).sum(-1)
        edge = mask[:, :, None] & mask[:, None, :] & ~eye & (d2 < self.r_max ** 2)
        r = torch.where(edge, d2, torch.ones((), dtype=d2.dtype, device=d2.device)).sqrt()
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        unit = torch.where(edge[..., None], vec / r[..., None], zero)
        env = torch.where(edge, smooth_cutoff(r, self.r_max), zero)
        return edge, r, unit, env

    def edge_features(self, positions: torch.Tensor, mask: torch.Tensor | None = None,
                      species: torch.Tensor | None = None):
        """Latent edge features ``h(e, x)`` and the edge geometry.

        Parameters
        ----------
        positions : torch.Tensor, shape (B, A, 3)
        mask : torch.Tensor, shape (B, A), bool, optional
        species : torch.Tensor, shape (B, A), long, optional

        Returns
        -------
        h : torch.Tensor, shape (B, A, A, d_model)
            ``h[b, i, j]`` for the edge ``i -> j``, already multiplied by the
            envelope and ``1 / sqrt(avg_neighbors)``; zero where ``edge`` is
            False.  Rotation- and translation-invariant.
        unit : torch.Tensor, shape (B, A, A, 3)
            Edge unit vectors ``(x_j - x_i) / |x_j - x_i|``; zero off edges.
        edge : torch.Tensor, shape (B, A, A), bool
            Which pairs are edges.
        """
        mask = check_positions_mask(positions, mask)
        species = check_species(species, mask, self.n_species)
        B, A, _ = positions.shape
        edge, r, unit, env = self._geometry(positions, mask)
        rbf = torch.exp(-0.5 * ((r[..., None] - self.rbf_centers) / self.rbf_width) ** 2)
        z = self.species_embed(species)  # (B, A, d)
        d = self.d_model
        e = self.edge_embed(torch.cat([rbf, z[:, :, None, :].expand(B, A, A, d),
                                       z[:, None, :, :].expand(B, A, A, d)], dim=-1))
        zero = torch.zeros((), dtype=e.dtype, device=e.device)
        e = torch.where(edge[..., None], e, zero)
        # Attention bias over the neighbours j of each atom i: log envelope on edges,
        # -inf elsewhere; rows without any edge attend to everything (finite, then zeroed).
        has_edge = edge.any(-1, keepdim=True)
        log_env = torch.log(torch.where(edge, env, torch.ones((), dtype=env.dtype, device=env.device)))
        bias = torch.where(edge, log_env, torch.full((), -math.inf, dtype=env.dtype, device=env.device))
        bias = torch.where(has_edge, bias, zero).reshape(B * A, 1, 1, A)
        for layer in self.layers:
            e = layer(e, edge, bias, env)
        h = self.norm_out(e) * (env * self.scale)[..., None]
        return torch.where(edge[..., None], h, zero), unit, edge

    # ------------------------------------------------------------------ forward
    def forward(self, positions: torch.Tensor, mask: torch.Tensor | None = None,
                species: torch.Tensor | None = None) -> torch.Tensor:
        """Predict per-atom forces ``o_k(i) = Σ_j e_ij,k w_kᵀ h_ij``.

        Parameters
        ----------
        positions : torch.Tensor, shape (B, A, 3)
        mask : torch.Tensor, shape (B, A), bool, optional
            ``True`` for real atoms; all real if omitted.
        species : torch.Tensor, shape (B, A), long, optional
            Species indices (atomic numbers); one species if omitted.

        Returns
        -------
        torch.Tensor, shape (B, A, 3)
            Zero at padded atoms.
        """
        mask = check_positions_mask(positions, mask)
        h, unit, _ = self.edge_features(positions, mask, species)
        out = torch.einsum("bijk,bijd,dk->bik", unit, h, self.head)
        return zero_padded(out, mask)

    # ------------------------------------------------------------------ head analysis
    def head_weights(self) -> torch.Tensor:
        """A detached copy of the head ``W = [w_x, w_y, w_z]``, shape ``(d_model, 3)``."""
        return self.head.detach().clone()

    def head_projection(self) -> torch.Tensor:
        """``W_E = [w̄, w̄, w̄]``, the projection of ``W`` onto the equivariant subspace, ``(d_model, 3)``.

        Differentiable (not detached).
        """
        return self.head.mean(dim=1, keepdim=True).expand_as(self.head)

    def head_deviation(self, *, grad: bool = False) -> torch.Tensor:
        """``||W - W_E||_F = ||W_E⊥||_F``, the head's distance to the equivariant subspace.

        Parameters
        ----------
        grad : bool
            If True, keep the autograd graph (usable as a penalty); by default
            the result is detached (for logging: ``float(model.head_deviation())``).

        Returns
        -------
        torch.Tensor, shape ()
        """
        dev = (self.head - self.head_projection()).norm()
        return dev if grad else dev.detach()

    @torch.no_grad()
    def project_head_(self) -> "EScAIPForceField":
        """Set ``W <- W_E`` in place, making the model exactly rotation-equivariant; returns ``self``."""
        self.head.copy_(self.head_projection())
        return self
