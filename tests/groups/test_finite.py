"""Tests for equivlib.groups.finite: closure, the polyhedral groups, the 16-element subset, classes, S_n."""
from __future__ import annotations

import math

import pytest
import torch

from equivlib.groups import (
    GroupError,
    check_rotations,
    cube_group,
    cube_subset16,
    generate_group,
    icosahedral_group,
    octahedral_group,
    permutation_matrices,
    symmetric_group,
    tetrahedral_group,
)
from tests.groups.helpers import axis_rotation, member_distance, is_closed, assert_all_distinct, EYE, F64


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
    from equivlib.groups.finite import _axis_rotation  # 90° generators

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
