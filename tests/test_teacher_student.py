"""Tests for equivlib.teacher_student (exact kernels, S_n layers, fixed points, e3nn model)."""
import math

import pytest
import torch

import equivlib.teacher_student as ts

DT = torch.float64
TOL = 1e-10


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def prob():
    return ts.make_problem(4, seed=0)


def _vectors(gen):
    """Generic, parallel (scaled), antiparallel and orthogonal pairs."""
    A = torch.randn(4, 5, generator=gen, dtype=DT)
    B = torch.stack([1.7 * A[0], -0.6 * A[1], torch.randn(5, generator=gen, dtype=DT), A[3]])
    B[3] = B[3] - (B[3] @ A[2]) / (A[2] @ A[2]) * A[2]  # orthogonal to A[2]
    return A, B


@pytest.mark.parametrize("activation", ts.ACTIVATIONS)
def test_kernel_matches_monte_carlo(activation, gen):
    A, B = _vectors(gen)
    exact = ts.gaussian_kernel(A, B, activation)
    mc, se = ts.monte_carlo_kernel(A, B, activation, 400_000, gen)
    # 5 standard errors per entry; the absolute floor covers entries with zero variance
    assert ((exact - mc).abs() <= 5 * se + 1e-12).all(), (exact - mc).abs() / se


@pytest.mark.parametrize("activation", ts.ACTIVATIONS)
def test_population_loss_matches_monte_carlo(activation, prob, gen):
    W = prob.W(torch.tensor(0.4, dtype=DT), torch.tensor(-0.7, dtype=DT))
    W = W + 0.3 * torch.randn(W.shape, generator=gen, dtype=DT)
    Wt = prob.W_teacher
    exact = ts.population_loss(W, prob.V_teacher, Wt, prob.V_teacher, activation).item()
    mc, se = ts.monte_carlo_loss(W, prob.V_teacher, Wt, prob.V_teacher, activation, 400_000, gen)
    assert abs(exact - mc) < 5 * se


def test_relu_kernel_diagonal_and_zero_loss(prob):
    W = prob.W_teacher
    K = ts.relu_kernel(W, W, same=True)
    assert torch.allclose(torch.diagonal(K), (W * W).sum(-1) / 2, atol=TOL)
    assert abs(prob.loss_W(W).item()) < 1e-12


@pytest.mark.parametrize("activation", ts.ACTIVATIONS)
def test_gradients_finite_at_parallel_and_antiparallel(activation, gen):
    A, B = _vectors(gen)
    A = A.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(ts.gaussian_kernel(A, B, activation).sum(), (A,))
    assert torch.isfinite(g).all()
    H = ts.hessian(lambda a: ts.gaussian_kernel(a, B, activation).sum(), A.detach())
    assert torch.isfinite(H).all()


