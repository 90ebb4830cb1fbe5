"""Hidden symmetries and spurious minima of equivariant networks (Xie & Smidt, chapter 6).

A two-layer network ``f(x) = V sigma(W x)`` with Gaussian input ``x ~ N(0, I_d)``
learns from an exactly known teacher; its first-layer weights ``W`` are
trained while the output weights ``V`` stay fixed at the teacher's.  Everything
is exact (closed-form population losses), float64 and batched over leading
dimensions, so a whole 2-D landscape, or gradient descent from every point of a
grid, is a single tensor call.

Modules, one subject each:

* ``kernels``: Gaussian kernels (ReLU arc-cosine, erf arcsine), exact and
  Monte Carlo population losses;
* ``reps``: permutation representations of ``S_n``, equivariant bases,
  projections, equivariance errors and hidden fixed-point subspaces;
* ``slice_problem``: the ``(a, b)`` slice of the paper's Sec. 4, its
  landscape, gradient descent, minima and basin boundaries;
* ``relaxation``: constrained training and the release of the constraint;
* ``spherical``: spherical signals with e3nn (App. C.3).

Dense Hessians and Newton steps are in :mod:`equivlib.hessian`.  Every public
name is re-exported here::

    from equivlib import hidden as ts
    prob = ts.make_problem(4, seed=0)
"""
from .kernels import (
    ACTIVATIONS, arccos_kernel_j, equivariant_population_loss, erf_kernel, gaussian_kernel, monte_carlo_kernel,
    monte_carlo_loss, population_loss, relu_kernel,
)
from .reps import (
    BLOCK_KINDS, DTYPE, PermRep, conjugate_equivariance_error, constraint_nullspace, equivariance_error,
    equivariant_basis, group_average, hidden_fixed_point_basis, orbit_labels, pair_orbit_representatives,
    project_equivariant,
)
from .slice_problem import (
    SlicePoint, SliceProblem, bad_half_minimum, basin_study, boundary_points, find_slice_minima, gd_basins, gd_slice,
    line_fit_residual, local_minima_grid, make_problem, refine_slice_minimum, seed_study, slice_landscape,
    slice_step_size,
)
from .relaxation import constrained_descent, match_hidden_permutation, relax, trap_study
from .spherical import (
    SphericalSignalModel, s2_aliasing_error, s2_degree_study, s2_landscape, s2_line_gradient, s2_loss_fn, s2_minima,
)
from . import kernels, relaxation, reps, slice_problem, spherical

__all__ = [
    *kernels.__all__, *reps.__all__, *slice_problem.__all__, *relaxation.__all__, *spherical.__all__,
]
