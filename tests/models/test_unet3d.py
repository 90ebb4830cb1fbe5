"""Tests for equivlib.models.unet3d: the 3D U-Net denoiser and noisy_voxels."""
import pytest
import torch

from equivlib.groups import VoxelAction, cube_group
from equivlib.models import UNet3D, noisy_voxels
from equivlib.testing import assert_equivariant, equivariance_errors

F64 = torch.float64
NOT_EQUIV = 1e-2  # a random non-equivariant model is off by O(1)
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


def test_unet_not_cube_equivariant_at_init(grids):
    errs = equivariance_errors(unet(), grids, cube_group(), VoxelAction())  # all 24 rotations, one pass
    assert errs[0] == 0.0  # identity first
    assert errs[1:].min() > NOT_EQUIV
    # the check itself detects equivariance: a voxelwise map passes it
    assert_equivariant(lambda v: torch.tanh(3 * v) ** 2, grids, cube_group(), VoxelAction(), tol=1e-15)


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
