"""Molecular dynamics with learned force fields: what a small equivariance error does downstream.

One subject per module, every public name re-exported here: ``calculators`` (the force fields),
``dynamics`` (starting states, integration, the trajectory cache), ``measures`` (what a trajectory
is measured by) and ``studies`` (chapter 7's experiments).

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

from .calculators import ModelForceCalculator, reference_calculator, ForceField, model_digest, force_fields
from .dynamics import Trajectory, initial_velocities, rotate_state, run_md, trajectory
from .measures import (orientation_divergence, onset_time, force_discrepancy, early_divergence, momenta,
                       net_force_torque, total_energy, bonds, angles, structure)
from .studies import (heldout_molecules, OrientationStudy, orientation_study, ObservableStudy, observable_study,
                      discrepancy_check, force_errors, energy_check)
from .calculators import MODES as _MODES
from .studies import OBSERVABLES as _OBSERVABLES

#: What :class:`ModelForceCalculator` predicts: the model's forces, their twirl, one randomly rotated
#: evaluation, or the non-equivariant part alone (``f`` minus its twirl).
MODES = _MODES
#: The structural observables of :func:`observable_study` (:func:`structure`'s keys) and their units.
OBSERVABLES = _OBSERVABLES

__all__ = ["MODES", "ModelForceCalculator", "reference_calculator", "ForceField", "model_digest", "force_fields",
           "Trajectory", "initial_velocities", "rotate_state", "run_md", "trajectory",
           "orientation_divergence", "onset_time", "force_discrepancy", "early_divergence", "momenta",
           "net_force_torque", "total_energy", "bonds", "angles", "structure", "heldout_molecules",
           "OrientationStudy", "orientation_study", "OBSERVABLES", "ObservableStudy", "observable_study",
           "discrepancy_check", "force_errors", "energy_check"]
