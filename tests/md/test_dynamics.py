"""Tests for equivlib.md.dynamics: starting states, NVE/Langevin integration, the trajectory cache, the smoke ledger."""
import numpy as np
import pytest

from equivlib.config import ParameterError
from equivlib.md import (ModelForceCalculator, initial_velocities, momenta, net_force_torque, onset_time,
                         orientation_divergence, reference_calculator, rotate_state, run_md)
from tests.md.helpers import ELEMENTS, NUMBERS, POSITIONS, _model, _turned_pair


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


def test_bad_integration_input_is_named():
    calc = ModelForceCalculator(_model(), force_scale=1.0, elements=ELEMENTS)
    with pytest.raises(ParameterError, match="steps"):
        run_md(NUMBERS, POSITIONS, np.zeros_like(POSITIONS), calc, steps=0)
    with pytest.raises(ParameterError, match="ensemble"):
        run_md(NUMBERS, POSITIONS, np.zeros_like(POSITIONS), calc, steps=1, ensemble="npt")
    with pytest.raises(ParameterError, match="rotation"):
        rotate_state(POSITIONS, POSITIONS, np.diag([1.0, 1.0, -1.0]))


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
