"""Tests for equivlib.hidden.spherical: the 0e + l spherical-signal model with e3nn."""
import pytest
import torch

from equivlib import hidden as ts
from equivlib.groups import haar_so3

DT = torch.float64
TEACHER = torch.tensor([0.5, 1.0], dtype=DT)


def test_spherical_model_odd_symmetry_and_aliasing(generator):
    for l, symmetric in ((1, True), (2, False)):
        m = ts.SphericalSignalModel(l, l + 2, (16, 16) if l == 1 else (20, 20))
        x = torch.randn(16, 2 * l + 2, generator=generator, dtype=DT)
        f1 = m.forward(x, 0.5, 0.8)
        f2 = m.forward(x, 0.5, -0.8)
        gap = ((f1 - f2).abs().max() / f1.abs().max()).item()
        assert (gap < 1e-6) if symmetric else (gap > 1e-3)
    coarse = ts.s2_aliasing_error(ts.SphericalSignalModel(2, 4, (10, 10)), 8, 4, generator)["coeff_rel_err"]
    fine = ts.s2_aliasing_error(ts.SphericalSignalModel(2, 4, (40, 40)), 8, 4, generator)["coeff_rel_err"]
    assert fine < coarse and fine < 1e-2


def test_aliasing_error_draws_signals_then_haar_rotations(generator):
    """The rotations are ``equivlib.groups.haar_so3`` draws, right after the random signals."""
    m = ts.SphericalSignalModel(1, 3, (8, 8))
    state = generator.get_state()
    first = ts.s2_aliasing_error(m, 4, 3, generator)
    after = torch.randn(1, generator=generator, dtype=DT)
    g2 = torch.Generator().manual_seed(0)
    g2.set_state(state)
    torch.randn(4, (m.lmax_in + 1) ** 2, generator=g2, dtype=DT)
    haar_so3(3, generator=g2)
    assert torch.equal(after, torch.randn(1, generator=g2, dtype=DT))
    g2.set_state(state)
    assert ts.s2_aliasing_error(m, 4, 3, g2) == first  # seeded: reproducible


def test_s2_landscape_matches_pointwise_loss(generator, tol):
    m = ts.SphericalSignalModel(2, 4, (10, 10))
    x = torch.randn(8, 6, generator=generator, dtype=DT)
    w0 = torch.linspace(-1, 1, 4, dtype=DT)
    wl = torch.linspace(-2, 2, 5, dtype=DT)
    Z = ts.s2_landscape(m, x, w0, wl, TEACHER, chunk=3)  # chunks that do not divide the grid
    assert Z.shape == (5, 4)
    f = ts.s2_loss_fn(m, x, TEACHER)
    pointwise = torch.stack([torch.stack([f(torch.stack([a, b])) for a in w0]) for b in wl]).detach()
    assert torch.allclose(Z, pointwise, rtol=tol(DT), atol=tol(DT))
    assert f(TEACHER).item() == 0.0


def test_s2_degree_study_odd_symmetric_even_spurious():
    w = torch.linspace(-2, 2, 9, dtype=DT)
    df, land = ts.s2_degree_study([1, 2], TEACHER, w, n_samples=8, res_factor=1, n_rotations=2,
                                  generator=torch.Generator().manual_seed(0))
    assert df["l"].tolist() == [1, 2] and df["grid"].tolist() == ["8x8", "10x10"]
    assert set(land) == {1, 2} and land[2][0].shape == (9, 9)
    odd, even = df.iloc[0], df.iloc[1]
    assert odd["asymmetry wl->-wl"] < 1e-6 and even["asymmetry wl->-wl"] > 1e-3
    assert (df["aliasing (coeff.)"] > 0).all() and (df["aliasing (coeff.)"] < 0.2).all()
    for l in (1, 2):
        mins = land[l][1]
        assert len(mins) == 2 and df.iloc[l - 1]["minima"] == 2
        assert torch.allclose(mins[0], TEACHER, atol=1e-6)  # the teacher first (lowest loss)
        assert mins[1][1] < 0  # the other minimum is across the line wl = 0
    losses = [float(v) for v in even["losses at minima"].split(", ")]
    assert losses[0] < 1e-12 < 1e-3 < losses[1]  # even l: the second minimum is spurious
    assert even["lowest loss, teacher's side"] == pytest.approx(losses[0], abs=1e-12)
    assert even["lowest loss, other side"] == pytest.approx(losses[1], rel=1e-2)  # the table's text has 3 digits
    assert odd["lowest loss, teacher's side"] < 1e-12 and odd["lowest loss, other side"] < 1e-9  # mirror images


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="too coarse"):
        ts.SphericalSignalModel(2, 4, (6, 6))
    with pytest.raises(ValueError, match="l must be an integer >= 1"):
        ts.SphericalSignalModel(0, 2, (8, 8))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 6\)"):
        ts.SphericalSignalModel(2, 4, (10, 10)).basis_signals(torch.zeros(3, 4, dtype=DT))


def test_gradient_across_the_constant_signal_line_vanishes():
    """On wl = 0 the signal is constant, so dL/dwl pairs degree 0 with degree l: zero (autograd and finite differences)."""
    from equivlib.hidden.spherical import s2_line_gradient, s2_loss_fn

    gen = torch.Generator().manual_seed(5)
    for l in (1, 2):
        model = ts.SphericalSignalModel(l, l + 2, (4 * (l + 3), 4 * (l + 3)))
        x = torch.randn(24, 2 * l + 2, generator=gen, dtype=torch.float64)
        wt = torch.tensor([0.5, 1.0], dtype=torch.float64)
        r = s2_line_gradient(model, x, wt, [-1.5, -0.4, 0.3, 1.2])
        assert r["grad_norm"] > 1e-3  # the loss is not flat there: dL/dw0 is not zero
        # zero in exact arithmetic; e3nn's grid tables carry single-precision error (~1e-8 relative here)
        assert r["line_autograd"] < 1e-6 * r["grad_norm"]
        assert r["line_fd"] < 1e-6 * r["grad_norm"]
        # off the line the wl-derivative is not zero, so the check above could fail
        f = s2_loss_fn(model, x, wt)
        w = torch.tensor([0.3, 0.4], dtype=torch.float64, requires_grad=True)
        assert abs(torch.autograd.grad(f(w), w)[0][1].item()) > 1e-3
