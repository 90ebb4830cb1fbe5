"""Small drug-like molecules with quantum-chemical energy and force labels.

Source
    SMILES of the MOSES benchmark (``molsets`` 0.3.1 on PyPI, its bundled
    ``moses/dataset/data/test.csv.gz`` (176,074 SMILES), read with pandas; the ``moses`` package
    itself is never imported).  Molecules are drawn in a seeded random order and
    kept when they are neutral closed-shell, have ``min_heavy_atoms``..``max_heavy_atoms``
    heavy atoms (default 6..20) and only the elements H, C, N, O, F, S, Cl.
    Hydrogens are explicit.
Geometries
    ``n_conformers`` RDKit ETKDGv3 embeddings per molecule (independent seeded
    embeddings, not pruned and not relaxed: off-equilibrium geometries with RMS
    forces of about 0.5-1 eV/Å, which is what a force field has to learn).
Labels
    ``method="gfn2"``: GFN2-xTB single points with ``tblite`` (LGPL-3.0),
    ``method="mmff"``: MMFF94 from RDKit (fast fallback: about 4 ms instead of
    0.1-0.2 s per label on one core; with the ETKDG embedding about 6x cheaper per
    conformer).
Units
    positions in Å (each conformer centred at its unweighted atom centroid),
    energies in eV, forces in eV/Å (= -dE/dx).  tblite's Hartree and Bohr are
    converted with CODATA 2018 (1 Ha = 27.211386245988 eV, 1 Bohr = 0.529177210903 Å);
    MMFF's kcal/mol with 1 kcal/mol = 0.0433641043 eV.  The units are also stored
    in each file's metadata (``meta["units"]``).
Split
    by molecule (never by conformer): ``test_fraction`` of the molecules, with all
    their conformers, are held out.

Generate with ``python -m equivlib.data.forces --profile quick|full --seed 0 [--method mmff]``;
load with :func:`load_forces`.
"""
from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import ParameterError, derived_seed
from ..groups import haar_so3_numpy
from .cache import (batch_index, check_loader_args, cli_main, index_list, load_or_build_profile, logger,
                    pad_packed, packed_offsets, split_groups, split_mask)

from .lj import AtomsBatch  # the padded-batch type shared with the Lennard-Jones task

__all__ = [
    "HARTREE_TO_EV",
    "BOHR_TO_ANGSTROM",
    "KCAL_PER_MOL_TO_EV",
    "UNITS",
    "FORCE_PROFILES",
    "METHODS",
    "ELEMENTS",
    "MoleculeBatch",
    "moses_smiles",
    "select_molecules",
    "embed_conformers",
    "gfn2_energy_forces",
    "mmff_energy_forces",
    "energy_forces",
    "rotation_check",
    "generate_forces",
    "build_forces",
    "load_forces",
]

HARTREE_TO_EV = 27.211386245988
BOHR_TO_ANGSTROM = 0.529177210903
KCAL_PER_MOL_TO_EV = 0.0433641043
UNITS = {"positions": "angstrom", "energies": "eV", "forces": "eV/angstrom"}
METHODS = ("gfn2", "mmff")
ELEMENTS = ("H", "C", "N", "O", "F", "S", "Cl")
_SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9, "S": 16, "Cl": 17, "Br": 35}
FORMAT_VERSION = 1

#: Everything the profile decides for the force data set and :func:`equivlib.tasks.forces_task`.
#: ``"data"``: generation parameters, stored as the cache file's ``spec`` (changing a
#: value regenerates the data set and orphans the committed sample);
#: ``"task"``: ``n_heldout``, the held-out conformers of the task's monitor.
#: ``"smoke"`` (full only): the ``"data"`` and ``"task"`` entries ``make smoke`` changes (:func:`~equivlib.config.smoke_steps`).
FORCE_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {"data": dict(n_molecules=50, n_conformers=4, max_heavy_atoms=20, test_fraction=0.2),
              "task": dict(n_heldout=16)},
    "full": {"data": dict(n_molecules=1000, n_conformers=8, max_heavy_atoms=20, test_fraction=0.2),
             "task": dict(n_heldout=256),
             # make smoke: 160 conformers (labelled in about half a minute), 8 held out in the monitor
             "smoke": {"data": dict(n_molecules=20), "task": dict(n_heldout=8)}},
}


