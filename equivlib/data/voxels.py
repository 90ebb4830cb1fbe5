"""Drug-like molecules as atom-type density grids (for 3D U-Net denoisers).

Source
    SMILES of the MOSES benchmark (``molsets`` 0.3.1, its bundled ``test.csv.gz``,
    read with pandas; see :mod:`equivlib.data.forces`), drawn in a seeded order
    and kept when neutral, closed-shell, a single fragment, with 6-32 heavy atoms of
    the elements H, C, N, O, F, S, Cl.
Geometry
    One RDKit ETKDGv3 conformer per molecule, relaxed with MMFF94 (200 steps),
    hydrogens included in the cache, centred at the heavy-atom centroid.
    Molecules with a heavy atom farther than ``max_radius`` from that centre are
    skipped, so that under *every* rotation the molecule stays 0.5 Å inside the
    outermost voxel centres of the profile's recommended grid at 0.5 Å:
    quick 7.25 Å for 32^3 (keeps about 80 % of MOSES molecules, the compact ones),
    full 11.25 Å for 48^3 (keeps nearly all).
Cached
    coordinates and atomic numbers only; grids are made on the fly by
    :func:`voxelize`, so grid size, resolution, width and channels are free.
Units
    Å.
Split
    by molecule.

Grid convention (shared with :class:`equivlib.groups.VoxelAction`): a grid has
shape ``(C, S, S, S)`` with spatial axes ``(x, y, z)`` in that order, and voxel
``(i, j, k)`` has its centre at ``((i, j, k) - (S - 1) / 2) * resolution``, so
the origin is the centre of the grid.  A rotation of the coordinates by one of
the 24 rotations of the cube is then exactly a permutation / flip of the grid
indices.

Generate with ``python -m equivlib.data.voxels --profile quick|full --seed 0``;
load with :func:`load_voxel_molecules`, then :func:`voxelize`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import ParameterError, derived_seed
from .cache import (batch_index, check_loader_args, cli_main, index_list, load_or_build_profile, logger,
                    pad_packed, split_groups, split_mask)
from .forces import _SYMBOL_TO_Z, _map, embed_conformers, select_molecules

__all__ = [
    "VOXEL_CHANNELS",
    "VOXEL_PROFILES",
    "VoxelMolecules",
    "voxel_centers",
    "voxelize",
    "generate_voxel_molecules",
    "build_voxel_molecules",
    "load_voxel_molecules",
]

FORMAT_VERSION = 1
#: default density channels (element symbols); hydrogens are not voxelized by default
VOXEL_CHANNELS = ("C", "N", "O", "F", "S", "Cl")

#: Everything the profile decides for the voxel data set and :func:`equivlib.tasks.voxel_task`.
#:
#: ``"data"``: generation parameters, stored as the cache file's ``spec`` (changing a
#: value regenerates the data set and orphans the committed sample).  ``max_radius``
#: keeps heavy atoms within this distance of the centre, so that under every rotation
#: the molecule stays 0.5 Å inside the outermost voxel centres of the *recommended*
#: grid, ``grid_size`` voxels at 0.5 Å (written to ``meta["recommended_grid"]``).
#:
#: ``"task"``: the grid the task voxelizes on, ``grid_size`` voxels spanning ``box``
#: Å (resolution ``box / grid_size``), and ``n_heldout`` held-out molecules.  It
#: differs from the recommended grid in the quick profile on purpose: the same
#: 16 Å box, coarser (16³ at 1 Å instead of 32³ at 0.5 Å) so CPU runs stay short.
#: ``"smoke"`` (full only): the ``"data"`` and ``"task"`` entries ``make smoke`` changes (:func:`~equivlib.config.smoke_steps`).
VOXEL_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"data": dict(n_molecules=200, max_heavy_atoms=32, max_radius=7.25, grid_size=32, test_fraction=0.2),
              "task": dict(grid_size=16, box=16.0, n_heldout=8)},
    "full": {"data": dict(n_molecules=12000, max_heavy_atoms=32, max_radius=11.25, grid_size=48, test_fraction=0.1),
             "task": dict(grid_size=48, box=24.0, n_heldout=64),
             # make smoke: 2 held-out molecules (chapters 3-4 take batches of 2) x the 24 rotations of the exhaustive
             # monitor = 48 grids of 48^3, few but large inputs, the case whose single pass once asked for 49 GB (for
             # 128 grids in float64: 48 would ask ~18 GB, over the smoke's memory limit); the twirl's probe chunks them
             "smoke": {"data": dict(n_molecules=20), "task": dict(n_heldout=2)}},
}


@dataclass
class VoxelMolecules:
    """Padded batch of molecules to voxelize.

    Attributes
    ----------
    positions : torch.Tensor, shape (B, A, 3)
        Å, centred at each molecule's heavy-atom centroid; zero at padding.
    species : torch.Tensor, shape (B, A), long
        Atomic numbers (hydrogens included); 0 at padding.
    mask : torch.Tensor, shape (B, A), bool
        ``True`` for real atoms.
    smiles : list of str, length B
    """

    positions: torch.Tensor
    species: torch.Tensor
    mask: torch.Tensor
    smiles: list

    def __post_init__(self) -> None:
        p = self.positions
        if p.ndim != 3 or p.shape[-1] != 3:
            raise ValueError(f"positions must have shape (B, A, 3), got {tuple(p.shape)}")
        if tuple(self.species.shape) != tuple(p.shape[:2]) or self.species.dtype != torch.long:
            raise ValueError(f"species must be a long tensor of shape {tuple(p.shape[:2])}")
        if tuple(self.mask.shape) != tuple(p.shape[:2]) or self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(p.shape[:2])}")
        if len(self.smiles) != p.shape[0]:
            raise ValueError("smiles must have one entry per molecule")

    def __len__(self) -> int:
        return self.positions.shape[0]

    def __getitem__(self, idx) -> "VoxelMolecules":
        B, idx = len(self), batch_index(idx)
        return VoxelMolecules(self.positions[idx], self.species[idx], self.mask[idx],
                              index_list(self.smiles, idx, B))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "VoxelMolecules":
        return VoxelMolecules(self.positions.to(device=device, dtype=dtype), self.species.to(device=device),
                              self.mask.to(device=device), list(self.smiles))

    def voxelize(self, grid_size: int = 32, resolution: float = 0.5, **kwargs) -> torch.Tensor:
        """:func:`voxelize` of the whole batch: ``(B, C, S, S, S)``."""
        return voxelize(self.positions, self.species, grid_size, resolution, mask=self.mask, **kwargs)


# --------------------------------------------------------------------------- voxelization


def voxel_centers(grid_size: int, resolution: float, *, dtype: torch.dtype = torch.float64,
                  device=None) -> torch.Tensor:
    """Voxel-centre coordinates along one axis, ``(i - (S - 1) / 2) * resolution``, shape (S,)."""
    return (torch.arange(grid_size, dtype=dtype, device=device) - (grid_size - 1) / 2) * resolution


def _channel_numbers(channels: Sequence[str | int]) -> list[int]:
    out = []
    for c in channels:
        z = _SYMBOL_TO_Z.get(c) if isinstance(c, str) else int(c)
        if z is None or z < 1:
            raise ParameterError(f"unknown channel {c!r}; use element symbols {sorted(_SYMBOL_TO_Z)} "
                                 f"or atomic numbers")
        out.append(z)
    if len(set(out)) != len(out) or not out:
        raise ParameterError(f"channels must be non-empty and distinct, got {list(channels)}")
    return out


def voxelize(
    coords: torch.Tensor | np.ndarray,
    types: torch.Tensor | np.ndarray,
    grid_size: int = 32,
    resolution: float = 0.5,
    *,
    channels: Sequence[str | int] = VOXEL_CHANNELS,
    sigma: float = 0.5,
    mask: torch.Tensor | None = None,
    check_inside: bool = True,
    batch_chunk: int = 64,
) -> torch.Tensor:
    """Gaussian atom-type densities on a cubic grid centred at the origin.

    .. math::

        \\rho_c(v) = \\sum_{a:\\,Z_a = c} \\exp\\!\\left(-\\frac{\\lVert v - x_a \\rVert^2}{2\\sigma^2}\\right)

    evaluated at the voxel centres ``v = ((i, j, k) - (S - 1) / 2) * resolution``
    (peak height 1 per atom, not normalised).  The Gaussian factorises over the
    three axes, so the grid is one batched matrix product per chunk, and a
    rotation of ``coords`` by one of the 24 cube rotations equals the matching
    index permutation / flip of the output (to float rounding).

    Parameters
    ----------
    coords : tensor, shape (A, 3) or (B, A, 3)
        Cartesian coordinates in Å, in the grid frame (origin = grid centre).
    types : tensor, shape (A,) or (B, A), integer
        Atomic numbers; atoms whose number is not a channel (hydrogen by default,
        or 0 for padding) are ignored.
    grid_size : int
        ``S``, voxels per side (32 quick, 48 full, for instance).
    resolution : float
        Voxel edge in Å.
    channels : sequence of str or int
        Element symbols or atomic numbers, one output channel each, in order.
    sigma : float
        Gaussian width in Å.
    mask : bool tensor, shape like ``types``, optional
        ``False`` marks padded atoms (ignored).
    check_inside : bool
        Raise :class:`ValueError` if a voxelized atom lies outside the outermost
        voxel centres (its density would be cut off).
    batch_chunk : int
        Molecules per matrix product (bounds memory).

    Returns
    -------
    torch.Tensor, shape (C, S, S, S) or (B, C, S, S, S)
        In the floating dtype of ``coords`` (float32 for NumPy float32 input,
        float64 for float64 input), on its device.
    """
    coords = torch.as_tensor(coords)
    types = torch.as_tensor(types)
    if not coords.is_floating_point():
        raise ValueError(f"coords must be floating point, got dtype {coords.dtype}")
    single = coords.ndim == 2
    if single:
        coords, types = coords[None], types[None]
        mask = None if mask is None else torch.as_tensor(mask)[None]
    if coords.ndim != 3 or coords.shape[-1] != 3:
        raise ValueError(f"coords must have shape (A, 3) or (B, A, 3), got {tuple(coords.shape)}")
    if tuple(types.shape) != tuple(coords.shape[:2]) or types.is_floating_point():
        raise ValueError(f"types must be an integer tensor of shape {tuple(coords.shape[:2])}, "
                         f"got {tuple(types.shape)} {types.dtype}")
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < 2:
        raise ValueError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    if not (resolution > 0 and sigma > 0):
        raise ValueError(f"resolution and sigma must be positive, got {resolution}, {sigma}")
    if mask is not None:
        mask = torch.as_tensor(mask, device=coords.device)
        if tuple(mask.shape) != tuple(types.shape) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(types.shape)}")
    zs = torch.tensor(_channel_numbers(channels), device=coords.device)
    onehot = (types.to(coords.device)[..., None] == zs).to(coords.dtype)  # (B, A, C)
    if mask is not None:
        onehot = onehot * mask[..., None].to(coords.dtype)
    S = int(grid_size)
    if check_inside:
        used = onehot.sum(-1) > 0
        half = (S - 1) / 2 * resolution
        outside = used & (coords.abs().amax(-1) > half + 1e-9)
        if outside.any():
            b, a = (int(v) for v in outside.nonzero()[0])
            raise ValueError(
                f"atom {a} of molecule {b} at {coords[b, a].tolist()} Å lies outside the grid "
                f"(outermost voxel centres at ±{half:.3f} Å for grid_size={S}, resolution={resolution}); "
                f"centre the molecule, enlarge the grid or pass check_inside=False")
    centers = voxel_centers(S, resolution, dtype=coords.dtype, device=coords.device)
    B, A, C = onehot.shape
    out = torch.empty(B, C, S, S, S, dtype=coords.dtype, device=coords.device)
    inv = -0.5 / (sigma * sigma)
    for s in range(0, B, max(1, int(batch_chunk))):
        x = coords[s:s + batch_chunk]
        g = torch.exp(inv * (x[..., None] - centers) ** 2)  # (b, A, 3, S)
        gx, gy, gz = g.unbind(2)
        left = (onehot[s:s + batch_chunk, :, :, None] * gx[:, :, None, :]).reshape(len(x), A, C * S)
        right = (gy[:, :, :, None] * gz[:, :, None, :]).reshape(len(x), A, S * S)
        out[s:s + batch_chunk] = torch.bmm(left.transpose(1, 2), right).reshape(len(x), C, S, S, S)
    return out[0] if single else out


# --------------------------------------------------------------------------- generation


def _embed_one(args) -> tuple[str, np.ndarray, np.ndarray] | str:
    smi, seed, max_radius = args
    try:
        mol, confs = embed_conformers(smi, 1, seed, optimize=True)
    except ValueError as exc:
        return f"{smi}: {exc}"
    if not confs:
        return f"{smi}: ETKDG embedding failed"
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int8)
    x = confs[0]
    x = x - x[z > 1].mean(axis=0)
    r = float(np.linalg.norm(x[z > 1], axis=1).max())
    if r > max_radius:
        return f"{smi}: heavy-atom radius {r:.2f} Å > max_radius {max_radius} Å"
    return smi, x, z


def generate_voxel_molecules(
    n_molecules: int,
    seed: int,
    *,
    max_heavy_atoms: int = 32,
    max_radius: float = 7.25,
    grid_size: int = 32,
    test_fraction: float = 0.2,
    n_jobs: int = 1,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Embed ``n_molecules`` MOSES molecules (one relaxed conformer each) for voxelization.

    Arrays: ``smiles (M,)``, ``natoms (M,)``, ``species (sum natoms,)`` int8,
    ``positions (sum natoms, 3)`` float32 Å (centred at the heavy-atom centroid),
    ``split (M,)`` (0 train, 1 test).  ``n_jobs > 1`` embeds in worker processes
    (same result: every molecule has its own seed).
    """
    from tqdm.auto import tqdm

    if not isinstance(n_molecules, int) or n_molecules < 1:
        raise ParameterError(f"n_molecules must be a positive integer, got {n_molecules!r}")
    t0 = time.perf_counter()
    n_cand = 2 * n_molecules + 20  # some are too large for the grid
    candidates = select_molecules(n_cand, derived_seed(seed, 505), max_heavy_atoms=max_heavy_atoms)
    jobs = [(smi, derived_seed(seed, i, 606), max_radius) for i, smi in enumerate(candidates)]
    kept, skipped = [], []
    bar = tqdm(total=n_molecules, desc="voxel molecules", unit="mol", disable=not progress, mininterval=1.0)
    pool, results = _map(_embed_one, jobs, n_jobs)
    try:
        for res in results:
            if isinstance(res, str):
                skipped.append(res)
                continue
            kept.append(res)
            bar.update(1)
            if len(kept) == n_molecules:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if len(kept) < n_molecules:
        raise RuntimeError(f"only {len(kept)} of {n_molecules} molecules could be embedded; "
                           f"first problems: {skipped[:5]}")
    logger.info("voxels: %d candidates skipped (embedding failed or too large)", len(skipped))
    import rdkit

    arrays = {
        "smiles": np.array([k[0] for k in kept], dtype=str),
        "natoms": np.array([len(k[2]) for k in kept], dtype=np.int32),
        "species": np.concatenate([k[2] for k in kept]).astype(np.int8),
        "positions": np.concatenate([k[1] for k in kept]).astype(np.float32),
        "split": split_groups(len(kept), test_fraction, seed),
    }
    meta = {
        "dataset": "voxels",
        "units": {"positions": "angstrom"},
        "versions": {"rdkit": rdkit.__version__},
        "source": "MOSES test.csv.gz from molsets 0.3.1 (PyPI)",
        "conformers": "RDKit ETKDGv3 + MMFF94 (200 steps), centred at the heavy-atom centroid",
        "n_molecules": len(kept),
        "max_radius_angstrom": max_radius,
        "recommended_grid": {"grid_size": grid_size, "resolution": 0.5},
        "n_skipped": len(skipped),
        "skipped_examples": skipped[:20],
        "seconds_total": round(time.perf_counter() - t0, 2),
    }
    return arrays, meta


