"""Molecular dynamics with learned force fields: what a small equivariance error does downstream.

An ASE calculator (:class:`ModelForceCalculator`) wraps any equivlib force model (the
EScAIP-style field trained with augmentation, the exactly equivariant e3nn field) and
turns its normalised predictions back into eV/Å.  It can predict

* ``"plain"``: the model's forces ``f(x)``;
* ``"twirl"``: their twirl over a randomly turned design of a finite rotation group,
  drawn afresh at every call (for an invariant trunk with a linear direction head, two
  turned tetrahedral copies give the exact Haar twirl, so the forces are equivariant to
  round-off; chapter 1);
* ``"random"``: ``gᵀ f(g x)`` for one Haar-random rotation ``g`` per call, the practice
  of rotating the system at every step of a simulation;
* ``"residual"``: ``f(x)`` minus its twirl, the model's non-equivariant part alone (the
  part whose spread ``L_equiv`` measures); added to GFN2-xTB's forces
  (:func:`force_fields` ``residual=True``) it gives a good force field that carries
  exactly the model's equivariance error.

:func:`run_md` integrates Newton's equations (velocity Verlet, NVE) or Langevin
dynamics with ASE's integrators and records positions, velocities, forces and (where the
calculator defines one) the potential energy; :func:`trajectory` does the same through a
cache keyed like training runs.  :func:`orientation_divergence`, :func:`momenta`,
:func:`net_force_torque`, :func:`total_energy` and :func:`structure` (bond lengths and
angles) measure a trajectory.  GFN2-xTB, the reference of chapter 2's force data, is
:func:`reference_calculator` (tblite's own ASE calculator).

The studies of chapter 7 are :func:`orientation_study` (NVE from two orientations),
:func:`observable_study` (Langevin from two orientations: structural distributions, a
two-sample test and the distance to the reference) and :func:`discrepancy_check` (the
force discrepancy between orientations against the equivariance error ``L_equiv``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from importlib.metadata import version as _version
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols, covalent_radii
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

from .config import ParameterError, derived_generator, derived_seed, smoke_report
from .groups import VectorAction, haar_so3, sample_design, sample_haar, tetrahedral_group
from .runs import runs_dir, source_hash
from .stats import block_test
from .training import float64_copy
from .twirl import TwirledModel, decompose_model

__all__ = ["MODES", "ModelForceCalculator", "reference_calculator", "Trajectory", "initial_velocities",
           "run_md", "trajectory", "rotate_state", "orientation_divergence", "onset_time", "force_discrepancy",
           "early_divergence", "momenta", "net_force_torque", "total_energy", "bonds", "angles", "structure",
           "heldout_molecules", "ForceField", "model_digest", "force_fields", "OrientationStudy",
           "orientation_study", "OBSERVABLES", "ObservableStudy", "observable_study", "discrepancy_check", "force_errors",
           "energy_check"]

#: What :class:`ModelForceCalculator` predicts: the model's forces, their twirl, or one randomly rotated evaluation.
MODES = ("plain", "twirl", "random", "residual")


class ModelForceCalculator(Calculator):
    """An ASE calculator (forces only) around an equivlib force model.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(positions (1, A, 3), mask=(1, A), species=(1, A))`` with atomic
        numbers as species, returning forces in units of ``force_scale``.
    force_scale : float
        eV/Å per model unit (the force task's ``info["force_scale"]``).
    elements : iterable of int
        Atomic numbers the model was trained on; any other element is refused.
    mode : ``"plain"``, ``"twirl"``, ``"random"`` or ``"residual"`` (module docstring).
    group, n_copies : the finite group (default tetrahedral) and its turned copies of the twirl.
    seed : int
        Seeds the rotations of ``"twirl"``, ``"random"`` and ``"residual"``.
    dtype : torch.dtype
        The model runs in a copy of this precision (default float64).

    Positions are centred before the call (the models see relative positions only).
    Non-finite positions or predictions raise :class:`ValueError` naming the atoms.
    """

    implemented_properties = ["forces"]

    def __init__(self, model: torch.nn.Module, *, force_scale: float, elements: Iterable[int], mode: str = "plain",
                 group: torch.Tensor | None = None, n_copies: int = 2, seed: int = 0,
                 dtype: torch.dtype = torch.float64, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
        if not (isinstance(force_scale, (int, float)) and np.isfinite(force_scale) and force_scale > 0):
            raise ParameterError(f"force_scale must be a positive number, got {force_scale!r}")
        self.elements = frozenset(int(z) for z in elements)
        if not self.elements:
            raise ParameterError("elements is empty: name the atomic numbers the model was trained on")
        self.mode, self.force_scale, self.dtype = mode, float(force_scale), dtype
        self.model = float64_copy(model) if dtype == torch.float64 else model.eval()
        gen = torch.Generator().manual_seed(int(seed))
        group = tetrahedral_group() if group is None else group
        if mode in ("twirl", "residual"):
            twirled = TwirledModel(self.model, lambda b, dev: sample_design(
                group, n_copies, batch=b, generator=gen, dtype=dtype, device=dev), VectorAction())
            self._forward = twirled if mode == "twirl" else _Residual(self.model, twirled)
        elif mode == "random":
            self._forward = TwirledModel(self.model, lambda b, dev: sample_haar(
                1, batch=b, generator=gen, dtype=dtype, device=dev), VectorAction())
        else:
            self._forward = self.model
        self.n_calls = 0

    def predict(self, positions: np.ndarray, numbers: Sequence[int]) -> np.ndarray:
        """Forces (eV/Å) at ``positions`` (Å, ``(A, 3)``, or ``(N, A, 3)`` for N configurations at once)."""
        pos = np.asarray(positions, dtype=np.float64)
        numbers = np.asarray(numbers, dtype=np.int64)
        if pos.ndim not in (2, 3) or pos.shape[-1] != 3 or pos.shape[-2] != numbers.shape[0]:
            raise ValueError(f"positions must have shape (atoms, 3) or (configurations, atoms, 3) matching "
                             f"{numbers.shape[0]} atomic numbers, got {pos.shape}")
        single = pos.ndim == 2
        pos = pos[None] if single else pos
        bad = np.flatnonzero(~np.isfinite(pos).all(axis=(0, 2)))
        if bad.size:
            raise ValueError(f"{bad.size} atom position(s) are not finite (NaN or inf): atoms {bad[:10].tolist()}")
        unknown = sorted(set(numbers.tolist()) - self.elements)
        if unknown:
            raise ValueError(f"the model never saw element(s) {[chemical_symbols[z] for z in unknown]}; it was trained "
                             f"on {[chemical_symbols[z] for z in sorted(self.elements)]}")
        device = next(self.model.parameters()).device
        x = torch.as_tensor(pos - pos.mean(axis=1, keepdims=True), dtype=self.dtype, device=device)
        species = torch.as_tensor(numbers, device=device)[None].expand(x.shape[0], -1)
        mask = torch.ones_like(species, dtype=torch.bool)
        with torch.no_grad():
            f = self._forward(x, mask=mask, species=species)
        out = f.detach().to(torch.float64).cpu().numpy() * self.force_scale
        bad = np.flatnonzero(~np.isfinite(out).all(axis=(0, 2)))
        if bad.size:
            raise ValueError(f"the model predicted non-finite forces on {bad.size} atom(s): {bad[:10].tolist()}")
        self.n_calls += 1
        return out[0] if single else out

    def calculate(self, atoms: Atoms | None = None, properties=("forces",), system_changes=all_changes):
        """ASE's entry point: store :meth:`predict`'s forces for ``atoms`` in ``self.results``."""
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = self.predict(self.atoms.positions, self.atoms.numbers)


class _Residual(torch.nn.Module):
    """``model(x) - twirled(x)``: the non-equivariant part of a model's prediction."""

    def __init__(self, model: torch.nn.Module, twirled: torch.nn.Module):
        super().__init__()
        self.model, self.twirled = model, twirled

    def forward(self, x, **extras):
        return self.model(x, **extras) - self.twirled(x, **extras)


def reference_calculator(method: str = "GFN2-xTB"):
    """tblite's ASE calculator (GFN2-xTB by default), the reference of chapter 2's force data."""
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0)


