"""Models: small but real architectures, non-equivariant and exactly equivariant."""
from ._common import check_positions_mask, check_species
from .atoms import AtomTransformer, E3ForceField, MLPForceField
from .escaip import EScAIPForceField
from .flow import FLOW_TIMES, FlowTransformer, flow_matching_batch, interpolate, target_velocity
from .unet3d import UNet3D, noisy_voxels

__all__ = [
    "AtomTransformer", "E3ForceField", "MLPForceField", "check_positions_mask",
    "EScAIPForceField", "check_species",
    "FLOW_TIMES", "FlowTransformer", "flow_matching_batch", "interpolate", "target_velocity",
    "UNet3D", "noisy_voxels",
]
