"""Tests for equivlib.data.voxels: molecules for density grids and voxelize.

Tolerance: voxel grid rotation vs index permutation 1e-12 (float64 rounding of the
product of the three 1-D Gaussians; a wrong index convention is off by O(1)).
"""
from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import rdkit  # noqa: F401  (must be installed: a missing package fails the tests)
import torch

from equivlib.config import ParameterError
from equivlib.data import voxels
from tests.conftest import random_rotation

if importlib.util.find_spec("moses") is None:  # data-only package, located without import
    raise ImportError("package 'moses' (molsets) is required by the voxel data tests")

ALLOWED_Z = {1, 6, 7, 8, 9, 16, 17}


def cube_rotations() -> np.ndarray:
    """The 24 signed permutation matrices of determinant +1 (built here, independently)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            R = np.zeros((3, 3))
            R[np.arange(3), perm] = signs
            if np.linalg.det(R) > 0:
                out.append(R)
    return np.stack(out)



@pytest.fixture(scope="module")
def voxel_mols():
    return voxels.load_voxel_molecules("quick", 0, "train", dtype=torch.float64)


def _lookup_rotated(grid: torch.Tensor, R: np.ndarray) -> torch.Tensor:
    """Brute force ``G'(v) = G(R^T v)`` by looking up, for every voxel centre ``v``,
    the voxel whose centre is ``R^T v`` (independent of any permute/flip logic)."""
    S = grid.shape[-1]
    idx = np.stack(np.meshgrid(*[np.arange(S)] * 3, indexing="ij"), -1).reshape(-1, 3)
    v = idx - (S - 1) / 2  # centres in units of the resolution
    src = np.rint(v @ R + (S - 1) / 2).astype(int)  # rows: R^T v
    assert src.min() >= 0 and src.max() < S
    flat = (src[:, 0] * S + src[:, 1]) * S + src[:, 2]
    return grid.reshape(*grid.shape[:-3], S**3)[..., torch.from_numpy(flat)].reshape(grid.shape)


def test_voxel_rotation_equals_index_permutation_for_24_cube_rotations(voxel_mols):
    mols = voxel_mols[:3]
    base = mols.voxelize(32, 0.5)
    assert base.shape == (3, 6, 32, 32, 32) and base.dtype == torch.float64
    rots = cube_rotations()
    assert len(rots) == 24
    worst = 0.0
    for R in rots:
        Rt = torch.from_numpy(R)
        rotated = voxels.voxelize(mols.positions @ Rt.T, mols.species, 32, 0.5, mask=mols.mask)
        worst = max(worst, (rotated - _lookup_rotated(base, R)).abs().max().item())
    assert worst < 1e-12, worst
    # the check can fail: a rotation that is not the identity really moves the density
    R = rots[1]
    assert (_lookup_rotated(base, R) - base).abs().max() > 0.1


def test_voxel_convention_matches_groups_voxel_action(voxel_mols):
    from equivlib.groups import VoxelAction, cube_group

    mols = voxel_mols[:2]
    base = mols.voxelize(16, 1.0)
    G = cube_group()
    acted = VoxelAction().apply(G[:, None].expand(24, 2, 3, 3), base)
    for m, R in enumerate(G):
        direct = voxels.voxelize(mols.positions @ R.T, mols.species, 16, 1.0, mask=mols.mask)
        assert (direct - acted[m]).abs().max() < 1e-12


def test_voxel_centres_and_gaussian_values():
    S, res, sigma = 9, 0.5, 0.5
    centres = voxels.voxel_centers(S, res)
    assert centres[0] == -2.0 and centres[4] == 0.0 and centres[-1] == 2.0
    # one carbon on the centre of voxel (6, 4, 2), one oxygen at the origin
    coords = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.3, 0.3, 0.3]], dtype=torch.float64)
    types = torch.tensor([6, 8, 1])  # the hydrogen is not a default channel
    g = voxels.voxelize(coords, types, S, res, sigma=sigma)
    assert g.shape == (6, S, S, S)
    assert g[0, 6, 4, 2] == pytest.approx(1.0, abs=1e-15)
    assert g[2, 4, 4, 4] == pytest.approx(1.0, abs=1e-15)
    # neighbour one voxel away along y: exp(-res^2 / (2 sigma^2))
    assert g[0, 6, 5, 2] == pytest.approx(np.exp(-res**2 / (2 * sigma**2)), rel=1e-14)
    assert g[1].abs().max() == 0 and g[3:].abs().max() == 0
    # batched equals one by one, float32 close to float64
    gb = voxels.voxelize(coords[None].repeat(2, 1, 1), types[None].repeat(2, 1), S, res, sigma=sigma)
    assert torch.equal(gb[0], g) and torch.equal(gb[1], g)
    g32 = voxels.voxelize(coords.float(), types, S, res, sigma=sigma)
    assert g32.dtype == torch.float32 and (g32.double() - g).abs().max() < 1e-6


def test_voxel_bad_input():
    x = torch.zeros(2, 3)
    z = torch.tensor([6, 8])
    with pytest.raises(ValueError, match="outside the grid"):
        voxels.voxelize(torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([6]), 32, 0.5)
    with pytest.raises(ParameterError, match="unknown channel"):
        voxels.voxelize(x, z, 8, 0.5, channels=("C", "Q"))
    with pytest.raises(ValueError, match="grid_size must be an integer"):
        voxels.voxelize(x, z, 1, 0.5)
    with pytest.raises(ValueError, match="types must be an integer tensor"):
        voxels.voxelize(x, z.float(), 8, 0.5)
    with pytest.raises(ValueError, match="coords must have shape"):
        voxels.voxelize(torch.zeros(2, 2), z, 8, 0.5)
    with pytest.raises(ValueError, match="resolution and sigma must be positive"):
        voxels.voxelize(x, z, 8, 0.0)


def test_voxel_molecules_sample_fits_grid_and_split_disjoint():
    train = voxels.load_voxel_molecules("quick", 0, "train")
    test = voxels.load_voxel_molecules("quick", 0, "test")
    assert len(train) == 160 and len(test) == 40
    assert set(train.smiles).isdisjoint(test.smiles)
    for b in (train, test):
        heavy = (b.species > 1) & b.mask
        r = b.positions.norm(dim=-1)[heavy]
        assert r.max() <= 7.25 + 1e-5  # fits the 32^3 grid under every rotation
        centroid = (b.positions * heavy[..., None]).sum(1) / heavy.sum(1, keepdim=True)
        assert centroid.abs().max() < 1e-5
        assert set(b.species[b.mask].unique().tolist()) <= ALLOWED_Z
        assert (b.positions[~b.mask] == 0).all()
    # a random rotation keeps every molecule inside the grid
    R = random_rotation(3).float()
    g = voxels.voxelize(test.positions @ R.T, test.species, 32, 0.5, mask=test.mask)
    assert g.shape == (40, 6, 32, 32, 32)


def test_tiny_voxel_generation_same_seed_same_data():
    a1, _ = voxels.generate_voxel_molecules(3, seed=11, progress=False)
    a2, _ = voxels.generate_voxel_molecules(3, seed=11, progress=False, n_jobs=2)
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])