@dataclass
class Trajectory:
    """A recorded trajectory.

    Attributes
    ----------
    times : (T + 1,) fs
    positions, velocities, forces : (T + 1, A, 3) in Å, Å/fs and eV/Å
    masses : (A,) amu
    numbers : (A,) atomic numbers
    seconds_per_step : wall-clock seconds per MD step (force call and integration), as measured
        when the trajectory was computed (also when it is loaded from the cache)
    energies : (T + 1,) potential energy in eV, or None where the force field defines no energy
    """

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    masses: np.ndarray
    numbers: np.ndarray
    seconds_per_step: float
    energies: np.ndarray | None = None


def initial_velocities(numbers: Sequence[int], positions: np.ndarray, temperature_K: float, seed: int) -> np.ndarray:
    """Maxwell-Boltzmann velocities (Å/fs) at ``temperature_K`` with zero total momentum and angular momentum."""
    atoms = Atoms(numbers=numbers, positions=positions)
    thermalize_momenta(atoms, temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    ZeroRotation(atoms)
    return atoms.get_velocities() * units.fs


def rotate_state(positions: np.ndarray, velocities: np.ndarray, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (about their centre of geometry) and velocities turned together by ``rotation``."""
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-10) or np.linalg.det(R) < 0:
        raise ParameterError("rotation must be a 3x3 proper rotation matrix")
    c = positions.mean(axis=0)
    return (positions - c) @ R.T + c, velocities @ R.T


def run_md(numbers: Sequence[int], positions: np.ndarray, velocities: np.ndarray, calculator: Calculator, *,
           steps: int, dt_fs: float = 0.5, ensemble: str = "nve", temperature_K: float = 300.0,
           friction_per_fs: float = 0.01, seed: int = 0, progress: bool = False, desc: str = "md") -> Trajectory:
    """Integrate ``steps`` steps of ``dt_fs`` from ``(positions, velocities)`` (Å, Å/fs) with ``calculator``.

    ``ensemble="nve"``: velocity Verlet; ``"langevin"``: ASE's Langevin integrator at
    ``temperature_K`` with ``friction_per_fs`` and its noise seeded by ``seed``.  Every
    step's positions, velocities and forces are recorded (forces are those of the
    positions they are recorded with), and the potential energy where the calculator
    implements one.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ParameterError(f"steps must be a positive integer, got {steps!r}")
    if not dt_fs > 0:
        raise ParameterError(f"dt_fs must be positive, got {dt_fs!r}")
    atoms = Atoms(numbers=numbers, positions=np.asarray(positions, dtype=np.float64))
    atoms.set_velocities(np.asarray(velocities, dtype=np.float64) / units.fs)
    atoms.calc = calculator
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    elif ensemble == "langevin":
        dyn = Langevin(atoms, timestep=dt_fs * units.fs, temperature_K=temperature_K,
                       friction=friction_per_fs / units.fs, fixcm=False,
                       rng=np.random.default_rng(seed))
    else:
        raise ParameterError(f"ensemble must be 'nve' or 'langevin', got {ensemble!r}")
    has_energy = "energy" in getattr(calculator, "implemented_properties", ())
    pos, vel, frc, pot = [], [], [], []

    def record():
        pos.append(atoms.get_positions())
        vel.append(atoms.get_velocities() * units.fs)
        frc.append(atoms.get_forces())
        if has_energy:  # computed with the forces: no second call
            pot.append(atoms.get_potential_energy())

    record()
    bar = tqdm(total=steps, desc=desc, disable=not progress, mininterval=2)
    t0 = time.perf_counter()
    for _ in range(steps):
        dyn.run(1)
        record()
        bar.update()
    seconds = time.perf_counter() - t0
    bar.close()
    if hasattr(steps, "planned"):  # a smoke run (config.Capped): tell the ledger the size of the run it stands for
        smoke_report({"desc": desc, "steps": int(steps), "planned_steps": int(steps.planned),
                      "step_s": seconds / steps, "train_s": seconds, "pid": os.getpid(),
                      "device": str(next(calculator.model.parameters()).device)
                      if isinstance(calculator, ModelForceCalculator) else "cpu"})
    return Trajectory(times=dt_fs * np.arange(steps + 1), positions=np.stack(pos), velocities=np.stack(vel),
                      forces=np.stack(frc), masses=atoms.get_masses(), numbers=atoms.get_atomic_numbers(),
                      seconds_per_step=seconds / steps, energies=np.asarray(pot) if has_energy else None)


def _digest(payload: Mapping) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def trajectory(field: "ForceField", numbers: Sequence[int], positions: np.ndarray, velocities: np.ndarray, *,
               steps: int, dt_fs: float = 0.5, ensemble: str = "nve", temperature_K: float = 300.0,
               friction_per_fs: float = 0.01, seed: int = 0, cache_dir=None, cache: bool = True) -> Trajectory:
    """:func:`run_md` with a fresh calculator of ``field``, cached like training runs.

    The cache entry (under ``cache_dir``, default :func:`~equivlib.runs.runs_dir` ``/ "md"``)
    is keyed by the field's ``key`` (:class:`ForceField`), the initial state, every integration
    parameter and equivlib's code (:func:`~equivlib.runs.source_hash`), so a change to any
    of them recomputes.  A field without a key, or ``cache=False``, always computes.  The
    stored ``seconds_per_step`` is the one measured when the trajectory was computed.
    """
    def compute() -> Trajectory:
        return run_md(numbers, positions, velocities, field(), steps=steps, dt_fs=dt_fs, ensemble=ensemble,
                      temperature_K=temperature_K, friction_per_fs=friction_per_fs, seed=seed,
                      desc=f"md {getattr(field, 'name', 'field')} {ensemble} {len(numbers)} atoms")

    if not cache or getattr(field, "key", None) is None:
        return compute()
    from filelock import FileLock

    key = _digest({"field": field.key, "state": _array_digest(numbers, positions, velocities), "steps": steps,
                   "dt_fs": float(dt_fs), "ensemble": ensemble, "temperature_K": float(temperature_K),
                   "friction_per_fs": float(friction_per_fs), "seed": int(seed), "source": source_hash()})
    folder = (runs_dir() if cache_dir is None else Path(cache_dir)) / "md"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{field.name}-{ensemble}-{key}.npz"
    with FileLock(str(folder / f".{path.name}.lock")):
        if path.exists():
            try:
                return _load_trajectory(path)
            except Exception:  # noqa: BLE001 - a damaged entry is recomputed
                path.unlink()
        traj = compute()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, times=traj.times, positions=traj.positions, velocities=traj.velocities, forces=traj.forces,
                 masses=traj.masses, numbers=traj.numbers, seconds_per_step=traj.seconds_per_step,
                 energies=np.array([]) if traj.energies is None else traj.energies,
                 has_energies=traj.energies is not None)
        tmp.rename(path)
    return traj


