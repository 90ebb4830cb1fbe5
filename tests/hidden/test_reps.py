"""Tests for equivlib.hidden.reps: S_n permutation representations and equivariant maps."""
import pytest
import torch

from equivlib import hidden as ts
from equivlib.groups import symmetric_group

DT = torch.float64


@pytest.mark.parametrize("blocks_in,blocks_out", [
    (("standard",), ("standard",)),
    (("standard", "trivial"), ("trivial", "standard", "standard")),
    (("regular",), ("standard", "trivial")),
])
def test_equivariant_basis_commutes_and_matches_nullspace(blocks_in, blocks_out, tol):
    n = 3
    ri, ro = ts.PermRep(n, blocks_in), ts.PermRep(n, blocks_out)
    B = ts.equivariant_basis(ri, ro)
    G = symmetric_group(n)
    Ri, Ro = ri.matrices(G), ro.matrices(G)
    lhs = torch.einsum("kij,gjl->gkil", B, Ri)
    rhs = torch.einsum("gij,kjl->gkil", Ro, B)
    assert (lhs - rhs).abs().max() < tol(DT)
    null = ts.constraint_nullspace(ri, ro)
    assert null.shape[0] == B.shape[0]
    both = torch.cat([B.flatten(1), null.flatten(1)])
    assert torch.linalg.matrix_rank(both) == B.shape[0]
    gram = torch.einsum("kij,lij->kl", B, B)
    assert torch.allclose(gram, torch.eye(B.shape[0], dtype=DT), atol=tol(DT))


def test_regular_block_is_a_representation_indexed_like_symmetric_group():
    """The regular block's basis is ``symmetric_group(n)`` in its order, and rho is a homomorphism."""
    G = symmetric_group(3)
    reg = ts.PermRep(3, ("regular",))
    act = reg.index_action(G)
    assert torch.equal(act[0], torch.arange(6))  # identity first
    # rho(g) e_h = e_{gh} with (gh)[k] = g[h[k]]: row g of the action is g's multiplication table
    index = {tuple(p): i for i, p in enumerate(G.tolist())}
    expected = torch.tensor([[index[tuple(G[g][G[h]].tolist())] for h in range(6)] for g in range(6)])
    assert torch.equal(act, expected)
    M = reg.matrices(G)
    for g in range(6):
        for h in range(6):
            gh = index[tuple(G[g][G[h]].tolist())]
            assert torch.equal(M[g] @ M[h], M[gh])


def test_pp_block_is_diagonal_and_offdiagonal():
    P = ts.PermRep(5, ("standard",))
    B = ts.equivariant_basis(P, P, normalize=False)
    mats = {tuple(b.flatten().tolist()) for b in B}
    eye = torch.eye(5, dtype=DT)
    assert mats == {tuple(eye.flatten().tolist()), tuple((1 - eye).flatten().tolist())}


def test_pair_orbit_representatives_cover_every_pair():
    rep = ts.PermRep(4, ("standard", "trivial", "trivial"))
    I, J, counts = ts.pair_orbit_representatives(rep)
    labels = ts.orbit_labels(rep, rep)
    assert int(counts.sum()) == rep.dim**2
    assert len(I) == int(labels.max()) + 1  # one representative per orbit
    assert sorted(labels[I, J].tolist()) == list(range(len(I)))
    assert torch.equal(counts, torch.bincount(labels.reshape(-1))[labels[I, J]])


def test_projection_idempotent_in_commutant_and_group_average(generator, tol):
    ri = ts.PermRep(4, ("standard", "trivial", "trivial"))
    rh = ts.PermRep(4, ("standard", "trivial"))
    W = torch.randn(3, rh.dim, ri.dim, generator=generator, dtype=DT)
    P1 = ts.project_equivariant(W, ri, rh)
    assert torch.allclose(ts.project_equivariant(P1, ri, rh), P1, atol=tol(DT))
    assert torch.allclose(P1, ts.group_average(W, ri, rh), atol=tol(DT))
    assert ts.equivariance_error(P1, ri, rh).max() < tol(DT)
    assert ts.equivariance_error(W, ri, rh).min() > 0.1
    # orthogonal projection: the residual is orthogonal to the commutant
    B = ts.equivariant_basis(ri, rh)
    assert torch.einsum("nij,kij->nk", W - P1, B).abs().max() < tol(DT)


def test_hidden_fixed_point_subspace(prob, tol):
    F = ts.hidden_fixed_point_basis(prob.rep_in, prob.rep_hidden, block=0)
    C = ts.equivariant_basis(prob.rep_in, prob.rep_hidden)
    assert F.shape[0] == C.shape[0] - 1  # codimension one
    n, h = prob.n, prob.rep_hidden.dim
    for perm in ([1, 0, 2, 3], [1, 2, 3, 0]):
        full = perm + list(range(n, h))
        assert torch.allclose(F[:, full], F, atol=tol(DT))  # invariant under block permutations
    assert ts.equivariance_error(F, prob.rep_in, prob.rep_hidden).max() < tol(DT)  # inside C
    # gradient descent cannot leave it: the gradient at a fixed point lies in it
    W = torch.einsum("k,kij->ij", torch.linspace(-1, 1, F.shape[0], dtype=DT), F).requires_grad_(True)
    (g,) = torch.autograd.grad(prob.loss_W(W), (W,))
    g_in_F = torch.einsum("k,kij->ij", torch.einsum("kij,ij->k", F, g), F)
    assert (g - g_in_F).abs().max() < tol(DT) * max(1.0, g.abs().max().item())


def test_conjugate_equivariance_error_finds_the_permutation(prob, tol):
    perm = torch.tensor([2, 0, 3, 1, 4, 5])
    Wp = prob.W_teacher[perm]
    assert ts.equivariance_error(Wp, prob.rep_in, prob.rep_hidden) > 0.1
    err, best = ts.conjugate_equivariance_error(Wp, prob.rep_in, prob.rep_hidden)
    assert err < tol(DT)
    assert ts.equivariance_error(Wp[best], prob.rep_in, prob.rep_hidden) < tol(DT)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n >= 2"):
        ts.PermRep(1, ("standard",))
    with pytest.raises(ValueError, match="unknown block kind"):
        ts.PermRep(3, ("sign",))
    with pytest.raises(ValueError, match="different groups"):
        ts.equivariant_basis(ts.PermRep(3, ("standard",)), ts.PermRep(4, ("standard",)))
    P = ts.PermRep(3, ("standard",))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 3\)"):
        ts.project_equivariant(torch.zeros(3, 4, dtype=DT), P, P)
    with pytest.raises(ValueError, match="block index"):
        ts.hidden_fixed_point_basis(P, P, block=3)
    with pytest.raises(ValueError, match="exceed max_perms"):
        ts.conjugate_equivariance_error(torch.zeros(3, 3, dtype=DT), P, P, max_perms=5)
