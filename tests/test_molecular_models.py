"""Tests for the molecular-task models: EScAIP-style force field, the species-aware
e3nn baseline (``arch="e3nn"``), flow-matching transformer (C-alpha clouds) and 3D
U-Net voxel denoiser."""
import functools
import math
import re
import time

import pytest
import torch

from equivlib.config import ParameterError
from equivlib.groups import VectorAction, VoxelAction, cube_group, haar_so3
from equivlib.models import (
    FLOW_TIMES,
    E3ForceField,
    EScAIPForceField,
    FlowTransformer,
    UNet3D,
    flow_matching_batch,
    interpolate,
    noisy_voxels,
    target_velocity,
)

F64 = torch.float64
TOL_EQUIV64 = 1e-10  # relative; float64 rounding gives ~1e-15
NOT_EQUIV = 1e-2  # a random non-equivariant model is off by O(1)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def rotate(R, x):
    """``R (B, 3, 3)`` applied to ``x (B, N, 3)``."""
    return VectorAction().apply(R[None], x)[0]


# --------------------------------------------------------------------------- EScAIP
B, A = 4, 8


def escaip(dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d_model=16, n_layers=2, n_heads=2, n_rbf=8, r_max=3.0, n_species=10, avg_neighbors=4.0)
    cfg.update(kw)
    return EScAIPForceField(**cfg, dtype=dtype)


@pytest.fixture
def atoms():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(B, A, 3, generator=g, dtype=F64) * 1.2
    mask = torch.ones(B, A, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 7:] = False
    mask[3, 1:] = False  # a single atom: no edges at all
    species = torch.randint(1, 10, (B, A), generator=g)
    pos = pos * mask[..., None]
    species = species * mask
    return pos, mask, species


def test_escaip_shapes_padding_and_defaults(atoms):
    pos, mask, species = atoms
    model = escaip()
    out = model(pos, mask, species)
    assert out.shape == (B, A, 3) and out.dtype == F64
    assert torch.isfinite(out).all()
    assert (out[~mask] == 0).all()
    assert (out[3] == 0).all()  # isolated atom: no edges, no force
    assert out[0].abs().sum() > 0
    # Garbage (huge, NaN) coordinates and species at padded atoms change nothing.
    pos2, species2 = pos.clone(), species.clone()
    pos2[1, 5:] = torch.tensor([1e3, float("nan"), -2.0], dtype=F64)
    pos2[2, 7] = 0.1  # would be a close neighbour if it were real
    species2[~mask] = 99
    assert torch.equal(model(pos2, mask, species2), out)
    # Defaults: float32, mask and species optional, small.
    default = EScAIPForceField()
    assert default.head.dtype == torch.float32
    assert sum(p.numel() for p in default.parameters()) <= 100_000
    assert default(pos.float()).shape == (B, A, 3)


def test_escaip_bad_inputs(atoms):
    pos, mask, species = atoms
    model = escaip()
    with pytest.raises(ValueError, match=r"\(B, A, 3\)"):
        model(pos[..., :2], mask, species)
    with pytest.raises(ValueError, match=r"species"):
        model(pos, mask, species[:, :3])
    with pytest.raises(ValueError, match=r"n_species"):
        model(pos, mask, torch.full_like(species, 10))
    with pytest.raises(ValueError, match=r"must divide"):
        EScAIPForceField(d_model=10, n_heads=4)


def test_escaip_edge_features_invariant(atoms):
    pos, mask, species = atoms
    model = escaip()
    R = haar_so3(B, generator=torch.Generator().manual_seed(1))
    shift = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    h, unit, edge = model.edge_features(pos, mask, species)
    h2, unit2, edge2 = model.edge_features(rotate(R, pos) + shift, mask, species)
    assert h.shape == (B, A, A, 16) and unit.shape == (B, A, A, 3)
    assert torch.equal(edge, edge2)
    assert 0 < edge.sum() < edge[0].numel() * B  # some pairs beyond r_max, some within
    assert (h[~edge] == 0).all() and h[edge].abs().amax() > 0
    assert (h - h2).abs().amax() < 1e-10
    # the edge vectors themselves rotate with the molecule
    assert (unit2 - torch.einsum("bij,bxyj->bxyi", R, unit)).abs().amax() < 1e-10
    # forces are sum_j unit_ij * (h_ij @ W)
    manual = torch.einsum("bijk,bijd,dk->bik", unit, h, model.head)
    assert torch.allclose(model(pos, mask, species), manual, rtol=0, atol=1e-13)


