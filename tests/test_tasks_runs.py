"""Tasks of chapter 2 (data + model + loss + augmentation + monitor) and cached runs."""
import json
import logging

import pytest
import torch

import equivlib.runs as runs
from equivlib.config import ParameterError
from equivlib.groups import cube_group, exhaustive, sample_finite, sample_haar
from equivlib.runs import Run, RunConfig, checkpoint_steps, get_run
from equivlib.tasks import HeldOut, make_task
from equivlib.training import train
from equivlib.twirl import decompose_model

TINY = {
    "forces": dict(n_heldout=3),
    "flow": dict(n_heldout=2, max_residues=16, t=(0.3, 0.9)),
    "voxels": dict(n_heldout=2),
}


@pytest.fixture(scope="module")
def tasks():
    torch.set_num_threads(1)
    return {name: make_task(name, "quick", 0, **kw) for name, kw in TINY.items()}


def _direct(task, model, held: HeldOut, seed=0, **spec):
    """The monitor's first record recomputed with decompose_model and the same group sample."""
    spec = {**task.monitor_spec, **spec}
    gen = torch.Generator().manual_seed(seed)
    B = held.x.shape[0]
    if spec["scheme"] == "haar":
        sample = sample_haar(spec["n_elements"], batch=B, generator=gen, dtype=torch.float64)
    elif spec["scheme"] == "finite":
        sample = sample_finite(cube_group(), spec["n_elements"], batch=B, generator=gen)
    else:
        sample = exhaustive(cube_group())
    m64 = model.to(torch.float64).eval()
    with torch.no_grad():
        d = decompose_model(m64, held.x, held.y, sample, task.action, mask=held.mask, extras=held.extras)
    model.to(torch.float32)
    return d


@pytest.mark.parametrize("name", ["forces", "flow", "voxels"])
def test_task_trains_and_monitor_matches_direct_decomposition(tasks, name):
    task = tasks[name]
    torch.manual_seed(0)
    model = task.make_model("small")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monitor = task.monitor(model, every=1)
    log = train(model, task.data, steps=1, batch_size=4, forward=task.forward, loss=task.loss,
                augment=task.batch_transform(augment=True), monitor=monitor, progress=False)
    assert len(log) == 1 and torch.isfinite(torch.tensor(log.loss.values)).all()
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "no parameter moved"
    table = monitor.table()
    assert set(table.step) == {0, 1}
    # Re-create the step-0 model and compute the decomposition directly.
    torch.manual_seed(0)
    fresh = task.make_model("small")
    d = _direct(task, fresh, task.heldout)
    rows = table[table.step == 0]
    if name == "flow":  # one batched pass over all times, one row per time
        t_of = task.heldout.extras["t"]
        assert list(rows["t"]) == sorted(task.times)
        refs = [d.subset(t_of == t).summary() for t in rows["t"]]
        for t in task.times:  # the stacked held-out set holds each time's fixed-noise set
            assert torch.equal(task.heldout.x[t_of == t], task.flow_heldout(t).x)
    else:
        assert len(rows) == 1
        refs = [d.summary()]
    for (_, row), ref in zip(rows.iterrows(), refs):
        for k in ("L", "L_mean", "L_equiv", "percent"):
            assert row[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
        assert 0 < row["percent"] < 100


def test_forces_task_data(tasks):
    t = tasks["forces"]
    f = t.data["forces"][t.data["mask"]]
    assert f.std().item() == pytest.approx(1.0, rel=1e-4)  # scaled by the training std
    assert t.info["force_scale"] > 0
    assert t.heldout.x.dtype == torch.float64 and set(t.heldout.extras) == {"mask", "species"}
    # augmentation rotates positions and forces by the same rotation
    batch = {k: v[:2] for k, v in t.data.items()}
    out = t.batch_transform(True)(batch, torch.Generator().manual_seed(1))
    p, q = batch["positions"][0], out["positions"][0]
    R = torch.linalg.lstsq(p, q).solution.T
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-4)
    assert torch.allclose(out["forces"][0], batch["forces"][0] @ R.T, atol=1e-4)
    assert not torch.allclose(q, p, atol=1e-2)


def test_flow_task_times_and_noise(tasks):
    t = tasks["flow"]
    a, b = t.flow_heldout(0.3), t.flow_heldout(0.3)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)  # seeded, fixed noise
    assert torch.all(a.extras["t"] == 0.3)
    assert not torch.equal(a.x, t.flow_heldout(0.9).x)
    assert t.heldout.x.shape[0] == 2 * a.x.shape[0]  # pooled over the times
    # positions in nm: C-alpha neighbours ~0.38 nm apart
    x1, m = t.data["x1"][0], t.data["mask"][0]
    gaps = (x1[1:] - x1[:-1]).norm(dim=-1)[m[1:] & m[:-1]]
    assert 0.3 < gaps.median().item() < 0.45
    out = t.batch_transform(False)({k: v[:3] for k, v in t.data.items()}, torch.Generator().manual_seed(0))
    assert {"x_t", "t", "v"} <= set(out) and out["x_t"].shape == out["v"].shape
    with pytest.raises(ParameterError, match="flow times"):
        make_task("flow", "quick", 0, t=(1.5,), n_heldout=1, max_residues=8)


