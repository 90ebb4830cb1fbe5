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
  of rotating the system at every step of a simulation.

:func:`run_md` integrates Newton's equations (velocity Verlet, NVE) or Langevin
dynamics with ASE's integrators and records positions, velocities and forces;
:func:`orientation_divergence`, :func:`momenta` and :func:`net_force_torque` measure a
trajectory.  GFN2-xTB, the reference of chapter 2's force data, is
:func:`reference_calculator` (tblite's own ASE calculator).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

from .config import ParameterError
from .groups import VectorAction, sample_design, sample_haar, tetrahedral_group
from .training import float64_copy
from .twirl import TwirledModel

__all__ = ["MODES", "ModelForceCalculator", "reference_calculator", "Trajectory", "initial_velocities",
           "run_md", "rotate_state", "orientation_divergence", "onset_time", "force_discrepancy", "early_divergence",
           "momenta", "net_force_torque", "heldout_molecules", "force_fields", "OrientationStudy",
           "orientation_study"]

#: What :class:`ModelForceCalculator` predicts: the model's forces, their twirl, or one randomly rotated evaluation.
MODES = ("plain", "twirl", "random")


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
    mode : ``"plain"``, ``"twirl"`` or ``"random"`` (module docstring).
    group, n_copies : the finite group (default tetrahedral) and its turned copies of the twirl.
    seed : int
        Seeds the rotations of ``"twirl"`` and ``"random"``.
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
        if mode == "twirl":
            self._forward = TwirledModel(self.model, lambda b, dev: sample_design(
                group, n_copies, batch=b, generator=gen, dtype=dtype, device=dev), VectorAction())
        elif mode == "random":
            self._forward = TwirledModel(self.model, lambda b, dev: sample_haar(
                1, batch=b, generator=gen, dtype=dtype, device=dev), VectorAction())
        else:
            self._forward = self.model
        self.n_calls = 0

    def predict(self, positions: np.ndarray, numbers: Sequence[int]) -> np.ndarray:
        """Forces (eV/Å, ``(A, 3)``) at ``positions`` (Å, ``(A, 3)``) for atoms ``numbers``."""
        pos = np.asarray(positions, dtype=np.float64)
        numbers = np.asarray(numbers, dtype=np.int64)
        if pos.ndim != 2 or pos.shape[1] != 3 or pos.shape[0] != numbers.shape[0]:
            raise ValueError(f"positions must have shape (atoms, 3) matching {numbers.shape[0]} atomic numbers, "
                             f"got {pos.shape}")
        bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
        if bad.size:
            raise ValueError(f"{bad.size} atom position(s) are not finite (NaN or inf): atoms {bad[:10].tolist()}")
        unknown = sorted(set(numbers.tolist()) - self.elements)
        if unknown:
            raise ValueError(f"the model never saw element(s) {[chemical_symbols[z] for z in unknown]}; it was trained "
                             f"on {[chemical_symbols[z] for z in sorted(self.elements)]}")
        device = next(self.model.parameters()).device
        x = torch.as_tensor(pos - pos.mean(axis=0), dtype=self.dtype, device=device)[None]
        species = torch.as_tensor(numbers, device=device)[None]
        mask = torch.ones_like(species, dtype=torch.bool)
        with torch.no_grad():
            f = self._forward(x, mask=mask, species=species)[0]
        out = f.detach().to(torch.float64).cpu().numpy() * self.force_scale
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if bad.size:
            raise ValueError(f"the model predicted non-finite forces on {bad.size} atom(s): {bad[:10].tolist()}")
        self.n_calls += 1
        return out

    def calculate(self, atoms: Atoms | None = None, properties=("forces",), system_changes=all_changes):
        """ASE's entry point: store :meth:`predict`'s forces for ``atoms`` in ``self.results``."""
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = self.predict(self.atoms.positions, self.atoms.numbers)


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
    seconds_per_step : wall-clock seconds per MD step (force call and integration)
    """

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    masses: np.ndarray
    numbers: np.ndarray
    seconds_per_step: float


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
    positions they are recorded with).
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
                       friction=friction_per_fs / units.fs, rng=np.random.default_rng(seed))
    else:
        raise ParameterError(f"ensemble must be 'nve' or 'langevin', got {ensemble!r}")
    pos, vel, frc = [atoms.get_positions()], [atoms.get_velocities() * units.fs], [atoms.get_forces()]
    bar = tqdm(total=steps, desc=desc, disable=not progress, mininterval=2)
    t0 = time.perf_counter()
    for _ in range(steps):
        dyn.run(1)
        pos.append(atoms.get_positions())
        vel.append(atoms.get_velocities() * units.fs)
        frc.append(atoms.get_forces())
        bar.update()
    seconds = time.perf_counter() - t0
    bar.close()
    return Trajectory(times=dt_fs * np.arange(steps + 1), positions=np.stack(pos), velocities=np.stack(vel),
                      forces=np.stack(frc), masses=atoms.get_masses(), numbers=atoms.get_atomic_numbers(),
                      seconds_per_step=seconds / steps)


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


def force_fields(model: torch.nn.Module, equivariant_model: torch.nn.Module | None, *, force_scale: float,
                 elements: Iterable[int], seed: int = 0, reference: bool = True) -> dict[str, Callable[[], Calculator]]:
    """Factories of the force fields chapter 7 compares, by name.

    ``augmented``, ``twirled`` and ``random`` wrap ``model`` (:data:`MODES` ``plain``, ``twirl``,
    ``random``); ``e3nn`` wraps ``equivariant_model`` (if given); ``gfn2`` is
    :func:`reference_calculator` (if ``reference``).  Each call of a factory makes a fresh
    calculator (its own rotation stream, seeded by ``seed``).
    """
    elements = sorted(int(z) for z in elements)
    out = {name: (lambda mode=mode: ModelForceCalculator(model, force_scale=force_scale, elements=elements,
                                                         mode=mode, seed=seed))
           for name, mode in (("augmented", "plain"), ("twirled", "twirl"), ("random", "random"))}
    if equivariant_model is not None:
        out["e3nn"] = lambda: ModelForceCalculator(equivariant_model, force_scale=force_scale, elements=elements)
    if reference:
        out["gfn2"] = reference_calculator
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
        ``max_speed`` (Å/fs, the fastest atom at the end).
    times : numpy.ndarray
        fs.
    divergence, predicted : dict
        ``{(molecule, field): array}``: measured divergence and its Taylor prediction (model fields only).
    threshold : float
        Å.
    """

    table: pd.DataFrame
    times: np.ndarray
    divergence: dict
    predicted: dict
    threshold: float


def orientation_study(fields: Mapping[str, Callable[[], Calculator]], molecules: Sequence[dict], *, steps: int,
                      dt_fs: float = 0.5, temperature_K: float = 300.0, threshold: float = 1e-3, seed: int = 0,
                      progress: bool = True) -> OrientationStudy:
    """NVE from each molecule's state and from the same state turned by a Haar rotation, for every force field.

    Each molecule gets Maxwell-Boltzmann velocities at ``temperature_K`` (no net momentum or
    angular momentum) and a rotation, both seeded by ``seed`` and its index, shared by all
    force fields.  See :class:`OrientationStudy` for what is measured.
    """
    from .groups import haar_so3

    if not fields or not molecules:
        raise ParameterError("orientation_study needs at least one force field and one molecule")
    rows, div, pred = [], {}, {}
    bar = tqdm(total=len(molecules) * len(fields), desc="orientation study", disable=not progress, mininterval=2)
    for k, mol in enumerate(molecules):
        numbers, x0 = mol["numbers"], mol["positions"]
        v0 = initial_velocities(numbers, x0, temperature_K, seed=seed + k)
        R = haar_so3(generator=torch.Generator().manual_seed(seed + 7919 * (k + 1))).numpy()
        x1, v1 = rotate_state(x0, v0, R)
        for name, make in fields.items():
            calc = make()
            a = run_md(numbers, x0, v0, calc, steps=steps, dt_fs=dt_fs)
            b = run_md(numbers, x1, v1, make(), steps=steps, dt_fs=dt_fs)
            d = orientation_divergence(a, b, R)
            p = (early_divergence(force_discrepancy(calc, numbers, x0, R), a.masses, a.times)
                 if isinstance(calc, ModelForceCalculator) else None)
            mom, net = momenta(a), net_force_torque(a.positions, a.forces, a.masses)
            onset, onset_p = onset_time(a.times, d, threshold), None if p is None else onset_time(a.times, p, threshold)
            rows.append({"molecule": mol["molecule"], "smiles": mol["smiles"], "atoms": len(numbers), "field": name,
                         "s_per_step": (a.seconds_per_step + b.seconds_per_step) / 2,
                         "divergence_end": float(d[-1]), "onset_fs": np.nan if onset is None else onset,
                         "onset_predicted_fs": np.nan if onset_p is None else onset_p,
                         "P_drift": float(np.linalg.norm(mom["P"][-1] - mom["P"][0])),
                         "L_drift": float(np.linalg.norm(mom["L"][-1] - mom["L"][0])),
                         "net_force": float(np.linalg.norm(net["force"], axis=-1).mean()),
                         "net_torque": float(np.linalg.norm(net["torque"], axis=-1).mean()),
                         "max_speed": float(np.linalg.norm(a.velocities[-1], axis=-1).max())})
            div[(mol["molecule"], name)] = d
            if p is not None:
                pred[(mol["molecule"], name)] = p
            bar.update()
    bar.close()
    return OrientationStudy(pd.DataFrame(rows), dt_fs * np.arange(steps + 1), div, pred, threshold)
