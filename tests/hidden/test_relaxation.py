"""Tests for equivlib.hidden.relaxation: constrained descent, relaxation, permutation matching."""
import pytest
import torch

from equivlib import hidden as ts
from equivlib.hessian import curvature_step_size, min_hessian_eigenvalue

DT = torch.float64
# A small problem (S_3, P + 1 in and hidden) whose bad-half constrained minimum is a
# saddle of the unconstrained network that relaxation leaves within a few hundred steps.
SMALL = dict(n_in_trivial=1, n_hidden_trivial=1, seed=2)


@pytest.fixture(scope="module")
def small():
    p = ts.make_problem(3, **SMALL)
    basis = ts.equivariant_basis(p.rep_in, p.rep_hidden)
    Wm = p.mirrored_teacher().W
    lr = curvature_step_size(p.coordinate_loss(basis), [torch.einsum("hd,khd->k", W, basis) for W in (p.W_teacher, Wm)])
    return p, ts.constrained_descent(p, Wm, steps=100, lr=lr, newton_iters=20)


def test_constrained_descent_reaches_a_spurious_minimum(small, tol):
    p, c = small
    assert ts.equivariance_error(c["W"], p.rep_in, p.rep_hidden) < tol(DT)
    assert c["grad_norm"] < 1e-8 and c["hess_eigs"].min() > 0  # a constrained minimum
    assert (c["W"][0, 0] - c["W"][0, 1]) * (p.a_teacher - p.b_teacher) < 0  # in the bad half
    assert c["loss"].item() > 1e-4  # spurious
    assert min_hessian_eigenvalue(p.loss_W, c["W"]) < 0  # a saddle without the constraint


def test_constrained_descent_stays_in_the_subspace_batched(prob, generator, tol):
    basis = ts.equivariant_basis(prob.rep_in, prob.rep_hidden)
    theta0 = torch.randn(3, basis.shape[0], generator=generator, dtype=DT)
    W0 = torch.einsum("bk,khd->bhd", theta0, basis)
    c = ts.constrained_descent(prob, W0, steps=20, lr=0.02)
    assert c["W"].shape == W0.shape and "hess_eigs" not in c  # no Hessian for a batch
    assert ts.equivariance_error(c["W"], prob.rep_in, prob.rep_hidden).max() < tol(DT)
    assert (c["loss"] < prob.loss_W(W0)).all()
    assert torch.allclose(torch.einsum("bk,khd->bhd", c["theta"], basis), c["W"], atol=tol(DT))


def test_relax_escapes_to_a_permuted_teacher(small):
    p, c = small
    r = ts.relax(p, c["W"], steps=300, lr=0.2, log_every=150, noise=1e-3, generator=torch.Generator().manual_seed(0),
                 momentum=0.9)
    h = r["history"]
    assert h["step"] == [0, 150, 300]
    assert h["loss"][-1] < 1e-6 * h["loss"][0]
    assert h["min_eig"][0] < 0 < h["min_eig"][-1]  # from a saddle to a minimum
    perm, res = ts.match_hidden_permutation(r["W"], p.W_teacher)
    assert res < 1e-3 and list(perm) != list(range(len(perm)))  # the teacher, neurons reordered
    assert h["eq_err"][-1] > 1e-2 and h["eq_err_conj"][-1] < 1e-3  # equivariant for another hidden rep


def test_match_hidden_permutation(prob, tol):
    perm = torch.tensor([2, 0, 3, 1, 4, 5])
    Wp = prob.W_teacher[perm]
    p, res = ts.match_hidden_permutation(Wp, prob.W_teacher)
    assert res < tol(DT) and torch.equal(Wp[torch.as_tensor(p)], prob.W_teacher)
    with pytest.raises(ValueError, match="equal shape"):
        ts.match_hidden_permutation(Wp, prob.W_teacher[:3])


def test_trap_study_matches_the_single_run(small):
    p, c = small
    df = ts.trap_study([3], [SMALL["seed"]], steps=100, newton_iters=20, spurious_tol=1e-10,
                       n_in_trivial=SMALL["n_in_trivial"], n_hidden_trivial=SMALL["n_hidden_trivial"])
    assert list(df.columns) == ["n", "seed", "bad half", "constrained min", "relative loss", "full-Hessian min eig",
                                "spurious", "saddle when relaxed", "reason"]
    row = df.iloc[0]
    assert row["reason"] == "spurious"
    assert row["relative loss"] == c["loss"].item() / p.teacher_term.item()
    assert row["full-Hessian min eig"] == min_hessian_eigenvalue(p.loss_W, c["W"])
    assert row["spurious"] and row["saddle when relaxed"]
    # a tolerance above the trap's loss turns the same run into a "zero loss" row, with its reason
    high = ts.trap_study([3], [SMALL["seed"]], steps=100, newton_iters=20, spurious_tol=10.0,
                         n_in_trivial=SMALL["n_in_trivial"], n_hidden_trivial=SMALL["n_hidden_trivial"])
    assert not high["spurious"].iloc[0] and high["reason"].iloc[0] == "zero loss"
