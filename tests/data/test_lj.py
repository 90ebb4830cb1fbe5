"""Tests for equivlib.data.lj: Lennard-Jones clusters with exactly equivariant forces."""
import math

import pytest
import torch

from equivlib.data import AtomsBatch, lennard_jones_clusters, lennard_jones_forces
from equivlib.groups import VectorAction
from equivlib.testing import assert_equivariant, assert_invariant, relative_error
from tests.conftest import random_rotations

F64 = torch.float64


@pytest.fixture(scope="module")
def batch() -> AtomsBatch:
    return lennard_jones_clusters(64, (4, 10), generator=torch.Generator().manual_seed(1))


def test_shapes_and_dtypes(batch):
    B, A = 64, 10
    assert batch.positions.shape == (B, A, 3) and batch.forces.shape == (B, A, 3)
    assert batch.mask.shape == (B, A) and batch.mask.dtype == torch.bool
    assert batch.energies.shape == (B,)
    assert batch.positions.dtype == batch.forces.dtype == batch.energies.dtype == torch.float64
    assert len(batch) == B
    n = batch.n_atoms
    assert n.min() >= 4 and n.max() <= 10 and n.unique().numel() > 3  # counts really vary
    # the mask is left-aligned: real atoms first
    assert torch.equal(batch.mask, torch.arange(A)[None] < n[:, None])


def test_forces_are_minus_gradient_of_energy(batch, tol):
    x = batch.positions.clone().requires_grad_(True)
    e, f = lennard_jones_forces(x, batch.mask, epsilon=0.7, sigma=1.1)
    (grad,) = torch.autograd.grad(e.sum(), x)
    assert relative_error(f.detach(), -grad) < tol(F64)
    assert f.abs().max() > 1.0  # forces are not trivially zero


def test_energy_matches_pairwise_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64) * 1.5
    e, _ = lennard_jones_forces(x, epsilon=2.0, sigma=0.9)
    for b in range(2):
        ref = 0.0
        for i in range(5):
            for j in range(i + 1, 5):
                r = (x[b, i] - x[b, j]).norm().item()
                ref += 4 * 2.0 * ((0.9 / r) ** 12 - (0.9 / r) ** 6)
        assert math.isclose(e[b].item(), ref, rel_tol=1e-12)


def test_forces_rotate_and_energies_invariant(batch, tol):
    x, m, R = batch.positions, batch.mask, random_rotations(3)
    assert_equivariant(lambda x, mask: lennard_jones_forces(x, mask)[1], x, R, VectorAction(),
                       extras={"mask": m}, tol=tol(F64))
    assert_invariant(lambda x, mask: lennard_jones_forces(x, mask)[0], x, R, VectorAction(),
                     extras={"mask": m}, tol=tol(F64))


def test_stored_targets_match_recomputation(batch):
    e, f = lennard_jones_forces(batch.positions, batch.mask)
    assert torch.allclose(f, batch.forces, rtol=0, atol=1e-12)
    assert torch.allclose(e, batch.energies, rtol=0, atol=1e-12)


def test_newton_third_law_and_centred(batch):
    scale = batch.forces.norm(dim=-1).max()
    assert batch.forces.sum(dim=1).abs().max() < 1e-10 * scale
    centroid = batch.positions.sum(1) / batch.n_atoms[:, None]
    assert centroid.abs().max() < 1e-12


def test_min_distance_respected():
    b = lennard_jones_clusters(300, (2, 12), generator=torch.Generator().manual_seed(5), min_distance=0.95)
    d = torch.cdist(b.positions, b.positions)
    pair = b.mask[:, :, None] & b.mask[:, None, :] & ~torch.eye(12, dtype=torch.bool)
    assert d[pair].min() >= 0.95 - 1e-12
    assert d[pair].min() < 1.0  # the constraint is active, not vacuous


def test_same_seed_identical_different_seed_differs():
    make = lambda s: lennard_jones_clusters(20, generator=torch.Generator().manual_seed(s))
    a, b, c = make(7), make(7), make(8)
    for name in ("positions", "forces", "mask", "energies"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.positions, c.positions)


