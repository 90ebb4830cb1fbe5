"""equivlib.md: the ASE calculator around a force model, trajectories and their measurements."""
import numpy as np
import pytest
import torch

from equivlib.config import ParameterError
from equivlib.groups import haar_so3
from equivlib.md import (ModelForceCalculator, initial_velocities, momenta, net_force_torque, onset_time,
                         orientation_divergence, reference_calculator, rotate_state, run_md)
from equivlib.tasks import make_model

ELEMENTS = (1, 6, 7, 8)
# a water-ethanol-like cluster of 7 atoms (Å); positions need not be a minimum
NUMBERS = np.array([8, 1, 1, 6, 6, 1, 1])
POSITIONS = np.array([[0.00, 0.00, 0.00], [0.96, 0.00, 0.00], [-0.24, 0.93, 0.00], [-0.80, -1.10, 0.30],
                      [-2.20, -0.90, -0.20], [-0.50, -2.00, -0.20], [-2.60, 0.05, 0.10]])


def _model(arch="default", seed=0):
    torch.manual_seed(seed)
    return make_model("forces", "small", arch=arch)


def _rotation(seed=1):
    return haar_so3(generator=torch.Generator().manual_seed(seed)).numpy()


def _turned_pair(make_calc, rotation_seed, velocity_seed, steps, dt_fs):
    """NVE from the test molecule's state and from the same state turned: ``(a, b, R)``."""
    R = _rotation(rotation_seed)
    v0 = initial_velocities(NUMBERS, POSITIONS, 300.0, seed=velocity_seed)
    x1, v1 = rotate_state(POSITIONS, v0, R)
    return (run_md(NUMBERS, POSITIONS, v0, make_calc(), steps=steps, dt_fs=dt_fs),
            run_md(NUMBERS, x1, v1, make_calc(), steps=steps, dt_fs=dt_fs), R)


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


def test_rotated_initial_conditions_give_rotated_trajectories_for_an_equivariant_model():
    a, b, R = _turned_pair(lambda: ModelForceCalculator(_model(arch="e3nn"), force_scale=1.0, elements=ELEMENTS),
                           7, 0, 20, 0.5)
    d = orientation_divergence(a, b, R)
    assert d.shape == (21,) and d.max() < 1e-9  # stated tolerance over 10 fs, in float64
    # and a non-equivariant model is not: its two trajectories separate at once
    a2, b2, _ = _turned_pair(lambda: ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS), 7, 0, 20, 0.5)
    d2 = orientation_divergence(a2, b2, R)
    assert d2[-1] > 1e3 * max(d.max(), 1e-15)
    assert onset_time(a.times, d2, 1e-6) is not None and onset_time(a.times, d, 1e-6) is None


def test_initial_velocities_carry_no_momentum_and_nve_keeps_it_only_without_net_force_and_torque():
    v0 = initial_velocities(NUMBERS, POSITIONS, 300.0, seed=1)
    traj = run_md(NUMBERS, POSITIONS, v0, ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS), steps=10)
    mom = momenta(traj)
    assert np.abs(mom["P"][0]).max() < 1e-10 and np.abs(mom["L"][0]).max() < 1e-8
    net = net_force_torque(traj.positions, traj.forces, traj.masses)
    # dP/dt = Σ F: with velocity Verlet, P changes by dt/2 (F_t + F_t+1) per step (ASE: eV/Å -> amu Å/fs²)
    from ase import units

    conv = units.fs ** 2  # force / mass in ASE units (eV/Å/amu) times units.fs² is Å/fs²
    dP = (0.5 * (net["force"][:-1] + net["force"][1:]) * 0.5 * conv).cumsum(axis=0)
    np.testing.assert_allclose(mom["P"][1:], dP, rtol=1e-6, atol=1e-10)
    assert np.abs(net["force"]).max() > 1e-6  # a direct force model has a net force: momentum drifts


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
    with pytest.raises(ParameterError, match="steps"):
        run_md(NUMBERS, POSITIONS, np.zeros_like(POSITIONS), calc, steps=0)
    with pytest.raises(ParameterError, match="ensemble"):
        run_md(NUMBERS, POSITIONS, np.zeros_like(POSITIONS), calc, steps=1, ensemble="npt")
    with pytest.raises(ParameterError, match="rotation"):
        rotate_state(POSITIONS, POSITIONS, np.diag([1.0, 1.0, -1.0]))


def test_early_divergence_is_the_taylor_term_of_the_measured_one():
    from equivlib.md import early_divergence, force_discrepancy

    calc = lambda: ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS)  # noqa: E731
    a, b, R = _turned_pair(calc, 9, 2, 4, 0.1)
    measured = orientation_divergence(a, b, R)
    predicted = early_divergence(force_discrepancy(calc(), NUMBERS, POSITIONS, R), a.masses, a.times)
    assert measured[0] < 1e-12 and predicted[0] == 0
    np.testing.assert_allclose(measured[1:], predicted[1:], rtol=0.05)  # O(t³) corrections at t ≤ 0.4 fs


def test_orientation_study_and_the_chapter_fields():
    from equivlib.md import force_fields, heldout_molecules, orientation_study

    mols, elements = heldout_molecules("quick", 0, 1)
    assert len(mols) == 1 and set(mols[0]["numbers"].tolist()) <= set(elements) and 1 in elements
    fields = force_fields(_model(), _model(arch="e3nn"), force_scale=1.0, elements=elements, reference=False)
    assert list(fields) == ["augmented", "twirled", "random", "e3nn"]
    small = {"augmented": fields["augmented"], "e3nn": fields["e3nn"]}
    st = orientation_study(small, mols, steps=6, dt_fs=0.5, threshold=1e-6, progress=False)
    t = st.table.set_index("field")
    assert list(t.index) == ["augmented", "e3nn"] and len(st.times) == 7
    assert st.divergence[(mols[0]["molecule"], "e3nn")].max() < 1e-9 and np.isnan(t.loc["e3nn", "onset_fs"])
    assert t.loc["augmented", "onset_fs"] == t.loc["augmented", "onset_predicted_fs"]  # the t²/2 law, early
    with pytest.raises(ParameterError, match="exceeds"):
        heldout_molecules("quick", 0, 10_000)
    with pytest.raises(ParameterError, match="at least one"):
        orientation_study({}, mols, steps=1)
