"""Tests for equivlib.groups: SO(3) sampling, finite groups, samples and actions."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from equivlib.groups import (
    GroupError,
    GroupSample,
    IrrepsAction,
    PermutationAction,
    VectorAction,
    VoxelAction,
    check_rotations,
    cube_group,
    cube_subset16,
    exhaustive,
    generate_group,
    haar_so3,
    icosahedral_group,
    octahedral_group,
    permutation_matrices,
    quaternion_to_matrix,
    sample_design,
    sample_finite,
    sample_haar,
    symmetric_group,
    tetrahedral_group,
)

F64 = torch.float64
EYE = torch.eye(3, dtype=F64)


# --------------------------------------------------------------------------- helpers
def rotation_angle(R: torch.Tensor) -> np.ndarray:
    c = ((R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.arccos(c).numpy()


def haar_angle_cdf(theta):
    """CDF of the rotation angle of a Haar rotation: density (1 - cos θ)/π on [0, π]."""
    return (theta - np.sin(theta)) / np.pi


def axis_rotation(axis, angle) -> torch.Tensor:
    axis = torch.as_tensor(axis, dtype=F64)
    axis = axis / axis.norm()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=F64)
    return EYE + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def member_distance(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """For every matrix in A (n, 3, 3), the distance to the nearest element of G (k, 3, 3)."""
    return (A[:, None] - G[None]).flatten(2).abs().amax(-1).amin(-1)


def is_closed(G: torch.Tensor, tol=1e-9) -> bool:
    prods = (G[:, None] @ G[None]).reshape(-1, 3, 3)
    return bool(member_distance(prods, G).max() < tol)


def assert_all_distinct(G: torch.Tensor):
    d = (G[:, None] - G[None]).flatten(2).abs().amax(-1)
    d = d + torch.eye(len(G), dtype=d.dtype) * 10
    assert d.min() > 0.1


# --------------------------------------------------------------------------- Haar
def test_haar_proper_rotations_float64(generator):
    R = haar_so3(500, 3, generator=generator)
    assert R.shape == (500, 3, 3, 3) and R.dtype == F64
    assert (R @ R.transpose(-1, -2) - EYE).abs().max() < 1e-12
    assert (torch.linalg.det(R) - 1).abs().max() < 1e-12
    check_rotations(R, atol=1e-12)


def test_haar_dtype_and_seed_reproducible():
    a = haar_so3(10, generator=torch.Generator().manual_seed(7))
    b = haar_so3(10, generator=torch.Generator().manual_seed(7))
    c = haar_so3(10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    f = haar_so3(10, generator=torch.Generator().manual_seed(7), dtype=torch.float32)
    assert f.dtype == torch.float32
    assert torch.allclose(f.double(), a, atol=1e-6)
    with pytest.raises(GroupError, match="non-negative"):
        haar_so3(-1)


def test_quaternion_to_matrix_known_rotation():
    # 90° about z: q = (cos 45°, 0, 0, sin 45°)
    q = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=F64)
    R = quaternion_to_matrix(q)
    assert torch.allclose(R, axis_rotation([0, 0, 1], math.pi / 2), atol=1e-15)
    # q and -q are the same rotation; scale does not matter
    assert torch.allclose(quaternion_to_matrix(-3 * q), R, atol=1e-15)
    with pytest.raises(GroupError, match=r"\(\.\.\., 4\)"):
        quaternion_to_matrix(torch.zeros(3))


def test_haar_moments(generator):
    n = 20000
    R = haar_so3(n, generator=generator)
    # E[R] = 0, each entry has variance 1/3
    se = math.sqrt(1 / 3 / n)
    assert R.mean(0).abs().max() < 5 * se
    # E[tr R] = 0 with Var(tr R) = 1 (character of an irrep)
    tr = R.diagonal(dim1=-2, dim2=-1).sum(-1)
    assert abs(tr.mean()) < 5 / math.sqrt(n)
    assert abs(tr.var() - 1) < 0.05
    # E[R_ij^2] = 1/3, Var(R_ij^2) = 1/5 - 1/9
    se2 = math.sqrt((1 / 5 - 1 / 9) / n)
    assert ((R**2).mean(0) - 1 / 3).abs().max() < 5 * se2


def test_haar_rotation_angle_ks(generator):
    theta = rotation_angle(haar_so3(20000, generator=generator))
    assert stats.kstest(theta, haar_angle_cdf).pvalue > 0.01


def test_angle_ks_detects_non_haar(generator):
    """The KS check above has power: naive uniform Euler angles are not Haar."""
    n = 20000
    a, b, c = (torch.rand(3, n, generator=generator, dtype=F64) * 2 * math.pi).unbind(0)
    R = axis_rotation_batch(2, a) @ axis_rotation_batch(1, b / 2) @ axis_rotation_batch(2, c)
    assert stats.kstest(rotation_angle(R), haar_angle_cdf).pvalue < 1e-6


def axis_rotation_batch(axis: int, angle: torch.Tensor) -> torch.Tensor:
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    R = torch.eye(3, dtype=F64).repeat(len(angle), 1, 1)
    R[:, i, i], R[:, i, j], R[:, j, i], R[:, j, j] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    return R


def test_haar_left_and_right_invariance(generator):
    n = 20000
    Q = axis_rotation([1, 2, 3], 1.1)
    R1 = haar_so3(n, generator=generator)
    R2 = haar_so3(n, generator=generator)
    for QR in (Q @ R1, R1 @ Q):
        # rotation angle and a single entry have the same distribution as for fresh Haar draws
        assert stats.ks_2samp(rotation_angle(QR), rotation_angle(R2)).pvalue > 0.01
        assert stats.ks_2samp(QR[:, 0, 1].numpy(), R2[:, 0, 1].numpy()).pvalue > 0.01
        assert QR.mean(0).abs().max() < 5 * math.sqrt(1 / 3 / n)
    # ... while a biased distribution is detected by the same statistic
    biased = axis_rotation_batch(2, torch.rand(n, generator=generator, dtype=F64))
    assert stats.ks_2samp(rotation_angle(biased), rotation_angle(R2)).pvalue < 1e-6


# --------------------------------------------------------------------------- finite groups
FINITE = {
    "cube": (cube_group, 24),
    "octahedral": (octahedral_group, 24),
    "tetrahedral": (tetrahedral_group, 12),
    "icosahedral": (icosahedral_group, 60),
}


@pytest.mark.parametrize("name", list(FINITE))
def test_finite_group_axioms(name):
    fn, order = FINITE[name]
    G = fn()
    assert G.shape == (order, 3, 3) and G.dtype == F64
    check_rotations(G, atol=1e-12)
    assert_all_distinct(G)
    assert member_distance(EYE[None], G).item() < 1e-12, "identity missing"
    assert member_distance(G.transpose(-1, -2), G).max() < 1e-9, "not closed under inverses"
    assert is_closed(G), "not closed under products"


def test_finite_group_dtype_and_order_stable():
    G32 = cube_group(dtype=torch.float32)
    assert G32.dtype == torch.float32
    assert torch.equal(G32.double(), cube_group())
    assert torch.equal(cube_group()[0], EYE)


def test_tetrahedral_subgroup_of_cube():
    T, C = tetrahedral_group(), cube_group()
    assert member_distance(T, C).max() < 1e-12
    # and it really is the symmetry group of the tetrahedron
    tet = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=F64)
    for g in T:
        img = tet @ g.T
        assert member_distance(img[:, :, None].expand(4, 3, 3), tet[:, :, None].expand(4, 3, 3)).max() < 1e-12


def test_cube_subset16_is_not_a_group():
    S, C = cube_subset16(), cube_group()
    assert S.shape == (16, 3, 3)
    assert_all_distinct(S)
    check_rotations(S, atol=1e-12)
    assert member_distance(S, C).max() < 1e-12, "not a subset of the cube group"
    assert not is_closed(S), "cube_subset16 must not be closed under products"


def test_generate_group_reproduces_cube():
    from equivlib.groups import _axis_rotation  # 90° generators

    gens = torch.stack([axis_rotation([1, 0, 0], math.pi / 2), axis_rotation([0, 0, 1], math.pi / 2)])
    G = generate_group(gens)
    assert G.shape == (24, 3, 3)
    assert torch.equal(G[0], EYE)
    C = cube_group()
    assert member_distance(G, C).max() < 1e-12 and member_distance(C, G).max() < 1e-12
    assert torch.allclose(_axis_rotation(0, 1), gens[0], atol=1e-15)


def test_generate_group_errors():
    with pytest.raises(GroupError, match="max_order"):
        generate_group(axis_rotation([0, 0, 1], 1.0)[None], max_order=500)  # irrational angle: infinite
    with pytest.raises(GroupError, match=r"\(k, d, d\)"):
        generate_group(torch.eye(3))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_symmetric_group(n):
    P = symmetric_group(n)
    assert P.shape == (math.factorial(n), n) and P.dtype == torch.long
    assert len({tuple(p) for p in P.tolist()}) == math.factorial(n)
    assert torch.equal(P.sort(-1).values, torch.arange(n).expand_as(P))
    assert torch.equal(P[0], torch.arange(n))


@pytest.mark.parametrize("n", [0, 9, -1, 2.0])
def test_symmetric_group_errors(n):
    with pytest.raises(GroupError, match=r"S_n needs a positive integer|limited to n <= 8"):
        symmetric_group(n)


def test_permutation_matrices_act_like_indexing(generator):
    P = symmetric_group(4)
    M = permutation_matrices(P)
    x = torch.randn(4, dtype=F64, generator=generator)
    assert torch.equal(M @ x, x[P])
    # product of matrices ↔ composition of index tensors
    a, b = P[5], P[17]
    assert torch.equal(permutation_matrices(a) @ permutation_matrices(b), permutation_matrices(b[a]))


# --------------------------------------------------------------------------- design property
DESIGNS = [
    (tetrahedral_group, [1, 2], 3),
    (cube_group, [1, 2, 3], 4),
    (icosahedral_group, [1, 2, 3, 4, 5], 6),
]


@pytest.mark.parametrize("group_fn, zero_ls, nonzero_l", DESIGNS)
def test_turned_group_is_a_design(group_fn, zero_ls, nonzero_l, generator, float64_default):
    """mean_g D^l(R g) vanishes exactly up to the design's strength and not beyond."""
    from e3nn import o3

    G = group_fn()
    for R in haar_so3(3, generator=generator):
        RG = R @ G
        for l in zero_ls + [nonzero_l]:
            D = o3.Irrep(l, (-1) ** l).D_from_matrix(RG)
            assert D.dtype == F64
            avg = D.mean(0).abs().max().item()
            if l in zero_ls:
                assert avg < 1e-10, (l, avg)
            else:
                assert avg > 0.05, (l, avg)