# --------------------------------------------------------------------------- batch


@dataclass
class MoleculeBatch(AtomsBatch):
    """Padded batch of molecular conformers with energy and force labels.

    An :class:`equivlib.data.lj.AtomsBatch` (``positions``, ``forces``, ``mask``,
    ``energies``) plus the chemistry.

    Attributes
    ----------
    positions : torch.Tensor, shape (B, A, 3)
        Å, centred per conformer; zero at padded atoms.
    forces : torch.Tensor, shape (B, A, 3)
        eV/Å; zero at padded atoms.
    mask : torch.Tensor, shape (B, A), bool
        ``True`` for real atoms.
    energies : torch.Tensor, shape (B,)
        eV, minus ``energy_offsets`` (the per-element reference, see :func:`load_forces`).
    species : torch.Tensor, shape (B, A), long
        Atomic numbers; 0 at padded atoms.
    molecule : torch.Tensor, shape (B,), long
        Index of the molecule in the data set (conformers of one molecule share it).
    energy_offsets : torch.Tensor, shape (B,)
        eV subtracted from the total energy; ``energies + energy_offsets`` is the
        total energy of the method.
    smiles : list of str, length B
        Canonical SMILES of each conformer's molecule.
    """

    species: torch.Tensor
    molecule: torch.Tensor
    energy_offsets: torch.Tensor
    smiles: list

    def __post_init__(self) -> None:
        super().__post_init__()
        B, A = self.mask.shape
        if tuple(self.species.shape) != (B, A) or self.species.dtype != torch.long:
            raise ValueError(f"species must be a long tensor of shape {(B, A)}, got "
                             f"{tuple(self.species.shape)} {self.species.dtype}")
        if tuple(self.molecule.shape) != (B,) or tuple(self.energy_offsets.shape) != (B,):
            raise ValueError("molecule and energy_offsets must have shape (B,)")
        if len(self.smiles) != B:
            raise ValueError(f"smiles must have length B = {B}, got {len(self.smiles)}")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "MoleculeBatch":
        """Move to ``device``; cast the floating tensors to ``dtype`` (integers and mask keep theirs)."""
        return MoleculeBatch(
            positions=self.positions.to(device=device, dtype=dtype),
            forces=self.forces.to(device=device, dtype=dtype),
            mask=self.mask.to(device=device),
            energies=self.energies.to(device=device, dtype=dtype),
            species=self.species.to(device=device),
            molecule=self.molecule.to(device=device),
            energy_offsets=self.energy_offsets.to(device=device, dtype=dtype),
            smiles=list(self.smiles),
        )

    def __getitem__(self, idx) -> "MoleculeBatch":
        """Select conformers (int keeps the batch dimension; slices, index or bool tensors)."""
        B, idx = len(self), batch_index(idx)
        return MoleculeBatch(
            positions=self.positions[idx], forces=self.forces[idx], mask=self.mask[idx],
            energies=self.energies[idx], species=self.species[idx], molecule=self.molecule[idx],
            energy_offsets=self.energy_offsets[idx], smiles=index_list(self.smiles, idx, B),
        )


# --------------------------------------------------------------------------- molecules


def _moses_csv(source: str) -> Path:
    if source not in ("train", "test", "test_scaffolds"):
        raise ParameterError(f"MOSES source must be 'train', 'test' or 'test_scaffolds', got {source!r}")
    spec = importlib.util.find_spec("moses")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MOSES SMILES come from the 'molsets' package: "
                          "pip install --no-deps molsets==0.3.1")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "dataset" / "data" / f"{source}.csv.gz"
        if path.exists():
            return path
    raise ImportError(f"molsets is installed but has no dataset/data/{source}.csv.gz")


