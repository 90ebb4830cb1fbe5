"""Tests for equivlib.latents: latent-similarity probes (and the U-Net bottleneck under the cube group)."""
import pytest
import torch

import equivlib as eq
from equivlib.groups import GroupError
from equivlib.latents import latent_similarity, pairwise_cosines
from equivlib.models import UNet3D
from tests.conftest import random_rotation

F64 = torch.float64
TOL = 1e-12  # float64: exact identities (not symmetries) up to rounding


def points(B=4, L=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, 3, generator=g, dtype=F64)


def test_pairwise_cosines_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=F64)
    c = pairwise_cosines(z)
    assert torch.allclose(c, torch.tensor([0.0, 2 ** -0.5, 2 ** -0.5], dtype=F64), atol=TOL)
    with pytest.raises(ValueError, match="two latent"):
        pairwise_cosines(z[:1])


def test_exactly_invariant_and_equivariant_encoders_score_one(tol):
    x = points()
    Rs = torch.stack([random_rotation(s) for s in range(5)])
    inv = latent_similarity(lambda v: v.norm(dim=-1), x, Rs, eq.VectorAction())  # distances to the origin
    assert inv.same.shape == (5, 4) and (inv.same - 1).abs().max() < tol(F64)
    equi = latent_similarity(lambda v: 2 * v, x, Rs, eq.VectorAction(), eq.VectorAction())
    assert (equi.same - 1).abs().max() < tol(F64)
    s = equi.summary()
    assert s["median_same"] == pytest.approx(1.0, abs=tol(F64)) and s["auroc"] == pytest.approx(1.0)
    # an equivariant latent is not invariant: testing invariance must see the difference
    not_inv = latent_similarity(lambda v: 2 * v, x, Rs, eq.VectorAction())
    assert not_inv.same.max() < 1 - 1e-3
    t = equi.table()
    assert set(t["kind"]) == {"same", "different"} and len(t) == 5 * 4 + 6


def test_matches_a_direct_loop():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 5, dtype=F64), torch.nn.Tanh())
    x = points(B=3)
    Rs = torch.stack([random_rotation(s) for s in range(2)])
    with torch.no_grad():
        sim = latent_similarity(lambda v: net(v), x, Rs, eq.VectorAction())
    for g in range(2):
        for b in range(3):
            with torch.no_grad():
                ref = torch.nn.functional.cosine_similarity(net(x[b] @ Rs[g].T).flatten(), net(x[b]).flatten(), dim=0)
            assert float(sim.same[g, b]) == pytest.approx(float(ref), abs=TOL)


def test_mask_zeroes_padding_and_centering(tol):
    x = points(B=3)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    Rs = random_rotation(1)[None]

    def encode(v):  # garbage at padded positions must not count (one element: v has the 3 samples)
        return torch.where(mask[:, :, None], v, 1e6)

    sim = latent_similarity(encode, x, Rs, eq.VectorAction(), eq.VectorAction(), mask=mask)
    assert (sim.same - 1).abs().max() < tol(F64)
    c = latent_similarity(lambda v: v + 100.0, x, Rs, eq.VectorAction(), center=True)
    raw = latent_similarity(lambda v: v + 100.0, x, Rs, eq.VectorAction())
    assert raw.different.min() > 0.99 and c.different.max() < 0.99  # the shared offset no longer dominates


def test_bad_inputs():
    x = points()
    with pytest.raises(GroupError, match="elements"):
        latent_similarity(lambda v: v, x, torch.eye(3, dtype=F64), eq.VectorAction())
    with pytest.raises(ValueError, match="two samples"):
        latent_similarity(lambda v: v, x[:1], torch.eye(3, dtype=F64)[None], eq.VectorAction())
    with pytest.raises(ValueError, match="labels"):
        latent_similarity(lambda v: v, x, torch.eye(3, dtype=F64)[None], eq.VectorAction(), labels=["a", "b"])


def test_unet_bottleneck_under_the_cube_group(tol):
    torch.manual_seed(0)
    model = UNet3D(in_channels=2, base_channels=4, levels=2, dtype=F64).eval()
    x = torch.randn(3, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1), dtype=F64)
    G = eq.cube_group(dtype=F64)
    with torch.no_grad():
        sim = latent_similarity(model.bottleneck, x, G, eq.VoxelAction(), eq.VoxelAction())
    assert sim.same.shape == (24, 3) and sim.different.shape == (3,)
    ident = int(torch.nonzero((G - torch.eye(3, dtype=F64)).abs().sum((1, 2)) < TOL)[0])
    assert (sim.same[ident] - 1).abs().max() < tol(F64)  # the identity rotation
    others = torch.ones(24, dtype=torch.bool)
    others[ident] = False
    assert sim.same[others].max() < 1 - 1e-6  # a random U-Net is not equivariant


def test_latent_study_concatenates_probes():
    from equivlib.latents import latent_similarity, latent_study

    x = points()
    R = torch.stack([random_rotation(s) for s in (1, 2)])
    norms = lambda v: v.norm(dim=-1)  # noqa: E731 - invariant
    coords = lambda v: v  # noqa: E731 - equivariant
    table, summ = latent_study({("a", "inv"): (norms, None), ("a", "eq"): (coords, eq.VectorAction())}, x, R,
                               eq.VectorAction())
    assert set(summ) == {("a", "inv"), ("a", "eq")}
    assert {"when", "probe"} <= set(table.columns) and set(table["probe"]) == {"inv", "eq"}
    direct = latent_similarity(norms, x, R, eq.VectorAction()).summary()
    assert summ[("a", "inv")] == direct
    assert summ[("a", "eq")]["min_same"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="one entry per key name"):
        latent_study({("a",): (norms, None)}, x, R, eq.VectorAction())
    with pytest.raises(ValueError, match="at least one"):
        latent_study({}, x, R, eq.VectorAction())
