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
    st = orientation_study(small, mols, steps=6, dt_fs=0.5, threshold=1e-6, progress=False, cache=False)
    t = st.table.set_index("field")
    assert list(t.index) == ["augmented", "e3nn"] and len(st.times) == 7
    assert st.divergence[(mols[0]["molecule"], "e3nn")].max() < 1e-9 and np.isnan(t.loc["e3nn", "onset_fs"])
    assert t.loc["augmented", "onset_fs"] == t.loc["augmented", "onset_predicted_fs"]  # the t²/2 law, early
    with pytest.raises(ParameterError, match="exceeds"):
        heldout_molecules("quick", 0, 10_000)
    assert t["E_drift"].isna().all() and not st.energy  # direct force fields define no energy
    with pytest.raises(ParameterError, match="at least one"):
        orientation_study({}, mols, steps=1)


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


def test_reference_nve_conserves_total_energy_and_model_fields_record_none():
    from equivlib.md import total_energy

    v0 = initial_velocities(NUMBERS, POSITIONS, 300.0, seed=0)
    ref = run_md(NUMBERS, POSITIONS, v0, reference_calculator(), steps=20, dt_fs=0.25)
    E = total_energy(ref)
    kinetic = 0.5 * (ref.masses[:, None] * (ref.velocities[0] / 0.09822694788464063) ** 2).sum()
    assert ref.energies is not None and E.shape == (21,) and np.isclose(E[0] - ref.energies[0], kinetic)
    swing = np.ptp(ref.energies)  # potential energy moves by far more than the total does
    assert swing > 0.05 and np.abs(E - E[0]).max() < 0.01 * swing
    model = run_md(NUMBERS, POSITIONS, v0, ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS),
                   steps=2, dt_fs=0.25)
    assert model.energies is None and total_energy(model) is None


def test_trajectories_are_cached_by_field_key_state_and_parameters(tmp_path):
    from equivlib.md import ForceField, trajectory

    calls = []

    def make():
        calls.append(1)
        return ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS)

    field = ForceField("test", make, key="k1")
    v0 = initial_velocities(NUMBERS, POSITIONS, 300.0, seed=0)
    kw = dict(steps=3, dt_fs=0.25, cache_dir=tmp_path)
    first = trajectory(field, NUMBERS, POSITIONS, v0, **kw)
    again = trajectory(field, NUMBERS, POSITIONS, v0, **kw)
    assert len(calls) == 1 and len(list((tmp_path / "md").glob("*.npz"))) == 1
    np.testing.assert_array_equal(first.positions, again.positions)
    assert again.seconds_per_step == first.seconds_per_step and again.energies is None
    trajectory(field, NUMBERS, POSITIONS, v0, **{**kw, "steps": 4})            # other parameters: computed
    trajectory(ForceField("test", make, key="k2"), NUMBERS, POSITIONS, v0, **kw)  # another field: computed
    trajectory(field, NUMBERS, POSITIONS, 2 * v0, **kw)                         # another start: computed
    assert len(calls) == 4
    for f in (tmp_path / "md").glob("*.npz"):
        f.write_bytes(b"damaged")
    trajectory(field, NUMBERS, POSITIONS, v0, **kw)                             # a damaged entry is recomputed
    trajectory(ForceField("test", make), NUMBERS, POSITIONS, v0, **kw)          # no key: never cached
    assert len(calls) == 6


def test_model_digest_follows_the_weights():
    from equivlib.md import model_digest

    a, b = _model(seed=0), _model(seed=0)
    assert model_digest(a) == model_digest(b)
    with torch.no_grad():
        next(b.parameters()).add_(1e-9)
    assert model_digest(a) != model_digest(b)


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


def test_observable_study_compares_orientations_and_the_reference(tmp_path, monkeypatch):
    from equivlib.md import ForceField, heldout_molecules, observable_study

    monkeypatch.setenv("EQUIVLIB_RUNS", str(tmp_path))
    mols, elements = heldout_molecules("quick", 0, 1)
    e3 = _model(arch="e3nn")
    fields = {"augmented": ForceField("augmented", lambda: ModelForceCalculator(_model(), force_scale=1.0,
                                                                                   elements=elements), "a"),
              "e3nn": ForceField("e3nn", lambda: ModelForceCalculator(e3, force_scale=1.0, elements=elements), "e")}
    st = observable_study(fields, mols, steps=24, burn_in=6, n_blocks=3, reference="e3nn", progress=False)
    t = st.table.set_index(["field", "observable"])
    assert len(t) == 4 and st.frames == 19 and len(list((tmp_path / "md").glob("*.npz"))) == 4
    assert t["p_value"].between(0, 1).all() and (t["diff_low"] <= t["diff"]).all() and (t["diff"] <= t["diff_high"]).all()
    assert t.loc[("e3nn", "bond"), "w_reference"] == 0 and t.loc[("augmented", "bond"), "w_reference"] > 0
    assert 0.9 < t.loc[("e3nn", "bond"), "mean_a"] < 1.6 and 60 < t.loc[("e3nn", "angle"), "mean_a"] < 130
    stretched = t["max_stretch"] > 1.5
    assert (t.loc[stretched, "broken_a_fs"].notna() | t.loc[stretched, "broken_b_fs"].notna()).all()
    f = st.by_field()
    assert list(f.index) == ["augmented", "e3nn"] and f.loc["e3nn", "w_bond"] == 0
    assert f.loc["augmented", "p_angle"] == t.loc[("augmented", "angle"), "p_value"]
    assert f.loc["e3nn", "width_bond"] == t.loc[("e3nn", "bond"), "diff_high"] - t.loc[("e3nn", "bond"), "diff_low"]
    assert (f["broken"] == f["first_break_fs"].notna()).all() and (f["s_per_step"] > 0).all()
    a, b = st.samples[(mols[0]["molecule"], "e3nn", "bond")]
    assert a.shape == b.shape and a.size % 19 == 0
    for bad, match in ((dict(burn_in=24), "burn_in"), (dict(n_blocks=10), "too few"), (dict(break_ratio=1), "break"),
                       (dict(reference="gfn2"), "reference")):
        with pytest.raises(ParameterError, match=match):
            observable_study(fields, mols, **{**dict(steps=24, burn_in=6, n_blocks=3, reference="e3nn"), **bad})