def _load_trajectory(path: Path) -> Trajectory:
    with np.load(path) as z:
        return Trajectory(times=z["times"], positions=z["positions"], velocities=z["velocities"], forces=z["forces"],
                          masses=z["masses"], numbers=z["numbers"], seconds_per_step=float(z["seconds_per_step"]),
                          energies=z["energies"] if bool(z["has_energies"]) else None)


def orientation_divergence(a: Trajectory, b: Trajectory, rotation: np.ndarray) -> np.ndarray:
    """RMS over atoms of ``|R x_t - x'_t|`` (Å) at every step, for ``b`` started from ``a``'s state turned by ``R``.

    Both trajectories must have been started with :func:`rotate_state` about the same centre
    (the centre of geometry of ``a``'s first frame, which this function turns about too).
    For an exactly equivariant force field the curve stays at round-off until chaos amplifies it.
    """
    if a.positions.shape != b.positions.shape:
        raise ValueError(f"trajectories differ in shape: {a.positions.shape} vs {b.positions.shape}")
    R = np.asarray(rotation, dtype=np.float64)
    c = a.positions[0].mean(axis=0)
    turned = (a.positions - c) @ R.T + c
    return np.sqrt(((turned - b.positions) ** 2).sum(axis=-1).mean(axis=-1))


def onset_time(times: np.ndarray, divergence: np.ndarray, threshold: float) -> float | None:
    """The first time at which ``divergence`` exceeds ``threshold`` (None: never within the trajectory)."""
    above = np.flatnonzero(np.asarray(divergence) > threshold)
    return None if above.size == 0 else float(np.asarray(times)[above[0]])


def force_discrepancy(calculator: ModelForceCalculator, numbers: Sequence[int], positions: np.ndarray,
                      rotation: np.ndarray) -> np.ndarray:
    """``F(R x) - R F(x)`` (eV/Å, ``(A, 3)``): how far the force field is from equivariant at ``x`` for ``R``.

    Averaged over Haar ``R`` and a rotation-invariant data distribution, its mean square is
    twice the equivariance error ``L_equiv`` (times the number of output entries, in eV²/Å²):
    ``R⁻¹F(Rx)`` and ``F(x)`` are two twisted predictions, each spread around the twirl.
    """
    R = np.asarray(rotation, dtype=np.float64)
    x = np.asarray(positions, dtype=np.float64)
    c = x.mean(axis=0)
    return calculator.predict((x - c) @ R.T + c, numbers) - calculator.predict(x, numbers) @ R.T


