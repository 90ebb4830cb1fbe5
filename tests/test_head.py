"""Tests for equivlib.head: the EScAIP-style force head, its equivariant subspace and the quadratic form of L_equiv."""
import copy

import pytest
import torch

from equivlib import head as hd
from equivlib.config import ParameterError
from equivlib.groups import VectorAction, sample_haar
from equivlib.models import EScAIPForceField
from equivlib.tasks import FixedBatch

DT = torch.float64


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = EScAIPForceField(d_model=8, n_layers=1, n_heads=2, n_rbf=6, dtype=DT).eval()
    g = torch.Generator().manual_seed(3)
    B, A = 3, 5
    x = torch.randn(B, A, 3, dtype=DT, generator=g) * 1.5
    mask = torch.ones(B, A, dtype=torch.bool)
    mask[1, -1] = False
    x[1, -1] = 0.0
    species = torch.randint(1, 9, (B, A), generator=g)
    y = torch.randn(B, A, 3, dtype=DT, generator=g)
    batch = FixedBatch(x, y, mask, {"mask": mask, "species": species}, sample_haar(6, batch=B, generator=g),
                       VectorAction())
    return model, batch


def test_split_is_an_orthogonal_idempotent_projection():
    W = torch.randn(7, 3, dtype=DT)
    WE, Wp = hd.split_head(W)
    assert torch.allclose(WE + Wp, W) and torch.allclose(hd.split_head(WE)[0], WE)
    assert abs(float((WE * Wp).sum())) < 1e-12
    P = hd.perp_basis(7)
    assert torch.allclose(P.T @ P, torch.eye(14, dtype=DT), atol=1e-14)
    assert torch.allclose(P @ (P.T @ Wp.reshape(-1)), Wp.reshape(-1), atol=1e-14)  # E⊥ is P's span
    with pytest.raises(ParameterError, match=r"\(d, 3\)"):
        hd.split_head(torch.zeros(4, 2))


def test_quadratic_form_equals_the_decomposition_and_vanishes_on_E(setup):
    model, batch = setup
    form = hd.head_form(model, batch)
    assert torch.allclose(form.Q, form.Q.T) and torch.linalg.eigvalsh(form.Q).min() > -1e-14
    assert form.on_E < 1e-12
    pt = hd.head_point(model, batch, form=form)
    assert pt["quad"] == pytest.approx(pt["L_equiv"], rel=1e-10)
    assert pt["lower"] <= pt["L_equiv"] <= pt["upper"]
    assert pt["grad_lower"] * (1 - 1e-9) <= pt["grad"] <= pt["grad_upper"] * (1 + 1e-9)
    projected = hd.split_head(model.head.detach())[0]
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.head.copy_(projected)
    assert batch.terms(m)["L_equiv"] < 1e-12 * batch.terms(model)["L_equiv"]  # W_E is exactly equivariant


def test_random_heads_stay_inside_the_bounds(setup):
    model, batch = setup
    pert = hd.head_perturbations(model, batch, n=5, scales=(0.5, 5.0), seed=1)
    assert len(pert) == 10 and pert["inside"].all()
    assert ((pert["quad"] - pert["L_equiv"]).abs() <= 1e-10 * pert["L_equiv"]).all()


def test_tilted_trunk_is_refused_and_breaks_the_identity(setup):
    model, batch = setup
    tilted = hd.TiltedTrunk(model, 0.3)
    with pytest.raises(ParameterError, match="not rotation-invariant"):
        hd.head_form(tilted, batch)
    form = hd.head_form(tilted, batch, check_invariance=False)
    pt = hd.head_point(tilted, batch, form=form, check_invariance=False)
    assert pt["quad_full"] == pytest.approx(pt["L_equiv"], rel=1e-10)  # still a quadratic form in W
    assert form.on_E > 1e-3 and abs(pt["quad"] - pt["L_equiv"]) > 1e-6 * pt["L_equiv"]


def test_lambda_min_needs_enough_molecules(setup):
    model, batch = setup

    class _T:
        def fixed_batch(self, n, n_elements):
            return FixedBatch(batch.x[:n], batch.y[:n], batch.mask[:n], {k: v[:n] for k, v in batch.extras.items()},
                              sample_haar(n_elements, batch=n, generator=torch.Generator().manual_seed(n)),
                              VectorAction())

    lam = hd.lambda_vs_samples(model, _T(), [1, 3], 6)
    assert list(lam["molecules"]) == [1, 3] and (lam["lambda_max"] > 0).all()
    assert (lam["lambda_min"] >= -1e-12 * lam["lambda_max"]).all()  # positive semi-definite up to rounding


def test_bad_models_are_named():
    class _NoHead(torch.nn.Module):
        def forward(self, x):
            return x

    class _LinearHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 3)

        def edge_features(self, *a):
            raise AssertionError

    for bad in (_NoHead(), _LinearHead()):
        with pytest.raises(ParameterError, match="EScAIP-style model"):
            hd.split_head(hd._check_model(bad))