def test_escaip_equivariant_iff_projected(atoms):
    pos, mask, species = atoms
    model = escaip()
    R = haar_so3(B, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        err_before = rel(model(rotate(R, pos), mask, species), rotate(R, model(pos, mask, species)))
        dev_before = float(model.head_deviation())
        W = model.head_weights()
        assert W.shape == (16, 3)
        assert math.isclose(dev_before, float((W - W.mean(1, keepdim=True)).norm()), rel_tol=1e-12)
        assert err_before > NOT_EQUIV and dev_before > 0.1
        model.project_head_()
        W_E = model.head_weights()
        assert torch.allclose(W_E, W.mean(1, keepdim=True).expand(16, 3), rtol=0, atol=1e-15)
        assert float(model.head_deviation()) == 0.0
        err_after = rel(model(rotate(R, pos), mask, species), rotate(R, model(pos, mask, species)))
    assert err_after < TOL_EQUIV64
    # head_weights is a copy: editing it leaves the model alone
    W_E[0, 0] += 1.0
    assert float(model.head_deviation()) == 0.0


def test_escaip_output_linear_in_head_deviation(atoms):
    """o(W) = o(W_E) + o_Δ(W - W_E) with o_Δ linear: the structure behind Theorem 4."""
    pos, mask, species = atoms
    model = escaip()
    W = model.head_weights()
    with torch.no_grad():
        full = model(pos, mask, species)
        model.head.copy_(W - W.mean(1, keepdim=True))
        delta = model(pos, mask, species)
        model.head.mul_(2.0)
        delta2 = model(pos, mask, species)
        model.project_head_()  # projection of a deviation is 0 (to rounding)
        assert model(pos, mask, species).abs().amax() < 1e-15
        model.head.copy_(W)
        model.project_head_()
        equiv = model(pos, mask, species)
    assert torch.allclose(full, equiv + delta, atol=1e-13, rtol=0)
    assert torch.allclose(delta2, 2 * delta, atol=1e-13, rtol=0)


def test_escaip_permutation_and_smooth_cutoff(atoms):
    pos, mask, species = atoms
    model = escaip()
    perm = torch.randperm(A, generator=torch.Generator().manual_seed(3))
    out = model(pos[:1], mask[:1], species[:1])
    out_p = model(pos[:1, perm], mask[:1, perm], species[:1, perm])
    assert (out_p - out[:, perm]).abs().amax() < 1e-12
    # Two atoms crossing r_max: forces go continuously to zero.
    two = lambda r: model(torch.tensor([[[0.0, 0, 0], [r, 0, 0]]], dtype=F64))  # noqa: E731
    assert two(3.0 - 1e-6).abs().amax() < 1e-9 < two(2.5).abs().amax()
    assert (two(3.0 + 1e-6) == 0).all()


def test_escaip_gradients_and_seed(atoms):
    pos, mask, species = atoms
    a, b, c = escaip(torch.float32, seed=5), escaip(torch.float32, seed=5), escaip(torch.float32, seed=6)
    out = a(pos.float(), mask, species)
    assert torch.equal(out, b(pos.float(), mask, species))
    assert not torch.equal(out, c(pos.float(), mask, species))
    p = pos.clone().requires_grad_(True)
    model = escaip()
    (model(p, mask, species) ** 2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert torch.isfinite(p.grad).all() and (p.grad[~mask] == 0).all()
    # head_deviation is differentiable (usable as a penalty)
    model.zero_grad()
    assert not model.head_deviation().requires_grad
    model.head_deviation(grad=True).backward()
    assert model.head.grad.abs().sum() > 0


# --------------------------------------------------------------------------- e3nn with species
def e3_species(dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(irreps_hidden="8x0e+4x1o+2x2e", lmax=2, n_layers=2, r_max=3.0, n_basis=8, radial_hidden=16,
               avg_neighbors=4.0, n_species=10)
    cfg.update(kw)
    return E3ForceField(**cfg, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _forces_task():
    from equivlib.tasks import make_task

    return make_task("forces", "quick", 0)


def forces_batch(n=8, dtype=F64):
    """The first ``n`` quick training conformers (padded, species = atomic numbers)."""
    d = _forces_task().data
    return d["positions"][:n].to(dtype), d["mask"][:n], d["species"][:n]


def test_e3_species_equivariant_float64(atoms):
    pos, mask, species = atoms
    model = e3_species()
    R = haar_so3(B, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        y = model(pos, mask, species)
        assert y[:3].abs().amax() > 1e-3  # not trivially zero
        assert rel(model(rotate(R, pos), mask, species), rotate(R, y)) < TOL_EQUIV64
        shift = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
        assert rel(model(pos + shift, mask, species), y) < TOL_EQUIV64  # translation invariant
        P = -torch.eye(3, dtype=F64).expand(B, 3, 3)
        assert rel(model(rotate(P, pos), mask, species), rotate(P, y)) < TOL_EQUIV64  # 1o: odd
        perm = torch.randperm(A, generator=torch.Generator().manual_seed(12))
        assert rel(model(pos[:, perm], mask[:, perm], species[:, perm]), y[:, perm]) < TOL_EQUIV64
    # the real molecules, with the task's model (r_max 5 Å, n_species 36), in float64
    from equivlib.tasks import make_model

    torch.manual_seed(0)
    task_model = make_model("forces", "small", dtype=F64, arch="e3nn")
    pos, mask, species = forces_batch(8)
    assert (~mask).any() and mask.sum(1).min() > 10
    R = haar_so3(8, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        y = task_model(pos, mask=mask, species=species)
        err = rel(task_model(rotate(R, pos), mask=mask, species=species), rotate(R, y))
    assert err < TOL_EQUIV64, err


def test_e3_species_padding_and_dependence(atoms):
    pos, mask, species = atoms
    model = e3_species()
    with torch.no_grad():
        out = model(pos, mask, species)
        assert out.shape == (B, A, 3) and out.dtype == F64 and torch.isfinite(out).all()
        assert (out[~mask] == 0).all()
        assert (out[3] == 0).all()  # isolated atom: no edges, no force
        # Garbage coordinates and species at padded atoms change nothing.
        pos2, species2 = pos.clone(), species.clone()
        pos2[1, 5:] = torch.tensor([1e3, float("nan"), -2.0], dtype=F64)
        pos2[2, 7] = pos[2, 0] + 0.1  # would be a close neighbour if it were real
        species2[~mask] = 99
        assert torch.equal(model(pos2, mask, species2), out)
        # The output depends on the species (of a neighbour, too), not only the geometry.
        species3 = species.clone()
        species3[0, 0] = 1 + species[0, 0] % 9
        out3 = model(pos, mask, species3)
        assert rel(out3[0], out[0]) > NOT_EQUIV and rel(out3[0, 1:], out[0, 1:]) > 1e-4
        assert torch.equal(out3[1:], out[1:])  # other molecules untouched


def test_e3_species_bad_inputs(atoms):
    pos, mask, species = atoms
    model = e3_species()
    with pytest.raises(ValueError, match=r"species \(B, A\) is required.*n_species=10"):
        model(pos, mask)
    with pytest.raises(ValueError, match=r"n_species=10"):
        model(pos, mask, torch.where(mask, 10, 0))  # out of range at a real atom
    with pytest.raises(ValueError, match=r"n_species=10"):
        model(pos, mask, torch.where(mask, -1, 0))
    with pytest.raises(ValueError, match=r"species must be an integer tensor of shape \(B, A\)"):
        model(pos, mask, species[:, :3])
    with pytest.raises(ValueError, match=r"species must be an integer tensor"):
        model(pos, mask, species.double())
    single = E3ForceField(irreps_hidden="4x0e+2x1o", n_layers=1, dtype=F64)
    with pytest.raises(ValueError, match=r"single species.*n_species"):
        single(pos, mask, species)
    assert single(pos, mask).shape == (B, A, 3)
    with pytest.raises(ValueError, match=r"0e"):
        E3ForceField(irreps_hidden="4x1o", n_species=3)
    with pytest.raises(ValueError, match=r"n_species"):
        E3ForceField(n_species=0)


def test_e3_species_embedding_shape_gradients_and_default():
    model = e3_species(torch.float32)
    assert str(model.irreps_in) == "8x0e" and model.species_embed.weight.shape == (10, 8)
    pos, mask, species = forces_batch(4, torch.float32)
    species = species % 10
    (model(pos, mask, species) ** 2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    used = species[mask].unique()
    g = model.species_embed.weight.grad
    assert (g[used].abs().sum(1) > 0).all()
    unused = torch.ones(10, dtype=torch.bool)
    unused[used] = False
    assert (g[unused] == 0).all()
    # the single-species default is unchanged: constant 1x0e input, no embedding parameters
    default = E3ForceField()
    assert default.n_species is None and default.species_embed is None and str(default.irreps_in) == "1x0e"
    assert not any("species" in k for k in default.state_dict())


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_make_model_e3nn_arch():
    from equivlib.tasks import ARCHS, check_arch, make_model

    task = _forces_task()
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


@pytest.mark.parametrize("task, arch", [("flow", "e3nn"), ("voxels", "e3nn"), ("forces", "nope")])
def test_make_model_bad_arch(task, arch):
    from equivlib.tasks import ARCHS, check_arch, make_model

    allowed = re.escape(str(ARCHS[task]))
    with pytest.raises(ParameterError, match=rf"{arch!r} for task {task!r}.*{allowed}"):
        make_model(task, arch=arch)
    with pytest.raises(ParameterError, match=rf"task {task!r}"):
        check_arch(task, arch)


def test_e3nn_training_smoke():
    """20 full-batch Adam steps on 16 quick conformers lower the loss (a few seconds on 1 thread)."""
    from equivlib.tasks import make_model

    task = _forces_task()
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


# --------------------------------------------------------------------------- flow matching
L = 12


@pytest.fixture
def chains():
    g = torch.Generator().manual_seed(100)  # not the noise seeds used below
    x1 = torch.randn(3, L, 3, generator=g, dtype=F64) * 2.0
    mask = torch.ones(3, L, dtype=torch.bool)
    mask[1, 9:] = False
    mask[2, 4:] = False
    x1 = x1 - (x1 * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    return x1 * mask[..., None], mask


def test_interpolation_path(chains):
    x1, _ = chains
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert torch.equal(interpolate(x0, x1, 0.0), x0)
    assert torch.equal(interpolate(x0, x1, 1.0), x1)
    v = target_velocity(x0, x1)
    assert torch.equal(v, x1 - x0)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    xt = interpolate(x0, x1, t)
    assert torch.allclose(xt[1], 0.5 * (x0[1] + x1[1]), atol=1e-15)
    assert torch.allclose((interpolate(x0, x1, t + 1e-3) - xt) / 1e-3, v, atol=1e-9)  # d x_t / dt = v
    with pytest.raises(ValueError, match=r"\(B,\)"):
        interpolate(x0, x1, torch.zeros(2, dtype=F64))
    with pytest.raises(ValueError, match=r"\(B, L, 3\)"):
        target_velocity(x0[..., :2], x1[..., :2])


@pytest.mark.parametrize("t", FLOW_TIMES)
def test_flow_matching_batch_fixed_t(chains, t):
    x1, mask = chains
    xt, tt, v = flow_matching_batch(x1, mask, torch.Generator().manual_seed(0), t=t)
    assert xt.shape == v.shape == x1.shape and tt.shape == (3,) and xt.dtype == F64
    assert torch.all(tt == t)
    x0 = x1 - v  # noise recovered from the target
    assert torch.allclose(xt, (1 - t) * x0 + t * x1, atol=1e-12, rtol=0)
    assert (xt[~mask] == 0).all() and (v[~mask] == 0).all() and (x0[~mask] == 0).all()
    centroid = (x0 * mask[..., None]).sum(1) / mask.sum(1)[:, None]
    assert centroid.abs().amax() < 1e-12  # noise centred on the real residues
    assert x0[mask].std() > 0.5


def test_flow_matching_batch_random_t_and_seed(chains):
    x1, mask = chains
    a = flow_matching_batch(x1, mask, torch.Generator().manual_seed(7))
    b = flow_matching_batch(x1, mask, torch.Generator().manual_seed(7))
    c = flow_matching_batch(x1, mask, torch.Generator().manual_seed(8))
    assert all(torch.equal(u, w) for u, w in zip(a, b))
    assert not torch.equal(a[0], c[0])
    t = a[1]
    assert ((t >= 0) & (t < 1)).all() and len(set(t.tolist())) == 3
    t_many = flow_matching_batch(x1.repeat(100, 1, 1), mask.repeat(100, 1), torch.Generator().manual_seed(0))[1]
    assert 0.4 < t_many.mean() < 0.6 and t_many.min() < 0.05 and t_many.max() > 0.95
    xt32, t32, v32 = flow_matching_batch(x1.float(), mask, torch.Generator().manual_seed(7))
    assert xt32.dtype == t32.dtype == torch.float32
    assert torch.allclose(v32, a[2].float(), atol=1e-6)


def flow_model(dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(d_model=16, n_heads=2, n_layers=2, max_len=16)
    cfg.update(kw)
    return FlowTransformer(**cfg, dtype=dtype)


def test_flow_model_shapes_padding_time(chains):
    x1, mask = chains
    model = flow_model()
    xt, t, _ = flow_matching_batch(x1, mask, torch.Generator().manual_seed(0), t=0.4)
    out = model(xt, t, mask)
    assert out.shape == (3, L, 3) and out.dtype == F64 and torch.isfinite(out).all()
    assert (out[~mask] == 0).all()
    xt2 = xt.clone()
    xt2[~mask] = 1e4
    assert torch.allclose(model(xt2, t, mask), out, atol=1e-12, rtol=0)
    # extra padded residues (which still carry position/time embeddings) are ignored
    short = model(xt[2:, :4], t[2:], mask[2:, :4])
    assert torch.allclose(short, out[2:, :4], atol=1e-12, rtol=0)
    assert rel(model(xt, torch.full_like(t, 0.9), mask), out) > NOT_EQUIV  # depends on t
    assert torch.equal(model(xt, 0.4, mask), out)  # float t broadcasts
    default = FlowTransformer()
    assert sum(p.numel() for p in default.parameters()) <= 100_000
    assert default(xt.float(), t.float()).shape == (3, L, 3)
    with pytest.raises(ValueError, match=r"\(B, L, 3\)"):
        model(xt[..., :2], t, mask)
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 17, 3, dtype=F64), torch.zeros(1, dtype=F64))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        model(xt, t[:2], mask)


def test_flow_model_not_equivariant_at_init(chains):
    x1, mask = chains
    model = flow_model()
    xt, t, _ = flow_matching_batch(x1, mask, torch.Generator().manual_seed(0), t=0.6)
    R = haar_so3(3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        err = rel(model(rotate(R, xt), t, mask), rotate(R, model(xt, t, mask)))
    assert err > NOT_EQUIV
    # ... while the task is: rotating data and noise together rotates (x_t, v_target)
    x0 = x1 - flow_matching_batch(x1, mask, torch.Generator().manual_seed(0), t=0.6)[2]
    assert torch.allclose(interpolate(rotate(R, x0), rotate(R, x1), t), rotate(R, xt), atol=1e-12)


def test_flow_model_gradients_and_seed(chains):
    x1, mask = chains
    xt, t, v = flow_matching_batch(x1.float(), mask, torch.Generator().manual_seed(0))
    a, b = flow_model(torch.float32, seed=3), flow_model(torch.float32, seed=3)
    assert torch.equal(a(xt, t, mask), b(xt, t, mask))
    assert not torch.equal(a(xt, t, mask), flow_model(torch.float32, seed=4)(xt, t, mask))
    ((a(xt, t, mask) - v) ** 2).sum().backward()
    for name, param in a.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert a.head.weight.grad.abs().sum() > 0 and a.time_embed.mlp[0].weight.grad.abs().sum() > 0
    assert a.pos_embed.weight.grad[L:].abs().sum() == 0 < a.pos_embed.weight.grad[:L].abs().sum()


# --------------------------------------------------------------------------- 3D U-Net
def unet(dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(in_channels=2, base_channels=4, levels=3)
    cfg.update(kw)
    return UNet3D(**cfg, dtype=dtype)


@pytest.fixture
def grids():
    return torch.rand(2, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0), dtype=F64)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_unet_shapes_and_bad_sizes(grids, levels):
    model = unet(levels=levels)
    out = model(grids)
    assert out.shape == grids.shape and out.dtype == F64 and torch.isfinite(out).all()
    s = 8 // 2 ** (levels - 1)
    assert model.bottleneck(grids).shape == (2, 4 * 2 ** (levels - 1), s, s, s)
    assert model.latent(grids).shape == (2, 4 * 2 ** (levels - 1))
    assert model.latent(grids, pool="flatten").shape == (2, 4 * 2 ** (levels - 1) * s ** 3)
    assert unet(levels=levels, out_channels=3)(grids).shape == (2, 3, 8, 8, 8)
    if levels > 1:
        with pytest.raises(ValueError, match="divisible"):
            model(grids[..., :7, :7, :7])
    if levels == 3:
        with pytest.raises(ValueError, match=r"2\*\*\(levels-1\) = 4"):
            model(grids[..., :6, :6, :6])
    with pytest.raises(ValueError, match=r"\(B, C=2, S, S, S\)"):
        model(grids[:, :1])
    with pytest.raises(ValueError, match=r"\(B, C, S, S, S\)"):
        model(grids[..., :4])
    with pytest.raises(ValueError, match="pool"):
        model.latent(grids, pool="max")


def test_unet_default_size():
    model = UNet3D()
    assert model.out.weight.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) <= 100_000
    assert model(torch.zeros(1, 6, 8, 8, 8)).shape == (1, 6, 8, 8, 8)


def _cube_errors(fn, x):
    """Relative error ``fn(g x)`` vs ``g fn(x)`` for each of the 24 cube rotations."""
    act, G = VoxelAction(), cube_group()
    g = G[:, None].expand(24, x.shape[0], 3, 3)
    with torch.no_grad():
        y = fn(x)
        y_rot = fn(act.apply(g, x).reshape(-1, *x.shape[1:])).reshape(24, *y.shape)
        return [rel(y_rot[k], act.apply(g, y)[k]) for k in range(24)]


def test_unet_not_cube_equivariant_at_init(grids):
    errs = _cube_errors(unet(), grids)
    assert errs[0] == 0.0  # identity first
    assert min(errs[1:]) > NOT_EQUIV
    # the check itself detects equivariance: a voxelwise map passes it
    assert max(_cube_errors(lambda v: torch.tanh(3 * v) ** 2, grids)) < 1e-15


def test_unet_gradients_and_seed(grids):
    x = grids.float()
    a, b = unet(torch.float32, seed=1), unet(torch.float32, seed=1)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), unet(torch.float32, seed=2)(x))
    ((a(noisy_voxels(x, 0.3, torch.Generator().manual_seed(0))) - x) ** 2).mean().backward()
    for name, param in a.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_noisy_voxels(grids):
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    y = noisy_voxels(grids, 0.5, g())
    assert y.shape == grids.shape and y.dtype == F64
    assert torch.equal(y, noisy_voxels(grids, 0.5, g()))
    assert abs((y - grids).std().item() - 0.5) < 0.05 and abs((y - grids).mean().item()) < 0.05
    assert torch.equal(noisy_voxels(grids, 0.0, g()), grids)
    per = noisy_voxels(grids, torch.tensor([0.0, 1.0], dtype=F64), g())
    assert torch.equal(per[0], grids[0]) and (per[1] - grids[1]).std() > 0.8
    assert torch.allclose(noisy_voxels(grids.float(), 0.5, g()), y.float(), atol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        noisy_voxels(grids, torch.ones(3), g())
    with pytest.raises(ValueError, match=r"\(B, C, S, S, S\)"):
        noisy_voxels(grids[0], 0.1, g())