def early_divergence(discrepancy: np.ndarray, masses: np.ndarray, times_fs: np.ndarray) -> np.ndarray:
    """The divergence of :func:`orientation_divergence` to leading order in time: ``t²/2 · RMS_i |δF_i| / m_i`` (Å).

    Both runs start from the same (turned) state, so positions and velocities agree at
    ``t = 0`` and the first difference is in the accelerations, ``δF_i / m_i``; this is
    the Taylor term, valid while the difference is small against the molecule's own motion.
    """
    acc = np.linalg.norm(np.asarray(discrepancy, dtype=np.float64), axis=-1) / np.asarray(masses, dtype=np.float64)
    rms = float(np.sqrt((acc ** 2).mean())) * units.fs ** 2  # eV/Å/amu -> Å/fs²
    return 0.5 * rms * np.asarray(times_fs, dtype=np.float64) ** 2


def momenta(traj: Trajectory) -> dict[str, np.ndarray]:
    """Total linear momentum ``P_t`` (amu Å/fs) and angular momentum ``L_t`` about the centre of mass (amu Å²/fs)."""
    m = traj.masses[None, :, None]
    P = (m * traj.velocities).sum(axis=1)
    com = (m * traj.positions).sum(axis=1) / traj.masses.sum()
    vcom = P / traj.masses.sum()
    L = (m * np.cross(traj.positions - com[:, None], traj.velocities - vcom[:, None])).sum(axis=1)
    return {"P": P, "L": L}


def net_force_torque(positions: np.ndarray, forces: np.ndarray, masses: np.ndarray) -> dict[str, np.ndarray]:
    """Net force ``Σ F_i`` (eV/Å) and net torque ``Σ (x_i - X) × F_i`` about the centre of mass (eV), per frame.

    ``positions``/``forces``: ``(A, 3)`` or ``(T, A, 3)``.  A conservative force field
    whose energy is invariant under translations and rotations has both zero (Noether);
    an equivariant one need not.
    """
    x, f = np.asarray(positions, dtype=np.float64), np.asarray(forces, dtype=np.float64)
    if x.shape != f.shape or x.shape[-1] != 3:
        raise ValueError(f"positions and forces must have the same shape (..., atoms, 3), got {x.shape} and {f.shape}")
    m = np.asarray(masses, dtype=np.float64)
    com = (m[:, None] * x).sum(axis=-2, keepdims=True) / m.sum()
    return {"force": f.sum(axis=-2), "torque": np.cross(x - com, f).sum(axis=-2)}


def total_energy(traj: Trajectory) -> np.ndarray | None:
    """Potential plus kinetic energy (eV) at every frame, or None where the force field defines no energy."""
    if traj.energies is None:
        return None
    kinetic = 0.5 * (traj.masses[None, :, None] * (traj.velocities / units.fs) ** 2).sum(axis=(1, 2))
    return np.asarray(traj.energies) + kinetic


def bonds(numbers: Sequence[int], positions: np.ndarray, *, tolerance: float = 1.2) -> np.ndarray:
    """Covalent bonds ``(n, 2)`` (``i < j``): atoms closer than ``tolerance`` times their summed covalent radii."""
    x = np.asarray(positions, dtype=np.float64)
    r = covalent_radii[np.asarray(numbers, dtype=np.int64)]
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.nonzero(np.triu(d < tolerance * (r[:, None] + r[None]), k=1))
    if i.size == 0:
        raise ValueError("no two atoms are within bonding distance: not a molecule")
    return np.stack([i, j], axis=1)


def angles(bond_list: np.ndarray) -> np.ndarray:
    """Bond angles ``(n, 3)`` as ``(i, j, k)`` with ``j`` the central atom and ``i < k``, from :func:`bonds`."""
    out = []
    n_atoms = int(np.max(bond_list)) + 1 if len(bond_list) else 0
    neighbours = [[] for _ in range(n_atoms)]
    for a, b in np.asarray(bond_list):
        neighbours[a].append(int(b))
        neighbours[b].append(int(a))
    for j, nb in enumerate(neighbours):
        nb = sorted(nb)
        out += [(i, j, k) for p, i in enumerate(nb) for k in nb[p + 1:]]
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


def structure(positions: np.ndarray, bond_list: np.ndarray, angle_list: np.ndarray) -> dict[str, np.ndarray]:
    """Bond lengths (Å) and bond angles (degrees) of every frame: ``{"bond": (T, n_bonds), "angle": (T, n_angles)}``."""
    x = np.asarray(positions, dtype=np.float64)
    x = x[None] if x.ndim == 2 else x
    b = np.asarray(bond_list)
    lengths = np.linalg.norm(x[:, b[:, 0]] - x[:, b[:, 1]], axis=-1)
    a = np.asarray(angle_list)
    u, v = x[:, a[:, 0]] - x[:, a[:, 1]], x[:, a[:, 2]] - x[:, a[:, 1]]
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return {"bond": lengths, "angle": np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))}


def heldout_molecules(profile: str = "quick", seed: int = 0, n: int = 1) -> tuple[list[dict], list[int]]:
    """``(molecules, elements)``: ``n`` held-out molecules of chapter 2's force data (the first
    conformer of each) as ``{"numbers", "positions" (Å), "smiles", "molecule"}``, and the atomic
    numbers of its training set (what a model trained on it has seen)."""
    from .data.forces import load_forces

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ParameterError(f"n must be a positive integer, got {n!r}")
    test = load_forces(profile, seed, "test", dtype=torch.float64)
    train = load_forces(profile, seed, "train")
    first = np.unique(test.molecule.numpy(), return_index=True)[1]
    if n > len(first):
        raise ParameterError(f"n={n} exceeds the {len(first)} held-out molecules of the {profile!r} force data")
    out = []
    for i in first[:n]:
        m = test.mask[i].numpy()
        out.append({"numbers": test.species[i].numpy()[m], "positions": test.positions[i].numpy()[m],
                    "smiles": test.smiles[i], "molecule": int(test.molecule[i])})
    return out, sorted(set(train.species.unique().tolist()) - {0})


