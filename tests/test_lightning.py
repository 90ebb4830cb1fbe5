"""equivlib.lightning: the monitor as a PyTorch Lightning callback, tested with the real pytorch-lightning."""
import pytest
import pytorch_lightning as pl
import torch

import equivlib as eq
from equivlib.lightning import LOGGED, EquivarianceCallback
from equivlib.training import EquivarianceMonitor, masked_mse


class Net(torch.nn.Module):
    """Per-atom MLP on raw coordinates: not rotation-equivariant."""

    def __init__(self):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))

    def forward(self, x, mask=None):
        out = self.mlp(x)
        return out if mask is None else out * mask[..., None]


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def forward(self, x, mask=None):
        return self.net(x, mask)

    def training_step(self, batch, batch_idx):
        x, y, m = batch
        return masked_mse(self(x, m), y, m)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def data(n=24, atoms=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, atoms, 3, generator=g)  # float32, as most training data
    y = x * x.norm(dim=-1, keepdim=True)
    m = torch.ones(n, atoms, dtype=torch.bool)
    m[::3, -1] = False
    return x, y * m[..., None], m


def fit(callbacks, steps=6, accumulate=1, seed=0, logger=False):
    pl.seed_everything(seed, verbose=False)
    module = Module()
    x, y, m = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y, m), batch_size=4, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=accumulate,
                         callbacks=callbacks)
    trainer.fit(module, loader)
    return module, trainer


def callback(**kw):
    x, y, m = data(n=8, seed=1)
    return EquivarianceCallback(x, y, eq.VectorAction(), every=2, extras={"mask": m}, mask=m, n_elements=3,
                                seed=4, **kw)


def test_callback_records_logs_and_matches_a_plain_monitor(tmp_path):
    cb = callback(precision="exact")
    module, trainer = fit([cb], logger=pl.loggers.CSVLogger(tmp_path, name="run"))
    table = cb.table()
    assert list(table["step"]) == [0, 2, 4, 6]
    for k in LOGGED:
        assert trainer.callback_metrics[f"equivariance/{k}"].item() == pytest.approx(table[k].iloc[-1], rel=1e-6)
    # the logger holds one row per evaluation, at the monitor's step, with its values
    import pandas as pd
    logged = pd.read_csv(next(tmp_path.rglob("metrics.csv"))).dropna(subset=["equivariance/percent"])
    assert list(logged["step"]) == [0, 2, 4, 6]
    for k in LOGGED:
        assert logged[f"equivariance/{k}"].tolist() == pytest.approx(table[k].tolist(), rel=1e-12)
    # the last record equals a plain monitor on the final model, its generator replayed to the 4th evaluation
    x, y, m = data(n=8, seed=1)
    plain = EquivarianceMonitor(module, x, y, eq.VectorAction(), extras={"mask": m}, mask=m, n_elements=3, seed=4,
                                precision="exact")
    for step in (0, 2, 4):
        plain.measure(step)
    last = plain.measure(6)
    for k in ("L", "L_mean", "L_equiv", "percent"):
        assert last[k] == pytest.approx(table[k].iloc[-1], rel=1e-12), k
    assert 0 < table["percent"].iloc[0] < 100


def test_callback_does_not_change_training_and_counts_optimiser_steps():
    with_cb, _ = fit([callback()])
    without, _ = fit([])
    for a, b in zip(with_cb.parameters(), without.parameters()):
        assert torch.equal(a, b)
    cb = callback(at=[1])
    fit([cb], steps=4, accumulate=2)  # two batches per optimiser step: one evaluation per step, not per batch
    assert list(cb.table()["step"]) == [0, 1, 2, 4]


def test_callback_model_of_and_errors():
    cb = callback(model_of=lambda module: module.net, log=False)
    _, trainer = fit([cb], steps=2)
    assert cb.monitor.model is not None and type(cb.monitor.model).__name__ == "Net"
    assert len(cb.table()) == 2 and "equivariance/percent" not in trainer.callback_metrics
    with pytest.raises(ValueError, match="every must be a positive integer"):
        EquivarianceCallback(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), eq.VectorAction(), every=0)
    bad = callback(model_of=lambda module: "not a module")
    with pytest.raises(TypeError, match="model_of must return an nn.Module"):
        fit([bad], steps=1)


def test_rotation_augmented_module_trains_on_rotated_batches():
    from equivlib.lightning import RotationAugmentedModule
    from equivlib.training import rotation_augment

    torch.manual_seed(0)
    net = Net()
    module = RotationAugmentedModule(net, lr=1e-2, seed=3)
    x, y, m = data(n=4)
    assert torch.equal(module(x, m), net(x, m))
    # the step's loss is the masked MSE on the batch rotated by the module's own seeded generator
    ref = rotation_augment("x", ("y",))({"x": x, "y": y}, torch.Generator().manual_seed(3))
    expected = masked_mse(net(ref["x"], m), ref["y"], m)
    module.log = lambda *a, **k: None  # outside a Trainer
    got = module.training_step((x, y, m), 0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.item() != pytest.approx(masked_mse(net(x, m), y, m).item(), rel=1e-3)  # it did rotate
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 1e-2
    with pytest.raises(ValueError, match="lr must be a positive number"):
        RotationAugmentedModule(net, lr=0)
