"""Tests for equivlib.models.escaip: the EScAIP-style force field (invariant trunk, linear
direction head), its head projection onto the equivariant subspace and Theorem 4's structure."""
import math

import pytest
import torch

from equivlib.groups import VectorAction
from equivlib.models import EScAIPForceField
from equivlib.testing import assert_equivariant, equivariance_errors
from tests.conftest import random_rotations
from tests.models.conftest import A, B

F64 = torch.float64
NOT_EQUIV = 1e-2  # a random non-equivariant model is off by O(1)


def escaip(dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d_model=16, n_layers=2, n_heads=2, n_rbf=8, r_max=3.0, n_species=10, avg_neighbors=4.0)
    cfg.update(kw)
    return EScAIPForceField(**cfg, dtype=dtype)


def test_escaip_shapes_padding_and_defaults(atoms):
    pos, mask, species = atoms
    model = escaip()
    out = model(pos, mask, species)
    assert out.shape == (B, A, 3) and out.dtype == F64
    assert torch.isfinite(out).all()
    assert (out[~mask] == 0).all()
    assert (out[3] == 0).all()  # isolated atom: no edges, no force
    assert out[0].abs().sum() > 0
    # Garbage (huge, NaN) coordinates and species at padded atoms change nothing.
    pos2, species2 = pos.clone(), species.clone()
    pos2[1, 5:] = torch.tensor([1e3, float("nan"), -2.0], dtype=F64)
    pos2[2, 7] = 0.1  # would be a close neighbour if it were real
    species2[~mask] = 99
    assert torch.equal(model(pos2, mask, species2), out)
    # Defaults: float32, mask and species optional, small.
    default = EScAIPForceField()
    assert default.head.dtype == torch.float32
    assert sum(p.numel() for p in default.parameters()) <= 100_000
    assert default(pos.float()).shape == (B, A, 3)


def test_escaip_bad_inputs(atoms):
    pos, mask, species = atoms
    model = escaip()
    with pytest.raises(ValueError, match=r"\(B, A, 3\)"):
        model(pos[..., :2], mask, species)
    with pytest.raises(ValueError, match=r"species"):
        model(pos, mask, species[:, :3])
    with pytest.raises(ValueError, match=r"n_species"):
        model(pos, mask, torch.full_like(species, 10))
    with pytest.raises(ValueError, match=r"must divide"):
        EScAIPForceField(d_model=10, n_heads=4)


def test_escaip_edge_features_invariant(atoms, tol):
    pos, mask, species = atoms
    model = escaip()
    R = random_rotations(B, seed=1)  # one rotation per molecule
    shift = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    h, unit, edge = model.edge_features(pos, mask, species)
    h2, unit2, edge2 = model.edge_features(VectorAction().apply(R[None], pos)[0] + shift, mask, species)
    assert h.shape == (B, A, A, 16) and unit.shape == (B, A, A, 3)
    assert torch.equal(edge, edge2)
    assert 0 < edge.sum() < edge[0].numel() * B  # some pairs beyond r_max, some within
    assert (h[~edge] == 0).all() and h[edge].abs().amax() > 0
    assert (h - h2).abs().amax() < tol(F64)
    # the edge vectors themselves rotate with the molecule
    assert (unit2 - torch.einsum("bij,bxyj->bxyi", R, unit)).abs().amax() < tol(F64)
    # forces are sum_j unit_ij * (h_ij @ W)
    manual = torch.einsum("bijk,bijd,dk->bik", unit, h, model.head)
    assert torch.allclose(model(pos, mask, species), manual, rtol=0, atol=1e-13)


def test_escaip_equivariant_iff_projected(atoms, tol):
    pos, mask, species = atoms
    model = escaip()
    R, extras = random_rotations(3, seed=2), {"mask": mask, "species": species}
    with torch.no_grad():
        err_before = float(equivariance_errors(model, pos, R, VectorAction(), extras=extras).min())
        dev_before = float(model.head_deviation())
        W = model.head_weights()
        assert W.shape == (16, 3)
        assert math.isclose(dev_before, float((W - W.mean(1, keepdim=True)).norm()), rel_tol=1e-12)
        assert err_before > NOT_EQUIV and dev_before > 0.1
        model.project_head_()
        W_E = model.head_weights()
        assert torch.allclose(W_E, W.mean(1, keepdim=True).expand(16, 3), rtol=0, atol=1e-15)
        assert float(model.head_deviation()) == 0.0
    assert_equivariant(model, pos, R, VectorAction(), extras=extras, tol=tol(F64))
    # head_weights is a copy: editing it leaves the model alone
    W_E[0, 0] += 1.0
    assert float(model.head_deviation()) == 0.0


def test_escaip_output_linear_in_head_deviation(atoms):
    """o(W) = o(W_E) + o_Δ(W - W_E) with o_Δ linear: the structure behind Theorem 4."""
    pos, mask, species = atoms
    model = escaip()
    W = model.head_weights()
    with torch.no_grad():
        full = model(pos, mask, species)
        model.head.copy_(W - W.mean(1, keepdim=True))
        delta = model(pos, mask, species)
        model.head.mul_(2.0)
        delta2 = model(pos, mask, species)
        model.project_head_()  # projection of a deviation is 0 (to rounding)
        assert model(pos, mask, species).abs().amax() < 1e-15
        model.head.copy_(W)
        model.project_head_()
        equiv = model(pos, mask, species)
    assert torch.allclose(full, equiv + delta, atol=1e-13, rtol=0)
    assert torch.allclose(delta2, 2 * delta, atol=1e-13, rtol=0)


def test_escaip_permutation_and_smooth_cutoff(atoms, tol):
    pos, mask, species = atoms
    model = escaip()
    perm = torch.randperm(A, generator=torch.Generator().manual_seed(3))
    out = model(pos[:1], mask[:1], species[:1])
    out_p = model(pos[:1, perm], mask[:1, perm], species[:1, perm])
    assert (out_p - out[:, perm]).abs().amax() < tol(F64)
    # Two atoms crossing r_max: forces go continuously to zero.
    two = lambda r: model(torch.tensor([[[0.0, 0, 0], [r, 0, 0]]], dtype=F64))  # noqa: E731
    assert two(3.0 - 1e-6).abs().amax() < 1e-9 < two(2.5).abs().amax()
    assert (two(3.0 + 1e-6) == 0).all()


def test_escaip_gradients_and_seed(atoms):
    pos, mask, species = atoms
    a, b, c = escaip(torch.float32, seed=5), escaip(torch.float32, seed=5), escaip(torch.float32, seed=6)
    out = a(pos.float(), mask, species)
    assert torch.equal(out, b(pos.float(), mask, species))
    assert not torch.equal(out, c(pos.float(), mask, species))
    p = pos.clone().requires_grad_(True)
    model = escaip()
    (model(p, mask, species) ** 2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert torch.isfinite(p.grad).all() and (p.grad[~mask] == 0).all()
    # head_deviation is differentiable (usable as a penalty)
    model.zero_grad()
    assert not model.head_deviation().requires_grad
    model.head_deviation(grad=True).backward()
    assert model.head.grad.abs().sum() > 0