def build_voxel_molecules(profile: str = "quick", seed: int = 0, *, cache_dir=None, regenerate: bool = False,
                          n_jobs: int = 1, progress: bool = True):
    """Arrays and metadata of a profile: committed sample, cache, or generated (see ``equivlib.data.cache``)."""
    return load_or_build_profile(
        "voxels", profile, seed, VOXEL_PROFILES,
        lambda **data: generate_voxel_molecules(seed=seed, n_jobs=n_jobs, progress=progress, **data),
        format_version=FORMAT_VERSION, cache_dir=cache_dir, regenerate=regenerate)


def load_voxel_molecules(
    profile: str = "quick",
    seed: int = 0,
    split: str = "train",
    *,
    cache_dir=None,
    dtype: torch.dtype = torch.float32,
    regenerate: bool = False,
    n_jobs: int = 1,
) -> VoxelMolecules:
    """Load molecules (coordinates + atomic numbers) to voxelize with :func:`voxelize`.

    Parameters
    ----------
    profile : {"quick", "full"}
        ``quick``: 200 compact molecules for 32^3 grids (committed sample for
        seed 0); ``full``: 12,000 molecules for 48^3 grids at 0.5 Å (generated and
        cached; use ``n_jobs`` processes).
    seed : int
        Chooses molecules, conformers and the split.
    split : {"train", "test", "all"}
        By molecule: 20 % (quick) / 10 % (full) held out.
    """
    check_loader_args(split, dtype)
    arr, _ = build_voxel_molecules(profile, seed, cache_dir=cache_dir, regenerate=regenerate, n_jobs=n_jobs)
    natoms = arr["natoms"].astype(np.int64)
    positions, mask = pad_packed(arr["positions"], natoms)
    species, _ = pad_packed(arr["species"].astype(np.int64), natoms)
    keep = split_mask(arr["split"], split)
    A = int(natoms[keep].max()) if keep.any() else 0
    return VoxelMolecules(
        positions=torch.from_numpy(positions[keep, :A]).to(dtype),
        species=torch.from_numpy(species[keep, :A]),
        mask=torch.from_numpy(mask[keep, :A]),
        smiles=[str(s) for s in arr["smiles"][keep]],
    )


def main(argv: list[str] | None = None) -> int:
    return cli_main("voxels", "Embed MOSES molecules (ETKDG + MMFF94) for atom-type density grids.",
                    build_voxel_molecules, argv, n_jobs=True)


if __name__ == "__main__":
    raise SystemExit(main())