@lru_cache(maxsize=4)
def moses_smiles(source: str = "test") -> np.ndarray:
    """All SMILES of a MOSES split (``test`` has 176,074; ``train`` 1,584,663), as a unicode array."""
    import pandas as pd

    df = pd.read_csv(_moses_csv(source), usecols=["SMILES"])
    return df["SMILES"].to_numpy(dtype=str)


def _check_elements(elements: Sequence[str]) -> frozenset[int]:
    bad = [e for e in elements if e not in _SYMBOL_TO_Z]
    if bad:
        raise ParameterError(f"unsupported elements {bad}; choose from {sorted(_SYMBOL_TO_Z)}")
    return frozenset(_SYMBOL_TO_Z[e] for e in elements)


def select_molecules(
    n: int,
    seed: int,
    *,
    min_heavy_atoms: int = 6,
    max_heavy_atoms: int = 20,
    elements: Sequence[str] = ELEMENTS,
    source: str = "test",
) -> list[str]:
    """``n`` distinct canonical SMILES from MOSES in a seeded random order, filtered.

    Kept: parseable, neutral (no formal charges), no radicals, a single fragment,
    heavy-atom count in ``[min_heavy_atoms, max_heavy_atoms]``, only ``elements``.
    """
    from rdkit import Chem, RDLogger

    if not isinstance(n, int) or n < 1:
        raise ParameterError(f"n must be a positive integer, got {n!r}")
    if not 1 <= min_heavy_atoms <= max_heavy_atoms:
        raise ParameterError(f"need 1 <= min_heavy_atoms <= max_heavy_atoms, got {min_heavy_atoms}, {max_heavy_atoms}")
    allowed = _check_elements(elements)
    pool = moses_smiles(source)
    order = np.random.default_rng(derived_seed(seed, 101)).permutation(len(pool))
    RDLogger.DisableLog("rdApp.*")
    out: list[str] = []
    seen: set[str] = set()
    for i in order:
        mol = Chem.MolFromSmiles(str(pool[i]))
        if mol is None:
            continue
        heavy = mol.GetNumHeavyAtoms()
        if not min_heavy_atoms <= heavy <= max_heavy_atoms:
            continue
        atoms = mol.GetAtoms()
        if any(a.GetAtomicNum() not in allowed or a.GetFormalCharge() != 0 or a.GetNumRadicalElectrons()
               for a in atoms):
            continue
        if len(Chem.GetMolFrags(mol)) != 1:
            continue
        if 1 not in allowed and any(a.GetTotalNumHs() for a in atoms):
            continue
        can = Chem.MolToSmiles(mol)
        if can in seen:
            continue
        seen.add(can)
        out.append(can)
        if len(out) == n:
            return out
    raise ParameterError(f"only {len(out)} MOSES molecules pass the filters; asked for {n}")


def embed_conformers(smiles: str, n_conformers: int, seed: int, *, optimize: bool = False):
    """Explicit-H RDKit molecule with up to ``n_conformers`` ETKDGv3 conformers.

    Returns ``(mol, positions)`` with ``positions`` a list of ``(A, 3)`` float64
    arrays in Å (not centred).  Exact duplicates are dropped, so fewer than
    ``n_conformers`` come back only when embedding fails.  ``optimize`` relaxes each
    conformer with MMFF94 (200 iterations).
    """
    from rdkit import Chem
    from rdkit.Chem import rdDistGeom, rdForceFieldHelpers

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = rdDistGeom.ETKDGv3()
    params.randomSeed = derived_seed(seed)  # never 0 or 1 (identical conformers in RDKit)
    params.numThreads = 1
    params.pruneRmsThresh = -1.0
    cids = list(rdDistGeom.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
    if optimize and cids:
        rdForceFieldHelpers.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=200)
    positions: list[np.ndarray] = []
    for c in cids:
        x = mol.GetConformer(c).GetPositions().astype(np.float64)
        if all(np.abs(x - y).max() > 1e-4 for y in positions):
            positions.append(x)
    return mol, positions


