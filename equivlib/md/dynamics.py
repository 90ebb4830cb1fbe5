"""Trajectories: starting states, NVE or Langevin integration with ASE, and a cache keyed like training runs."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

from ..config import ParameterError, smoke_report
from ..runs import _lock, runs_dir, source_hash
from .calculators import ForceField, ModelForceCalculator, _digest

__all__ = ["Trajectory", "initial_velocities", "rotate_state", "run_md", "trajectory"]


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
    key = _digest({"field": field.key, "state": _array_digest(numbers, positions, velocities), "steps": steps,
                   "dt_fs": float(dt_fs), "ensemble": ensemble, "temperature_K": float(temperature_K),
                   "friction_per_fs": float(friction_per_fs), "seed": int(seed), "source": source_hash()})
    folder = (runs_dir() if cache_dir is None else Path(cache_dir)) / "md"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{field.name}-{ensemble}-{key}.npz"
    with _lock(path):  # the runs' lock: one writer per entry across processes
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
