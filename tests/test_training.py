"""Tests for equivlib.training: the training loop and the equivariance monitor."""
import json

import pytest
import torch

import equivlib as eq
from equivlib.training import EquivarianceMonitor, float64_copy, masked_mse, rotation_augment, train


class Tiny(torch.nn.Module):
    """A small non-equivariant model over atoms: per-atom MLP on raw coordinates."""

    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 16, dtype=dtype), torch.nn.Tanh(),
                                       torch.nn.Linear(16, 3, dtype=dtype))

    def forward(self, x, mask=None):
        out = self.net(x)
        return out if mask is None else out * mask[..., None]


def toy_data(n=24, atoms=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, atoms, 3, generator=g, dtype=torch.float64)
    y = x * x.norm(dim=-1, keepdim=True)  # an equivariant target
    mask = torch.ones(n, atoms, dtype=torch.bool)
    mask[::3, -1] = False
    return x, y * mask[..., None], mask


def run(seed=0, monitor=True, steps=15, precision="exact"):
    torch.manual_seed(seed)
    model = Tiny()
    x, y, m = toy_data()
    mon = EquivarianceMonitor(model, x[:8], y[:8], eq.VectorAction(), every=5, extras={"mask": m[:8]},
                              mask=m[:8], n_elements=4, seed=3, precision=precision) if monitor else None
    log = train(model, {"x": x, "y": y, "mask": m}, steps=steps, batch_size=6,
                forward=lambda mdl, b: mdl(b["x"], b["mask"]), loss=lambda p, b: masked_mse(p, b["y"], b["mask"]),
                augment=rotation_augment("x", ("y",)), monitor=mon, generator=torch.Generator().manual_seed(seed),
                progress=False)
    return model, log, mon


