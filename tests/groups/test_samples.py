"""Tests for equivlib.groups.samples: group samples and the design property of turned finite groups."""
from __future__ import annotations


import pytest
import torch

from equivlib.groups import (
    GroupError,
    GroupSample,
    check_rotations,
    cube_group,
    exhaustive,
    haar_so3,
    icosahedral_group,
    sample_design,
    sample_finite,
    sample_haar,
    sample_sobol,
    symmetric_group,
    tetrahedral_group,
)
from tests.groups.helpers import member_distance, F64


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


def test_sobol_blocks_are_haar_rotations_spread_evenly(generator):
    s = sample_sobol(16, 3, batch=2, generator=generator)
    assert s.elements.shape == (3, 16, 2, 3, 3) and s.scheme == "design" and s.n_elements == 48
    check_rotations(s.elements, atol=1e-12)
    again = sample_sobol(16, 3, batch=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.elements, sample_sobol(16, 3, batch=2, generator=torch.Generator().manual_seed(0)).elements)
    # every element is Haar: over many scrambles, E R = 0 and E R_ij^2 = 1/3 (degrees 1 and 2 of the Haar moments)
    many = sample_sobol(8, 1, batch=4000, generator=generator).elements[0]  # (8, 4000, 3, 3)
    for i in (0, 5):  # two positions in the net
        R = many[i]
        se = R.std(0) / 4000 ** 0.5
        assert ((R.mean(0)).abs() < 4 * se).all()
        assert ((R**2).mean(0) - 1 / 3).abs().max() < 4 * (R**2).std(0).max() / 4000 ** 0.5
    # evenness: the net's mean rotation (a degree-1 integral, exactly 0 under Haar) is far closer to 0 than the
    # mean of as many independent rotations, whose expected squared norm is 3 / m
    net = many.mean(0).pow(2).sum((-1, -2)).mean()
    assert net < 0.7 * 3 / 8, float(net)  # measured: about 0.53 of it (the map is not smooth at the faces)
    with pytest.raises(GroupError, match="power of two"):
        sample_sobol(12)
    with pytest.raises(GroupError, match="n_blocks"):
        sample_sobol(8, 0)


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
