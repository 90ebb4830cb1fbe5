"""Tests for equivlib.hessian: gradients, dense Hessians, Newton steps and curvature step sizes."""
import copy

import numpy as np
import pytest
import torch

from equivlib import hidden
from equivlib.config import ParameterError
from equivlib.groups import VectorAction, sample_haar
from equivlib.hessian import (condition_number, curvature_step_size, dense_spectrum, gradient, hessian, hvp,
                              lanczos_extremes, min_hessian_eigenvalue, newton_minimize, select_parameters,
                              subset_loss, top_ratio)
from equivlib.twirl import decompose, decomposition_loss, twisted_predictions

DT = torch.float64


def _smooth(p):
    """A non-quadratic test function of a (2, 3) tensor with a known gradient and Hessian."""
    return (p.sin() * p.flip(-1)).sum() + 0.5 * (p * p).sum() ** 2


def test_gradient_and_hessian_match_closed_forms(generator, tol):
    A = torch.randn(4, 4, generator=generator, dtype=DT)
    A = A + A.T
    b = torch.randn(4, generator=generator, dtype=DT)
    p = torch.randn(4, generator=generator, dtype=DT)
    f = lambda x: 0.5 * x @ A @ x + b @ x + x.exp().sum()
    assert torch.allclose(gradient(f, p), A @ p + b + p.exp(), atol=tol(DT))
    assert torch.allclose(hessian(f, p), A + torch.diag(p.exp()), atol=tol(DT))
    assert not p.requires_grad  # the input is left alone


def test_hessian_of_a_matrix_argument_matches_finite_differences(generator):
    p = torch.randn(2, 3, generator=generator, dtype=DT)
    H = hessian(_smooth, p)
    assert H.shape == (6, 6) and torch.allclose(H, H.T, atol=1e-12)
    eps = 1e-5
    E = torch.eye(6, dtype=DT).reshape(6, 2, 3)
    Hfd = torch.stack([(gradient(_smooth, p + eps * e) - gradient(_smooth, p - eps * e)).reshape(-1) / (2 * eps)
                       for e in E])
    assert (H - Hfd).abs().max() < 1e-7 * H.abs().max()


def test_hessian_at_teacher_matches_finite_differences():
    prob = hidden.make_problem(4, seed=0)
    W0 = prob.W_teacher
    H = hessian(prob.loss_W, W0)
    eps = 1e-5
    E = torch.eye(W0.numel(), dtype=DT)
    Hfd = torch.stack([(gradient(prob.loss_W, W0 + eps * e.reshape(W0.shape))
                        - gradient(prob.loss_W, W0 - eps * e.reshape(W0.shape))).reshape(-1) / (2 * eps) for e in E])
    assert (H - Hfd).abs().max() < 1e-4 * H.abs().max()
    assert torch.linalg.eigvalsh(H).min() > 0


def test_hessian_of_a_function_ignoring_an_entry_has_zero_rows():
    H = hessian(lambda x: x[0] ** 2 * x[1], torch.tensor([1.0, 2.0, 3.0], dtype=DT))
    assert torch.equal(H, torch.tensor([[4.0, 2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=DT))


def test_newton_is_saddle_free_and_min_eigenvalue_tells_saddles(tol):
    f = lambda q: q[0] ** 2 - q[1] ** 2 + 0.25 * q[1] ** 4  # saddle at 0, minima at (0, +-sqrt 2)
    saddle = torch.zeros(2, dtype=DT)
    assert min_hessian_eigenvalue(f, saddle) == pytest.approx(-2.0, abs=tol(DT))
    p = newton_minimize(f, torch.tensor([0.3, 0.01], dtype=DT))  # plain Newton would go to the saddle
    assert torch.allclose(p, torch.tensor([0.0, 2.0**0.5], dtype=DT), atol=tol(DT))
    assert gradient(f, p).norm() < 1e-12 and min_hessian_eigenvalue(f, p) > 0


def test_curvature_step_size_is_one_over_largest_eigenvalue(tol):
    A = torch.diag(torch.tensor([1.0, 4.0], dtype=DT))
    f = lambda x: 0.5 * x @ A @ x + 0.5 * x[0] ** 4  # curvature 1 + 6 x0^2 along x0
    pts = [torch.zeros(2, dtype=DT), torch.tensor([1.0, 0.0], dtype=DT)]
    assert curvature_step_size(f, pts[:1]) == pytest.approx(1 / 4, abs=tol(DT))
    assert curvature_step_size(f, pts) == pytest.approx(1 / 7, abs=tol(DT))
    with pytest.raises(ValueError, match="at least one point"):
        curvature_step_size(f, [])
    with pytest.raises(ValueError, match="no positive curvature"):
        curvature_step_size(lambda x: -(x * x).sum(), pts)


# --------------------------------------------------------------------------- large models: HVPs, Lanczos


class _Tiny(torch.nn.Module):
    """Per-atom MLP on raw coordinates: not equivariant, a few hundred parameters."""

    def __init__(self, hidden=12):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                                        torch.nn.Tanh())
        self.head = torch.nn.Linear(hidden, 3)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.double()

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def tiny_problem():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 3, dtype=torch.float64, generator=g)
    y = torch.randn(4, 5, 3, dtype=torch.float64, generator=g)
    sample = sample_haar(6, batch=4, generator=g)
    return _Tiny(), x, y, sample


