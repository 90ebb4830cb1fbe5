"""Chapter 7's studies: NVE from two orientations, Langevin structure from two orientations, the force
discrepancy against L_equiv, force errors against the reference, and the order of the energy error."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm.auto import tqdm

from ..config import ParameterError, derived_generator, derived_seed
from ..groups import VectorAction, haar_so3, sample_haar
from ..stats import block_test, mean_ci
from ..twirl import decompose_model
from .calculators import ModelForceCalculator
from .dynamics import initial_velocities, rotate_state, trajectory
from .measures import (angles, bonds, early_divergence, force_discrepancy, momenta, net_force_torque, onset_time,
                       orientation_divergence, structure, total_energy)

__all__ = ["heldout_molecules", "OrientationStudy", "orientation_study", "OBSERVABLES", "ObservableStudy",
           "observable_study", "discrepancy_check", "force_errors", "energy_check"]


def heldout_molecules(profile: str = "quick", seed: int = 0, n: int = 1) -> tuple[list[dict], list[int]]:
    """``(molecules, elements)``: ``n`` held-out molecules of chapter 2's force data (the first
    conformer of each) as ``{"numbers", "positions" (Å), "smiles", "molecule"}``, and the atomic
    numbers of its training set (what a model trained on it has seen)."""
    from ..data.forces import load_forces

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
        xs = np.concatenate([x[None], np.einsum("qij,aj->qai", Q, x)])       # the own orientation first
        species = torch.as_tensor(numbers)[None].expand(len(xs), -1)
        R = haar_so3(len(xs), n_rotations, generator=gen).numpy()             # (orientations + 1, rotations, 3, 3)
        turned = np.einsum("qrij,qaj->qrai", R, xs).reshape(-1, *x.shape)     # every R Q x in one batched call
        fR = calc.predict(turned, numbers).reshape(*R.shape[:2], *x.shape)
        f = calc.predict(xs, numbers)
        a_all = ((fR - np.einsum("qrij,qaj->qrai", R, f)) ** 2).sum(axis=(2, 3)).mean(axis=1)
        a = a_all[1:]
        xt = torch.as_tensor(xs[1:], dtype=calc.dtype)
        dec = decompose_model(calc.model, xt, torch.zeros_like(xt),
                              sample_haar(n_rotations, batch=len(xt), generator=gen, dtype=calc.dtype),
                              VectorAction(), extras={"mask": torch.ones_like(species[1:], dtype=torch.bool),
                                                      "species": species[1:]})
        b = 2 * 3 * len(numbers) * dec.L_equiv.detach().cpu().numpy() * calc.force_scale ** 2
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
