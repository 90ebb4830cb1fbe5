"""Tests for equivlib.md.studies: chapter 7's studies on small models."""
import numpy as np
import pytest

from equivlib.config import ParameterError
from equivlib.md import ModelForceCalculator, reference_calculator
from tests.md.helpers import ELEMENTS, NUMBERS, POSITIONS, _model


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
