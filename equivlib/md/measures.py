"""What a trajectory is measured by: orientation divergence and its t²/2 law, momenta, net force and
torque, total energy, bond lengths and angles."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import units
from ase.data import covalent_radii

from .calculators import ModelForceCalculator
from .dynamics import Trajectory

__all__ = ["orientation_divergence", "onset_time", "force_discrepancy", "early_divergence", "momenta",
           "net_force_torque", "total_energy", "bonds", "angles", "structure"]


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