def _term(problem, term, subset="head"):
    model, x, y, sample = problem
    return subset_loss(model, subset, decomposition_loss(term, x, y, sample, VectorAction()))


def test_select_parameters_by_module_name_parameter_name_and_tensor(tiny_problem):
    model = tiny_problem[0]
    assert list(select_parameters(model, "head")) == ["head.weight", "head.bias"]
    assert list(select_parameters(model, ["body.2", "head.bias"])) == ["body.2.weight", "body.2.bias", "head.bias"]
    assert list(select_parameters(model, [model.head.weight])) == ["head.weight"]
    assert len(select_parameters(model)) == 6
    with pytest.raises(ParameterError, match="no parameter or module named 'neck'.*body.0"):
        select_parameters(model, "neck")
    with pytest.raises(ParameterError, match="empty"):
        select_parameters(model, [])
    with pytest.raises(ParameterError, match="not parameters of the model"):
        select_parameters(model, [torch.zeros(3)])


def test_subset_loss_touches_only_the_selected_tensors(tiny_problem):
    model, x, y, sample = tiny_problem
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    f, flat = _term(tiny_problem, "L")
    assert flat.n == 12 * 3 + 3 and flat.names == ["head.weight", "head.bias"]
    full = decompose(twisted_predictions(model, x, sample, VectorAction()), y, sample, estimator="plugin")
    assert f(flat.theta0).item() == pytest.approx(full.L.mean().item(), rel=1e-14)
    theta = flat.theta0 + 0.1
    shifted = copy.deepcopy(model)
    with torch.no_grad():
        shifted.head.weight += 0.1
        shifted.head.bias += 0.1
    ref = decompose(twisted_predictions(shifted, x, sample, VectorAction()), y, sample, estimator="plugin")
    assert f(theta).item() == pytest.approx(ref.L.mean().item(), rel=1e-13)
    hvp(f, theta, torch.ones_like(theta))
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # the model is never modified


