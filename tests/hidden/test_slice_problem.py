"""Tests for equivlib.hidden.slice_problem: the (a, b) slice, its minima and basins."""
import math

import pytest
import torch

from equivlib import hidden as ts
from equivlib.hessian import curvature_step_size

DT = torch.float64


@pytest.fixture(scope="module")
def minima(prob):
    ab = torch.linspace(-3, 3, 61, dtype=DT)
    return ts.find_slice_minima(prob, ab, ab)


def test_slice_minima_and_rescaled_gd(prob, minima):
    assert len(minima) == 2
    assert abs(minima[0]["a"] - prob.a_teacher) < 1e-6 and minima[0]["loss"] < 1e-10
    assert minima[1]["loss"] > 1e-3
    # rescaled GD keeps points on the line a = b exactly; direct GD leaves it
    a0 = torch.tensor([0.5, -1.0], dtype=DT)
    r = ts.gd_slice(prob, a0, a0.clone(), steps=5, lr=0.05, scale_a=prob.rescale_a)
    assert (r["a"] - r["b"]).abs().max() < 1e-12
    d = ts.gd_slice(prob, a0, a0.clone(), steps=5, lr=0.05)
    assert (d["a"] - d["b"]).abs().max() > 1e-4


def test_gradient_ratio_on_the_line_is_n_minus_one(prob, tol):
    """Chapter 6, prop-ch6-rescaling: on a = b, dL/db = (n - 1) dL/da (and not off the line)."""
    t = torch.tensor([-1.3, -0.4, 0.7, 1.9], dtype=DT)
    for shift, on_line in ((0.0, True), (0.3, False)):
        a, b = (t + shift).requires_grad_(True), t.clone().requires_grad_(True)
        ga, gb = torch.autograd.grad(prob.loss_ab(a, b).sum(), (a, b))
        assert ga.abs().min() > 1e-6  # not a trivial 0 = 0
        assert torch.allclose(gb, (prob.n - 1) * ga, atol=tol(DT), rtol=1e-10) == on_line


def test_mirrored_teacher(prob, tol):
    m = prob.mirrored_teacher()
    assert (m.a.item(), m.b.item()) == (prob.b_teacher, prob.a_teacher)
    assert torch.equal(m.W, prob.W(m.a, m.b))
    n = prob.n
    W = m.W
    assert torch.equal(torch.diagonal(W[:n, :n]), torch.full((n,), prob.b_teacher, dtype=DT))
    assert torch.equal(W[0, 1:n], torch.full((n - 1,), prob.a_teacher, dtype=DT))
    assert torch.equal(W[n:], prob.W_teacher[n:]) and torch.equal(W[:n, n:], prob.W_teacher[:n, n:])
    assert ts.equivariance_error(W, prob.rep_in, prob.rep_hidden) < tol(DT)
    assert prob.loss_ab(m.a, m.b).item() > 1e-3  # the mirror image is not a global minimum


def test_coordinate_loss(prob, generator, tol):
    basis = ts.equivariant_basis(prob.rep_in, prob.rep_hidden)
    f = prob.coordinate_loss(basis)
    theta_teacher = torch.einsum("hd,khd->k", prob.W_teacher, basis)
    assert abs(f(theta_teacher).item()) < 1e-12
    theta = torch.randn(basis.shape[0], generator=generator, dtype=DT)
    assert abs(f(theta) - prob.loss_W(torch.einsum("k,khd->hd", theta, basis))) < tol(DT)


def test_bad_half_minimum_is_the_second_minimum(prob, minima):
    r = ts.bad_half_minimum(prob, steps=20)
    assert r["bad_half"] and r["is_minimum"]
    assert abs(r["a"] - minima[1]["a"]) < 1e-6 and abs(r["b"] - minima[1]["b"]) < 1e-6
    assert r["dist_line"] == pytest.approx(abs(r["a"] - r["b"]) / math.sqrt(2))
    sc = prob.rescale_a
    pts = [torch.tensor([prob.a_teacher / sc, prob.b_teacher], dtype=DT),
           torch.tensor([prob.b_teacher / sc, prob.a_teacher], dtype=DT)]
    assert r["lr"] == curvature_step_size(lambda q: prob.loss_ab(q[0] * sc, q[1]), pts)


