"""Groups, group samples and group actions (one subject per module: ``so3``, ``finite``,
``samples``, ``actions``; every public name is re-exported here).

Conventions
-----------
* Rotations are ``(..., 3, 3)`` float64 matrices acting on column vectors:
  a point ``p`` goes to ``R @ p``.  A per-atom tensor ``x`` of shape
  ``(B, atoms, 3)`` goes to ``x @ R.T``.
* A *group sample* (:class:`GroupSample`) holds the elements used to estimate a
  twirl together with the way they were drawn, because the right finite-sample
  estimator depends on it:

  ``"iid"``
      independent uniform draws (Haar on SO(3), or uniform on a finite group);
  ``"design"``
      ``K`` independent blocks of dependent elements, each element Haar distributed:
      copies of a finite rotation group, each turned by its own Haar rotation
      (``R_k g`` for ``g`` in the group, :func:`sample_design`), or independently
      scrambled Sobol' nets mapped to SO(3) (:func:`sample_sobol`);
  ``"exhaustive"``
      every element of a finite group exactly once: the twirl is exact.

  Elements are stored with shape ``(K, m, B, *element_shape)``: ``K`` independent
  blocks of ``m`` elements each, for each of ``B`` data samples (``B = 1`` means
  shared by all samples and is broadcast).
* An *action* maps elements and data to transformed data, batched over all
  elements in one call (no Python loop over group elements).
"""
from __future__ import annotations

from . import actions, finite, samples, so3
from .actions import Action, IrrepsAction, PermutationAction, VectorAction, VoxelAction, wigner_D
from .finite import (
    cube_group, cube_rotation_classes, cube_subset16, element_indices, generate_group, icosahedral_group,
    octahedral_group, permutation_matrices, symmetric_group, tetrahedral_group,
)
from .samples import GroupSample, exhaustive, sample_design, sample_finite, sample_haar, sample_sobol
from .so3 import GroupError, check_rotations, haar_so3, haar_so3_numpy, quaternion_to_matrix

__all__ = [*so3.__all__, *finite.__all__, *samples.__all__, *actions.__all__]
