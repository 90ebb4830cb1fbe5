"""Tests for equivlib.groups.actions: vector, voxel, irreps and permutation actions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from equivlib.groups import (
    GroupError,
    IrrepsAction,
    PermutationAction,
    VectorAction,
    VoxelAction,
    cube_group,
    haar_so3,
    symmetric_group,
)
from tests.groups.helpers import F64


def rotate_points_loop(R, x):
    """(M, B, 3, 3) rotations applied to (B, atoms, 3) points, one at a time."""
    M, B = R.shape[:2]
    out = torch.empty(M, *x.shape, dtype=x.dtype)
    for m in range(M):
        for b in range(B):
            for a in range(x.shape[1]):
                out[m, b, a] = R[m, b] @ x[b, a]
    return out


def test_vector_action(generator):
    B, A, M = 3, 5, 4
    x = torch.randn(B, A, 3, dtype=F64, generator=generator)
    g = haar_so3(M, B, generator=generator)
    act = VectorAction()
    act.check_elements(g)
    y = act.apply(g, x)
    assert y.shape == (M, B, A, 3)
    assert torch.allclose(y, rotate_points_loop(g, x), atol=1e-14)
    assert torch.allclose(act.apply_inverse(g, y), x.expand(M, B, A, 3), atol=1e-13)
    # homomorphism: h·(g·x) = (hg)·x
    g1, h1 = haar_so3(1, B, generator=generator), haar_so3(1, B, generator=generator)
    lhs = act.apply(h1, act.apply(g1, x)[0])[0]
    assert torch.allclose(lhs, act.apply(h1 @ g1, x)[0], atol=1e-13)
    # inverse of a product: (hg)^-1 = g^-1 h^-1
    z = act.apply(h1 @ g1, x)
    assert torch.allclose(act.apply_inverse(g1, act.apply_inverse(h1, z)), x[None], atol=1e-13)
    with pytest.raises(GroupError, match=r"\(B, atoms, 3\)"):
        act.apply(g, x[..., :2])
    with pytest.raises(GroupError, match=r"\(M, B, atoms, 3\)"):
        act.apply_inverse(g, x)
    with pytest.raises(GroupError, match="expects group elements of shape"):
        act.check_elements(symmetric_group(3)[:, None, None])


def rotate_voxels_reference(R: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ρ'(p) = ρ(Rᵀ p) on a centred grid, with explicit index loops (R a signed permutation)."""
    S = x.shape[-1]
    c = (S - 1) / 2
    out = torch.empty_like(x)
    Rn = R.round().numpy()
    for i, j, k in itertools.product(range(S), repeat=3):
        p = np.array([i - c, j - c, k - c])
        q = Rn.T @ p + c
        si, sj, sk = (int(round(v)) for v in q)
        out[..., i, j, k] = x[..., si, sj, sk]
    return out


def rasterize(points, weights, S, channels=None):
    """Point masses at voxel centres (coordinates ``index - (S-1)/2``) → (C, S, S, S) grid."""
    C = 1 if channels is None else int(channels.max()) + 1
    grid = torch.zeros(C, S, S, S, dtype=F64)
    idx = torch.round(points + (S - 1) / 2).long()
    assert (idx >= 0).all() and (idx < S).all()
    assert torch.allclose(idx.double() - (S - 1) / 2, points, atol=1e-12), "points must sit on voxel centres"
    for n in range(len(points)):
        ch = 0 if channels is None else int(channels[n])
        grid[ch, idx[n, 0], idx[n, 1], idx[n, 2]] += weights[n]
    return grid


def gaussian_density(points, S, sigma=0.7):
    c = torch.arange(S, dtype=F64) - (S - 1) / 2
    P = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1)  # (S, S, S, 3)
    d2 = ((P[None] - points[:, None, None, None]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma**2)).sum(0)[None]  # (1, S, S, S)


