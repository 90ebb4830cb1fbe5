"""Tests for equivlib.data.forces: MOSES molecules, RDKit conformers and GFN2-xTB / MMFF94 labels.

Only the committed sample under ``data/samples/`` and tiny on-the-fly generations
are used.  Every optional package is imported at module level: if one is missing,
this module fails to import and the tests FAIL (nothing is skipped).

Tolerances (float64):
* labels rotate with the molecule: max |F(Rx) - R F(x)| <= 1e-8 eV/Å (GFN2 SCF and
  MMFF both reach ~1e-13), |E(Rx) - E(x)| <= 1e-8 eV;
* stored labels vs recomputed at the stored float32 geometry: 1e-4 eV/Å, 1e-4 eV;
* forces vs central finite differences of the energy (h = 1e-4 Å): 1e-3 eV/Å.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import rdkit  # noqa: F401  (must be installed: a missing package fails the tests)
import tblite.interface  # noqa: F401
import torch
from rdkit import Chem

from equivlib.config import ParameterError, derived_seed
from equivlib.data import cache, forces
from equivlib.groups import haar_so3_numpy

if importlib.util.find_spec("moses") is None:  # data-only package, located without import
    raise ImportError("package 'moses' (molsets) is required by the force data tests")

ALLOWED_Z = {1, 6, 7, 8, 9, 16, 17}


@pytest.fixture(scope="module")
def force_sample():
    return cache.load_npz(cache.SAMPLES_DIR / "forces-gfn2-quick-seed0.npz")


def _molecule(arrays, m: int):
    """(RDKit mol with H, first conformer positions float64) of molecule ``m`` of a forces file."""
    mol = Chem.AddHs(Chem.MolFromSmiles(str(arrays["smiles"][m])))
    n = int(arrays["mol_natoms"][m])
    conf = int(np.nonzero(arrays["conf_mol"] == m)[0][0])
    start = int(arrays["mol_natoms"][arrays["conf_mol"][:conf]].sum())
    return mol, conf, arrays["positions"][start:start + n].astype(np.float64)



def test_forces_batch_shapes_units_masks(force_sample):
    arrays, meta = force_sample
    assert meta["units"] == {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom"}
    assert meta["method"] == "gfn2" and meta["n_molecules"] == 50
    train = forces.load_forces("quick", 0, "train", dtype=torch.float64)
    test = forces.load_forces("quick", 0, "test", dtype=torch.float64)
    both = forces.load_forces("quick", 0, "all")
    assert len(train) + len(test) == len(both) == len(arrays["energies"]) == 200
    for b in (train, test):
        B, A, _ = b.positions.shape
        assert b.forces.shape == (B, A, 3) and b.mask.shape == (B, A) and b.energies.shape == (B,)
        assert b.mask.dtype == torch.bool and b.species.dtype == torch.long
        assert b.positions.dtype == torch.float64
        pad = ~b.mask
        assert (b.positions[pad] == 0).all() and (b.forces[pad] == 0).all() and (b.species[pad] == 0).all()
        assert set(b.species[b.mask].unique().tolist()) <= ALLOWED_Z
        heavy = ((b.species > 1) & b.mask).sum(1)
        assert heavy.max() <= 20 and heavy.min() >= 6
        # centred conformers
        centroid = (b.positions * b.mask[..., None]).sum(1) / b.mask.sum(1, keepdim=True)
        assert centroid.abs().max() < 1e-5
        # physically sensible magnitudes for unrelaxed ETKDG geometries, in eV/Å
        rms = b.forces[b.mask].pow(2).mean().sqrt()
        assert 0.1 < rms < 5.0
        # per-element reference leaves residual energies of a few eV, total energies are ~ -1e3 eV
        assert b.energies.abs().max() < 20 and (b.energy_offsets < -100).all()
        total = torch.from_numpy(arrays["energies"][_conf_index(arrays, b)])
        assert torch.allclose(b.energies + b.energy_offsets, total, rtol=0, atol=1e-9)
    # the batch is an AtomsBatch and indexes like one
    from equivlib.data.lj import AtomsBatch

    assert isinstance(train, AtomsBatch)
    sub = train[torch.tensor([0, 5])]
    assert sub.positions.shape[0] == 2 and sub.smiles == [train.smiles[0], train.smiles[5]]
    assert train.to(dtype=torch.float32).species.dtype == torch.long


def _conf_index(arrays, batch) -> np.ndarray:
    """Conformer indices (into the file) of a batch, found by matching positions."""
    conf_mol = arrays["conf_mol"]
    natoms = arrays["mol_natoms"][conf_mol]
    starts = np.concatenate([[0], np.cumsum(natoms)])
    out = []
    for b in range(len(batch)):
        m = int(batch.molecule[b])
        x0 = batch.positions[b, 0].numpy()
        cands = [c for c in np.nonzero(conf_mol == m)[0]
                 if np.allclose(arrays["positions"][starts[c]], x0, atol=1e-6)]
        assert len(cands) == 1
        out.append(cands[0])
    return np.array(out)


def test_forces_split_by_molecule_never_by_conformer():
    train = forces.load_forces("quick", 0, "train")
    test = forces.load_forces("quick", 0, "test")
    assert set(train.smiles).isdisjoint(test.smiles)
    assert set(train.molecule.tolist()).isdisjoint(test.molecule.tolist())
    assert len(set(test.smiles)) == 10 and len(set(train.smiles)) == 40
    # every conformer of a molecule is on the same side
    assert len(train) == 4 * 40 and len(test) == 4 * 10


def test_stored_gfn2_labels_recompute_and_rotate(force_sample):
    arrays, _ = force_sample
    mol, conf, x = _molecule(arrays, 0)
    n = len(x)
    start = int(arrays["mol_natoms"][arrays["conf_mol"][:conf]].sum())
    e, f = forces.energy_forces(mol, x, "gfn2")
    # stored labels are GFN2 in eV and eV/Å at these (float32-rounded) positions
    assert np.abs(f - arrays["forces"][start:start + n]).max() < 1e-4
    assert abs(e - arrays["energies"][conf]) < 1e-4
    R = haar_so3_numpy(np.random.default_rng(1))
    e_rot, f_rot = forces.energy_forces(mol, x @ R.T, "gfn2")
    assert np.abs(f_rot - f @ R.T).max() < 1e-8
    assert abs(e_rot - e) < 1e-8
    # a wrong rule (forces not rotated) must be far off: the check can fail
    assert np.abs(f_rot - f).max() > 1e-2


def test_forces_are_minus_energy_gradient_in_ev_per_angstrom(force_sample):
    arrays, _ = force_sample
    mol, _, x = _molecule(arrays, 1)
    h = 1e-4
    for method in ("gfn2", "mmff"):
        _, f = forces.energy_forces(mol, x, method)
        for atom, axis in [(0, 0), (3, 2)]:
            xp, xm = x.copy(), x.copy()
            xp[atom, axis] += h
            xm[atom, axis] -= h
            fd = -(forces.energy_forces(mol, xp, method)[0] - forces.energy_forces(mol, xm, method)[0]) / (2 * h)
            assert abs(fd - f[atom, axis]) < 1e-3, (method, atom, axis, fd, f[atom, axis])


def test_mmff_labels_rotate_with_molecule(force_sample):
    arrays, _ = force_sample
    mol, _, x = _molecule(arrays, 2)
    R = haar_so3_numpy(np.random.default_rng(2))
    check = forces.rotation_check(mol, x, "mmff", R)
    assert check["force_max_abs_error"] < 1e-8 and check["energy_abs_error"] < 1e-8
    assert check["force_max_abs"] > 0.1


def test_tiny_force_generation_is_seeded_and_checked(tmp_path):
    a1, m1 = forces.generate_forces(3, 2, seed=5, method="mmff", progress=False)
    a2, _ = forces.generate_forces(3, 2, seed=5, method="mmff", progress=False, n_jobs=2)
    a3, _ = forces.generate_forces(3, 2, seed=6, method="mmff", progress=False)
    assert a1.keys() == a2.keys()
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])
    assert set(a1["smiles"]) != set(a3["smiles"])
    assert len(a1["energies"]) == 6 and m1["rotation_check"]["force_max_abs_error"] < 1e-8
    # conformers of one molecule differ (RDKit seed 0/1 trap avoided)
    n = a1["mol_natoms"][0]
    assert np.abs(a1["positions"][:n] - a1["positions"][n:2 * n]).max() > 1e-2


def test_forces_bad_input():
    with pytest.raises(ParameterError, match="split must be one of"):
        forces.load_forces("quick", 0, "validation")
    with pytest.raises(ParameterError, match="method must be one of"):
        forces.load_forces("quick", 0, method="dft")
    with pytest.raises(ParameterError, match="PROFILE must be one of"):
        forces.load_forces("medium", 0)
    with pytest.raises(ParameterError, match="seed must be a non-negative integer"):
        forces.load_forces("quick", -1)
    with pytest.raises(ParameterError, match="energy_reference"):
        forces.load_forces("quick", 0, energy_reference="atoms")
    with pytest.raises(ParameterError, match="unsupported elements"):
        forces.select_molecules(3, 0, elements=("C", "Xe"))
    with pytest.raises(ValueError, match="positions must have shape"):
        forces.gfn2_energy_forces(np.array([8, 1, 1]), np.zeros((2, 3)))


def test_missing_molsets_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "moses" else real(name, *a))
    forces.moses_smiles.cache_clear()
    with pytest.raises(ImportError, match="pip install --no-deps molsets==0.3.1"):
        forces.moses_smiles("test")
    monkeypatch.undo()
    forces.moses_smiles.cache_clear()


def test_haar_so3_numpy_is_the_sampler_of_the_stored_rotation_check(force_sample):
    """Pinned: a regenerated force data set reproduces its stored rotation check only with these rotations."""
    R = haar_so3_numpy(np.random.default_rng(derived_seed(0, 303)))
    expected = np.array([[-0.16030230105636978, 0.9313591974959673, 0.32691469455455935],
                         [-0.7235044238958407, -0.3361635706712035, 0.6029389706734292],
                         [0.6714495668917961, -0.13987172335127146, 0.7277302935343319]])
    np.testing.assert_allclose(R, expected, rtol=0, atol=1e-15)
    Rs = np.stack([haar_so3_numpy(np.random.default_rng(s)) for s in range(50)])
    assert np.abs(Rs @ Rs.transpose(0, 2, 1) - np.eye(3)).max() < 1e-12
    assert np.abs(np.linalg.det(Rs) - 1).max() < 1e-12
    check = force_sample[1]["rotation_check"]  # drawn with R in generate_forces
    assert check["force_max_abs_error"] < 1e-8 and check["force_max_abs"] > 0.1
