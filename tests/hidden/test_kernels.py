"""Tests for equivlib.hidden.kernels: exact Gaussian kernels and population losses."""
import math

import pytest
import torch

from equivlib import hidden as ts
from equivlib.hessian import hessian

DT = torch.float64


def _vectors(gen):
    """Generic, parallel (scaled), antiparallel and orthogonal pairs."""
    A = torch.randn(4, 5, generator=gen, dtype=DT)
    B = torch.stack([1.7 * A[0], -0.6 * A[1], torch.randn(5, generator=gen, dtype=DT), A[3]])
    B[3] = B[3] - (B[3] @ A[2]) / (A[2] @ A[2]) * A[2]  # orthogonal to A[2]
    return A, B


@pytest.mark.parametrize("activation", ts.ACTIVATIONS)
def test_kernel_matches_monte_carlo(activation, generator):
    A, B = _vectors(generator)
    exact = ts.gaussian_kernel(A, B, activation)
    mc, se = ts.monte_carlo_kernel(A, B, activation, 400_000, generator)
    # 5 standard errors per entry; the absolute floor covers entries with zero variance
    assert ((exact - mc).abs() <= 5 * se + 1e-12).all(), (exact - mc).abs() / se


@pytest.mark.parametrize("activation", ts.ACTIVATIONS)
def test_population_loss_matches_monte_carlo(activation, prob, generator):
    W = prob.W(torch.tensor(0.4, dtype=DT), torch.tensor(-0.7, dtype=DT))
    W = W + 0.3 * torch.randn(W.shape, generator=generator, dtype=DT)
    Wt = prob.W_teacher
    exact = ts.population_loss(W, prob.V_teacher, Wt, prob.V_teacher, activation).item()
    mc, se = ts.monte_carlo_loss(W, prob.V_teacher, Wt, prob.V_teacher, activation, 400_000, generator)
    assert abs(exact - mc) < 5 * se


def test_relu_kernel_diagonal_and_zero_loss(prob, tol):
    W = prob.W_teacher
    K = ts.relu_kernel(W, W, same=True)
    assert torch.allclose(torch.diagonal(K), (W * W).sum(-1) / 2, atol=tol(DT))
    assert abs(prob.loss_W(W).item()) < 1e-12


@pytest.mark.parametrize("activation", ts.ACTIVATIONS)
def test_gradients_finite_at_parallel_and_antiparallel(activation, generator):
    A, B = _vectors(generator)
    A = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ts.gaussian_kernel(A, B, activation).sum(), (A,))
    assert torch.isfinite(g).all()
    H = hessian(lambda a: ts.gaussian_kernel(a, B, activation).sum(), A.detach())
    assert torch.isfinite(H).all()


def test_arccos_derivative_at_endpoints(tol):
    c = torch.tensor([-1.0, 0.3, 1.0], dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(ts.arccos_kernel_j(c).sum(), (c,))
    expected = math.pi - torch.arccos(c.detach())
    assert torch.allclose(g, expected, atol=tol(DT))
    # plain autograd gives NaN there: the custom derivative is what makes this finite
    c2 = c.detach().clone().requires_grad_(True)
    naive = torch.sqrt(1 - c2**2) + (math.pi - torch.arccos(c2)) * c2
    (g2,) = torch.autograd.grad(naive.sum(), (c2,))
    assert not torch.isfinite(g2).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func's own
def test_arccos_second_derivative_forward_mode_and_vmap(tol):
    """The two hand-written autograd functions: J'' = 1/sqrt(1-c^2) (capped), forward mode, vmap."""
    c = torch.tensor([-1.0, -0.5, 0.0, 0.3, 0.9, 1.0], dtype=DT)
    q = c.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ts.arccos_kernel_j(q).sum(), (q,), create_graph=True)
    (g2,) = torch.autograd.grad(g.sum(), (q,))
    inner = (1 - c**2).clamp_min(1e-12).rsqrt()
    assert torch.allclose(g2, inner, rtol=tol(DT), atol=0)
    assert g2[0] == g2[-1] == 1e6  # capped at the endpoints
    _, tangent = torch.func.jvp(ts.arccos_kernel_j, (c,), (torch.ones_like(c),))
    assert torch.allclose(tangent, math.pi - torch.arccos(c), atol=tol(DT))
    # and the closed form itself, through vmap
    J = torch.func.vmap(ts.arccos_kernel_j)(c)
    assert torch.allclose(J, torch.sqrt(1 - c**2) + (math.pi - torch.arccos(c)) * c, atol=tol(DT))


def test_loss_invariant_under_hidden_permutation(prob, generator, tol):
    W = prob.W_teacher + torch.randn(prob.W_teacher.shape, generator=generator, dtype=DT)
    V = torch.randn(prob.V_teacher.shape, generator=generator, dtype=DT)
    perm = torch.randperm(W.shape[0], generator=generator)
    for act in ts.ACTIVATIONS:
        L1 = ts.population_loss(W, V, prob.W_teacher, prob.V_teacher, act)
        L2 = ts.population_loss(W[perm], V[:, perm], prob.W_teacher, prob.V_teacher, act)
        assert abs(L1 - L2) < tol(DT)
        L3 = ts.population_loss(W[perm], V, prob.W_teacher, prob.V_teacher, act)
        assert abs(L1 - L3) > 1e-6  # permuting W alone does change it


def test_equivariant_loss_matches_full_and_batches(prob, generator):
    a = torch.randn(3, 2, generator=generator, dtype=DT)
    b = torch.randn(3, 2, generator=generator, dtype=DT)
    W = prob.W(a, b)
    assert W.shape == (3, 2) + prob.W_teacher.shape
    full = prob.loss_W(W)
    fast = prob.loss_W(W, equivariant=True)
    assert full.shape == (3, 2)
    assert torch.allclose(full, fast, atol=1e-12)
    assert torch.allclose(full[1, 0], prob.loss_W(W[1, 0]), atol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown activation"):
        ts.gaussian_kernel(torch.zeros(2, 3, dtype=DT), torch.zeros(2, 3, dtype=DT), "tanh")
    with pytest.raises(ValueError, match="input dimension mismatch"):
        ts.relu_kernel(torch.zeros(2, 3, dtype=DT), torch.zeros(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="hidden columns"):
        ts.population_loss(torch.zeros(3, 2, dtype=DT), torch.zeros(1, 4, dtype=DT),
                           torch.zeros(3, 2, dtype=DT), torch.zeros(1, 3, dtype=DT))
