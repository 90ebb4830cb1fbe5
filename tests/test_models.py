"""Tests for equivlib.models: shapes, masking, equivariance (float64), gradients, seeding."""
import copy
import functools

import pytest
import torch
from conftest import random_rotation

from equivlib.data import lennard_jones_clusters
from equivlib.models import AtomTransformer, E3ForceField, MLPForceField

A_MAX = 10
# e3nn equivariance in float64 is exact up to rounding (~1e-15); 1e-12 also catches
# Wigner-3j constants left at float32 accuracy (which give ~1e-9).
TOL_EQUIV64 = 1e-12




def make(name: str, dtype=torch.float64, seed: int = 0):
    """A fresh copy of a small model (built once per configuration: e3nn builds are slow)."""
    return copy.deepcopy(_build(name, dtype, seed))


@functools.lru_cache(maxsize=None)
def _build(name: str, dtype, seed: int):
    return build(name, dtype, seed)


def build(name: str, dtype=torch.float64, seed: int = 0):
    torch.manual_seed(seed)
    small = dict(dtype=dtype)
    if name == "mlp":
        return MLPForceField(A_MAX, hidden=32, depth=2, **small)
    if name == "transformer":
        return AtomTransformer(d_model=32, n_heads=4, n_layers=2, dim_feedforward=64, **small)
    if name == "e3":
        return E3ForceField(irreps_hidden="8x0e+4x1o+2x2e", n_layers=2, **small)
    raise KeyError(name)


MODELS = ["mlp", "transformer", "e3"]


@pytest.fixture(scope="module")
def batch():
    b = lennard_jones_clusters(8, (4, A_MAX), generator=torch.Generator().manual_seed(0))
    assert (~b.mask).any() and b.mask.shape[1] == A_MAX
    return b


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtype_and_padded_outputs_zero(name, dtype, batch):
    model = make(name, dtype)
    x = batch.positions.to(dtype)
    y = model(x, batch.mask)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()
    assert (y[~batch.mask] == 0).all()
    assert y[batch.mask].abs().max() > 0


@pytest.mark.parametrize("name", MODELS)
def test_no_mask_and_no_padding(name, batch):
    model = make(name)
    full = batch[batch.n_atoms == A_MAX]
    assert len(full) > 0 and full.mask.all()
    y_none = model(full.positions)
    y_mask = model(full.positions, full.mask)
    assert torch.allclose(y_none, y_mask, rtol=0, atol=1e-12)
    assert y_none.abs().max() > 0


@pytest.mark.parametrize("name", ["transformer", "e3"])
@pytest.mark.parametrize("grad", [True, False])
def test_padded_coordinates_do_not_change_real_outputs(name, grad, batch):
    """Also in eval mode under no_grad (where torch's inference fast paths could kick in)."""
    model = make(name, torch.float32)
    model.train(grad)
    x = batch.positions.float()
    x_garbage = x.clone()
    pad = ~batch.mask
    x_garbage[pad] = torch.randn(int(pad.sum()), 3, generator=torch.Generator().manual_seed(1)) * 3
    with torch.set_grad_enabled(grad):
        y, y_garbage = model(x, batch.mask), model(x_garbage, batch.mask)
        y_again = model(x, batch.mask)
    assert torch.equal(y, y_again)  # deterministic
    assert torch.allclose(y[batch.mask], y_garbage[batch.mask], rtol=0, atol=1e-6)
    assert (y_garbage[pad] == 0).all()
    # unmasking the garbage atoms does change the real outputs (the check can fail)
    with torch.set_grad_enabled(grad):
        y_unmasked = model(x_garbage)
    assert not torch.allclose(y[batch.mask], y_unmasked[batch.mask], atol=1e-4)


@pytest.mark.parametrize("name", ["transformer", "e3"])
def test_extra_padding_slots_do_not_change_real_outputs(name, batch):
    """Appending padded atoms (zero coordinates, mask False) leaves real outputs unchanged:
    padded atoms must be excluded as attention keys / message senders."""
    model = make(name, torch.float32)
    x, m = batch.positions.float(), batch.mask
    x_pad = torch.cat([x, torch.zeros(len(batch), 3, 3)], dim=1)
    m_pad = torch.cat([m, torch.zeros(len(batch), 3, dtype=torch.bool)], dim=1)
    y, y_pad = model(x, m), model(x_pad, m_pad)
    assert torch.allclose(y_pad[:, :A_MAX], y, rtol=0, atol=1e-6)
    assert (y_pad[:, A_MAX:] == 0).all()


