"""A small 3D U-Net denoiser for voxelized atomic densities (VoxMol-like, tiny).

The denoising task (walk-jump sampling, Pinheiro et al. 2023): given
``y = x + σ ε`` with ``x`` a clean atom-type density grid ``(C, S, S, S)``
(:func:`equivlib.data.voxels.voxelize`) and ``ε ~ N(0, I)``, predict ``x``
with a mean-squared error.  The task is equivariant under the 24 rotations of
the cube acting on the grid (:class:`equivlib.groups.VoxelAction`) because
the noise is i.i.d. per voxel; the network is not (learned 3×3×3 kernels and
stride-2 down-sampling), so it must learn the symmetry from augmentation.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet3D", "noisy_voxels"]


def _check_grid(x: torch.Tensor, channels: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or not (x.shape[-1] == x.shape[-2] == x.shape[-3]):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"voxels must have shape (B, C, S, S, S), got {shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"voxels must have shape (B, C={channels}, S, S, S), got {tuple(x.shape)}")


def noisy_voxels(clean: torch.Tensor, sigma, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add isotropic Gaussian noise, ``clean + sigma * ε``.

    Parameters
    ----------
    clean : torch.Tensor, shape (B, C, S, S, S)
    sigma : float or torch.Tensor, shape (B,)
        Noise level (one per sample if a tensor).
    generator : torch.Generator, optional
        CPU generator: the noise is drawn in float64 on the CPU, then cast and
        moved, so a seed gives the same noise on every device.

    Returns
    -------
    torch.Tensor, shape (B, C, S, S, S)
    """
    _check_grid(clean)
    sigma = torch.as_tensor(sigma, dtype=clean.dtype, device=clean.device)
    if sigma.ndim == 1 and sigma.shape[0] == clean.shape[0]:
        sigma = sigma[:, None, None, None, None]
    elif sigma.ndim != 0:
        raise ValueError(f"sigma must be a float or have shape (B,) = ({clean.shape[0]},), got {tuple(sigma.shape)}")
    if (sigma < 0).any():
        raise ValueError("sigma must be non-negative")
    eps = torch.randn(clean.shape, generator=generator, dtype=torch.float64)
    return clean + sigma * eps.to(dtype=clean.dtype, device=clean.device)


def _groups(channels: int, max_groups: int) -> int:
    """Largest number of GroupNorm groups ``<= max_groups`` that divides ``channels``."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


class _Block(nn.Module):
    """(Conv3d 3×3×3 → GroupNorm → SiLU) × 2."""

    def __init__(self, c_in: int, c_out: int, max_groups: int, dtype, device) -> None:
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.net = nn.Sequential(
            nn.Conv3d(c_in, c_out, 3, padding=1, **kw), nn.GroupNorm(_groups(c_out, max_groups), c_out, **kw),
            nn.SiLU(),
            nn.Conv3d(c_out, c_out, 3, padding=1, **kw), nn.GroupNorm(_groups(c_out, max_groups), c_out, **kw),
            nn.SiLU(),
        )

    def forward(self, x):
        return self.net(x)


class UNet3D(nn.Module):
    """3D U-Net: noisy density grid ``(B, C, S, S, S)`` → clean density ``(B, C, S, S, S)``.

    Parameters
    ----------
    in_channels : int
        ``C`` (6 for ``equivlib.data.VOXEL_CHANNELS``).
    out_channels : int, optional
        Output channels (default ``in_channels``).
    base_channels : int
        Channels at the finest level; doubled at each coarser level.
    levels : int
        Resolution levels (2 or 3 typical, >= 1); ``S`` must be divisible by
        ``2 ** (levels - 1)``.
    max_groups : int
        GroupNorm uses the largest group count ``<= max_groups`` dividing the channels.
    dtype, device
        Dtype and device of the parameters.

    Notes
    -----
    Encoder: a :class:`_Block` per level, stride-2 ``Conv3d`` (kernel 2) down
    between levels.  Decoder: ``ConvTranspose3d`` (kernel 2, stride 2) up,
    concatenation with the encoder skip, a block.  A 1×1×1 convolution maps to
    ``out_channels``.  The bottleneck (coarsest level, ``base_channels *
    2 ** (levels - 1)`` channels at ``S / 2 ** (levels - 1)``) is exposed by
    :meth:`bottleneck` and :meth:`latent`.
    """

    def __init__(self, in_channels: int = 6, out_channels: int | None = None, base_channels: int = 8,
                 levels: int = 3, max_groups: int = 4, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if min(in_channels, out_channels, base_channels, levels, max_groups) < 1:
            raise ValueError(f"bad UNet3D arguments: in_channels={in_channels}, out_channels={out_channels}, "
                             f"base_channels={base_channels}, levels={levels}, max_groups={max_groups}")
        kw = dict(dtype=dtype, device=device)
        self.in_channels, self.out_channels, self.levels = int(in_channels), int(out_channels), int(levels)
        widths = [base_channels * 2 ** i for i in range(levels)]
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            self.enc.append(_Block(c, w, max_groups, dtype, device))
            if i < levels - 1:
                self.down.append(nn.Conv3d(w, w, 2, stride=2, **kw))
            c = w
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose3d(c, w, 2, stride=2, **kw))
            self.dec.append(_Block(2 * w, w, max_groups, dtype, device))
            c = w
        self.out = nn.Conv3d(c, out_channels, 1, **kw)
        self.latent_channels = widths[-1]

    def _check(self, x: torch.Tensor) -> None:
        _check_grid(x, self.in_channels)
        S, div = x.shape[-1], 2 ** (self.levels - 1)
        if S % div:
            raise ValueError(f"grid size S={S} must be divisible by 2**(levels-1) = {div} "
                             f"for a U-Net with levels={self.levels}")

    def _encode(self, x: torch.Tensor):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x)
            if i < self.levels - 1:
                skips.append(x)
                x = self.down[i](x)
        return x, skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise.

        Parameters
        ----------
        x : torch.Tensor, shape (B, C, S, S, S)
            Noisy density, ``S`` divisible by ``2 ** (levels - 1)``.

        Returns
        -------
        torch.Tensor, shape (B, out_channels, S, S, S)
            Predicted clean density.
        """
        self._check(x)
        h, skips = self._encode(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return self.out(h)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck feature map, shape ``(B, F, s, s, s)`` with ``F = latent_channels``, ``s = S / 2**(levels-1)``.

        A cubic grid, so :class:`equivlib.groups.VoxelAction` can rotate it to
        test latent equivariance (``bottleneck(g x)`` vs ``g bottleneck(x)``).
        """
        self._check(x)
        return self._encode(x)[0]

    def latent(self, x: torch.Tensor, pool: str = "mean") -> torch.Tensor:
        """Bottleneck features as one vector per sample, for cosine-similarity analyses.

        Parameters
        ----------
        x : torch.Tensor, shape (B, C, S, S, S)
        pool : {"mean", "flatten"}
            ``"mean"``: spatial average (as in the VoxMol analysis), ``(B, F)``;
            ``"flatten"``: the whole map, ``(B, F * s**3)``.

        Returns
        -------
        torch.Tensor, shape (B, F) or (B, F * s**3)
        """
        z = self.bottleneck(x)
        if pool == "mean":
            return z.mean(dim=(2, 3, 4))
        if pool == "flatten":
            return z.flatten(1)
        raise ValueError(f"pool must be 'mean' or 'flatten', got {pool!r}")