@dataclass(frozen=True)
class ForceField:
    """A named force field: calling it builds a fresh calculator.

    ``key`` names what it computes (model weights, mode, seed; or the reference method
    and its version), so that :func:`trajectory` can cache its trajectories; None: never cached.
    """

    name: str
    make: Callable[[], Calculator]
    key: str | None = None

    def __call__(self) -> Calculator:
        return self.make()


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's class and its parameters and buffers, by name, in float64."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.is_floating_point():
            t = t.to(torch.float64)
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def force_fields(model: torch.nn.Module, equivariant_model: torch.nn.Module | None, *, force_scale: float,
                 elements: Iterable[int], seed: int = 0, reference: bool = True,
                 residual: bool = False) -> dict[str, ForceField]:
    """The force fields chapter 7 compares, by name (:class:`ForceField`, keyed for the trajectory cache).

    ``augmented``, ``twirled`` and ``random`` wrap ``model`` (:data:`MODES` ``plain``, ``twirl``,
    ``random``); ``e3nn`` wraps ``equivariant_model`` (if given); ``gfn2`` is
    :func:`reference_calculator` (if ``reference``); ``gfn2+residual`` (if ``residual``) is
    GFN2-xTB plus ``model``'s non-equivariant part (mode ``residual``, through ASE's
    ``SumCalculator``; forces only).  Each call of a field makes a fresh calculator (its own
    rotation stream, seeded by ``seed``).
    """
    elements = sorted(int(z) for z in elements)

    def field(name, net, mode, digest):
        return ForceField(name, lambda: ModelForceCalculator(net, force_scale=force_scale, elements=elements,
                                                             mode=mode, seed=seed),
                          _digest({"model": digest, "mode": mode, "force_scale": float(force_scale),
                                   "elements": elements, "seed": int(seed)}))

    digest = model_digest(model)
    out = {name: field(name, model, mode, digest)
           for name, mode in (("augmented", "plain"), ("twirled", "twirl"), ("random", "random"))}
    if equivariant_model is not None:
        out["e3nn"] = field("e3nn", equivariant_model, "plain", model_digest(equivariant_model))
    ref_key = f"tblite-{_version('tblite')}-GFN2-xTB"
    if reference:
        out["gfn2"] = ForceField("gfn2", reference_calculator, ref_key)
    if residual:
        from ase.calculators.mixing import SumCalculator

        part = field("residual", model, "residual", digest)
        out["gfn2+residual"] = ForceField("gfn2+residual", lambda: SumCalculator([reference_calculator(), part()]),
                                          _digest({"sum": [ref_key, part.key]}))
    return out


@dataclass
class OrientationStudy:
    """What :func:`orientation_study` measured.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (molecule, force field): ``s_per_step``, ``divergence_end`` (Å), ``onset_fs``
        and ``onset_predicted_fs`` (first time above the threshold, measured and from
        :func:`early_divergence`; NaN: never), ``P_drift`` (amu Å/fs) and ``L_drift`` (amu Å²/fs)
        over the run, ``net_force`` (eV/Å) and ``net_torque`` (eV) averaged over the run,
        ``max_speed`` (Å/fs, the fastest atom at the end), ``E_drift`` and ``E_spread`` (eV:
        total energy at the end minus at the start, and its largest excursion from the start),
        ``U_range`` (eV: the range of the potential energy along the run, what the total
        energy's excursion is measured against); NaN for a field without an energy.
    times : numpy.ndarray
        fs.
    divergence, predicted : dict
        ``{(molecule, field): array}``: measured divergence and its Taylor prediction (model fields only).
    energy : dict
        ``{(molecule, field): array}``: total energy minus its start (eV), for fields with an energy.
    threshold : float
        Å.
    """

    table: pd.DataFrame
    times: np.ndarray
    divergence: dict
    predicted: dict
    energy: dict
    threshold: float


def _turned_start(molecule: dict, k: int, temperature_K: float, seed: int):
    """Molecule ``k``'s start ``(x0, v0)``, its Haar rotation ``R`` and the turned start ``(x1, v1)``."""
    numbers, x0 = molecule["numbers"], molecule["positions"]
    v0 = initial_velocities(numbers, x0, temperature_K, seed=derived_seed(seed, "md-velocities", k))
    R = haar_so3(generator=derived_generator(seed, "md-turn", k)).numpy()
    x1, v1 = rotate_state(x0, v0, R)
    return x0, v0, R, x1, v1


def _check_study(fields, molecules):
    if not fields or not molecules:
        raise ParameterError("a study needs at least one force field and one molecule")


