"""Tests for equivlib.kl: gradients of the decomposition, smoothness, the KL fit and the bounds of Props. 2 and 3."""
import copy

import numpy as np
import pandas as pd
import pytest
import torch

from equivlib.config import ParameterError
from equivlib.groups import VectorAction, sample_haar
from equivlib.hessian import dense_spectrum, gradient, subset_loss
from equivlib.kl import (fit_kl, gradient_stats, lag_correlations, perturbations, prop2_bound, prop3_bound,
                         smoothness, term_gradients, trajectory)
from equivlib.tasks import FixedBatch

DT = torch.float64


def _mlp(seed=0, hidden=8):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)).double().eval()


class _Scale(torch.nn.Module):
    """``f(x) = a x``: exactly rotation-equivariant."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=DT))

    def forward(self, x):
        return self.a * x


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 3, dtype=DT, generator=g)
    y = torch.randn(4, 5, 3, dtype=DT, generator=g)
    return FixedBatch(x, y, None, {}, sample_haar(6, batch=4, generator=g), VectorAction())


def _f(model, batch, term, subset=None):
    return subset_loss(model, subset, batch.loss(term))


def test_gradients_of_the_two_terms_add_up_to_the_gradient_of_L(batch):
    model = _mlp()
    for subset in (None, "2"):
        g = term_gradients(model, batch, subset=subset)
        for term, key in (("L_mean", "grad_mean"), ("L_equiv", "grad_equiv")):
            f, flat = _f(model, batch, term, subset)
            assert g[term] == pytest.approx(f(flat.theta0).item(), rel=1e-13)
            assert torch.allclose(g[key], gradient(f, flat.theta0), rtol=1e-10, atol=1e-14)
        f, flat = _f(model, batch, "L", subset)
        ref = gradient(f, flat.theta0)
        assert g["names"] == flat.names and g["grad_equiv"].norm() > 1e-3 * ref.norm()  # not trivially zero
        assert (g["grad_mean"] + g["grad_equiv"] - ref).norm() <= 1e-10 * ref.norm()


def test_gradient_stats_are_consistent_and_leave_the_model_alone(batch):
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    s = gradient_stats(model, batch)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert s["L"] == pytest.approx(s["L_mean"] + s["L_equiv"], rel=1e-14)
    assert s["rel_error"] == pytest.approx(s["grad_equiv"] / s["grad_mean"], rel=1e-14)
    assert s["grad_ratio"] == pytest.approx(s["grad_equiv"] / s["grad_L"], rel=1e-14)
    assert -1 <= s["cosine"] <= 1 and s["cosine"] < 1 - 1e-6
    assert s["eps"] == pytest.approx(s["L_equiv"] / s["L_mean"]) and s["loss_ratio"] == pytest.approx(s["L_equiv"] / s["L"])
    assert s["required_M_equiv"] == pytest.approx(s["grad_equiv"] ** 2 / (2 * s["L_equiv"]))
    assert s["required_M_eps"] == pytest.approx(s["grad_eps"] ** 2 / (2 * s["eps"]))
    # a float32 model in train mode is measured on a float64 eval copy: same numbers up to float32 weights
    m32 = _mlp().float().train()
    s32 = gradient_stats(m32, batch)
    assert next(m32.parameters()).dtype == torch.float32 and m32.training
    assert s32["L"] == pytest.approx(s["L"], rel=1e-5) and s32["grad_equiv"] == pytest.approx(s["grad_equiv"], rel=1e-4)


def test_grad_eps_matches_finite_differences_of_eps(batch):
    model = _mlp(seed=3)
    g = term_gradients(model, batch)
    fe, flat = _f(model, batch, "L_equiv")
    fm, _ = _f(model, batch, "L_mean")
    eps = lambda t: (fe(t) / fm(t)).item()  # noqa: E731
    v = torch.randn(flat.n, dtype=DT, generator=torch.Generator().manual_seed(5))
    h = 1e-5
    fd = (eps(flat.theta0 + h * v) - eps(flat.theta0 - h * v)) / (2 * h)
    assert float(g["grad_eps"] @ v) == pytest.approx(fd, rel=1e-5)


def test_an_equivariant_model_has_no_equivariance_gradient(batch):
    s = gradient_stats(_Scale(), batch)
    assert s["L_mean"] > 0.1 and s["grad_mean"] > 1e-3
    assert s["L_equiv"] < 1e-25 * s["L"] and s["grad_ratio"] < 1e-12 and s["rel_error"] < 1e-12
    assert s["cosine"] == pytest.approx(1.0)
    assert np.isnan(s["required_M_equiv"]) and np.isnan(s["required_M_eps"])  # 0/0: documented as NaN


@pytest.mark.parametrize("term", ["L_equiv", "eps"])
def test_smoothness_is_the_top_eigenvalue_of_the_dense_hessian(batch, term):
    model = _mlp(seed=2)
    res = smoothness(model, batch, term=term, tol=1e-10)
    fe, flat = _f(model, batch, "L_equiv")
    fm, _ = _f(model, batch, "L_mean")
    f = fe if term == "L_equiv" else (lambda t: fe(t) / fm(t))
    top = dense_spectrum(f, flat.theta0)[0][-1].item()
    assert res["value"] == pytest.approx(top, rel=1e-6) and res["n_hvp"] > 0
    with pytest.raises(ParameterError, match="term"):
        smoothness(model, batch, term="L_eq")


def test_fit_kl_recovers_alpha_and_the_envelope():
    rng = np.random.default_rng(0)
    L = np.exp(rng.uniform(-6, 1, 60))
    u = rng.exponential(0.05, 60)
    u[17] = 0.0  # the envelope is attained here
    g = np.sqrt(0.3 * L**1.4 * (1 + u))
    fit = fit_kl(L, g)
    assert fit.n == 60 and fit.alpha_fit == pytest.approx(1.4, abs=0.02) and fit.slope_interval.contains(fit.alpha_fit)
    fixed = fit_kl(L, g, alpha=1.4)
    assert fixed.alpha == 1.4 and fixed.c == pytest.approx(0.3, rel=1e-12)
    assert np.all(g**2 >= fixed.c * L**fixed.alpha * (1 - 1e-12))
    assert fit_kl(L, np.sqrt(L**2.5)).alpha == np.nextafter(2.0, 0)  # clipped into [1, 2)
    assert fit_kl(L, np.sqrt(L**0.5)).alpha == 1.0


@pytest.mark.parametrize("call, match", [
    (lambda: fit_kl([1.0, 2.0], [1.0, 2.0]), "at least 3"),
    (lambda: fit_kl([1.0, 2.0, 3.0], [1.0, 2.0]), "differ in length"),
    (lambda: fit_kl([1.0, -2.0, 3.0], [1.0, 2.0, 3.0]), "L_mean must be positive"),
    (lambda: fit_kl([1.0, 2.0, 3.0], [1.0, np.nan, 3.0]), "non-finite"),
    (lambda: fit_kl([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), "constant"),
    (lambda: fit_kl([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], alpha=2.0), r"\[1, 2\)"),
    (lambda: prop3_bound(1.0, 1.0, 1.0, 0.0, 1.0), "c must be positive"),
    (lambda: prop3_bound(1.0, 1.0, -1.0, 1.0, 1.0), "M_equiv must be non-negative"),
    (lambda: prop3_bound(1.0, 1.0, 1.0, 1.0, 0.5), "alpha"),
    (lambda: prop2_bound(0.1, 1.0, 0.0, 1.0), "grad_mean must be positive"),
    (lambda: prop2_bound(0.1, 1.0, 1.0, -1.0), "M_eps must be non-negative"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_prop3_bound_holds_on_quadratics():
    # L_mean = ½θᵀAθ: ‖∇‖² = θᵀA²θ >= 2 λ_min(A) L_mean (c = 2 λ_min, α = 1); L_equiv = ½θᵀBθ: M = λ_max(B)
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.standard_normal((5, 5)))[0]
    A = Q @ np.diag([0.5, 1.0, 2.0, 3.0, 4.0]) @ Q.T
    C = rng.standard_normal((3, 5))
    B = 0.01 * C.T @ C
    theta = rng.standard_normal((500, 5))
    Lm, Le = 0.5 * np.einsum("ni,ij,nj->n", theta, A, theta), 0.5 * np.einsum("ni,ij,nj->n", theta, B, theta)
    rel = np.linalg.norm(theta @ B, axis=1) / np.linalg.norm(theta @ A, axis=1)
    bound = prop3_bound(Le, Lm, np.linalg.eigvalsh(B)[-1], 2 * np.linalg.eigvalsh(A)[0], 1.0)
    assert bound.shape == (500,) and np.all(rel <= bound * (1 + 1e-12))
    assert np.max(rel / bound) > 0.3  # not vacuous
    fit = fit_kl(Lm, np.linalg.norm(theta @ A, axis=1), alpha=1.0)
    assert fit.c >= 2 * 0.5 * (1 - 1e-12)  # the envelope lies above the worst case 2 λ_min


def test_bounds_with_the_pointwise_constants_are_tight_on_a_network(batch):
    # with c and M taken at the point itself Prop. 3 is an equality; Prop. 2 is the triangle inequality
    s = gradient_stats(_mlp(seed=4), batch)
    c = s["grad_mean"] ** 2 / s["L_mean"] ** 1.5
    p3 = prop3_bound(s["L_equiv"], s["L_mean"], s["required_M_equiv"], c, 1.5)
    assert float(p3) == pytest.approx(s["rel_error"], rel=1e-12)
    p2 = float(prop2_bound(s["eps"], s["L_mean"], s["grad_mean"], s["required_M_eps"]))
    assert s["rel_error"] <= p2 * (1 + 1e-12) and p2 == pytest.approx(s["eps"] + s["L_mean"] * s["grad_eps"] / s["grad_mean"])
    assert prop2_bound([0.0, 0.1], 1.0, 2.0, 0.5).shape == (2,)


def test_perturbations_rows_and_the_unperturbed_point(batch):
    model = _mlp(seed=5)
    before = copy.deepcopy(model.state_dict())
    df = perturbations(model, batch, radii=[0.01, 0.1], n_directions=3, seed=7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(df) == 1 + 2 * 3 and list(df.columns[:2]) == ["radius", "direction"]
    ref = gradient_stats(model, batch)
    row0 = df.iloc[0]
    assert row0["radius"] == 0 and row0["direction"] == -1
    assert all(row0[k] == pytest.approx(v, rel=1e-12) for k, v in ref.items())
    far = df[df.radius == 0.1]
    assert far["L"].std() > 0 and (far["direction"].tolist() == [0, 1, 2])
    # the same directions at every radius, reproducibly
    again = perturbations(model, batch, radii=[0.01, 0.1], n_directions=3, seed=7)
    pd.testing.assert_frame_equal(df, again)
    with pytest.raises(ParameterError, match="radii"):
        perturbations(model, batch, radii=[0.0], n_directions=1)


def test_trajectory_has_one_row_per_step(batch):
    models = {s: _mlp(seed=s) for s in (0, 10, 20)}
    df = trajectory(models.__getitem__, [0, 10, 20], batch, subset="2")
    assert df["step"].tolist() == [0, 10, 20] and df.columns[0] == "step"
    assert df.iloc[1]["grad_equiv"] == pytest.approx(gradient_stats(models[10], batch, subset="2")["grad_equiv"])


def test_lag_correlations_perfect_relation_and_too_few_pairs():
    rng = np.random.default_rng(3)
    x = np.exp(np.cumsum(rng.normal(0, 1, 12)))
    df = pd.DataFrame({"step": np.arange(12)[::-1], "loss_ratio": x[::-1], "grad_ratio": x[::-1] ** 0.5})
    out = lag_correlations(df, lags=(1, 2))
    assert out["r"].tolist() == pytest.approx([1.0, 1.0]) and out["n"].tolist() == [11, 10]
    assert (out["note"] == "").all()
    short = lag_correlations(df.iloc[:5], lags=(1, 2))
    assert short["n"].tolist() == [4, 3] and np.isnan(short["r"].iloc[1]) and "too few pairs" in short["note"].iloc[1]
    with pytest.raises(ParameterError, match="positive"):
        lag_correlations(df.assign(grad_ratio=0.0))
