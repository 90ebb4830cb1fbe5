"""Tests for equivlib.hessian: gradients, dense Hessians, Newton steps and curvature step sizes."""
import pytest
import torch

from equivlib import hidden
from equivlib.hessian import curvature_step_size, gradient, hessian, min_hessian_eigenvalue, newton_minimize

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