def orientation_study(fields: Mapping[str, Callable[[], Calculator]], molecules: Sequence[dict], *, steps: int,
                      dt_fs: float = 0.5, temperature_K: float = 300.0, threshold: float = 1e-3, seed: int = 0,
                      progress: bool = True, cache: bool = True) -> OrientationStudy:
    """NVE from each molecule's state and from the same state turned by a Haar rotation, for every force field.

    Each molecule gets Maxwell-Boltzmann velocities at ``temperature_K`` (no net momentum or
    angular momentum) and a rotation, both seeded by ``seed`` and its index, shared by all
    force fields.  Trajectories go through :func:`trajectory`'s cache.  See
    :class:`OrientationStudy` for what is measured.
    """
    _check_study(fields, molecules)
    rows, div, pred, energy = [], {}, {}, {}
    bar = tqdm(total=len(molecules) * len(fields), desc="orientation study", disable=not progress, mininterval=2)
    for k, mol in enumerate(molecules):
        numbers = mol["numbers"]
        x0, v0, R, x1, v1 = _turned_start(mol, k, temperature_K, seed)
        for name, field in fields.items():
            kw = dict(steps=steps, dt_fs=dt_fs, cache=cache)
            a, b = trajectory(field, numbers, x0, v0, **kw), trajectory(field, numbers, x1, v1, **kw)
            d = orientation_divergence(a, b, R)
            calc = field()  # fresh: its rotation stream does not depend on whether the runs came from the cache
            p = (early_divergence(force_discrepancy(calc, numbers, x0, R), a.masses, a.times)
                 if isinstance(calc, ModelForceCalculator) else None)
            mom, net, E = momenta(a), net_force_torque(a.positions, a.forces, a.masses), total_energy(a)
            onset, onset_p = onset_time(a.times, d, threshold), None if p is None else onset_time(a.times, p, threshold)
            rows.append({"molecule": mol["molecule"], "smiles": mol["smiles"], "atoms": len(numbers), "field": name,
                         "s_per_step": (a.seconds_per_step + b.seconds_per_step) / 2,
                         "divergence_end": float(d[-1]), "onset_fs": np.nan if onset is None else onset,
                         "onset_predicted_fs": np.nan if onset_p is None else onset_p,
                         "P_drift": float(np.linalg.norm(mom["P"][-1] - mom["P"][0])),
                         "L_drift": float(np.linalg.norm(mom["L"][-1] - mom["L"][0])),
                         "net_force": float(np.linalg.norm(net["force"], axis=-1).mean()),
                         "net_torque": float(np.linalg.norm(net["torque"], axis=-1).mean()),
                         "max_speed": float(np.linalg.norm(a.velocities[-1], axis=-1).max()),
                         "E_drift": np.nan if E is None else float(E[-1] - E[0]),
                         "E_spread": np.nan if E is None else float(np.abs(E - E[0]).max()),
                         "U_range": np.nan if E is None else float(np.ptp(a.energies))})
            div[(mol["molecule"], name)] = d
            if p is not None:
                pred[(mol["molecule"], name)] = p
            if E is not None:
                energy[(mol["molecule"], name)] = E - E[0]
            bar.update()
    bar.close()
    return OrientationStudy(pd.DataFrame(rows), dt_fs * np.arange(steps + 1), div, pred, energy, threshold)


#: The structural observables of :func:`observable_study` (:func:`structure`'s keys) and their units.
OBSERVABLES = {"bond": "Å", "angle": "degrees"}


@dataclass
class ObservableStudy:
    """What :func:`observable_study` measured.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (molecule, force field, observable): ``mean_a``, ``mean_b`` (the mean
        over bonds or angles and sampled frames, from each orientation), ``diff``, ``diff_low``,
        ``diff_high`` and ``p_value`` (:func:`~equivlib.stats.block_test` of the per-frame mean
        between the two orientations), ``w_orientations`` (the Wasserstein-1 distance between the
        two orientations' pooled distributions) and ``w_reference`` (between this field's pooled
        distribution, both orientations, and the reference's; NaN without a reference),
        ``max_stretch`` (the longest bond over the sampled frames divided by its starting length),
        ``broken_a_fs``, ``broken_b_fs`` (the first time, burn-in included, at which a bond of
        each run exceeds ``break_ratio`` times its starting length; NaN: never), ``s_per_step``.
    samples : dict
        ``{(molecule, field, observable): (values_a, values_b)}``: the pooled values (frames × bonds or angles).
    """

    table: pd.DataFrame
    samples: dict
    n_blocks: int
    frames: int

    def by_field(self) -> pd.DataFrame:
        """One row per force field, over molecules: ``p_<obs>`` (the smallest p-value),
        ``w_<obs>`` (the mean Wasserstein distance to the reference), ``width_<obs>`` (the widest
        interval of the orientation difference), ``mean_bond`` (Å), ``max_stretch`` (the largest),
        ``first_break_fs`` (the earliest; NaN: no bond broke), ``broken`` (a bond broke in some run) and
        ``s_per_step`` (the mean wall-clock seconds per Langevin step)."""
        t = self.table.assign(width=self.table["diff_high"] - self.table["diff_low"],
                              first_break=self.table[["broken_a_fs", "broken_b_fs"]].min(axis=1))
        g = t.groupby(["field", "observable"], sort=False)
        per = pd.concat({"p": g["p_value"].min(), "w": g["w_reference"].mean(), "width": g["width"].max()}, axis=1)
        out = per.unstack("observable")
        out.columns = [f"{k}_{o}" for k, o in out.columns]
        bonds_ = t[t["observable"] == "bond"].groupby("field", sort=False)
        out["mean_bond"] = bonds_["mean_a"].mean()
        out["max_stretch"] = bonds_["max_stretch"].max()
        out["first_break_fs"] = bonds_["first_break"].min()
        out["broken"] = out["first_break_fs"].notna()
        out["s_per_step"] = bonds_["s_per_step"].mean()
        return out.loc[list(dict.fromkeys(t["field"]))]


