"""Tests for equivlib.testing: the equivariance assertions shipped to users."""
import numpy as np
import pytest
import torch

from equivlib.data import lennard_jones_clusters, lennard_jones_forces
from equivlib.groups import (IrrepsAction, PermutationAction, VectorAction, VoxelAction, cube_group, exhaustive,
                             sample_haar, symmetric_group)
from equivlib.testing import assert_equivariant, assert_invariant, equivariance_errors, relative_error

F64 = torch.float64


@pytest.fixture(scope="module")
def clusters():
    return lennard_jones_clusters(5, (4, 7), generator=torch.Generator().manual_seed(0))


def lj_forces(x, mask=None):
    return lennard_jones_forces(x, mask)[1]


def lj_energies(x, mask=None):
    return lennard_jones_forces(x, mask)[0]


def test_relative_error():
    b = torch.tensor([3.0, 4.0], dtype=F64)
    assert relative_error(b, b) == 0.0
    assert relative_error(b + torch.tensor([0.0, 0.5], dtype=F64), b) == pytest.approx(0.1, rel=1e-15)
    assert relative_error(np.array([3.0, 4.5]), [3.0, 4.0]) == pytest.approx(0.1, rel=1e-15)  # array_like
    assert relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
    assert relative_error(torch.ones(2), torch.zeros(2)) == float("inf")
    # float32 inputs are compared in float64
    assert relative_error(torch.tensor([1.0 + 2**-20]), torch.tensor([1.0])) == 2**-20
    with pytest.raises(ValueError, match="same shape"):
        relative_error(torch.zeros(2), torch.zeros(1, 2))


def test_exactly_equivariant_forces_pass(clusters, generator, tol):
    x, m = clusters.positions, clusters.mask
    sample = sample_haar(6, batch=len(x), generator=generator)
    err = assert_equivariant(lj_forces, x, sample, VectorAction(), extras={"mask": m}, mask=m, tol=tol(F64))
    assert 0 <= err < tol(F64)
    assert assert_invariant(lj_energies, x, sample, VectorAction(), extras={"mask": m}) < tol(F64)
    errs = equivariance_errors(lj_forces, x, sample, VectorAction(), extras={"mask": m})
    assert errs.shape == (6,) and errs.dtype == F64 and errs.max() < tol(F64)


def test_non_equivariant_function_fails_with_the_worst_element(clusters, generator, tol):
    x, m = clusters.positions, clusters.mask
    scale = torch.tensor([1.0, 1.0, 1.5], dtype=F64)  # anisotropic: not rotation-equivariant

    def squashed(x, mask=None):
        return lj_forces(x, mask) * scale

    sample = sample_haar(5, batch=len(x), generator=generator)
    errs = equivariance_errors(squashed, x, sample, VectorAction(), extras={"mask": m})
    worst = int(errs.argmax())
    with pytest.raises(AssertionError, match=rf"not equivariant: max relative error {float(errs[worst]):.3g} > "
                                             rf"tol 1e-10, at group element {worst} of 5 \(worst data sample \d: "):
        assert_equivariant(squashed, x, sample, VectorAction(), extras={"mask": m}, tol=tol(F64))
    with pytest.raises(AssertionError, match="not invariant"):
        assert_invariant(lambda x, mask=None: x.sum(1), x, sample, VectorAction(), extras={"mask": m})


def test_identity_element_passes_a_non_equivariant_function(clusters):
    x = clusters.positions
    shift = torch.tensor([0.3, -0.2, 0.1], dtype=F64)  # g⁻¹(g x + c) = x + g⁻¹c: wrong unless g c = c
    errs = equivariance_errors(lambda x: x + shift, x, cube_group()[:4], VectorAction())
    assert errs[0] == 0.0 and errs[1:].min() > 1e-2  # cube_group() starts with the identity


def test_mask_ignores_padded_outputs(clusters, generator):
    x, m = clusters.positions, clusters.mask
    assert (~m).any()

    def garbage_at_padding(x, mask):
        return torch.where(mask[..., None], lj_forces(x, mask), x + 1.0)

    sample = sample_haar(3, batch=len(x), generator=generator)
    assert_equivariant(garbage_at_padding, x, sample, VectorAction(), extras={"mask": m}, mask=m)
    with pytest.raises(AssertionError):
        assert_equivariant(garbage_at_padding, x, sample, VectorAction(), extras={"mask": m})
    with pytest.raises(ValueError, match="leading shape"):
        assert_equivariant(garbage_at_padding, x, sample, VectorAction(), extras={"mask": m}, mask=m[:, :2])


def test_float32_module_is_checked_in_float64_and_left_alone():
    class Radial(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.3))  # float32

        def forward(self, x):
            return x * torch.tanh(self.w * (x * x).sum(-1, keepdim=True))

    model = Radial()
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0))  # float32 input, cast to float64
    assert assert_equivariant(model, x, sample_haar(4, batch=4), VectorAction()) < 1e-13  # float32 would give ~1e-7
    assert model.w.dtype == torch.float32 and model.training
    with pytest.raises(TypeError, match="float64"):
        assert_equivariant(lambda x: x.float(), x, sample_haar(2), VectorAction())


def test_voxels_with_the_cube_group_as_a_tensor(generator):
    x = torch.rand(2, 3, 6, 6, 6, generator=generator, dtype=F64)
    assert_equivariant(lambda v: torch.tanh(3 * v) ** 2, x, cube_group(), VoxelAction())
    assert_equivariant(lambda v: v.mean(1, keepdim=True).expand_as(v), x, exhaustive(cube_group()), VoxelAction())
    with pytest.raises(AssertionError, match=r"of 24 .*element = \[\["):
        assert_equivariant(lambda v: torch.roll(v, 1, dims=-1), x, cube_group(), VoxelAction())


def test_permutations_and_irreps(generator):
    x = torch.randn(3, 4, 2, generator=generator, dtype=F64)
    perms = symmetric_group(4)
    deep_sets = lambda x: x - x.mean(1, keepdim=True) ** 2  # noqa: E731
    assert_equivariant(deep_sets, x, perms, PermutationAction(4))
    assert_invariant(lambda x: x.sum(1), x, perms, PermutationAction(4))
    with pytest.raises(AssertionError, match="of 24"):
        assert_equivariant(lambda x: x.cumsum(1), x, perms, PermutationAction(4))
    # 1x0e+1x1o: a scalar times the vector is equivariant, the vector's norm invariant
    f = torch.randn(3, 4, generator=generator, dtype=F64)
    act = IrrepsAction("1x0e+1x1o")
    s = sample_haar(5, batch=3, generator=generator)
    assert_equivariant(lambda f: f * f[..., :1], f, s, act)
    assert_invariant(lambda f: f[..., 1:].norm(dim=-1), f, s, act)
    with pytest.raises(AssertionError):
        assert_equivariant(lambda f: f * f[..., 1:2], f, s, act)  # scaled by a vector component