@pytest.mark.parametrize("S", [5, 6])
def test_voxel_action_matches_rotating_points(S, generator):
    act = VoxelAction()
    G = cube_group()
    c = (S - 1) / 2
    # a few distinguishable masses on voxel centres, in two channels
    idx = torch.tensor([[0, 1, 2], [S - 1, 0, 1], [2, S - 1, S - 2], [1, 1, 0], [S - 2, 3, S - 1]])
    pts = idx.double() - c
    w = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0], dtype=F64)
    ch = torch.tensor([0, 1, 0, 1, 0])
    grid = rasterize(pts, w, S, ch)
    # random (off-grid) points with a smooth density, too
    rnd = (torch.rand(4, 3, generator=generator, dtype=F64) - 0.5) * (S - 2)
    dens = gaussian_density(rnd, S)

    out = act.apply(G[:, None], grid[None])  # (24, 1, C, S, S, S)
    out_d = act.apply(G[:, None], dens[None])
    for n, R in enumerate(G):
        expect = rasterize(pts @ R.T, w, S, ch)
        assert torch.equal(out[n, 0], expect), n
        assert torch.allclose(out_d[n, 0], gaussian_density(rnd @ R.T, S), atol=1e-12), n
        assert torch.equal(out[n, 0], rotate_voxels_reference(R, grid))


@pytest.mark.parametrize("S", [4, 5])
def test_voxel_action_inverse_and_homomorphism(S, generator):
    act = VoxelAction()
    G = cube_group()
    B, C = 2, 3
    x = torch.randn(B, C, S, S, S, dtype=F64, generator=generator)
    g = G[torch.randint(24, (7, B), generator=generator)]  # (7, B, 3, 3), different per sample
    act.check_elements(g)
    y = act.apply(g, x)
    assert y.shape == (7, B, C, S, S, S)
    assert torch.equal(act.apply_inverse(g, y), x.expand_as(y))
    for m in range(7):
        for b in range(B):
            assert torch.equal(y[m, b], rotate_voxels_reference(g[m, b], x[b]))
    # homomorphism h·(g·x) = (hg)·x over all 24 x 24 pairs
    x1 = x[:1]
    gx = act.apply(G[:, None], x1)[:, 0]  # (24, C, S, S, S): sample n is G[n]·x
    for h in G:
        lhs = act.apply(h.expand(1, 24, 3, 3), gx)[0]
        rhs = act.apply((h @ G)[:, None], x1)[:, 0]
        assert torch.equal(lhs, rhs)


def test_voxel_action_rejections(generator):
    act = VoxelAction()
    with pytest.raises(GroupError, match="24 rotations of the cube"):
        act.check_elements(haar_so3(1, 1, generator=generator))
    with pytest.raises(GroupError, match="improper|not orthogonal"):
        act.check_elements(torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))[None, None])
    g = cube_group()[:2, None]
    with pytest.raises(GroupError, match="cubic grid"):
        act.apply(g, torch.zeros(1, 1, 4, 5, 5, dtype=F64))
    with pytest.raises(GroupError, match="cubic grid"):
        act.apply(g, torch.zeros(1, 4, 4, 4, dtype=F64))  # no channel axis
    with pytest.raises(GroupError, match="cubic grid"):
        act.apply_inverse(g, torch.zeros(2, 1, 1, 4, 4, 5, dtype=F64))


def test_irreps_action_1o_equals_vector_action(generator):
    B, A, M = 2, 4, 5
    x = torch.randn(B, A, 3, dtype=F64, generator=generator)
    g = haar_so3(M, B, generator=generator)
    assert torch.allclose(IrrepsAction("1o").apply(g, x), VectorAction().apply(g, x), atol=1e-12, rtol=0)
    y = torch.randn(M, B, A, 3, dtype=F64, generator=generator)
    assert torch.allclose(IrrepsAction("1o").apply_inverse(g, y), VectorAction().apply_inverse(g, y),
                          atol=1e-12, rtol=0)
    # also on the cube group (gimbal-lock angles for e3nn's Euler-angle path)
    G = cube_group()[:, None].expand(24, B, 3, 3)
    assert torch.allclose(IrrepsAction("1o").apply(G, x), VectorAction().apply(G, x), atol=1e-12, rtol=0)