def observable_study(fields: Mapping[str, Callable[[], Calculator]], molecules: Sequence[dict], *, steps: int,
                     burn_in: int, n_blocks: int = 5, dt_fs: float = 0.5, temperature_K: float = 300.0,
                     friction_per_fs: float = 0.01, reference: str | None = "gfn2", break_ratio: float = 1.5,
                     seed: int = 0, progress: bool = True, cache: bool = True) -> ObservableStudy:
    """Langevin runs from each molecule's state and from the same state turned, for every force field.

    The starts are :func:`orientation_study`'s (same seeds); the two runs draw independent
    thermostat noise (seeds derived from ``seed``, the molecule and the run), so even for an exactly equivariant
    field they are two samples of one stationary distribution, not rotated copies.  The
    first ``burn_in`` steps are discarded.  Bonds and angles are the molecule's at its
    start (:func:`bonds`, :func:`angles`).  The per-frame mean bond length and mean angle
    are compared between orientations by :func:`~equivlib.stats.block_test` with
    ``n_blocks`` blocks each; their pooled distributions by the Wasserstein-1 distance
    (``scipy.stats.wasserstein_distance``), between orientations and to ``reference``.
    """
    from scipy.stats import wasserstein_distance

    _check_study(fields, molecules)
    if not isinstance(burn_in, int) or isinstance(burn_in, bool) or not 0 <= burn_in < steps:
        raise ParameterError(f"burn_in must be an integer in [0, steps={steps}), got {burn_in!r}")
    if steps - burn_in + 1 < 2 * n_blocks:
        raise ParameterError(f"{steps - burn_in + 1} sampled frames are too few for {n_blocks} blocks of at least "
                             "2 frames: raise steps or lower burn_in")
    if not (isinstance(break_ratio, (int, float)) and break_ratio > 1):
        raise ParameterError(f"break_ratio must be a number > 1, got {break_ratio!r}")
    if reference is not None and reference not in fields:
        raise ParameterError(f"reference {reference!r} is not among the fields {list(fields)}")
    rows, samples = [], {}
    bar = tqdm(total=len(molecules) * len(fields), desc="observable study", disable=not progress, mininterval=2)
    for k, mol in enumerate(molecules):
        numbers = mol["numbers"]
        x0, v0, _, x1, v1 = _turned_start(mol, k, temperature_K, seed)
        bl = bonds(numbers, x0)
        al = angles(bl)
        start = structure(x0, bl, al)["bond"][0]
        series = {}
        for name, field in fields.items():
            kw = dict(steps=steps, dt_fs=dt_fs, ensemble="langevin", temperature_K=temperature_K,
                      friction_per_fs=friction_per_fs, cache=cache)
            a = trajectory(field, numbers, x0, v0, seed=derived_seed(seed, "md-langevin", k, "drawn"), **kw)
            b = trajectory(field, numbers, x1, v1, seed=derived_seed(seed, "md-langevin", k, "turned"), **kw)
            full_a, full_b = structure(a.positions, bl, al), structure(b.positions, bl, al)
            sa = {obs: v[burn_in:] for obs, v in full_a.items()}
            sb = {obs: v[burn_in:] for obs, v in full_b.items()}
            stretch = max(float((sa["bond"].max(axis=0) / start).max()), float((sb["bond"].max(axis=0) / start).max()))
            broken = [onset_time(t.times, (f["bond"] / start).max(axis=1), break_ratio)
                      for t, f in ((a, full_a), (b, full_b))]
            series[name] = (sa, sb, (a.seconds_per_step + b.seconds_per_step) / 2, stretch,
                            [np.nan if t is None else t for t in broken])
            bar.update()
        for name, (sa, sb, sec, stretch, broken) in series.items():
            for obs in OBSERVABLES:
                test = block_test(sa[obs].mean(axis=1), sb[obs].mean(axis=1), n_blocks=n_blocks)
                pa, pb = sa[obs].ravel(), sb[obs].ravel()
                ref = None if reference is None else np.concatenate([series[reference][0][obs].ravel(),
                                                                      series[reference][1][obs].ravel()])
                rows.append({"molecule": mol["molecule"], "atoms": len(numbers), "field": name, "observable": obs,
                             "mean_a": float(pa.mean()), "mean_b": float(pb.mean()),
                             "diff": test.difference.estimate, "diff_low": test.difference.low,
                             "diff_high": test.difference.high, "p_value": test.p_value,
                             "w_orientations": float(wasserstein_distance(pa, pb)),
                             "w_reference": np.nan if ref is None else
                             float(wasserstein_distance(np.concatenate([pa, pb]), ref)),
                             "max_stretch": stretch, "broken_a_fs": broken[0], "broken_b_fs": broken[1],
                             "s_per_step": sec})
                samples[(mol["molecule"], name, obs)] = (pa, pb)
    bar.close()
    return ObservableStudy(pd.DataFrame(rows), samples, n_blocks, steps - burn_in + 1)