# --------------------------------------------------------------------------- check_rotations
def test_check_rotations_errors():
    with pytest.raises(GroupError, match=r"shape \(\.\.\., 3, 3\)"):
        check_rotations(torch.zeros(3, 4, dtype=F64))
    with pytest.raises(GroupError, match="not orthogonal"):
        check_rotations(EYE * 1.01)
    with pytest.raises(GroupError, match="improper"):
        check_rotations(torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64)))
    with pytest.raises(GroupError, match="floating point"):
        check_rotations(torch.eye(3, dtype=torch.long))
    with pytest.raises(GroupError, match="not orthogonal"):
        check_rotations(torch.full((3, 3), float("nan"), dtype=F64))
    # valid input passes through, float32 with the float32 default tolerance
    R = haar_so3(4, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    assert check_rotations(R) is R
    check_rotations(torch.empty(0, 3, 3, dtype=F64))


# --------------------------------------------------------------------------- samples
def test_group_sample_shapes(generator):
    s = sample_haar(5, batch=3, generator=generator)
    assert s.elements.shape == (5, 1, 3, 3, 3) and s.scheme == "iid"
    assert (s.n_blocks, s.block_size, s.n_elements, s.batch) == (5, 1, 5, 3)
    assert s.flat(3).shape == (5, 3, 3, 3)
    shared = sample_haar(4, generator=generator)
    assert shared.batch == 1
    flat = shared.flat(6)
    assert flat.shape == (4, 6, 3, 3) and torch.equal(flat[:, 0], flat[:, 5])

    d = sample_design(tetrahedral_group(), 2, batch=3, generator=generator)
    assert d.elements.shape == (2, 12, 3, 3, 3) and d.scheme == "design" and d.n_elements == 24
    check_rotations(d.elements, atol=1e-12)
    # every block is a turned copy R_k G: R_k^{-1} (block) is the group itself
    T = tetrahedral_group()
    for k in range(2):
        for b in range(3):
            blk = d.elements[k, :, b]
            turned_back = blk[0].T @ blk  # (R g_0)^T R g = g_0^T g ∈ T
            assert member_distance(turned_back, T).max() < 1e-12

    f = sample_finite(symmetric_group(3), 7, batch=2, generator=generator)
    assert f.elements.shape == (7, 1, 2, 3) and f.scheme == "iid" and f.elements.dtype == torch.long
    e = exhaustive(cube_group())
    assert e.elements.shape == (1, 24, 1, 3, 3) and e.scheme == "exhaustive" and e.n_elements == 24
    s32 = s.to(dtype=torch.float32)
    assert s32.elements.dtype == torch.float32 and s32.scheme == "iid"
    assert f.to(dtype=torch.float32).elements.dtype == torch.long  # indices stay integers
    sub = d.subset(torch.tensor([1, 1]))
    assert torch.equal(sub.elements[0], d.elements[1])


def test_group_sample_errors(generator):
    R = haar_so3(2, 3, 1, generator=generator)
    with pytest.raises(GroupError, match="m = 1"):
        GroupSample(R, "iid")
    with pytest.raises(GroupError, match="K = 1"):
        GroupSample(haar_so3(2, 3, 1, generator=generator), "exhaustive")
    with pytest.raises(GroupError, match="unknown sampling scheme"):
        GroupSample(haar_so3(2, 1, 1, generator=generator), "random")
    with pytest.raises(GroupError, match=r"\(K, m, B"):
        GroupSample(torch.zeros(2, 3), "iid")
    s = sample_haar(3, batch=4, generator=generator)
    with pytest.raises(GroupError, match="drawn for 4 data samples, data has 5"):
        s.flat(5)
    with pytest.raises(GroupError, match="positive int"):
        sample_haar(0)
    with pytest.raises(GroupError, match="batch"):
        sample_haar(3, batch=0)
    with pytest.raises(GroupError, match="n_copies"):
        sample_design(cube_group(), 0)
    with pytest.raises(GroupError, match="not orthogonal"):
        sample_design(cube_group() * 2, 2)


# --------------------------------------------------------------------------- actions
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


def test_cube_rotation_classes_are_conjugacy_classes():
    from collections import Counter

    from equivlib.groups import GroupError, cube_group, cube_rotation_classes

    G = cube_group()
    labels = cube_rotation_classes(G)
    assert Counter(labels) == {"identity": 1, "90° face": 6, "180° face": 3, "120° vertex": 8, "180° edge": 6}
    # conjugation preserves the class
    for h in G[::5]:
        assert cube_rotation_classes(h @ G @ h.T) == labels
    with pytest.raises(GroupError, match="cube"):
        cube_rotation_classes(torch.eye(3, dtype=torch.float64)[None] * 0.5)


def test_element_indices_finds_and_rejects():
    from equivlib.groups import GroupError, cube_group, cube_subset16, element_indices

    G = cube_group()
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(element_indices(G, G[perm]), perm)
    idx = element_indices(G, cube_subset16())
    assert len(set(idx.tolist())) == 16 and torch.allclose(G[idx], cube_subset16(), atol=1e-12)
    with pytest.raises(GroupError, match="element 1 is not in the group"):
        element_indices(G, torch.stack([G[3], -G[3]]))
    with pytest.raises(GroupError, match="same d"):
        element_indices(G, torch.eye(2, dtype=torch.float64)[None])


def test_haar_so3_numpy_is_haar():
    from equivlib.groups import haar_so3_numpy

    Rs = np.stack([haar_so3_numpy(np.random.default_rng(s)) for s in range(2000)])
    assert np.abs(Rs @ Rs.transpose(0, 2, 1) - np.eye(3)).max() < 1e-12
    assert np.abs(np.linalg.det(Rs) - 1).max() < 1e-12
    assert stats.kstest(rotation_angle(torch.from_numpy(Rs)), haar_angle_cdf).pvalue > 1e-3