def test_hvp_matches_finite_differences_dense_and_forward_mode(tiny_problem, tol):
    f, flat = _term(tiny_problem, "L_equiv", subset=["body.2", "head"])
    theta = flat.theta0
    v = torch.randn(flat.n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hv = hvp(f, theta, v)
    eps = 1e-5
    fd = (gradient(f, theta + eps * v) - gradient(f, theta - eps * v)) / (2 * eps)
    assert torch.allclose(hv, fd, rtol=1e-6, atol=1e-8 * hv.abs().max().item())
    H = hessian(f, theta)
    assert torch.allclose(hv, H @ v, rtol=1e-10, atol=tol(torch.float64) * H.abs().max().item())
    assert torch.allclose(hvp(f, theta, v, mode="forward"), hv, rtol=1e-10, atol=1e-12)
    vals, vecs = dense_spectrum(f, theta, chunk=17)  # chunks that do not divide n
    assert torch.allclose(vals, torch.linalg.eigvalsh(0.5 * (H + H.T)), rtol=1e-10, atol=1e-12 * vals.abs().max().item())
    one_by_one, _ = dense_spectrum(f, theta, chunk=1)  # the path taken when a model's ops cannot be batched
    assert torch.allclose(one_by_one, vals, rtol=1e-10, atol=1e-12 * vals.abs().max().item())


def test_dense_spectrum_falls_back_to_one_product_at_a_time(monkeypatch):
    A = torch.tensor([[2.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 1.0]], dtype=torch.float64)
    f = lambda t: (t ** 3).sum() + 0.5 * t @ (A @ t)  # noqa: E731
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    real_grad, calls = torch.autograd.grad, {"batched": 0, "single": 0}

    def no_batching(*args, is_grads_batched=False, **kw):  # a model with an op that has no batching rule
        calls["batched" if is_grads_batched else "single"] += 1
        if is_grads_batched:
            raise RuntimeError("The size of tensor a (32) must match the size of tensor b (4)")
        return real_grad(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    vals, _ = dense_spectrum(f, theta, chunk=2)
    expected = torch.linalg.eigvalsh(A + torch.diag(6 * theta))
    assert vals.shape == (3,) and torch.allclose(vals, expected, rtol=1e-12, atol=1e-12)
    assert calls == {"batched": 1, "single": 1 + 3}  # the gradient, then one product per column


def test_hessians_of_the_three_terms_add_up(tiny_problem):
    # with a fixed sample and the plug-in estimator L = L_mean + L_equiv exactly, so their Hessians add up
    v = torch.randn(39, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    parts = {}
    for term in ("L", "L_mean", "L_equiv"):
        f, flat = _term(tiny_problem, term)
        parts[term] = hvp(f, flat.theta0, v)
    assert parts["L_equiv"].abs().max() > 1e-6  # not trivially zero
    assert torch.allclose(parts["L"], parts["L_mean"] + parts["L_equiv"], rtol=1e-10, atol=1e-12)


def test_lanczos_matches_eigh_on_a_known_spectrum():
    n = 300
    g = torch.Generator().manual_seed(4)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    lam = torch.cat([torch.tensor([50.0, 20.0, -3.0, -7.5], dtype=torch.float64),
                     torch.linspace(-1, 1, n - 4, dtype=torch.float64)])
    A = Q @ torch.diag(lam) @ Q.T
    f = lambda t: 0.5 * t @ (A @ t)  # noqa: E731
    res = lanczos_extremes(f, torch.zeros(n, dtype=torch.float64), k=2)
    assert np.allclose(res["largest"], [50.0, 20.0], rtol=1e-6)
    assert np.allclose(res["smallest"], [-7.5, -3.0], rtol=1e-6)
    top = Q[:, 0]
    assert abs(float(res["vectors_largest"][0] @ top)) == pytest.approx(1.0, abs=1e-6)
    assert 0 < res["n_hvp"] < n  # far fewer products than a dense Hessian


def test_lanczos_matches_the_dense_spectrum_of_a_model_subset(tiny_problem):
    f, flat = _term(tiny_problem, "L_equiv", subset=["body.2", "head"])
    vals, _ = dense_spectrum(f, flat.theta0)
    res = lanczos_extremes(f, flat.theta0, k=2)
    assert np.allclose(res["largest"], vals.flip(0)[:2].numpy(), rtol=1e-6)
    assert np.allclose(res["smallest"], vals[:2].numpy(), rtol=1e-6, atol=1e-9 * float(vals.abs().max()))
    shaped = flat.unflatten(res["vectors_largest"][0])
    assert shaped["head.weight"].shape == (3, 12) and shaped["body.2.bias"].shape == (12,)


def test_lanczos_that_does_not_converge_says_what_to_do():
    n = 400
    lam = torch.linspace(-1, 1, n, dtype=torch.float64) ** 3  # extremes with close neighbours: slow convergence
    f = lambda t: 0.5 * (lam * t * t).sum()  # noqa: E731
    with pytest.raises(RuntimeError, match="did not converge.*use dense_spectrum"):
        lanczos_extremes(f, torch.zeros(n, dtype=torch.float64), k=1, maxiter=1)


def test_condition_number_moves_with_the_cutoff_and_top_ratio_does_not_need_one():
    lam = [1e-12, 1e-7, 1e-3, 0.5, 1.0, -1e-9]
    assert condition_number(lam, cutoff=1e-10) == pytest.approx(1e7)
    assert condition_number(lam, cutoff=1e-6) == pytest.approx(1e3)
    assert top_ratio(lam, 2) == pytest.approx(2.0)
    with pytest.raises(ParameterError, match="positive"):
        condition_number([-1.0, 0.0])
    with pytest.raises(ParameterError, match="k must be"):
        top_ratio(lam, 1)


def test_bad_input_is_named(tiny_problem):
    model, x, y, sample = tiny_problem
    f, flat = subset_loss(model, "head", lambda m: (x ** 2).sum())  # does not depend on the head
    with pytest.raises(ParameterError, match="does not depend"):
        hvp(f, flat.theta0, torch.ones(flat.n, dtype=torch.float64))
    with pytest.raises(ParameterError, match="does not depend"):
        dense_spectrum(f, flat.theta0)
    with pytest.raises(ParameterError, match="shape"):
        hvp(*_term(tiny_problem, "L")[:1], flat.theta0, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ParameterError, match="term"):
        decomposition_loss("L_total", x, y, sample, VectorAction())
    with pytest.raises(ParameterError, match="mode"):
        hvp(lambda t: (t ** 3).sum(), torch.ones(2), torch.ones(2), mode="sideways")


def test_dense_hessian_is_symmetric_and_top_eigenvalue_matches_it(tiny_problem):
    from equivlib.hessian import dense_hessian, top_eigenvalue

    f, flat = _term(tiny_problem, "L_equiv", subset=["body.2", "head"])
    H = dense_hessian(f, flat.theta0)
    assert torch.equal(H, H.T)
    vals, _ = dense_spectrum(f, flat.theta0)
    assert torch.allclose(vals, torch.linalg.eigvalsh(H))
    top = top_eigenvalue(f, flat.theta0, tol=1e-10)
    assert top["value"] == pytest.approx(float(vals[-1]), rel=1e-8)
    assert torch.allclose(hvp(f, flat.theta0, top["vector"]), top["value"] * top["vector"], atol=1e-7 * top["value"])
    with pytest.raises(ParameterError, match="at least 3 parameters"):
        top_eigenvalue(lambda t: (t**2).sum(), torch.ones(2, dtype=torch.float64))
