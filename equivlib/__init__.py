"""equivlib: measure how neural networks learn (or fail to learn) symmetry.

The pieces most users need::

    from equivlib import (sample_haar, VectorAction, twisted_predictions, decompose,
                          EquivarianceMonitor)
"""
from . import config, curves, groups, twirl
from .groups import (
    GroupSample, VectorAction, VoxelAction, IrrepsAction, PermutationAction,
    haar_so3, sample_haar, sample_design, sample_sobol, sample_finite, exhaustive,
    cube_group, cube_subset16, element_indices, tetrahedral_group, octahedral_group, icosahedral_group, symmetric_group,
)
from .twirl import Decomposition, NonFiniteError, TwirledModel, bootstrap_se, decompose, decompose_general, \
    decompose_model, twirl as twirled_prediction, twisted_predictions
from .training import EquivarianceMonitor, masked_mse, train
from .latents import LatentSimilarity, latent_similarity, latent_study

__all__ = [
    "config", "curves", "groups", "twirl", "GroupSample", "VectorAction", "VoxelAction", "IrrepsAction",
    "PermutationAction", "haar_so3", "sample_haar", "sample_design", "sample_sobol", "sample_finite", "exhaustive",
    "cube_group", "cube_subset16", "element_indices", "tetrahedral_group", "octahedral_group", "icosahedral_group",
    "symmetric_group", "Decomposition", "NonFiniteError", "TwirledModel", "bootstrap_se", "decompose", "decompose_general",
    "decompose_model", "twirled_prediction", "twisted_predictions", "EquivarianceMonitor", "masked_mse", "train",
    "LatentSimilarity", "latent_similarity", "latent_study",
]
__version__ = "0.1.0"