def test_masked_mse_matches_per_sample_definition():
    x, y, m = toy_data()
    p = torch.zeros_like(y)
    manual = torch.stack([((y[b][m[b]]) ** 2).mean() for b in range(len(y))]).mean()
    assert torch.allclose(masked_mse(p, y, m), manual, atol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        masked_mse(p[:, :2], y, m)


def test_monitor_equals_direct_computation():
    model, _, mon = run()
    rec = mon.records[-1]
    x, y, m = toy_data()
    # replay the monitor's generator: one sample per evaluation, so skip the earlier ones
    g = torch.Generator().manual_seed(3)
    for _ in range(len(mon.records)):
        s = eq.sample_haar(4, batch=8, generator=g)
    with torch.no_grad():
        d = eq.decompose_model(model.eval(), x[:8], y[:8], s, eq.VectorAction(), mask=m[:8], extras={"mask": m[:8]})
    assert rec["L_equiv"] == pytest.approx(float(d.L_equiv.mean()), rel=1e-12)
    assert rec["percent"] == pytest.approx(d.percent, rel=1e-12)
    assert [r["step"] for r in mon.records] == [0, 5, 10, 15]


def test_monitor_does_not_change_the_run():
    a, log_a, _ = run(monitor=True)
    b, log_b, _ = run(monitor=False)
    assert torch.equal(torch.tensor(log_a["loss"].values), torch.tensor(log_b["loss"].values))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_same_seed_same_numbers_and_other_seed_differs():
    _, log1, mon1 = run(seed=1)
    _, log2, mon2 = run(seed=1)
    _, log3, _ = run(seed=2)
    assert log1["loss"].tolist() == log2["loss"].tolist()
    assert mon1.table().equals(mon2.table())
    assert log1["loss"].tolist() != log3["loss"].tolist()


def test_training_reduces_loss():
    _, log, mon = run(steps=60)
    assert log["loss"].iloc[-5:].mean() < log["loss"].iloc[:5].mean()
    assert mon.records[-1]["L"] < mon.records[0]["L"]


def test_monitor_grad_norms_add_up():
    torch.manual_seed(0)
    model = Tiny()
    x, y, m = toy_data()
    mon = EquivarianceMonitor(model, x, y, eq.VectorAction(), every=1, extras={"mask": m}, mask=m,
                              n_elements=4, grad_norms=True)
    rec = mon.measure(0)
    assert rec["grad_L_equiv"] > 0 and rec["grad_L_mean"] > 0
    assert rec["grad_L"] <= rec["grad_L_mean"] + rec["grad_L_equiv"] + 1e-12
    assert -1 <= rec["grad_cos_L_Lmean"] <= 1


def test_mixed_precision_monitor_is_the_exact_one_up_to_float32_round_off():
    """Default mode: the forward in float32, the sums in float64; same elements as the exact mode."""
    model, _, exact = run(precision="exact")
    _, _, mixed = run(precision="mixed")
    assert next(model.parameters()).dtype == torch.float64 and mixed._copy is not None  # a float32 copy
    assert mixed._copy is not None and next(mixed._copy.parameters()).dtype == torch.float32
    for a, b in zip(exact.records, mixed.records):
        assert a["step"] == b["step"]
        for k in ("L", "L_mean", "L_equiv", "percent"):
            assert b[k] == pytest.approx(a[k], rel=1e-4), k  # float32 round-off, not a different sample
            assert isinstance(b[k], float)
        assert b["L"] != a["L"]  # it did run in float32
    # an exactly equivariant model: the exact mode reads round-off of float64, the mixed one of float32
    x, y, m = toy_data()
    equi = lambda xx, mask=None: 0.5 * xx * xx.norm(dim=-1, keepdim=True)  # noqa: E731  (half the target)
    ex = EquivarianceMonitor(_Wrap(equi, torch.float64), x, y, eq.VectorAction(), mask=m, precision="exact")
    mx = EquivarianceMonitor(_Wrap(equi, torch.float32), x, y, eq.VectorAction(), mask=m)
    r_ex, r_mx = ex.measure(0), mx.measure(0)
    assert abs(r_ex["L_equiv"]) < 1e-25 < abs(r_mx["L_equiv"]) < 1e-10 * r_mx["L"]
    with pytest.raises(ValueError, match="precision must be one of"):
        EquivarianceMonitor(model, x, y, eq.VectorAction(), precision="float32")
    with pytest.raises(ValueError, match="eval_dtype must be a floating torch.dtype"):
        EquivarianceMonitor(model, x, y, eq.VectorAction(), eval_dtype=torch.int64)


class _Wrap(torch.nn.Module):
    """A parameter-free function as a module with one (unused) parameter fixing its dtype."""

    def __init__(self, fn, dtype):
        super().__init__()
        self.fn, self.p = fn, torch.nn.Parameter(torch.zeros((), dtype=dtype))

    def forward(self, x, **kw):
        return self.fn(x)


def test_monitor_evaluates_float32_models_in_float64():
    torch.manual_seed(0)
    model = Tiny(dtype=torch.float32)
    x, y, m = toy_data()
    mon = EquivarianceMonitor(model, x, y, eq.VectorAction(), every=1, mask=m, extras={"mask": m}, n_elements=3,
                              precision="exact")
    rec = mon.measure(0)
    assert rec["L"] > 0 and next(model.parameters()).dtype == torch.float32
    # float32 data (most users' training data) are converted, and measure the same as float64 data would
    mon32 = EquivarianceMonitor(model, x.float(), y.float(), eq.VectorAction(), every=1, mask=m, extras={"mask": m},
                                n_elements=3, precision="exact")
    assert mon32.x.dtype == mon32.y.dtype == torch.float64
    rec32 = mon32.measure(0)
    ref = EquivarianceMonitor(model, x.float().double(), y.float().double(), eq.VectorAction(), every=1, mask=m,
                              extras={"mask": m}, n_elements=3, precision="exact").measure(0)
    assert rec32["L"] == ref["L"] and rec32["percent"] == ref["percent"]
    with pytest.raises(ValueError, match="floating point"):
        EquivarianceMonitor(model, x.long(), y, eq.VectorAction())


def test_monitor_is_loud_about_nan_in_data_and_in_predictions():
    model = Tiny()
    x, y, m = toy_data()
    bad_y = y.clone()
    bad_y[1, 0, 0] = float("nan")
    bad_y[3, 1, 2] = float("inf")
    with pytest.raises(eq.NonFiniteError, match="targets y: 2 of"):
        EquivarianceMonitor(model, x, bad_y, eq.VectorAction(), mask=m, extras={"mask": m})
    pad = y.clone()
    pad[~m] = float("nan")  # padding may hold anything
    assert (~m).any()
    rec = EquivarianceMonitor(model, x, pad, eq.VectorAction(), mask=m, extras={"mask": m}, n_elements=3).measure(0)
    ref = EquivarianceMonitor(model, x, y, eq.VectorAction(), mask=m, extras={"mask": m}, n_elements=3).measure(0)
    assert rec["L"] == ref["L"] and rec["percent"] == ref["percent"]
    mon = EquivarianceMonitor(model, x, y, eq.VectorAction(), every=1, mask=m, extras={"mask": m}, n_elements=3)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # a diverged run
    with pytest.raises(eq.NonFiniteError, match="monitor at step 7: .*non-finite twisted predictions.*diverged"):
        mon.measure(7)


def test_monitor_float64_copy_follows_training_and_split_matches_subsets():
    """The persistent float64 copy is refreshed each evaluation; split rows equal the per-group decompositions."""
    torch.manual_seed(0)
    model = Tiny(dtype=torch.float32)
    model.register_buffer("scale", torch.tensor(0.1, dtype=torch.float32))  # a constant float buffer
    x, y, m = toy_data()
    labels = torch.arange(x.shape[0]) % 3
    mon = EquivarianceMonitor(model, x, y, eq.VectorAction(), every=1, mask=m, extras={"mask": m}, n_elements=3,
                              split=("part", labels), grad_norms=True, seed=5, precision="exact")
    first = mon.measure(0)
    mon._copy.scale.fill_(0.1)  # as if recomputed in float64 (like e3nn's Wigner-3j tables)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    second = mon.measure(1)
    assert [r["part"] for r in second] == [0, 1, 2] and len(mon.table()) == 6
    assert second[0]["L"] != first[0]["L"]  # the copy followed the update
    assert mon._copy.scale.dtype == torch.float64 and mon._copy.scale.item() == 0.1  # unchanged: not overwritten
    model.scale.fill_(0.2)
    mon.measure(2)
    assert mon._copy.scale.item() == torch.tensor(0.2, dtype=torch.float32).item()  # changed: copied
    # recompute directly: same generator state as the second evaluation
    gen = torch.Generator().manual_seed(5)
    eq.sample_haar(3, batch=x.shape[0], generator=gen, dtype=torch.float64)
    sample = eq.sample_haar(3, batch=x.shape[0], generator=gen, dtype=torch.float64)
    m64 = float64_copy(model)
    m64.scale.fill_(0.1)
    d = eq.decompose_model(m64, x, y, sample, eq.VectorAction(), extras={"mask": m}, mask=m)
    for part, rec in enumerate(second):
        ref = d.subset(labels == part).summary()
        for k in ("L", "L_mean", "L_equiv", "percent", "se_percent"):
            assert rec[k] == pytest.approx(ref[k], rel=1e-10), (part, k)
        assert rec["n_samples"] == int((labels == part).sum()) and rec["grad_L"] > 0
    with pytest.raises(ValueError, match="split labels"):
        EquivarianceMonitor(model, x, y, eq.VectorAction(), split=("part", labels[:-1]))


def test_train_log_clock_excludes_the_monitor():
    _, log, mon = run(steps=10)
    assert list(log.columns) == ["step", "loss", "seconds"] and (log["seconds"].diff().dropna() > 0).all()
    # the loop's wall time = the clock + the evaluations at steps 5 and 10 (mon.seconds also holds step 0's)
    assert log.attrs["seconds"] - mon.seconds - 1e-3 <= log["seconds"].iloc[-1] < log.attrs["seconds"]


def test_float64_copy_leaves_original():
    model = Tiny(dtype=torch.float32)
    c = float64_copy(model)
    assert next(c.parameters()).dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32


def test_rotation_augment_rotates_consistently():
    x, y, m = toy_data()
    out = rotation_augment("x", ("y",))({"x": x, "y": y}, torch.Generator().manual_seed(0))
    # the target is an equivariant function of x, so it must still match after rotation
    assert torch.allclose(out["y"] * m[..., None], (out["x"] * out["x"].norm(dim=-1, keepdim=True)) * m[..., None],
                          atol=1e-12)
    assert not torch.allclose(out["x"], x)


def test_train_errors():
    x, y, m = toy_data()
    model = Tiny()
    kw = dict(steps=1, batch_size=2, forward=lambda mdl, b: mdl(b["x"]), loss=lambda p, b: masked_mse(p, b["y"]),
              progress=False)
    with pytest.raises(ValueError, match="leading size"):
        train(model, {"x": x, "y": y[:3]}, **kw)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(model, {"x": x, "y": y}, optimizer="lbfgs-ish", **kw)
    with pytest.raises(FloatingPointError, match="loss became"):
        train(model, {"x": x, "y": y * float("nan")}, **kw)
    with pytest.raises(ValueError, match="every"):
        EquivarianceMonitor(model, x, y, eq.VectorAction(), every=0)


def test_monitor_pool_units_records_the_pooled_percent():
    from equivlib.groups import VectorAction
    from equivlib.twirl import decompose_model

    gen = torch.Generator().manual_seed(0)
    n, T = 6, 2
    x = torch.randn(n * T, 5, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(n * T, 5, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0.25] * n + [0.75] * n, dtype=torch.float64)
    W = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(3, 3, bias=False, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(W)
    units = torch.arange(n).repeat(T)
    mon = EquivarianceMonitor(model, x, y, VectorAction(), every=1, n_elements=4, split=("t", labels),
                              pool_units=units, seed=3)
    mon(0)
    table = mon.table()
    assert len(table) == T and table["pooled_percent"].nunique() == 1
    assert table["pooled_percent"].iloc[0] == pytest.approx(
        100 * (table["L_equiv"] * n).sum() / (table["L"] * n).sum(), rel=1e-12)
    assert table["pooled_se_percent"].iloc[0] > 0
    with pytest.raises(ValueError, match="split"):
        EquivarianceMonitor(model, x, y, VectorAction(), pool_units=units)
    with pytest.raises(ValueError, match="pool_units must have shape"):
        EquivarianceMonitor(model, x, y, VectorAction(), split=("t", labels), pool_units=units[:3])


def test_log_cosh_matches_the_definition_and_is_finite():
    import math

    from equivlib.training import log_cosh

    r = torch.tensor([-3.0, -0.1, 0.0, 0.5, 2.0], dtype=torch.float64)
    assert log_cosh(r, torch.zeros_like(r)).item() == pytest.approx(torch.log(torch.cosh(r)).mean().item(), rel=1e-12)
    big = torch.tensor([1e4], dtype=torch.float64)
    assert log_cosh(big, torch.zeros_like(big)).item() == pytest.approx(1e4 - math.log(2), rel=1e-12)


def test_smoke_mode_caps_training_and_reports_the_planned_loop(monkeypatch, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("EQUIVLIB_SMOKE", "4")
    monkeypatch.setenv("EQUIVLIB_SMOKE_LEDGER", str(ledger))
    _, log, mon = run(steps=15)
    assert len(log) == 4  # the cap holds even though the caller asked for 15 steps
    (entry,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert entry["steps"] == 4 and entry["planned_steps"] == 15
    assert entry["evals"] == mon.evaluations == 1  # step 0 only (every=5)
    assert entry["planned_evals"] == 4  # steps 0, 5, 10, 15
    assert entry["step_s"] > 0 and entry["eval_s"] > 0 and entry["device"] == "cpu"
    monkeypatch.delenv("EQUIVLIB_SMOKE")
    _, log, _ = run(steps=15)
    assert len(log) == 15 and len(ledger.read_text().splitlines()) == 1  # outside the smoke mode: no report