def test_padded_atoms_zero_and_padding_irrelevant(batch):
    pad = ~batch.mask
    assert pad.any()
    assert (batch.positions[pad] == 0).all() and (batch.forces[pad] == 0).all()
    # put garbage at padded atoms: real forces/energies unchanged, padded forces still zero
    x = batch.positions.clone()
    x[pad] = torch.randn(int(pad.sum()), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    e, f = lennard_jones_forces(x, batch.mask)
    assert torch.equal(f[pad], torch.zeros_like(f[pad]))
    assert torch.allclose(f[batch.mask], batch.forces[batch.mask], rtol=0, atol=1e-12)
    assert torch.allclose(e, batch.energies, rtol=0, atol=1e-12)
    # ... whereas treating them as real changes everything
    _, f_all = lennard_jones_forces(x)
    assert not torch.allclose(f_all[batch.mask], batch.forces[batch.mask])


def test_fixed_atom_count_and_float32():
    b = lennard_jones_clusters(10, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    assert b.positions.shape == (10, 5, 3) and b.mask.all()
    assert b.positions.dtype == torch.float32 and b.forces.dtype == torch.float32
    e, f = lennard_jones_forces(b.positions, b.mask)
    assert f.dtype == torch.float32 and e.dtype == torch.float32


def test_relaxation_lowers_energy_and_forces():
    raw = lennard_jones_clusters(50, (6, 12), generator=torch.Generator().manual_seed(2))
    relaxed = lennard_jones_clusters(50, (6, 12), generator=torch.Generator().manual_seed(2), relax_steps=10)
    assert torch.equal(raw.mask, relaxed.mask)
    assert (relaxed.energies <= raw.energies + 1e-12).all()
    assert relaxed.forces.norm(dim=-1).mean() < raw.forces.norm(dim=-1).mean()


def test_generation_is_fast():
    import time

    t = time.perf_counter()
    b = lennard_jones_clusters(2000, 12, generator=torch.Generator().manual_seed(0))
    assert time.perf_counter() - t < 5.0
    assert len(b) == 2000


def test_batch_indexing_and_to(batch):
    sub = batch[3:7]
    assert isinstance(sub, AtomsBatch) and len(sub) == 4
    assert torch.equal(sub.positions, batch.positions[3:7])
    idx = torch.tensor([5, 0, 2])
    picked = batch[idx]
    assert torch.equal(picked.forces, batch.forces[idx]) and torch.equal(picked.mask, batch.mask[idx])
    one = batch[2]
    assert len(one) == 1 and torch.equal(one.energies, batch.energies[2:3])
    assert torch.equal(batch[-1].positions, batch.positions[-1:])
    f32 = batch.to(dtype=torch.float32)
    assert f32.positions.dtype == torch.float32 and f32.mask.dtype == torch.bool
    assert torch.equal(sub.n_atoms, batch.n_atoms[3:7])


def test_bad_inputs_raise():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="at least 2"):
        lennard_jones_clusters(4, 1, generator=g)
    with pytest.raises(ValueError, match="min <= max"):
        lennard_jones_clusters(4, (8, 5), generator=g)
    with pytest.raises(ValueError, match="n_clusters"):
        lennard_jones_clusters(0, generator=g)
    with pytest.raises(TypeError, match="generator"):
        lennard_jones_clusters(4, generator=0)
    with pytest.raises(RuntimeError, match="could not place"):
        lennard_jones_clusters(2, 40, generator=g, density=5.0, max_tries=20)
    with pytest.raises(ValueError, match=r"\(B, A, 3\)"):
        lennard_jones_forces(torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, A, 3\)"):
        lennard_jones_forces(torch.zeros(2, 5, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, A\)"):
        lennard_jones_forces(torch.zeros(2, 5, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        lennard_jones_forces(torch.zeros(2, 5, 3), torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"forces must have shape"):
        AtomsBatch(torch.zeros(2, 3, 3), torch.zeros(2, 4, 3), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2))
