"""Flow matching on C-alpha clouds: a non-equivariant transformer velocity field.

Linear (rectified-flow / conditional OT) interpolation path, with ``t = 0``
noise and ``t = 1`` data as in Proteína (Geffner et al., 2025):

.. math::

    x_t = (1 - t)\\, x_0 + t\\, x_1, \\qquad v^\\star = x_1 - x_0, \\qquad
    \\mathcal L = \\mathbb E\\, \\lVert v_\\theta(x_t, t) - (x_1 - x_0) \\rVert^2,

with ``x_0 ~ N(0, I)`` centred on the real residues.  For a *fixed* ``t`` the
regression task is rotation-equivariant: rotating ``(x_1, x_0)`` together
rotates ``(x_t, v^*)``, and the noise law is rotation-invariant, so the
optimal velocity field is equivariant; the network below is not (it embeds raw
coordinates with a linear layer), so it must learn the symmetry from
augmentation.

Units: the noise has unit variance per coordinate, so scale the data to a
comparable size first (Proteína works in nm: divide Å by 10), or use the
model's ``coord_scale``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ._common import check_positions_mask, key_padding_mask, zero_padded

__all__ = ["FlowTransformer", "interpolate", "target_velocity", "flow_matching_batch", "FLOW_TIMES"]

#: The flow-matching times at which the paper evaluates the loss decomposition.
FLOW_TIMES = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


def _check_points(x: torch.Tensor, name: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`~equivlib.data.lj.check_positions_mask` for ``(B, L, 3)`` residues; returns the mask."""
    return check_positions_mask(x, mask, name=name, length="L")


