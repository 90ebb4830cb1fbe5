"""Tests for equivlib.md.calculators: the calculator's modes (plain, twirl, random, residual), its errors, keyed force fields."""
import numpy as np
import pytest
import torch

from equivlib.config import ParameterError
from equivlib.md import ModelForceCalculator
from tests.md.helpers import ELEMENTS, NUMBERS, POSITIONS, _model, _rotation


def test_plain_calculator_returns_the_models_forces_in_ev_per_angstrom():
    model = _model()
    calc = ModelForceCalculator(model, force_scale=2.5, elements=ELEMENTS)
    got = calc.predict(POSITIONS, NUMBERS)
    x = torch.as_tensor(POSITIONS - POSITIONS.mean(0))[None]
    species = torch.as_tensor(NUMBERS)[None]
    m64 = model.double()
    with torch.no_grad():
        want = m64(x, mask=torch.ones_like(species, dtype=torch.bool), species=species)[0].numpy() * 2.5
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # through ASE: the same forces
    from ase import Atoms

    atoms = Atoms(numbers=NUMBERS, positions=POSITIONS)
    atoms.calc = calc
    np.testing.assert_allclose(atoms.get_forces(), want, rtol=1e-12, atol=1e-12)


def test_twirled_calculator_is_equivariant_to_float64_precision_and_plain_is_not():
    model, R = _model(), _rotation()
    rotated = POSITIONS @ R.T
    errs = {}
    for mode in ("plain", "twirl"):
        calc = ModelForceCalculator(model, force_scale=1.0, elements=ELEMENTS, mode=mode, seed=3)
        f, f_rot = calc.predict(POSITIONS, NUMBERS), calc.predict(rotated, NUMBERS)
        errs[mode] = np.abs(f_rot - f @ R.T).max() / np.abs(f).max()
    # the EScAIP head is linear in directions on an invariant trunk: two turned tetrahedral copies twirl it
    # exactly, whatever the turn drawn at each call (chapter 1), so only round-off is left
    assert errs["twirl"] < 1e-10
    assert errs["plain"] > 1e-4  # the untrained augmented-style model is far from equivariant


def test_random_rotation_mode_is_one_rotated_evaluation():
    model = _model(arch="e3nn")  # exactly equivariant: a rotated evaluation equals the plain one
    plain = ModelForceCalculator(model, force_scale=1.0, elements=ELEMENTS).predict(POSITIONS, NUMBERS)
    rand = ModelForceCalculator(model, force_scale=1.0, elements=ELEMENTS, mode="random", seed=5)
    np.testing.assert_allclose(rand.predict(POSITIONS, NUMBERS), plain, atol=1e-12)
    # a non-equivariant model: two calls differ (a fresh rotation each time)
    r2 = ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS, mode="random", seed=5)
    assert np.abs(r2.predict(POSITIONS, NUMBERS) - r2.predict(POSITIONS, NUMBERS)).max() > 1e-6
    assert r2.n_calls == 2


def test_bad_input_is_named():
    calc = ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS)
    with pytest.raises(ValueError, match="never saw element.*Br"):
        calc.predict(POSITIONS, np.array([35, 1, 1, 6, 6, 1, 1]))
    bad = POSITIONS.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"1 atom position\(s\) are not finite.*\[2\]"):
        calc.predict(bad, NUMBERS)
    with pytest.raises(ValueError, match="shape"):
        calc.predict(POSITIONS[:3], NUMBERS)
    with pytest.raises(ParameterError, match="mode"):
        ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS, mode="twirled")
    with pytest.raises(ParameterError, match="force_scale"):
        ModelForceCalculator(_model(), force_scale=0.0, elements=ELEMENTS)
    with pytest.raises(ParameterError, match="elements"):
        ModelForceCalculator(_model(), force_scale=1.0, elements=())


def test_predict_takes_a_batch_of_configurations():
    calc = ModelForceCalculator(_model(), force_scale=1.5, elements=ELEMENTS)
    R = _rotation(4)
    batch = np.stack([POSITIONS, POSITIONS @ R.T + 1.0])
    got = calc.predict(batch, NUMBERS)
    assert got.shape == (2, 7, 3)
    for x, f in zip(batch, got):
        np.testing.assert_allclose(f, calc.predict(x, NUMBERS), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="matching 7 atomic numbers"):
        calc.predict(batch[:, :5], NUMBERS)


def test_model_digest_follows_the_weights():
    from equivlib.md import model_digest

    a, b = _model(seed=0), _model(seed=0)
    assert model_digest(a) == model_digest(b)
    with torch.no_grad():
        next(b.parameters()).add_(1e-9)
    assert model_digest(a) != model_digest(b)


def test_residual_mode_is_the_non_equivariant_part_and_the_hybrid_adds_it_to_the_reference():
    from ase import Atoms

    from equivlib.md import force_fields

    model = _model()
    plain = ModelForceCalculator(model, force_scale=1.5, elements=ELEMENTS).predict(POSITIONS, NUMBERS)
    twirl = ModelForceCalculator(model, force_scale=1.5, elements=ELEMENTS, mode="twirl").predict(POSITIONS, NUMBERS)
    res = ModelForceCalculator(model, force_scale=1.5, elements=ELEMENTS, mode="residual", seed=9)
    np.testing.assert_allclose(res.predict(POSITIONS, NUMBERS), plain - twirl, atol=1e-12)  # the twirl is exact
    assert np.abs(plain - twirl).max() > 1e-4
    e3 = ModelForceCalculator(_model(arch="e3nn"), force_scale=1.0, elements=ELEMENTS, mode="residual")
    assert np.abs(e3.predict(POSITIONS, NUMBERS)).max() < 1e-12          # an equivariant model has none
    fields = force_fields(model, None, force_scale=1.5, elements=ELEMENTS, residual=True)
    assert list(fields) == ["augmented", "twirled", "random", "gfn2", "gfn2+residual"]
    atoms, ref = Atoms(numbers=NUMBERS, positions=POSITIONS), Atoms(numbers=NUMBERS, positions=POSITIONS)
    atoms.calc, ref.calc = fields["gfn2+residual"](), fields["gfn2"]()
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces() + plain - twirl, atol=1e-10)
    assert fields["gfn2+residual"].key not in (fields["gfn2"].key, fields["augmented"].key)
