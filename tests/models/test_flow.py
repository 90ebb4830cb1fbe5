"""Tests for equivlib.models.flow: the linear flow-matching path, batches, and the
(non-equivariant) FlowTransformer velocity field."""
import pytest
import torch

from equivlib.groups import VectorAction
from equivlib.models import FLOW_TIMES, FlowTransformer, flow_matching_batch, interpolate, target_velocity
from equivlib.testing import equivariance_errors, relative_error
from tests.conftest import random_rotations

F64 = torch.float64
NOT_EQUIV = 1e-2  # a random non-equivariant model is off by O(1)
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
    assert relative_error(model(xt, torch.full_like(t, 0.9), mask), out) > NOT_EQUIV  # depends on t
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
    R = random_rotations(3, seed=4)
    errors = equivariance_errors(model, xt, R, VectorAction(), extras={"t": t, "mask": mask})
    assert errors.min() > NOT_EQUIV
    # ... while the task is: rotating data and noise together rotates (x_t, v_target)
    x0 = x1 - flow_matching_batch(x1, mask, torch.Generator().manual_seed(0), t=0.6)[2]
    g = R[:, None].expand(3, len(x1), 3, 3)
    act = VectorAction()
    assert torch.allclose(interpolate(act.apply(g, x0)[1], act.apply(g, x1)[1], t), act.apply(g, xt)[1], atol=1e-12)


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


def test_flow_latent_is_what_the_head_reads():
    torch.manual_seed(0)
    model = FlowTransformer(d_model=16, n_heads=2, n_layers=1, max_len=16, dtype=F64)
    x = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    t = torch.tensor([0.2, 0.7], dtype=F64)
    h = model.latent(x, t, mask)
    assert h.shape == (2, 9, 16) and (h[1, 6:] == 0).all()
    out = model(x, t, mask)
    assert torch.allclose(out[mask], (model.head(h) * model.coord_scale)[mask], atol=1e-12)