def discrepancy_check(field: Callable[[], Calculator], molecules: Sequence[dict], *, n_orientations: int = 32,
                      n_rotations: int = 16, seed: int = 0) -> pd.DataFrame:
    """Is the mean of ``‖F(Rx) − R F(x)‖²`` twice ``D · L_equiv``?  Two estimators, side by side.

    For each molecule, ``n_orientations`` Haar orientations ``Q`` of its positions ``x``; at
    each ``Qx``

    * ``a``: the mean over ``n_rotations`` Haar ``R`` of ``‖F(RQx) − R F(Qx)‖²`` (summed over
      atoms, eV²/Å²), through the calculator's forces;
    * ``b``: ``2 · D · L_equiv(Qx)``, with ``L_equiv`` from equivlib's decomposition
      (:func:`~equivlib.twirl.decompose_model`, ``n_rotations`` other Haar rotations, unbiased
      estimator) of the calculator's model, ``D = 3 · atoms``, times ``force_scale²``.

    At one ``x``, the mean of ``a`` is the spread of the twisted predictions at ``x`` plus
    the squared distance of ``F(x)`` from its twirl; over Haar ``Q`` both terms have the
    mean that ``L_equiv`` estimates, so ``a`` and ``b`` have the same mean (chapter 7).
    One row per molecule: ``a``, ``b`` (means over ``Q``), ``diff`` with its t interval over
    ``Q`` (``diff_low``, ``diff_high``), ``ratio = a / b``, and ``a_start`` (``a`` at the
    molecule's own orientation).  ``field`` must build a ``"plain"`` :class:`ModelForceCalculator`.
    """
    from .stats import mean_ci

    calc = field()
    if not isinstance(calc, ModelForceCalculator) or calc.mode != "plain":
        raise ParameterError("discrepancy_check needs a field that builds a 'plain' ModelForceCalculator")
    for name, n in (("n_orientations", n_orientations), ("n_rotations", n_rotations)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ParameterError(f"{name} must be an integer >= 2, got {n!r}")
    gen = derived_generator(seed, "md-discrepancy")
    rows = []
    for mol in molecules:
        numbers = np.asarray(mol["numbers"])
        x = np.asarray(mol["positions"], dtype=np.float64)
        x = x - x.mean(axis=0)
        Q = haar_so3(n_orientations, generator=gen).numpy()
        a, b = np.empty(n_orientations), np.empty(n_orientations)
        xs = np.concatenate([x[None], np.einsum("qij,aj->qai", Q, x)])       # the own orientation first
        a_all = np.empty(len(xs))
        species = torch.as_tensor(numbers)[None].expand(len(xs), -1)
        for i, xq in enumerate(xs):
            R = haar_so3(n_rotations, generator=gen).numpy()
            f, fR = calc.predict(xq, numbers), calc.predict(np.einsum("rij,aj->rai", R, xq), numbers)
            a_all[i] = ((fR - np.einsum("rij,aj->rai", R, f)) ** 2).sum(axis=(1, 2)).mean()
        a[:] = a_all[1:]
        xt = torch.as_tensor(xs[1:], dtype=calc.dtype)
        dec = decompose_model(calc.model, xt, torch.zeros_like(xt),
                              sample_haar(n_rotations, batch=len(xt), generator=gen, dtype=calc.dtype),
                              VectorAction(), extras={"mask": torch.ones_like(species[1:], dtype=torch.bool),
                                                      "species": species[1:]})
        b[:] = 2 * 3 * len(numbers) * dec.L_equiv.detach().cpu().numpy() * calc.force_scale ** 2
        ci = mean_ci(a - b)
        rows.append({"molecule": mol["molecule"], "atoms": len(numbers), "a": float(a.mean()), "b": float(b.mean()),
                     "diff": ci.estimate, "diff_low": ci.low, "diff_high": ci.high,
                     "ratio": float(a.mean() / b.mean()), "a_start": float(a_all[0]),
                     "n_orientations": n_orientations, "n_rotations": n_rotations})
    return pd.DataFrame(rows)


def force_errors(fields: Mapping[str, Callable[[], Calculator]], molecules: Sequence[dict], *,
                 reference: str = "gfn2") -> pd.DataFrame:
    """How far each field's forces are from the reference's at each molecule's own geometry.

    One row per (molecule, field other than the reference): ``rms_reference`` and
    ``rms_error`` (eV/Å, over atoms and components) and ``relative`` ``= Σ|F - F_ref|² /
    Σ|F_ref|²`` (1: no better than predicting zero forces).
    """
    _check_study(fields, molecules)
    if reference not in fields:
        raise ParameterError(f"reference {reference!r} is not among the fields {list(fields)}")
    rows = []
    for mol in molecules:
        def forces(name):
            atoms = Atoms(numbers=mol["numbers"], positions=np.asarray(mol["positions"], dtype=np.float64))
            atoms.calc = fields[name]()
            return atoms.get_forces()

        ref = forces(reference)
        for name in fields:
            if name == reference:
                continue
            err = forces(name) - ref
            rows.append({"molecule": mol["molecule"], "atoms": len(mol["numbers"]), "field": name,
                         "rms_reference": float(np.sqrt((ref ** 2).mean())), "rms_error": float(np.sqrt((err ** 2).mean())),
                         "relative": float((err ** 2).sum() / (ref ** 2).sum())})
    return pd.DataFrame(rows)


def energy_check(field: Callable[[], Calculator], molecules: Sequence[dict], *, time_fs: float, dt_fs: float = 0.5,
                 temperature_K: float = 300.0, seed: int = 0, cache: bool = True) -> pd.DataFrame:
    """Is the total energy's excursion velocity Verlet's ``O(dt²)`` error?  NVE at ``dt_fs`` and ``dt_fs / 2``.

    For a conservative force field, velocity Verlet conserves a nearby "shadow" energy, and
    the largest excursion of the true total energy from its start over a fixed time shrinks
    by 4 when the step is halved; a field that is not conservative, or an integration that
    has gone unstable, does not show that order.  The starts are :func:`orientation_study`'s
    unturned ones (same seeds), so the run at ``dt_fs`` is the same trajectory (and the same
    cache entry).  One row per molecule: ``E_spread`` and ``E_spread_half`` (eV), their
    ``ratio``, ``E_drift`` (end minus start at ``dt_fs``) and ``U_range`` (the potential
    energy's range at ``dt_fs``).  The field must define an energy.
    """
    _check_study({"field": field}, molecules)
    steps = int(round(time_fs / dt_fs))
    if steps < 1 or not np.isclose(steps * dt_fs, time_fs):
        raise ParameterError(f"time_fs={time_fs!r} must be a positive multiple of dt_fs={dt_fs!r}")
    rows = []
    for k, mol in enumerate(molecules):
        x0, v0, *_ = _turned_start(mol, k, temperature_K, seed)
        runs_ = [trajectory(field, mol["numbers"], x0, v0, steps=n, dt_fs=dt, cache=cache)
                 for n, dt in ((steps, dt_fs), (2 * steps, dt_fs / 2))]
        E = [total_energy(t) for t in runs_]
        if E[0] is None:
            raise ParameterError("energy_check needs a force field that defines an energy")
        spread = [float(np.abs(e - e[0]).max()) for e in E]
        rows.append({"molecule": mol["molecule"], "atoms": len(mol["numbers"]), "E_spread": spread[0],
                     "E_spread_half": spread[1], "ratio": spread[0] / spread[1], "E_drift": float(E[0][-1] - E[0][0]),
                     "U_range": float(np.ptp(runs_[0].energies))})
    return pd.DataFrame(rows)
