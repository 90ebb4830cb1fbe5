"""Tests for equivlib.models.atoms (MLPForceField, AtomTransformer, E3ForceField with and
without species): shapes, masking, equivariance (float64), gradients, seeding."""
import copy
import functools

import pytest
import torch

from equivlib.data import lennard_jones_clusters
from equivlib.data.forces import load_forces
from equivlib.groups import VectorAction
from equivlib.models import AtomTransformer, E3ForceField, MLPForceField
from equivlib.testing import assert_equivariant, equivariance_errors, relative_error
from tests.conftest import random_rotations
from tests.models.conftest import A, B

F64 = torch.float64
A_MAX = 10
NOT_EQUIV = 1e-2  # a random non-equivariant model is off by O(1)
# e3nn equivariance in float64 is exact up to rounding (~1e-15); the float64 tolerance
# (1e-10) also catches Wigner-3j constants left at float32 accuracy (which give ~1e-9).


def make(name: str, dtype=F64, seed: int = 0):
    """A fresh copy of a small model (built once per configuration: e3nn builds are slow)."""
    return copy.deepcopy(_build(name, dtype, seed))


@functools.lru_cache(maxsize=None)
def _build(name: str, dtype, seed: int):
    return build(name, dtype, seed)


def build(name: str, dtype=F64, seed: int = 0):
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


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
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


def test_transformer_cluster_without_real_atoms_gives_zeros(batch):
    model = make("transformer")
    m = batch.mask.clone()
    m[0] = False  # every key masked: the model must not produce NaN
    y = model(batch.positions, m)
    assert torch.isfinite(y).all() and (y[0] == 0).all()
    assert torch.allclose(y[1:], model(batch.positions[1:], m[1:]), rtol=0, atol=1e-12)


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


def test_e3_equivariant_float64(batch, tol):
    model = make("e3")
    x, m = batch.positions, batch.mask
    assert_equivariant(model, x, random_rotations(4), VectorAction(), extras={"mask": m}, tol=tol(F64))
    # also after an explicit .to(float64) cast of a float32 model
    torch.manual_seed(3)
    m32 = E3ForceField(irreps_hidden="8x0e+4x1o+2x2e").to(F64)
    assert_equivariant(m32, x, random_rotations(1, seed=9), VectorAction(), extras={"mask": m}, tol=tol(F64))


def test_e3_default_config_equivariant_and_invariances(batch, tol):
    torch.manual_seed(0)
    model = E3ForceField(dtype=F64)
    x, m = batch.positions, batch.mask
    assert_equivariant(model, x, random_rotations(1, seed=11), VectorAction(), extras={"mask": m}, tol=tol(F64))
    y = model(x, m)
    # translation invariance
    assert relative_error(model(x + torch.tensor([0.3, -1.0, 2.0], dtype=x.dtype), m), y) < tol(F64)
    # permutation equivariance (permute atoms within the whole padded array)
    perm = torch.randperm(A_MAX, generator=torch.Generator().manual_seed(0))
    assert relative_error(model(x[:, perm], m[:, perm]), y[:, perm]) < tol(F64)
    # a reflection acts on 1o outputs like on vectors, too
    P = -torch.eye(3, dtype=x.dtype)
    assert relative_error(model(x @ P.T, m), y @ P.T) < tol(F64)


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_baselines_not_equivariant_at_init(name, batch):
    model = make(name)
    errors = equivariance_errors(model, batch.positions, random_rotations(3), VectorAction(),
                                 extras={"mask": batch.mask})
    assert errors.min() > 1e-3, errors


def test_transformer_permutation_equivariant(batch, tol):
    model = make("transformer")
    x, m = batch.positions, batch.mask
    perm = torch.randperm(A_MAX, generator=torch.Generator().manual_seed(2))
    assert relative_error(model(x[:, perm], m[:, perm]), model(x, m)[:, perm]) < tol(F64)


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
        model = make(name, F64)
        assert all(p.dtype == F64 for p in model.parameters())
        assert all(b.dtype == F64 for b in model.buffers() if b.is_floating_point())
    assert torch.get_default_dtype() == before


# --------------------------------------------------------------------------- E3ForceField with species
def e3_species(dtype=F64, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(irreps_hidden="8x0e+4x1o+2x2e", lmax=2, n_layers=2, r_max=3.0, n_basis=8, radial_hidden=16,
               avg_neighbors=4.0, n_species=10)
    cfg.update(kw)
    return E3ForceField(**cfg, dtype=dtype)


@functools.lru_cache(maxsize=None)
def _quick_train_conformers():
    return load_forces("quick", 0, "train")


def forces_batch(n=8, dtype=F64):
    """The first ``n`` quick training conformers (padded, species = atomic numbers)."""
    b = _quick_train_conformers()
    return b.positions[:n].to(dtype), b.mask[:n], b.species[:n]


def test_e3_species_equivariant_float64(atoms, tol):
    pos, mask, species = atoms
    model = e3_species()
    extras = {"mask": mask, "species": species}
    with torch.no_grad():
        y = model(pos, mask, species)
        assert y[:3].abs().amax() > 1e-3  # not trivially zero
        assert_equivariant(model, pos, random_rotations(2, seed=11), VectorAction(), extras=extras, tol=tol(F64))
        shift = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
        assert relative_error(model(pos + shift, mask, species), y) < tol(F64)  # translation invariant
        P = -torch.eye(3, dtype=F64)
        assert relative_error(model(pos @ P.T, mask, species), y @ P.T) < tol(F64)  # 1o: odd
        perm = torch.randperm(A, generator=torch.Generator().manual_seed(12))
        assert relative_error(model(pos[:, perm], mask[:, perm], species[:, perm]), y[:, perm]) < tol(F64)


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
        assert relative_error(out3[0], out[0]) > NOT_EQUIV and relative_error(out3[0, 1:], out[0, 1:]) > 1e-4
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
