"""Tests for equivlib.tasks: the three chapter-2 tasks (data + model + loss + augmentation +
monitor), their profile tables and their models (including the e3nn baseline)."""
import math
import re
import time

import pytest
import torch

from equivlib.config import ParameterError, derived_generator, set_threads
from equivlib.data.voxels import VOXEL_PROFILES
from equivlib.groups import VectorAction, cube_group, exhaustive, sample_finite, sample_haar
from equivlib.models import E3ForceField, EScAIPForceField
from equivlib.tasks import ARCHS, TASK_PROFILES, HeldOut, check_arch, make_model, make_task, task_profile
from equivlib.testing import assert_equivariant
from equivlib.training import train
from equivlib.twirl import decompose_model
from tests.conftest import random_rotations

F64 = torch.float64

TINY = {
    "forces": dict(n_heldout=3),
    "flow": dict(n_heldout=2, max_residues=16, t=(0.3, 0.9)),
    "voxels": dict(n_heldout=2),
}


@pytest.fixture(scope="module")
def tasks():
    set_threads(1)
    return {name: make_task(name, "quick", 0, **kw) for name, kw in TINY.items()}


def _direct(task, model, held: HeldOut, **spec):
    """The monitor's first record recomputed with decompose_model and the same group sample."""
    spec = {**task.monitor_spec, **spec}
    gen = derived_generator(task.seed, "monitor")  # the task's monitors draw from this stream
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
    monitor = task.monitor(model, every=1, precision="exact")
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
    mixed = task.monitor(fresh, every=1).measure(0)  # the default: float32 forward, float64 sums
    mixed = mixed if name == "flow" else [mixed]
    for (_, row), ref, mix in zip(rows.iterrows(), refs, mixed):
        for k in ("L", "L_mean", "L_equiv", "percent"):
            assert row[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12), k
            assert mix[k] == pytest.approx(ref[k], rel=1e-4), k  # float32 round-off of the forward only
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


def test_bad_task_names_raise():
    with pytest.raises(ParameterError, match="unknown task"):
        make_task("proteins")
    with pytest.raises(ParameterError, match="PROFILE"):
        make_task("forces", "huge")
    with pytest.raises(ParameterError, match="unknown task"):
        task_profile("proteins", "quick")


def test_profile_tables_reach_the_tasks(tasks):
    """One table per task: its "task" half is what make_task uses when no override is given."""
    assert set(TASK_PROFILES) == {"forces", "flow", "voxels"}
    assert task_profile("voxels", "quick") == {"grid_size": 16, "box": 16.0, "n_heldout": 8}
    assert task_profile("voxels", "full") == {"grid_size": 48, "box": 24.0, "n_heldout": 64}
    assert task_profile("forces", "quick")["n_heldout"] == 16 and task_profile("forces", "full")["n_heldout"] == 256
    assert task_profile("flow", "quick")["max_residues"] == 64 and task_profile("flow", "full")["max_residues"] is None
    spec = task_profile("voxels", "quick")
    spec["grid_size"] = 0  # a copy: the table is untouched
    assert VOXEL_PROFILES["quick"]["task"]["grid_size"] == 16
    # the voxel task's grid: 16³ at 1 Å in quick (the same 16 Å box as the data's recommended 32³ at 0.5 Å)
    v = tasks["voxels"].info
    assert (v["grid_size"], v["resolution"], v["sigma"]) == (16, 1.0, 1.0)
    box = VOXEL_PROFILES["quick"]["data"]["grid_size"] * 0.5
    assert v["grid_size"] * v["resolution"] == box == task_profile("voxels", "quick")["box"]
    assert tasks["flow"].info["max_residues"] == 16  # an override wins over the table


def test_tasks_resolve_devices():
    t = make_task("forces", "quick", 0, device="cpu", n_heldout=1)
    assert t.info["device"] == torch.device("cpu") and t.heldout.x.device.type == "cpu"
    with pytest.raises(ParameterError, match="DEVICE"):
        make_task("forces", "quick", 0, device="tpu", n_heldout=1)