# --------------------------------------------------------------------------- labels


@lru_cache(maxsize=1)
def _openmp_runtime():
    """The OpenMP runtime tblite is linked against (system ``libgomp.so.1`` for the
    manylinux wheels), or ``None`` where it cannot be found."""
    import ctypes

    for name in ("libgomp.so.1", "libomp.so", "libomp.dylib", "libiomp5.so"):
        try:
            lib = ctypes.CDLL(name)
            lib.omp_set_num_threads  # noqa: B018  (attribute lookup checks the symbol)
            return lib
        except (OSError, AttributeError):
            continue
    return None


def gfn2_energy_forces(numbers: np.ndarray, positions: np.ndarray, *, charge: int = 0, uhf: int = 0,
                       accuracy: float = 1.0, threads: int | None = 1) -> tuple[float, np.ndarray]:
    """GFN2-xTB energy (eV) and forces (eV/Å, shape (A, 3)) with tblite, in float64.

    ``positions`` in Å, shape (A, 3).  ``threads``: OpenMP threads for this call
    (``None`` leaves tblite's default, one per core).  One thread is the default
    because molecules this small gain little from threads and a busy machine loses
    a lot (measured here: 0.2 s with 1 thread vs 1.0 s with 2 on 2 loaded cores);
    parallelise over molecules instead (``n_jobs``).
    Raises :class:`RuntimeError` if the SCF fails.
    """
    from tblite.interface import Calculator

    if threads is not None:
        omp = _openmp_runtime()
        if omp is not None:
            omp.omp_set_num_threads(int(threads))

    numbers = np.asarray(numbers, dtype=np.int32)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (len(numbers), 3):
        raise ValueError(f"positions must have shape ({len(numbers)}, 3), got {positions.shape}")
    calc = Calculator("GFN2-xTB", numbers, positions / BOHR_TO_ANGSTROM, charge=float(charge), uhf=int(uhf))
    calc.set("verbosity", 0)
    calc.set("accuracy", float(accuracy))
    try:
        res = calc.singlepoint()
    except Exception as exc:  # tblite raises its own error type on SCF failure
        raise RuntimeError(f"tblite GFN2-xTB single point failed: {exc}") from exc
    energy = float(res.get("energy")) * HARTREE_TO_EV
    forces = -np.asarray(res.get("gradient"), dtype=np.float64) * (HARTREE_TO_EV / BOHR_TO_ANGSTROM)
    return energy, forces


def mmff_energy_forces(mol, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """MMFF94 energy (eV) and forces (eV/Å, shape (A, 3)) of ``mol`` (explicit H) at ``positions`` (Å)."""
    from rdkit.Chem import rdForceFieldHelpers

    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape != (mol.GetNumAtoms(), 3):
        raise ValueError(f"positions must have shape ({mol.GetNumAtoms()}, 3), got {positions.shape}")
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    mol = Chem.Mol(mol)
    mol.RemoveAllConformers()
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, (x, y, z) in enumerate(positions):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    mol.AddConformer(conf, assignId=True)
    props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol)
    if props is None:
        raise ValueError("MMFF94 has no parameters for this molecule")
    ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props)
    flat = positions.ravel().tolist()
    energy = ff.CalcEnergy(flat) * KCAL_PER_MOL_TO_EV
    forces = -np.asarray(ff.CalcGrad(flat), dtype=np.float64).reshape(-1, 3) * KCAL_PER_MOL_TO_EV
    return energy, forces


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ParameterError(f"method must be one of {METHODS}, got {method!r}")
    return method