def _time_column(t, B: int, like: torch.Tensor) -> torch.Tensor:
    """``t`` as a ``(B,)`` tensor in the dtype/device of ``like`` (float or (B,) or (B, 1, 1) accepted)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0:
        return t.expand(B)
    if t.ndim == 3 and t.shape[1:] == (1, 1):
        t = t[:, 0, 0]
    if tuple(t.shape) != (B,):
        raise ValueError(f"t must be a scalar or have shape (B,) = ({B},), got {tuple(t.shape)}")
    return t


def interpolate(x0_noise: torch.Tensor, x1_data: torch.Tensor, t) -> torch.Tensor:
    """Point on the linear path, ``x_t = (1 - t) x0 + t x1``.

    Parameters
    ----------
    x0_noise, x1_data : torch.Tensor, shape (B, L, 3)
    t : float or torch.Tensor, shape () or (B,)

    Returns
    -------
    torch.Tensor, shape (B, L, 3)
    """
    _check_points(x0_noise, "x0_noise")
    _check_points(x1_data, "x1_data")
    if x0_noise.shape != x1_data.shape:
        raise ValueError(f"x0_noise {tuple(x0_noise.shape)} and x1_data {tuple(x1_data.shape)} differ in shape")
    t = _time_column(t, x1_data.shape[0], x1_data)[:, None, None]
    return (1 - t) * x0_noise + t * x1_data


def target_velocity(x0_noise: torch.Tensor, x1_data: torch.Tensor) -> torch.Tensor:
    """Conditional velocity of the linear path, ``x1 - x0``, shape (B, L, 3)."""
    _check_points(x0_noise, "x0_noise")
    _check_points(x1_data, "x1_data")
    return x1_data - x0_noise


def flow_matching_batch(x1: torch.Tensor, mask: torch.Tensor | None = None,
                        generator: torch.Generator | None = None, t=None, *, noise_scale: float = 1.0):
    """Draw noise and times and build one flow-matching regression batch.

    Parameters
    ----------
    x1 : torch.Tensor, shape (B, L, 3)
        Data (e.g. centred C-alpha coordinates, zero at padding).
    mask : torch.Tensor, shape (B, L), bool, optional
        ``True`` for real residues.
    generator : torch.Generator, optional
        CPU generator for the noise and times (sampled in float64 on the CPU,
        then cast and moved, so a seed gives the same batch on every device).
    t : float or torch.Tensor, shape (B,), optional
        Fixed times; ``t ~ U(0, 1)`` per sample when omitted.
    noise_scale : float
        Standard deviation of the noise per coordinate (before centring).

    Returns
    -------
    x_t : torch.Tensor, shape (B, L, 3)
        ``(1 - t) x0 + t x1``; zero at padding.
    t : torch.Tensor, shape (B,)
    v_target : torch.Tensor, shape (B, L, 3)
        ``x1 - x0``; zero at padding.

    Notes
    -----
    ``x0 ~ N(0, noise_scale² I)`` at the real residues, then centred on them
    (mean over real residues zero) and zeroed at padding, so it carries no
    translation signal.  Its law is rotation-invariant, hence at fixed ``t``
    rotating ``(x_t, v_target)`` together maps the task onto itself.
    """
    mask = _check_points(x1, "x1", mask)
    B, L, _ = x1.shape
    noise = torch.randn(B, L, 3, generator=generator, dtype=torch.float64) * float(noise_scale)
    m = mask.cpu()[..., None].to(torch.float64)
    n_real = m.sum(1, keepdim=True).clamp(min=1.0)
    noise = (noise - (noise * m).sum(1, keepdim=True) / n_real) * m
    x0 = noise.to(dtype=x1.dtype, device=x1.device)
    if t is None:
        t = torch.rand(B, generator=generator, dtype=torch.float64).to(dtype=x1.dtype, device=x1.device)
    else:
        t = _time_column(t, B, x1).clone()
    x1 = zero_padded(x1, mask)
    return zero_padded(interpolate(x0, x1, t), mask), t, zero_padded(target_velocity(x0, x1), mask)


class FourierTimeEmbedding(nn.Module):
    """``t (B,)`` → ``(B, d)``: sinusoids at geometric frequencies, then an MLP.

    Frequencies ``2π · f`` with ``f`` from 1 to ``max_freq`` (geometric), so
    features resolve times near 1 (0.95 vs 0.99) as well as coarse ones.
    """

    def __init__(self, d: int, n_freq: int = 16, max_freq: float = 500.0, *, dtype=torch.float32, device=None):
        super().__init__()
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), n_freq, dtype=torch.float64)) * 2 * math.pi
        self.register_buffer("freqs", freqs.to(dtype=dtype, device=device), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq, d, dtype=dtype, device=device), nn.SiLU(),
                                 nn.Linear(d, d, dtype=dtype, device=device))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        a = t[:, None] * self.freqs
        return self.mlp(torch.cat([torch.sin(a), torch.cos(a)], dim=-1))


class FlowTransformer(nn.Module):
    """Non-equivariant transformer velocity field over residues (Proteína-like, tiny).

    Token of residue ``l``: ``Linear(x_t[l] / coord_scale) + pos_embed[l] + time_embed(t)``;
    a pre-norm transformer encoder with key padding mask; ``LayerNorm`` +
    ``Linear(d_model, 3)`` head, times ``coord_scale``.

    Parameters
    ----------
    d_model : int
        Token width.
    n_heads : int
        Attention heads (must divide ``d_model``).
    n_layers : int
        Encoder layers.
    dim_feedforward : int
        Hidden width of the feed-forward blocks (default ``2 * d_model``).
    max_len : int
        Largest number of residues ``L`` (size of the learned sequence-index embedding).
    n_freq : int
        Number of Fourier frequencies of the time embedding.
    coord_scale : float
        Inputs are divided and outputs multiplied by it (a scalar: keeps the
        model's symmetry properties; use 10 for Å data with unit noise in nm).
    dtype, device
        Dtype and device of the parameters.

    Notes
    -----
    ``forward(x_t (B, L, 3), t (B,), mask (B, L) | None) -> (B, L, 3)``, zero at
    padded residues; padded residues are excluded as attention keys and their
    inputs zeroed, so they never affect real outputs.  Like
    :class:`equivlib.models.atoms.AtomTransformer`, uses ``dropout=0``, SiLU and
    ``enable_nested_tensor=False`` so that train and eval modes compute the same
    function.  Neither rotation- nor translation-equivariant (raw coordinates
    are embedded linearly), nor permutation-equivariant (sequence index).
    """

    def __init__(self, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, dim_feedforward: int | None = None,
                 max_len: int = 256, n_freq: int = 16, coord_scale: float = 1.0, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        if d_model < 1 or n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model}), both >= 1")
        if n_layers < 0 or max_len < 1 or n_freq < 1 or not coord_scale > 0:
            raise ValueError(f"bad FlowTransformer arguments: n_layers={n_layers}, max_len={max_len}, "
                             f"n_freq={n_freq}, coord_scale={coord_scale}")
        kw = dict(dtype=dtype, device=device)
        dim_feedforward = 2 * d_model if dim_feedforward is None else int(dim_feedforward)
        self.max_len, self.coord_scale = int(max_len), float(coord_scale)
        self.embed = nn.Linear(3, d_model, **kw)
        self.pos_embed = nn.Embedding(max_len, d_model, **kw)
        nn.init.normal_(self.pos_embed.weight, std=0.1)
        self.time_embed = FourierTimeEmbedding(d_model, n_freq, **kw)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=dim_feedforward, dropout=0.0,
                                       activation=nn.functional.silu, batch_first=True, norm_first=True, **kw)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model, **kw)
        self.head = nn.Linear(d_model, 3, **kw)

    def forward(self, x_t: torch.Tensor, t, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the velocity.

        Parameters
        ----------
        x_t : torch.Tensor, shape (B, L, 3)
            Noised coordinates.
        t : float or torch.Tensor, shape (B,)
            Flow-matching times in [0, 1].
        mask : torch.Tensor, shape (B, L), bool, optional
            ``True`` for real residues.

        Returns
        -------
        torch.Tensor, shape (B, L, 3)
            Zero at padded residues.
        """
        mask = _check_points(x_t, "x_t", mask)
        h = self.latent(x_t, t, mask)
        return zero_padded(self.head(h) * self.coord_scale, mask)

    def latent(self, x_t: torch.Tensor, t, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The final per-residue representation the linear head reads, ``(B, L, d_model)``, zero at padding.

        ``forward = head(latent) * coord_scale``: if the model is equivariant, the
        3-dimensional part of the latent that the head sees must rotate with
        the input; the other ``d_model - 3`` directions are unconstrained.
        """
        mask = _check_points(x_t, "x_t", mask)
        B, L, _ = x_t.shape
        if L > self.max_len:
            raise ValueError(f"x_t has L={L} residues but the model was built for max_len={self.max_len}")
        t = _time_column(t, B, x_t)
        x = zero_padded(x_t, mask) / self.coord_scale
        idx = torch.arange(L, device=x_t.device)
        h = self.embed(x) + self.pos_embed(idx)[None] + self.time_embed(t)[:, None, :]
        key_padding = key_padding_mask(mask)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=key_padding)
        return zero_padded(self.norm(h), mask)