# --------------------------------------------------------------------------- models of the tasks
def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_make_model_e3nn_arch(tasks):
    task = tasks["forces"]
    assert ARCHS["forces"] == ("default", "e3nn") and check_arch("forces", "e3nn") == "e3nn"
    torch.manual_seed(0)
    model = task.make_model("small", arch="e3nn")
    assert isinstance(model, E3ForceField) and model.n_species == 36 and model.r_max == 5.0
    batch = {k: v[:6] for k, v in task.data.items()}
    with torch.no_grad():
        out = task.forward(model, batch)
    assert out.shape == batch["positions"].shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and (out[~batch["mask"]] == 0).all() and out.abs().amax() > 0
    assert isinstance(task.make_model("small"), EScAIPForceField)  # default unchanged
    # parameter counts of the same order as EScAIP's for each size
    for size in ("small", "base"):
        ratio = _n_params(make_model("forces", size, arch="e3nn")) / _n_params(make_model("forces", size))
        assert 0.5 < ratio < 2.0, (size, ratio)


def test_e3nn_task_model_equivariant_on_real_molecules(tasks, tol):
    """The task's e3nn model (r_max 5 Å, n_species 36) on quick training conformers, in float64."""
    d = tasks["forces"].data
    pos, mask, species = d["positions"][:8].to(F64), d["mask"][:8], d["species"][:8]
    assert (~mask).any() and mask.sum(1).min() > 10
    torch.manual_seed(0)
    model = make_model("forces", "small", dtype=F64, arch="e3nn")
    assert_equivariant(model, pos, random_rotations(2, seed=13), VectorAction(),
                       extras={"mask": mask, "species": species}, tol=tol(F64))


@pytest.mark.parametrize("task, arch", [("flow", "e3nn"), ("voxels", "e3nn"), ("forces", "nope")])
def test_make_model_bad_arch(task, arch):
    allowed = re.escape(str(ARCHS[task]))
    with pytest.raises(ParameterError, match=rf"{arch!r} for task {task!r}.*{allowed}"):
        make_model(task, arch=arch)
    with pytest.raises(ParameterError, match=rf"task {task!r}"):
        check_arch(task, arch)


def test_e3nn_training_smoke(tasks):
    """20 full-batch Adam steps on 16 quick conformers lower the loss (a few seconds on 1 thread)."""
    task = tasks["forces"]
    batch = {k: v[:16] for k, v in task.data.items()}
    torch.manual_seed(0)
    model = make_model("forces", "small", arch="e3nn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    t0 = time.perf_counter()
    losses = []
    for _ in range(20):
        loss = task.loss(task.forward(model, batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = task.loss(task.forward(model, batch), batch).item()
    assert all(math.isfinite(v) for v in losses)
    assert final < 0.8 * losses[0], (losses[0], final)
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("name", ["forces", "flow", "voxels"])
def test_fixed_batch_is_fixed_disjoint_and_exact(tasks, name):
    task = tasks[name]
    a, a2, b = task.fixed_batch(1, 3, index=0), task.fixed_batch(1, 3, index=0), task.fixed_batch(1, 3, index=1)
    assert torch.equal(a.x, a2.x) and torch.equal(a.sample.elements, a2.sample.elements)  # same call, same batch
    assert not torch.equal(a.x, b.x)  # disjoint minibatches
    assert a.x.dtype == F64 and a.sample.elements.dtype == F64
    model = make_model(name, "small", dtype=F64).eval()
    t = a.terms(model)
    assert t["L"] == pytest.approx(t["L_mean"] + t["L_equiv"], rel=1e-12)  # the plug-in split is exact
    assert a.loss("L_equiv")(model).item() == pytest.approx(t["L_equiv"], rel=1e-12)
    with pytest.raises(ParameterError, match="held-out samples"):
        task.fixed_batch(1, 3, index=10_000)
    with pytest.raises(ParameterError, match="n_elements"):
        task.fixed_batch(1, 1)


def test_fixed_batch_at_a_flow_time(tasks):
    fb = tasks["flow"].fixed_batch(1, 2, t=0.9)
    assert torch.allclose(fb.extras["t"], torch.full_like(fb.extras["t"], 0.9))
    with pytest.raises(ParameterError, match="no flow times"):
        tasks["forces"].fixed_batch(1, 2, t=0.5)


def test_smoke_mode_shrinks_the_full_held_out_sets_only(monkeypatch):
    full = {name: task_profile(name, "full") for name in TASK_PROFILES}
    monkeypatch.setenv("EQUIVLIB_SMOKE", "2")
    for name, table in TASK_PROFILES.items():
        smoke = task_profile(name, "full")
        assert smoke == {**full[name], **table["full"].get("smoke", {}).get("task", {})}
        assert task_profile(name, "quick") == table["quick"]["task"]
    # the voxel monitor keeps the full grid: few but large inputs, the case the twirl's memory probe is for
    vox = task_profile("voxels", "full")
    assert vox["grid_size"] == full["voxels"]["grid_size"] == 48 and vox["n_heldout"] >= 2