def test_gd_basins_rescaled_boundary_is_the_line(prob, minima):
    grid = torch.linspace(-3, 3, 11, dtype=DT)
    resc = ts.gd_basins(prob, grid, minima, steps=100, lr=0.05, scale_a=prob.rescale_a)
    direct = ts.gd_basins(prob, grid, minima, steps=100, lr=0.05)
    assert resc["label"].shape == (11, 11) and set(resc["label"].unique().tolist()) == {0, 1}
    assert resc["disagree"] == 0.0
    assert resc["fit"]["rms"] < 1e-12 and abs(resc["fit"]["angle_deg"] - 45) < 1e-9
    assert direct["disagree"] > 0.05 and direct["fit"]["angle_deg"] > 50  # tilted, crosses the line
    assert 0.5 < resc["converged"] <= 1 and resc["time"] > 0
    # the label is the nearer minimum of the end point
    end = torch.stack([resc["a"][3, 8], resc["b"][3, 8]])
    d = [torch.dist(end, torch.tensor([m["a"], m["b"]], dtype=DT)) for m in minima]
    assert resc["label"][3, 8] == int(d[1] < d[0])
    with pytest.raises(ValueError, match="exactly two minima"):
        ts.gd_basins(prob, grid, minima[:1], steps=1, lr=0.05)


def test_seed_study_rows_match_single_runs():
    grid = torch.linspace(-3, 3, 31, dtype=DT)
    df = ts.seed_study(3, [0], grid, steps=20, n_in_trivial=1, n_hidden_trivial=1)
    assert df["seed"].tolist() == [0]
    p = ts.make_problem(3, n_in_trivial=1, n_hidden_trivial=1, seed=0)
    row = df.iloc[0]
    r = ts.bad_half_minimum(p, steps=20)
    assert (row["a*"], row["b*"]) == (p.a_teacher, p.b_teacher)
    assert (row["bad-half min a"], row["bad-half loss"], row["is minimum"]) == (r["a"], r["loss"], r["is_minimum"])
    assert row["minima in window"] == 2  # the teacher and the bad half's minimum
    assert row["dist ratio"] == pytest.approx(r["dist_line"] / (abs(p.a_teacher - p.b_teacher) / math.sqrt(2)))
    assert df.columns[-1] == "note"
    assert (row["note"] == "") if r["is_minimum"] else row["note"] in ("left the bad half", "not a non-degenerate minimum")


def test_basin_study_rescaled_never_crosses_and_matches_gd_basins():
    grid = torch.linspace(-3, 3, 15, dtype=DT)
    df = ts.basin_study(3, [0], grid, steps=60, lr=0.05, bad_half_steps=20, n_in_trivial=1, n_hidden_trivial=1)
    assert df["parameterization"].tolist() == ["direct", "rescaled"]
    p = ts.make_problem(3, n_in_trivial=1, n_hidden_trivial=1, seed=0)
    ref = ts.bad_half_minimum(p, steps=20)
    for _, row in df.iterrows():
        sc = 1.0 if row["parameterization"] == "direct" else p.rescale_a
        assert row["lr"] == min(0.05, ts.slice_step_size(p, sc))
        r = ts.gd_basins(p, grid, [{"a": p.a_teacher, "b": p.b_teacher}, ref], steps=60, lr=row["lr"], scale_a=sc)
        assert (row["converged"], row["disagree"]) == (r["converged"], r["disagree"])
        assert row["other end points"] == pytest.approx(1 - row["converged"])
    assert df.set_index("parameterization").loc["rescaled", "disagree"] == 0.0  # the line is invariant


def test_line_fit_and_boundary():
    ab = torch.linspace(-1, 1, 21, dtype=DT)
    B, A = torch.meshgrid(ab, ab, indexing="ij")
    fit = ts.line_fit_residual(ts.boundary_points((A > B).long(), ab, ab))
    assert fit["rms"] < 1e-12 and abs(fit["angle_deg"] - 45) < 1e-9
    curved = ts.line_fit_residual(ts.boundary_points((B > A**2).long(), ab, ab))
    assert curved["rms"] > 0.05


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n must be an integer >= 3"):
        ts.make_problem(2)
    with pytest.raises(ValueError, match="unknown activation"):
        ts.make_problem(3, activation="tanh")
    with pytest.raises(ValueError, match="at least 3x3"):
        ts.local_minima_grid(torch.zeros(2, 5, dtype=DT))