def test_arccos_derivative_at_endpoints():
    c = torch.tensor([-1.0, 0.3, 1.0], dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(ts.arccos_kernel_j(c).sum(), (c,))
    expected = math.pi - torch.arccos(c.detach())
    assert torch.allclose(g, expected, atol=TOL)
    # plain autograd gives NaN there: the custom derivative is what makes this finite
    c2 = c.detach().clone().requires_grad_(True)
    naive = torch.sqrt(1 - c2**2) + (math.pi - torch.arccos(c2)) * c2
    (g2,) = torch.autograd.grad(naive.sum(), (c2,))
    assert not torch.isfinite(g2).all()


def test_hessian_at_teacher_matches_finite_differences(prob):
    W0 = prob.W_teacher
    H = ts.hessian(prob.loss_W, W0)

    def grad(w):
        w = w.clone().requires_grad_(True)
        return torch.autograd.grad(prob.loss_W(w), (w,))[0].reshape(-1)

    eps = 1e-5
    E = torch.eye(W0.numel(), dtype=DT)
    Hfd = torch.stack([(grad(W0 + eps * e.reshape(W0.shape)) - grad(W0 - eps * e.reshape(W0.shape))) / (2 * eps)
                       for e in E])
    assert (H - Hfd).abs().max() < 1e-4 * H.abs().max()
    assert torch.linalg.eigvalsh(H).min() > 0


@pytest.mark.parametrize("blocks_in,blocks_out", [
    (("standard",), ("standard",)),
    (("standard", "trivial"), ("trivial", "standard", "standard")),
    (("regular",), ("standard", "trivial")),
])
def test_equivariant_basis_commutes_and_matches_nullspace(blocks_in, blocks_out):
    n = 3
    ri, ro = ts.PermRep(n, blocks_in), ts.PermRep(n, blocks_out)
    B = ts.equivariant_basis(ri, ro)
    G = ts.symmetric_group(n)
    Ri, Ro = ri.matrices(G), ro.matrices(G)
    lhs = torch.einsum("kij,gjl->gkil", B, Ri)
    rhs = torch.einsum("gij,kjl->gkil", Ro, B)
    assert (lhs - rhs).abs().max() < TOL
    null = ts.constraint_nullspace(ri, ro)
    assert null.shape[0] == B.shape[0]
    both = torch.cat([B.flatten(1), null.flatten(1)])
    assert torch.linalg.matrix_rank(both) == B.shape[0]
    gram = torch.einsum("kij,lij->kl", B, B)
    assert torch.allclose(gram, torch.eye(B.shape[0], dtype=DT), atol=TOL)


def test_pp_block_is_diagonal_and_offdiagonal():
    P = ts.PermRep(5, ("standard",))
    B = ts.equivariant_basis(P, P, normalize=False)
    mats = {tuple(b.flatten().tolist()) for b in B}
    eye = torch.eye(5, dtype=DT)
    assert mats == {tuple(eye.flatten().tolist()), tuple((1 - eye).flatten().tolist())}


def test_projection_idempotent_in_commutant_and_group_average(gen):
    ri = ts.PermRep(4, ("standard", "trivial", "trivial"))
    rh = ts.PermRep(4, ("standard", "trivial"))
    W = torch.randn(3, rh.dim, ri.dim, generator=gen, dtype=DT)
    P1 = ts.project_equivariant(W, ri, rh)
    assert torch.allclose(ts.project_equivariant(P1, ri, rh), P1, atol=TOL)
    assert torch.allclose(P1, ts.group_average(W, ri, rh), atol=TOL)
    assert ts.equivariance_error(P1, ri, rh).max() < TOL
    assert ts.equivariance_error(W, ri, rh).min() > 0.1
    # orthogonal projection: the residual is orthogonal to the commutant
    B = ts.equivariant_basis(ri, rh)
    assert torch.einsum("nij,kij->nk", W - P1, B).abs().max() < TOL


def test_hidden_fixed_point_subspace(prob):
    F = ts.hidden_fixed_point_basis(prob.rep_in, prob.rep_hidden, block=0)
    C = ts.equivariant_basis(prob.rep_in, prob.rep_hidden)
    assert F.shape[0] == C.shape[0] - 1  # codimension one
    n, h = prob.n, prob.rep_hidden.dim
    for perm in ([1, 0, 2, 3], [1, 2, 3, 0]):
        full = perm + list(range(n, h))
        assert torch.allclose(F[:, full], F, atol=TOL)  # invariant under block permutations
    assert ts.equivariance_error(F, prob.rep_in, prob.rep_hidden).max() < TOL  # inside C
    # gradient descent cannot leave it: the gradient at a fixed point lies in it
    W = torch.einsum("k,kij->ij", torch.linspace(-1, 1, F.shape[0], dtype=DT), F).requires_grad_(True)
    (g,) = torch.autograd.grad(prob.loss_W(W), (W,))
    g_in_F = torch.einsum("k,kij->ij", torch.einsum("kij,ij->k", F, g), F)
    assert (g - g_in_F).abs().max() < 1e-10 * max(1.0, g.abs().max().item())


def test_loss_invariant_under_hidden_permutation(prob, gen):
    W = prob.W_teacher + torch.randn(prob.W_teacher.shape, generator=gen, dtype=DT)
    V = torch.randn(prob.V_teacher.shape, generator=gen, dtype=DT)
    perm = torch.randperm(W.shape[0], generator=gen)
    for act in ts.ACTIVATIONS:
        L1 = ts.population_loss(W, V, prob.W_teacher, prob.V_teacher, act)
        L2 = ts.population_loss(W[perm], V[:, perm], prob.W_teacher, prob.V_teacher, act)
        assert abs(L1 - L2) < TOL
        L3 = ts.population_loss(W[perm], V, prob.W_teacher, prob.V_teacher, act)
        assert abs(L1 - L3) > 1e-6  # permuting W alone does change it


def test_equivariant_loss_matches_full_and_batches(prob, gen):
    a = torch.randn(3, 2, generator=gen, dtype=DT)
    b = torch.randn(3, 2, generator=gen, dtype=DT)
    W = prob.W(a, b)
    assert W.shape == (3, 2) + prob.W_teacher.shape
    full = prob.loss_W(W)
    fast = prob.loss_W(W, equivariant=True)
    assert full.shape == (3, 2)
    assert torch.allclose(full, fast, atol=1e-12)
    assert torch.allclose(full[1, 0], prob.loss_W(W[1, 0]), atol=1e-12)


def test_slice_minima_and_rescaled_gd(prob):
    ab = torch.linspace(-3, 3, 61, dtype=DT)
    mins = ts.find_slice_minima(prob, ab, ab)
    assert len(mins) == 2
    assert abs(mins[0]["a"] - prob.a_teacher) < 1e-6 and mins[0]["loss"] < 1e-10
    assert mins[1]["loss"] > 1e-3
    # rescaled GD keeps points on the line a = b exactly; direct GD leaves it
    a0 = torch.tensor([0.5, -1.0], dtype=DT)
    r = ts.gd_slice(prob, a0, a0.clone(), steps=5, lr=0.05, scale_a=math.sqrt(prob.n - 1))
    assert (r["a"] - r["b"]).abs().max() < 1e-12
    d = ts.gd_slice(prob, a0, a0.clone(), steps=5, lr=0.05)
    assert (d["a"] - d["b"]).abs().max() > 1e-4


def test_line_fit_and_boundary():
    ab = torch.linspace(-1, 1, 21, dtype=DT)
    B, A = torch.meshgrid(ab, ab, indexing="ij")
    fit = ts.line_fit_residual(ts.boundary_points((A > B).long(), ab, ab))
    assert fit["rms"] < 1e-12 and abs(fit["angle_deg"] - 45) < 1e-9
    curved = ts.line_fit_residual(ts.boundary_points((B > A**2).long(), ab, ab))
    assert curved["rms"] > 0.05


def test_conjugate_error_and_permutation_matching(prob, gen):
    perm = torch.tensor([2, 0, 3, 1, 4, 5])
    Wp = prob.W_teacher[perm]
    assert ts.equivariance_error(Wp, prob.rep_in, prob.rep_hidden) > 0.1
    err, _ = ts.conjugate_equivariance_error(Wp, prob.rep_in, prob.rep_hidden)
    assert err < TOL
    p, res = ts.match_hidden_permutation(Wp, prob.W_teacher)
    assert res < TOL and torch.equal(Wp[torch.as_tensor(p)], prob.W_teacher)


def test_spherical_model_odd_symmetry_and_aliasing(gen):
    for l, symmetric in ((1, True), (2, False)):
        m = ts.SphericalSignalModel(l, l + 2, (16, 16) if l == 1 else (20, 20))
        x = torch.randn(16, 2 * l + 2, generator=gen, dtype=DT)
        f1 = m.forward(x, 0.5, 0.8)
        f2 = m.forward(x, 0.5, -0.8)
        gap = ((f1 - f2).abs().max() / f1.abs().max()).item()
        assert (gap < 1e-6) if symmetric else (gap > 1e-3)
    coarse = ts.s2_aliasing_error(ts.SphericalSignalModel(2, 4, (10, 10)), 8, 4, gen)["coeff_rel_err"]
    fine = ts.s2_aliasing_error(ts.SphericalSignalModel(2, 4, (40, 40)), 8, 4, gen)["coeff_rel_err"]
    assert fine < coarse and fine < 1e-2


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown activation"):
        ts.gaussian_kernel(torch.zeros(2, 3, dtype=DT), torch.zeros(2, 3, dtype=DT), "tanh")
    with pytest.raises(ValueError, match="input dimension mismatch"):
        ts.relu_kernel(torch.zeros(2, 3, dtype=DT), torch.zeros(2, 4, dtype=DT))
    with pytest.raises(ValueError, match="hidden columns"):
        ts.population_loss(torch.zeros(3, 2, dtype=DT), torch.zeros(1, 4, dtype=DT),
                           torch.zeros(3, 2, dtype=DT), torch.zeros(1, 3, dtype=DT))
    with pytest.raises(ValueError, match="n >= 2"):
        ts.PermRep(1, ("standard",))
    with pytest.raises(ValueError, match="unknown block kind"):
        ts.PermRep(3, ("sign",))
    with pytest.raises(ValueError, match="n must be an integer >= 3"):
        ts.make_problem(2)
    with pytest.raises(ValueError, match="different groups"):
        ts.equivariant_basis(ts.PermRep(3, ("standard",)), ts.PermRep(4, ("standard",)))
    P = ts.PermRep(3, ("standard",))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        ts.project_equivariant(torch.zeros(3, 4, dtype=DT), P, P)
    with pytest.raises(ValueError, match="too coarse"):
        ts.SphericalSignalModel(2, 4, (6, 6))
    with pytest.raises(ValueError, match="block index"):
        ts.hidden_fixed_point_basis(P, P, block=3)
