"""Tests for equivlib.subspace: the equivariant parameter subspace of a regular-representation MLP."""
import pytest
import torch

from equivlib import subspace as sp
from equivlib.config import ParameterError
from equivlib.groups import tetrahedral_group

DT = torch.float64


@pytest.fixture(scope="module")
def setup():
    G = tetrahedral_group()
    torch.manual_seed(0)
    model = sp.RegularMLP(G, copies=1)
    data = sp.toy_data(6, 2, seed=0)
    return G, model, data["x"], data["y"]


def _act(model, g, params):
    """The group acting on parameters: W1 -> P_g^T W1 R_g, b1 -> P_g^T b1, W2 -> R_g^T W2 P_g."""
    P, R = model.P[g], model.R[g]
    return {"W1": P.T @ params["W1"] @ R, "b1": P.T @ params["b1"], "W2": R.T @ params["W2"] @ P}


def test_left_regular_is_a_permutation_representation(setup):
    G = setup[0]
    P = sp.left_regular(G)
    n = len(G)
    assert torch.equal(P.sum(1), torch.ones(n, n, dtype=DT)) and torch.equal(P.sum(2), torch.ones(n, n, dtype=DT))
    prod = torch.einsum("gij,hjk->ghik", G, G).reshape(-1, 3, 3)
    from equivlib.groups import element_indices
    idx = element_indices(G, prod).reshape(n, n)
    for g in range(n):
        for h in range(0, n, 5):
            assert torch.equal(P[g] @ P[h], P[idx[g, h]])


def test_projection_is_orthogonal_idempotent_and_gives_an_equivariant_network(setup):
    G, model, x, y = setup
    Pi = sp.projection_matrix(model)
    assert torch.allclose(Pi @ Pi, Pi, atol=1e-12) and torch.allclose(Pi, Pi.T, atol=1e-12)
    assert round(float(torch.trace(Pi))) == 7  # Hom(R3, reg) 3 + invariant bias 1 + Hom(reg, R3) 3, one copy
    thE = sp._flat(sp.project(model))
    L_E = sp._equiv_loss(model, x, y)(thE)
    L = sp._equiv_loss(model, x, y)(sp._flat(sp._params(model)))
    assert float(L_E) <= 1e-12 * float(L)


def test_projection_commutes_with_the_group_action(setup):
    G, model, _, _ = setup
    params = {k: getattr(model, k).detach() for k in ("W1", "b1", "W2")}
    thE = sp.project(model)
    for g in (1, 5, 11):
        for k, v in sp.project(model, _act(model, g, params)).items():  # Π(g·θ) = Π(θ) ...
            assert torch.allclose(v, thE[k], atol=1e-12)
        for k, v in _act(model, g, thE).items():  # ... = g·Π(θ)
            assert torch.allclose(v, thE[k], atol=1e-12)


def test_quadratic_law_near_E_and_linear_gradient(setup):
    G, model, x, y = setup
    df, fits = sp.path_study(model, x, y, [1e-3, 3e-3, 1e-2, 3e-2])
    assert fits["L_equiv"].estimate == pytest.approx(2.0, abs=0.02)
    assert fits["grad"].estimate == pytest.approx(1.0, abs=0.02)
    h = sp.perp_hessian(model, x, y)
    assert h["dim_E"] == 7 and h["dim_perp"] == 84 - 7 and h["on_E"] < 1e-10
    assert 0 <= h["lambda_min"] <= h["lambda_max"]
    # the constants bracket L_equiv / dist² near E
    q = (df["L_equiv"] / df["dist"] ** 2).iloc[0]
    assert h["lambda_min"] * (1 - 1e-2) <= q <= h["lambda_max"] * (1 + 1e-2)


def test_training_and_bad_input(setup):
    G = setup[0]
    torch.manual_seed(1)
    m = sp.RegularMLP(G, copies=1)
    data = sp.toy_data(32, 2, seed=1)
    log = sp.train_regular_mlp(m, data, steps=30, batch_size=8, lr=1e-2)
    assert len(log) == 30 and log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean()
    with pytest.raises(ParameterError, match="rotation matrices"):
        sp.RegularMLP(torch.eye(2)[None])
    with pytest.raises(ParameterError, match="copies"):
        sp.RegularMLP(G, copies=0)
    with pytest.raises(ParameterError, match="three positive"):
        sp.path_study(m, data["x"], data["y"], [0.1, 1.0])