def energy_forces(mol, positions: np.ndarray, method: str = "gfn2") -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of an explicit-H RDKit ``mol`` at ``positions`` (Å)."""
    from rdkit import Chem

    _check_method(method)
    if method == "mmff":
        return mmff_energy_forces(mol, positions)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    uhf = sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    return gfn2_energy_forces(numbers, positions, charge=Chem.GetFormalCharge(mol), uhf=uhf)


def rotation_check(mol, positions: np.ndarray, method: str, rotation: np.ndarray) -> dict[str, float]:
    """Recompute labels at ``positions @ R.T`` and compare with the rotated labels.

    Returns ``{"force_max_abs_error": max |F(Rx) - R F(x)| (eV/Å), "energy_abs_error":
    |E(Rx) - E(x)| (eV), "force_max_abs": max |F(x)|}``, all in float64.
    """
    e0, f0 = energy_forces(mol, positions, method)
    e1, f1 = energy_forces(mol, positions @ rotation.T, method)
    return {
        "force_max_abs_error": float(np.abs(f1 - f0 @ rotation.T).max()),
        "energy_abs_error": float(abs(e1 - e0)),
        "force_max_abs": float(np.abs(f0).max()),
    }


# --------------------------------------------------------------------------- generation


def _map(fn, jobs, n_jobs: int):
    """``(pool, ordered results)``: in-process for ``n_jobs <= 1``, else a process pool."""
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ParameterError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    if n_jobs == 1:
        return None, map(fn, jobs)
    from concurrent.futures import ProcessPoolExecutor

    # the platform's default start method (fork on Linux); tblite runs one OpenMP
    # thread per call (see gfn2_energy_forces), so n_jobs workers use n_jobs cores
    pool = ProcessPoolExecutor(n_jobs, initializer=_single_thread_worker)
    return pool, pool.map(fn, jobs, chunksize=4)


def _single_thread_worker() -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    torch.set_num_threads(1)


def _label_molecule(args):
    """Embed and label one molecule; ``(smiles, Z, [(x, E, F)], seconds)`` or an error string."""
    smi, n_conformers, seed, method = args
    try:
        mol, confs = embed_conformers(smi, n_conformers, seed)
        if not confs:
            raise RuntimeError("ETKDG embedding failed")
        labels, seconds = [], 0.0
        for x in confs:
            x = x - x.mean(axis=0)
            t = time.perf_counter()
            e, f = energy_forces(mol, x, method)
            seconds += time.perf_counter() - t
            if not (np.isfinite(e) and np.isfinite(f).all()):
                raise RuntimeError("non-finite label")
            labels.append((x, e, f))
    except (RuntimeError, ValueError) as exc:
        return f"{smi}: {exc}"
    return smi, np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int8), labels, seconds


def generate_forces(
    n_molecules: int,
    n_conformers: int,
    seed: int,
    *,
    method: str = "gfn2",
    max_heavy_atoms: int = 20,
    min_heavy_atoms: int = 6,
    test_fraction: float = 0.2,
    n_jobs: int = 1,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Generate the force data set as packed arrays plus metadata.

    Arrays: ``smiles (M,)``, ``mol_natoms (M,)``, ``mol_split (M,)`` (0 train, 1 test),
    ``species (sum mol_natoms,)`` (atomic numbers, per molecule), ``conf_mol (N,)``,
    ``positions (sum atoms over conformers, 3)`` float32 Å (centred),
    ``forces`` likewise float32 eV/Å, ``energies (N,)`` float64 eV.
    Molecules whose embedding or labelling fails are replaced by the next ones in
    the seeded order (logged).  ``n_jobs > 1`` labels molecules in worker
    processes; the result is the same (every molecule has its own seed).
    """
    from tqdm.auto import tqdm

    _check_method(method)
    if not isinstance(n_conformers, int) or n_conformers < 1:
        raise ParameterError(f"n_conformers must be a positive integer, got {n_conformers!r}")
    t0 = time.perf_counter()
    # draw more candidates than needed so that failures can be replaced
    candidates = select_molecules(n_molecules + max(5, n_molecules // 10), seed,
                                  min_heavy_atoms=min_heavy_atoms, max_heavy_atoms=max_heavy_atoms)
    smiles, mol_natoms, species, conf_mol, pos, frc, ene = [], [], [], [], [], [], []
    label_time, n_labelled, failures = 0.0, 0, []
    jobs = [(smi, n_conformers, derived_seed(seed, i, 202), method) for i, smi in enumerate(candidates)]
    bar = tqdm(total=n_molecules * n_conformers, desc=f"forces ({method})", unit="conf",
               disable=not progress, mininterval=1.0)
    pool, results = _map(_label_molecule, jobs, n_jobs)
    try:
        for res in results:
            if isinstance(res, str):
                failures.append(res)
                logger.warning("forces: skipping %s", res)
                continue
            smi, z, labels, seconds = res
            label_time += seconds
            n_labelled += len(labels)
            m = len(smiles)
            smiles.append(smi)
            mol_natoms.append(len(z))
            species.extend(z.tolist())
            for x, e, f in labels:
                conf_mol.append(m)
                pos.append(x)
                frc.append(f)
                ene.append(e)
            bar.update(len(labels))
            if len(smiles) == n_molecules:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if len(smiles) < n_molecules:
        raise RuntimeError(f"only {len(smiles)} of {n_molecules} molecules could be labelled: {failures[:5]}")
    # a rotation check on the first molecule, stored with the data
    from rdkit import Chem

    first = Chem.AddHs(Chem.MolFromSmiles(smiles[0]))
    check = rotation_check(first, pos[0].astype(np.float64), method,
                           haar_so3_numpy(np.random.default_rng(derived_seed(seed, 303))))
    arrays = {
        "smiles": np.array(smiles, dtype=str),
        "mol_natoms": np.array(mol_natoms, dtype=np.int32),
        "mol_split": split_groups(len(smiles), test_fraction, seed),
        "species": np.array(species, dtype=np.int8),
        "conf_mol": np.array(conf_mol, dtype=np.int32),
        "positions": np.concatenate(pos).astype(np.float32),
        "forces": np.concatenate(frc).astype(np.float32),
        "energies": np.array(ene, dtype=np.float64),
    }
    meta = _versions(method)
    meta.update({
        "dataset": "forces",
        "units": dict(UNITS),
        "method": method,
        "source": "MOSES test.csv.gz from molsets 0.3.1 (PyPI)",
        "conformers": "RDKit ETKDGv3, not relaxed, centred at the atom centroid",
        "n_molecules": len(smiles),
        "n_conformers_total": len(conf_mol),
        "failures": failures,
        "seconds_total": round(time.perf_counter() - t0, 2),
        "seconds_per_label": round(label_time / max(n_labelled, 1), 5),
        "rotation_check": check,
    })
    return arrays, meta


def _versions(method: str) -> dict[str, str]:
    import rdkit

    out = {"rdkit": rdkit.__version__}
    if method == "gfn2":
        from importlib.metadata import version

        out["tblite"] = version("tblite")
    return {"versions": out}


def build_forces(profile: str = "quick", seed: int = 0, *, method: str = "gfn2", cache_dir=None,
                 regenerate: bool = False, n_jobs: int = 1, progress: bool = True):
    """Arrays and metadata of a profile: committed sample, cache, or generated (see ``equivlib.data.cache``)."""
    _check_method(method)
    return load_or_build_profile(
        "forces", profile, seed, FORCE_PROFILES,
        lambda **data: generate_forces(seed=seed, method=method, n_jobs=n_jobs, progress=progress, **data),
        format_version=FORMAT_VERSION, variant=("method", method), cache_dir=cache_dir, regenerate=regenerate)


def _linear_reference(counts: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Per-element energies ``e_Z`` minimising ``sum (E - counts @ e)^2`` (min-norm)."""
    coef, *_ = np.linalg.lstsq(counts.astype(np.float64), energies, rcond=None)
    return coef


def load_forces(
    profile: str = "quick",
    seed: int = 0,
    split: str = "train",
    *,
    method: str = "gfn2",
    cache_dir=None,
    dtype: torch.dtype = torch.float32,
    energy_reference: str = "linear",
    regenerate: bool = False,
    n_jobs: int = 1,
) -> MoleculeBatch:
    """Load the force data set of ``profile`` / ``seed`` as one padded :class:`MoleculeBatch`.

    Parameters
    ----------
    profile : {"quick", "full"}
        ``quick``: 50 molecules x 4 conformers (committed sample for seed 0);
        ``full``: 1000 molecules x 8 conformers (generated and cached, minutes).
    seed : int
        Chooses molecules, conformers and the train/test split.
    split : {"train", "test", "all"}
        Held-out molecules (20 %) never share a molecule with train.
    method : {"gfn2", "mmff"}
        Label method (GFN2-xTB via tblite, or MMFF94).
    cache_dir : path, optional
        See :func:`equivlib.data.default_cache_dir`.
    dtype : torch.dtype
        Floating dtype of the returned tensors.
    energy_reference : {"linear", "none"}
        ``"linear"`` subtracts per-element energies fitted by least squares on the
        *train* split (so test energies use the train fit); the subtracted amount is
        in ``batch.energy_offsets``.  ``"none"`` returns total energies.
    n_jobs : int
        Worker processes if the data set has to be generated.

    Returns
    -------
    MoleculeBatch
        Positions (Å) ``(B, A, 3)``, forces (eV/Å), energies (eV), mask, species.
    """
    check_loader_args(split, dtype)
    if energy_reference not in ("linear", "none"):
        raise ParameterError(f"energy_reference must be 'linear' or 'none', got {energy_reference!r}")
    arr, _ = build_forces(profile, seed, method=method, cache_dir=cache_dir, regenerate=regenerate,
                          n_jobs=n_jobs)
    mol_natoms = arr["mol_natoms"].astype(np.int64)
    conf_mol = arr["conf_mol"].astype(np.int64)
    conf_natoms = mol_natoms[conf_mol]
    mol_off = packed_offsets(mol_natoms)
    species_conf = np.concatenate([arr["species"][mol_off[m]:mol_off[m + 1]] for m in conf_mol]).astype(np.int64)
    species, mask = pad_packed(species_conf, conf_natoms)
    positions, _ = pad_packed(arr["positions"], conf_natoms)
    forces, _ = pad_packed(arr["forces"], conf_natoms)
    energies = arr["energies"].astype(np.float64)
    offsets = np.zeros_like(energies)
    if energy_reference == "linear":
        zs = np.unique(species_conf)
        counts = (species[:, :, None] == zs[None, None, :]).sum(1)  # (N, n_elements)
        train = split_mask(arr["mol_split"], "train")[conf_mol]
        offsets = counts @ _linear_reference(counts[train], energies[train])
    keep = split_mask(arr["mol_split"], split)[conf_mol]
    smiles = arr["smiles"]
    A = int(conf_natoms[keep].max()) if keep.any() else 0
    return MoleculeBatch(
        positions=torch.from_numpy(positions[keep, :A]).to(dtype),
        forces=torch.from_numpy(forces[keep, :A]).to(dtype),
        mask=torch.from_numpy(mask[keep, :A]),
        energies=torch.from_numpy(energies[keep] - offsets[keep]).to(dtype),
        species=torch.from_numpy(species[keep, :A]),
        molecule=torch.from_numpy(conf_mol[keep]),
        energy_offsets=torch.from_numpy(offsets[keep]).to(dtype),
        smiles=[str(smiles[m]) for m in conf_mol[keep]],
    )


def main(argv: list[str] | None = None) -> int:
    return cli_main("forces", "Generate the small-molecule force data set (ETKDG + GFN2-xTB / MMFF94).",
                    build_forces, argv, lambda p: p.add_argument("--method", choices=METHODS, default="gfn2"),
                    n_jobs=True)


if __name__ == "__main__":
    raise SystemExit(main())