def test_voxel_task_augments_with_cube_group(tasks):
    t = tasks["voxels"]
    assert t.heldout.x.shape[1:] == (6, 16, 16, 16) and t.heldout.y.shape == t.heldout.x.shape
    batch = {k: v[:3] for k, v in t.data.items()}
    plain = t.prepare(batch, None)["clean"]
    aug = t.augment(t.prepare(batch, None), torch.Generator().manual_seed(3))["clean"]
    assert not torch.allclose(plain, aug)
    for i in range(3):  # each augmented grid is a cube rotation of the plain one
        assert any(torch.allclose(t.action.apply(g[None, None], plain[i:i + 1])[0, 0], aug[i], atol=1e-5)
                   for g in cube_group(torch.float32))
    mon = t.monitor(t.make_model("small"), every=5, scheme="finite", n_elements=4)
    rec = mon.measure(0)
    assert rec["scheme"] == "iid" and rec["n_elements"] == 4


def test_bad_names_raise():
    with pytest.raises(ParameterError, match="unknown task"):
        make_task("proteins")
    with pytest.raises(ParameterError, match="PROFILE"):
        make_task("forces", "huge")
    with pytest.raises(ParameterError, match="unknown task"):
        RunConfig("nope")
    with pytest.raises(ParameterError, match="PROFILE"):
        RunConfig("flow", profile="medium")
    with pytest.raises(ParameterError, match="model size"):
        RunConfig("flow", model_size="xl")
    with pytest.raises(ParameterError, match="steps"):
        RunConfig("flow", steps=-1)


def test_keys_are_stable_and_distinct():
    a = RunConfig("flow", seed=0)
    assert a.key == RunConfig("flow", seed=0).key
    assert a.key != RunConfig("flow", seed=1).key
    assert a.key != RunConfig("flow", augment=False).key
    assert a.key != RunConfig("flow", extra={"max_residues": 8}).key
    assert checkpoint_steps(100)[0] == 0 and checkpoint_steps(100)[-1] == 100
    assert checkpoint_steps(0) == [0]


RUN_EXTRA = {"max_residues": 12, "n_heldout": 2, "monitor": {"times": [0.5], "n_elements": 4}}


def test_run_is_cached_reloaded_and_repaired(tmp_path, monkeypatch, caplog):
    calls = []

    def counting_train(*a, **k):
        calls.append(1)
        return train(*a, **k)

    monkeypatch.setattr(runs, "train", counting_train)
    cfg = RunConfig("flow", steps=6, batch_size=4, eval_every=3, extra=RUN_EXTRA)
    first = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert isinstance(first, Run) and first.trained and len(calls) == 1
    assert list(first.monitor.step) == [0, 3, 6] and set(first.monitor.t) == {0.5}
    assert first.checkpoint_steps == checkpoint_steps(6) and len(first.log) == 6
    second = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert not second.trained and len(calls) == 1  # loaded, not retrained
    assert second.monitor.equals(first.monitor) and second.log.equals(first.log)
    for s in first.checkpoint_steps:
        a, b = first.load_model(s).state_dict(), second.load_model(s).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    m0, m6 = first.load_model(0).state_dict(), first.load_model(6).state_dict()
    assert any(not torch.equal(m0[k], m6[k]) for k in m0)
    with pytest.raises(ParameterError, match="no checkpoint"):
        first.load_model(5)
    # same config, fresh cache: the same numbers (seeded)
    again = get_run(cfg, cache_dir=tmp_path / "other", progress=False)
    numbers = lambda run: run.monitor.drop(columns="train_seconds")  # noqa: E731 - wall-clock differs
    assert numbers(again).equals(numbers(first))
    # the training clock: increasing per step, and the monitor rows carry it (0 before training)
    assert (first.log["seconds"].diff().dropna() > 0).all() and first.train_seconds == first.log["seconds"].iloc[-1]
    assert first.monitor.loc[first.monitor.step == 0, "train_seconds"].eq(0).all()
    assert first.monitor.set_index("step")["train_seconds"].loc[6] == first.log["seconds"].iloc[-1]
    # corrupt a checkpoint: detected, logged, retrained
    (first.path / "checkpoints" / f"step_{first.checkpoint_steps[1]}.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="equivlib.runs"):
        fixed = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert fixed.trained and len(calls) == 3 and "retraining" in caplog.text
    assert numbers(fixed).equals(numbers(first))
    # a missing file as well
    (fixed.path / "monitor.csv").unlink()
    assert get_run(cfg, cache_dir=tmp_path, progress=False).trained and len(calls) == 4
    # a different seed is a different entry
    assert RunConfig("flow", steps=6, batch_size=4, eval_every=3, extra=RUN_EXTRA, seed=1).key != cfg.key
    stored = json.loads((first.path / "config.json").read_text())
    assert stored["config"]["steps"] == 6 and stored["key"] == cfg.key


def test_run_with_e3nn_baseline_and_training_subset(tmp_path):
    cfg = RunConfig("forces", steps=2, batch_size=2, eval_every=1, arch="e3nn", n_train=4,
                    extra={"n_heldout": 2, "monitor": {"n_elements": 2}})
    run = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert type(run.load_model()).__name__ == "E3ForceField"
    assert json.loads((run.path / "config.json").read_text())["n_examples"] == 4
    assert (run.monitor["percent"] < 1e-20).all()  # exactly equivariant: only float64 rounding is left
    assert cfg.key != RunConfig("forces", steps=2, batch_size=2, eval_every=1, n_train=4,
                                extra={"n_heldout": 2, "monitor": {"n_elements": 2}}).key
    with pytest.raises(ParameterError, match="architecture"):
        RunConfig("flow", arch="e3nn")
    with pytest.raises(ParameterError, match="n_train"):
        RunConfig("forces", n_train=0)
    with pytest.raises(ParameterError, match="exceeds"):
        get_run(RunConfig("forces", steps=1, n_train=10**6, extra={"n_heldout": 2}), cache_dir=tmp_path,
                progress=False)