def test_irreps_action_float64_inverse_homomorphism(generator):
    irreps = "2x0e + 1o + 2e + 3o"
    act = IrrepsAction(irreps)
    dim = act.irreps.dim
    B, M = 3, 4
    prev = torch.get_default_dtype()
    x = torch.randn(B, 2, dim, dtype=F64, generator=generator)
    g = haar_so3(M, B, generator=generator)
    act.check_elements(g)
    y = act.apply(g, x)
    assert y.shape == (M, B, 2, dim) and y.dtype == F64
    assert torch.get_default_dtype() == prev, "the action must not change torch's default dtype"
    assert torch.allclose(act.apply_inverse(g, y), x.expand_as(y), atol=1e-12, rtol=0)
    g1, h1 = haar_so3(1, B, generator=generator), haar_so3(1, B, generator=generator)
    lhs = act.apply(h1, act.apply(g1, x)[0])[0]
    assert torch.allclose(lhs, act.apply(h1 @ g1, x)[0], atol=1e-12, rtol=0)
    # scalars (0e) are invariant, and features without extra axes work
    x2 = torch.randn(B, dim, dtype=F64, generator=generator)
    y2 = act.apply(g, x2)
    assert torch.allclose(y2[..., :2], x2[None, :, :2].expand(M, B, 2), atol=1e-13)
    with pytest.raises(GroupError, match="last dimension"):
        act.apply(g, torch.zeros(B, dim + 1, dtype=F64))


def test_irreps_action_float32(generator):
    act = IrrepsAction("1o + 2e")
    x = torch.randn(2, act.irreps.dim, generator=generator)
    g = haar_so3(3, 2, generator=generator)
    y = act.apply(g, x)
    assert y.dtype == torch.float32
    assert torch.allclose(act.apply_inverse(g, y), x.expand_as(y), atol=1e-5)


def test_permutation_action(generator):
    n, B = 4, 3
    act = PermutationAction(n)
    x = torch.randn(B, n, 3, dtype=F64, generator=generator)
    P = symmetric_group(n)
    g = P[torch.randint(len(P), (5, B), generator=generator)]
    act.check_elements(g)
    y = act.apply(g, x)
    assert y.shape == (5, B, n, 3)
    for m in range(5):
        for b in range(B):
            assert torch.equal(y[m, b], x[b, g[m, b]])  # (g·x)[i] = x[g[i]]
    assert torch.equal(act.apply_inverse(g, y), x.expand_as(y))
    # composition: h·(g·x) = x[g[h]]  (the group product in this convention)
    g1, h1 = g[:1], P[torch.randint(len(P), (1, B), generator=generator)]
    lhs = act.apply(h1, act.apply(g1, x)[0])[0]
    comp = torch.stack([g1[0, b][h1[0, b]] for b in range(B)])[None]
    assert torch.equal(lhs, act.apply(comp, x)[0])
    # another axis
    act2 = PermutationAction(n, dim=2)
    x2 = torch.randn(B, 2, n, dtype=F64, generator=generator)
    y2 = act2.apply(g, x2)
    assert torch.equal(y2[1, 2], x2[2][:, g[1, 2]])
    assert torch.equal(act2.apply_inverse(g, y2), x2.expand_as(y2))


def test_permutation_action_rejections():
    act = PermutationAction(3)
    with pytest.raises(GroupError, match="not permutations"):
        act.check_elements(torch.tensor([[[0, 0, 2]]]))
    with pytest.raises(GroupError, match="integer index"):
        act.check_elements(torch.tensor([[[0.0, 1.0, 2.0]]]))
    with pytest.raises(GroupError, match="expects group elements of shape"):
        act.check_elements(symmetric_group(4)[:, None])
    with pytest.raises(GroupError, match="expects size 3 on axis 1"):
        act.apply(symmetric_group(3)[:, None], torch.zeros(1, 4, 3))