def test_transformer_eval_no_grad_matches_training_mode(batch):
    model = make("transformer", torch.float32)
    x = batch.positions.float()
    y_train = model(x, batch.mask)
    model.eval()
    with torch.no_grad():
        y_eval = model(x, batch.mask)
    assert torch.allclose(y_train, y_eval, rtol=0, atol=1e-5)


def test_mlp_padded_coordinates_ignored(batch):
    model = make("mlp")
    x = batch.positions.clone()
    x[~batch.mask] = 5.0
    assert torch.equal(model(x, batch.mask), model(batch.positions, batch.mask))


def test_mlp_accepts_fewer_atoms_rejects_more():
    model = MLPForceField(6, hidden=8, depth=1)
    assert model(torch.randn(3, 4, 3)).shape == (3, 4, 3)
    with pytest.raises(ValueError, match="max_atoms=6"):
        model(torch.randn(3, 7, 3))


@pytest.mark.parametrize("name", MODELS)
def test_input_validation(name):
    model = make(name, torch.float32)
    with pytest.raises(ValueError, match=r"\(B, A, 3\)"):
        model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="mask must have shape"):
        model(torch.zeros(2, 4, 3), torch.ones(2, 3, dtype=torch.bool))


def rotation_error(model, batch, seed):
    R = random_rotation(seed)
    x, m = batch.positions, batch.mask
    y = model(x, m)
    return rel(model(x @ R.T, m), y @ R.T)


def test_e3_equivariant_float64(batch):
    model = make("e3")
    errors = [rotation_error(model, batch, seed) for seed in range(4)]
    assert max(errors) < TOL_EQUIV64, errors
    # also after training-mode parameter changes and an explicit .to(float64) cast
    torch.manual_seed(3)
    m32 = E3ForceField(irreps_hidden="8x0e+4x1o+2x2e").to(torch.float64)
    assert rotation_error(m32, batch, 9) < TOL_EQUIV64


def test_e3_default_config_equivariant_and_invariances(batch):
    torch.manual_seed(0)
    model = E3ForceField(dtype=torch.float64)
    assert rotation_error(model, batch, 11) < TOL_EQUIV64
    x, m = batch.positions, batch.mask
    y = model(x, m)
    # translation invariance
    assert rel(model(x + torch.tensor([0.3, -1.0, 2.0], dtype=x.dtype), m), y) < 1e-12
    # permutation equivariance (permute atoms within the whole padded array)
    perm = torch.randperm(A_MAX, generator=torch.Generator().manual_seed(0))
    assert rel(model(x[:, perm], m[:, perm]), y[:, perm]) < 1e-12
    # a reflection acts on 1o outputs like on vectors, too
    P = -torch.eye(3, dtype=x.dtype)
    assert rel(model(x @ P.T, m), y @ P.T) < TOL_EQUIV64


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_baselines_not_equivariant_at_init(name, batch):
    model = make(name)
    errors = [rotation_error(model, batch, seed) for seed in range(3)]
    assert min(errors) > 1e-3, errors


def test_transformer_permutation_equivariant(batch):
    model = make("transformer")
    x, m = batch.positions, batch.mask
    perm = torch.randperm(A_MAX, generator=torch.Generator().manual_seed(2))
    assert rel(model(x[:, perm], m[:, perm]), model(x, m)[:, perm]) < 1e-12


@pytest.mark.parametrize("name", MODELS)
def test_gradients_flow(name, batch):
    model = make(name, torch.float32)
    y = model(batch.positions.float(), batch.mask)
    loss = ((y - batch.forces.float()) ** 2)[batch.mask].mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    assert sum(int(g.abs().sum() > 0) for g in grads.values()) >= 0.9 * len(grads)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_init(name):
    a, b, c = build(name, seed=5), build(name, seed=5), build(name, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].numel() > 0)


def test_constructor_dtype_and_no_default_dtype_change():
    before = torch.get_default_dtype()
    for name in MODELS:
        model = make(name, torch.float64)
        assert all(p.dtype == torch.float64 for p in model.parameters())
        assert all(b.dtype == torch.float64 for b in model.buffers() if b.is_floating_point())
    assert torch.get_default_dtype() == before