def test_discrepancy_check_matches_twice_the_equivariance_error():
    from equivlib.md import ForceField, discrepancy_check

    mol = {"numbers": NUMBERS, "positions": POSITIONS, "molecule": 0}
    plain = ForceField("a", lambda: ModelForceCalculator(_model(), force_scale=2.0, elements=ELEMENTS))
    row = discrepancy_check(plain, [mol], n_orientations=48, n_rotations=12).iloc[0]
    assert row["a"] > 0 and row["diff_low"] <= 0 <= row["diff_high"] and 0.7 < row["ratio"] < 1.4
    # a wrong normalisation (D or the force scale) would be off by a factor of 3 or 4
    e3 = ForceField("e", lambda: ModelForceCalculator(_model(arch="e3nn"), force_scale=2.0, elements=ELEMENTS))
    row = discrepancy_check(e3, [mol], n_orientations=4, n_rotations=4).iloc[0]
    assert abs(row["a"]) < 1e-20 and abs(row["b"]) < 1e-20
    twirl = ForceField("t", lambda: ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS, mode="twirl"))
    with pytest.raises(ParameterError, match="plain"):
        discrepancy_check(twirl, [mol])
    with pytest.raises(ParameterError, match="n_rotations"):
        discrepancy_check(plain, [mol], n_rotations=1)


def test_force_errors_against_a_reference():
    from equivlib.md import ForceField, force_errors

    mol = {"numbers": NUMBERS, "positions": POSITIONS, "molecule": 0}
    model = _model()
    same = ForceField("same", lambda: ModelForceCalculator(model, force_scale=1.0, elements=ELEMENTS))
    double = ForceField("double", lambda: ModelForceCalculator(model, force_scale=2.0, elements=ELEMENTS))
    t = force_errors({"ref": same, "same": same, "double": double}, [mol], reference="ref").set_index("field")
    assert list(t.index) == ["same", "double"]
    assert t.loc["same", "relative"] == 0 and np.isclose(t.loc["double", "relative"], 1.0)  # (2F - F)² / F²
    assert np.isclose(t.loc["double", "rms_error"], t.loc["double", "rms_reference"])
    with pytest.raises(ParameterError, match="reference"):
        force_errors({"same": same}, [mol])


def test_a_capped_run_reports_its_planned_steps_to_the_smoke_ledger(tmp_path, monkeypatch):
    import json

    from equivlib.config import LEDGER_ENV, Capped

    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(LEDGER_ENV, str(ledger))
    calc = ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS)
    v0 = initial_velocities(NUMBERS, POSITIONS, 300.0, seed=0)
    traj = run_md(NUMBERS, POSITIONS, v0, calc, steps=Capped(2, planned=500), dt_fs=0.25, desc="md test")
    assert traj.positions.shape[0] == 3
    run_md(NUMBERS, POSITIONS, v0, calc, steps=2, dt_fs=0.25)  # not capped: not reported
    (entry,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert entry["desc"] == "md test" and entry["steps"] == 2 and entry["planned_steps"] == 500
    assert entry["step_s"] > 0 and entry["device"] == "cpu"


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


def test_energy_check_finds_verlets_second_order_for_the_reference(tmp_path):
    from equivlib.md import ForceField, energy_check

    mol = {"numbers": NUMBERS, "positions": POSITIONS, "molecule": 0}
    ref = ForceField("gfn2", reference_calculator)          # no key: not cached
    row = energy_check(ref, [mol], time_fs=5.0, dt_fs=0.5).iloc[0]
    assert 3.0 < row["ratio"] < 5.0 and row["E_spread"] < 0.05 * row["U_range"]
    model = ForceField("m", lambda: ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS))
    with pytest.raises(ParameterError, match="defines an energy"):
        energy_check(model, [mol], time_fs=1.0)
    with pytest.raises(ParameterError, match="multiple of dt_fs"):
        energy_check(ref, [mol], time_fs=0.75, dt_fs=0.5)
