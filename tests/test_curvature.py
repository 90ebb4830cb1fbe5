"""Tests for equivlib.curvature: Hessians of the decomposition's terms, their parts, spectra and landscapes."""
import numpy as np
import pandas as pd
import pytest
import torch

from equivlib import curvature as cv
from equivlib.config import ParameterError
from equivlib.groups import VectorAction, sample_haar
from equivlib.hessian import gradient, subset_loss
from equivlib.tasks import FixedBatch

DT = torch.float64


def _mlp(seed=0, hidden=6):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)).double().eval()


def _batch(seed=1, B=3, atoms=4, N=5, masked=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, atoms, 3, dtype=DT, generator=g)
    y = torch.randn(B, atoms, 3, dtype=DT, generator=g)
    mask = None
    if masked:
        mask = torch.ones(B, atoms, dtype=torch.bool)
        mask[0, -1] = False
        y[0, -1] = float("nan")  # padding may hold anything
    return FixedBatch(x, y, mask, {}, sample_haar(N, batch=B, generator=g), VectorAction())


def test_term_hessians_add_up_and_match_finite_differences():
    model, batch = _mlp(), _batch()
    H = cv.term_hessians(model, batch, ["0"])
    assert torch.allclose(H["L"], H["L_mean"] + H["L_equiv"], atol=1e-14)
    f, flat = subset_loss(model, ["0"], batch.loss("L_equiv"))
    e = torch.randn(flat.n, dtype=DT, generator=torch.Generator().manual_seed(3))
    h = 1e-5
    fd = (gradient(f, flat.theta0 + h * e) - gradient(f, flat.theta0 - h * e)) / (2 * h)
    assert torch.allclose(H["L_equiv"] @ e, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("masked", [False, True])
def test_gauss_newton_plus_residual_is_the_hessian(masked):
    parts = cv.hessian_parts(_mlp(), _batch(masked=masked), ["0"])
    for term, d in parts.items():
        err = (d["gauss_newton"] + d["residual"] - d["dense"]).abs().max() / d["dense"].abs().max()
        assert err < 1e-10, term
        assert torch.linalg.eigvalsh(d["gauss_newton"]).min() > -1e-12  # PSD
        assert d["residual"].abs().max() > 1e-6  # a non-linear layer: the residual part is not zero


def test_residual_vanishes_for_a_layer_the_outputs_are_linear_in():
    parts = cv.hessian_parts(_mlp(), _batch(), ["2"])  # the last linear layer
    for d in parts.values():
        assert d["residual"].abs().max() < 1e-14
        assert torch.allclose(d["gauss_newton"], d["dense"], atol=1e-12)


def test_residual_bound_of_the_corollary_holds():
    """‖R_equiv‖ <= 2 sqrt(L_equiv) · S̄, with S̄² the weighted mean of Σ_k ‖∇²Z_k‖² (computed densely)."""
    model, batch = _mlp(hidden=3), _batch(B=2, atoms=2, N=3)
    R = cv.hessian_parts(model, batch, ["0"])["L_equiv"]["residual"]
    Zf = cv._twisted_fn(model, cv.FlatParams(cv.select_parameters(model, ["0"])), batch)
    theta = cv.FlatParams(cv.select_parameters(model, ["0"])).theta0
    Z = Zf(theta).detach()
    N, B, D = Z.shape[0], Z.shape[1], Z[0, 0].numel()
    H = torch.func.hessian(lambda t: Zf(t).reshape(-1))(theta)  # (N·B·D, n, n)
    S2 = (torch.linalg.matrix_norm(H, ord=2) ** 2).reshape(N, B, D).sum(-1)
    Sbar = (S2.sum() / (B * N * D)).sqrt()
    L_equiv = batch.terms(model)["L_equiv"]
    assert torch.linalg.matrix_norm(R, ord=2) <= 2 * np.sqrt(L_equiv) * Sbar + 1e-12


def test_spectrum_row_cutoffs_and_bad_input():
    lam = np.array([-0.01, -1e-17, 1e-12, 1e-7, 1e-3, 0.5, 1.0])
    row = cv.spectrum_row(lam, cutoffs=(1e-8, 1e-4), k=3)
    assert row["kappa@1e-08"] == pytest.approx(1e7) and row["kappa@0.0001"] == pytest.approx(1e3)
    assert row["top_ratio"] == pytest.approx(1 / 1e-3) and row["top_k"] == 3
    assert row["neg_share"] == pytest.approx(1 / 7)  # -1e-17 is rounding, not negative curvature
    with pytest.raises(ParameterError, match="no positive curvature"):
        cv.spectrum_row([-1.0, -0.5])
    with pytest.raises(ParameterError, match="at least two finite"):
        cv.spectrum_row([1.0, np.nan])


def test_condition_summary_ratio_and_count():
    rows = []
    for b, (km, ke) in enumerate([(100.0, 10.0), (1000.0, 10.0), (10.0, 20.0)]):
        rows += [{"batch": b, "term": "L_mean", "kappa@1e-06": km}, {"batch": b, "term": "L_equiv", "kappa@1e-06": ke},
                 {"batch": b, "term": "L", "kappa@1e-06": km}]
    s = cv.condition_summary(pd.DataFrame(rows))
    r = s.loc["L_mean / L_equiv"]
    assert r["equiv_better"] == 2 and r["n_batches"] == 3
    assert r["geo_mean"] == pytest.approx((10 * 100 * 0.5) ** (1 / 3))
    assert r["low"] < r["geo_mean"] < r["high"]
    with pytest.raises(ParameterError, match="no column"):
        cv.condition_summary(pd.DataFrame(rows), column="kappa@1")
    with pytest.raises(ParameterError, match="at least two"):
        cv.condition_summary(pd.DataFrame(rows[:3]))


class _Task:
    """The two things condition_study / checkpoint_curvature use of a Task."""

    name = "toy"

    def fixed_batch(self, n_samples, n_elements, index=0):
        return _batch(seed=10 + index, B=n_samples, N=n_elements)


def test_condition_study_and_checkpoint_curvature_shapes():
    t = cv.condition_study(_mlp(), _Task(), ["2"], n_batches=2, n_samples=2, n_elements=3, k=4)
    assert len(t) == 6 and set(t["term"]) == {"L", "L_mean", "L_equiv"} and t.attrs["n_params"] == 21
    # a linear last layer: every Hessian is positive semi-definite
    assert (t["neg_share"] == 0).all()
    c = cv.checkpoint_curvature(lambda s: _mlp(seed=s), [0, 1], _Task(), ["2"], n_samples=2, n_elements=3)
    assert list(c["step"].unique()) == [0, 1]
    with pytest.raises(ParameterError, match="n_batches"):
        cv.condition_study(_mlp(), _Task(), ["2"], n_batches=0, n_samples=2, n_elements=3)


def test_landscape_centre_is_the_loss_at_the_model_and_model_untouched():
    model, batch = _mlp(), _batch()
    before = [p.detach().clone() for p in model.parameters()]
    ls = cv.landscape(model, batch, ["0"], n=5, extent=0.2)
    terms = batch.terms(model)
    assert ls.L_mean[2, 2] == pytest.approx(terms["L_mean"], rel=1e-12)
    assert ls.L_equiv[2, 2] == pytest.approx(terms["L_equiv"], rel=1e-12)
    assert ls.lambda_u >= ls.lambda_v > 0 and ls.L_mean.shape == (5, 5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # along u the total loss curves by about lambda_u: second difference over the grid
    a = ls.a[1] - ls.a[0]
    L = ls.L_mean + ls.L_equiv
    assert (L[2, 3] - 2 * L[2, 2] + L[2, 1]) / a**2 == pytest.approx(ls.lambda_u, rel=0.05)
    with pytest.raises(ParameterError, match="odd"):
        cv.landscape(model, batch, ["0"], n=4)
    with pytest.raises(ParameterError, match="extent"):
        cv.landscape(model, batch, ["0"], n=5, extent=0.0)
    with pytest.raises(ParameterError, match="no parameter or module"):
        cv.term_hessians(model, batch, ["nope"])
