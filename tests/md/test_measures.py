"""Tests for equivlib.md.measures: net force and torque, the t²/2 law, bonds and angles."""
import numpy as np
import pytest

from equivlib.md import ModelForceCalculator, net_force_torque, orientation_divergence, reference_calculator
from tests.md.helpers import ELEMENTS, NUMBERS, POSITIONS, _model, _rotation, _turned_pair


def test_the_reference_is_conservative_no_net_force_or_torque():
    calc = reference_calculator()
    from ase import Atoms

    atoms = Atoms(numbers=NUMBERS, positions=POSITIONS)
    atoms.calc = calc
    f = atoms.get_forces()
    net = net_force_torque(POSITIONS, f, atoms.get_masses())
    assert np.abs(f).max() > 0.1
    assert np.abs(net["force"]).max() < 1e-6 * np.abs(f).max() * len(f)
    assert np.abs(net["torque"]).max() < 1e-5 * np.abs(f).max() * len(f)


def test_equivariance_does_not_imply_zero_net_torque():
    # the twirled model is equivariant (test above) yet, being a direct (non-conservative) force field, it has
    # a net torque: equivariance makes the torque rotate with the molecule, not vanish
    calc = ModelForceCalculator(_model(seed=2), force_scale=1.0, elements=ELEMENTS, mode="twirl")
    f = calc.predict(POSITIONS, NUMBERS)
    from ase import Atoms

    masses = Atoms(numbers=NUMBERS).get_masses()
    tau = net_force_torque(POSITIONS, f, masses)["torque"]
    assert np.linalg.norm(tau) > 1e-3 * np.abs(f).max()
    R = _rotation(4)
    tau_rot = net_force_torque(POSITIONS @ R.T, calc.predict(POSITIONS @ R.T, NUMBERS), masses)["torque"]
    np.testing.assert_allclose(tau_rot, tau @ R.T, atol=1e-10 * np.abs(f).max())


def test_early_divergence_is_the_taylor_term_of_the_measured_one():
    from equivlib.md import early_divergence, force_discrepancy

    calc = lambda: ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS)  # noqa: E731
    a, b, R = _turned_pair(calc, 9, 2, 4, 0.1)
    measured = orientation_divergence(a, b, R)
    predicted = early_divergence(force_discrepancy(calc(), NUMBERS, POSITIONS, R), a.masses, a.times)
    assert measured[0] < 1e-12 and predicted[0] == 0
    np.testing.assert_allclose(measured[1:], predicted[1:], rtol=0.05)  # O(t³) corrections at t ≤ 0.4 fs


def test_bonds_angles_and_structure_of_a_water_molecule():
    from equivlib.md import angles, bonds, structure

    theta = np.radians(104.5)
    x = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96 * np.cos(theta), 0.96 * np.sin(theta), 0.0]])
    bl = bonds([8, 1, 1], x)
    assert bl.tolist() == [[0, 1], [0, 2]]      # the two hydrogens are not bonded
    al = angles(bl)
    assert al.tolist() == [[1, 0, 2]]
    s = structure(np.stack([x, 1.1 * x]), bl, al)
    np.testing.assert_allclose(s["bond"], [[0.96, 0.96], [1.056, 1.056]])
    np.testing.assert_allclose(s["angle"], [[104.5], [104.5]])
    with pytest.raises(ValueError, match="not a molecule"):
        bonds([1, 1], np.array([[0.0, 0, 0], [5.0, 0, 0]]))
