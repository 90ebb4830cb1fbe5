"""Models: small but real architectures, non-equivariant and exactly equivariant."""
from .atoms import AtomTransformer, E3ForceField, MLPForceField, check_inputs
from .escaip import EScAIPForceField, check_species
from .flow import FLOW_TIMES, FlowTransformer, flow_matching_batch, interpolate, target_velocity
from .unet3d import UNet3D, noisy_voxels

__all__ = [
    "AtomTransformer", "E3ForceField", "MLPForceField", "check_inputs",
    "EScAIPForceField", "check_species",
    "FLOW_TIMES", "FlowTransformer", "flow_matching_batch", "interpolate", "target_velocity",
    "UNet3D", "noisy_voxels",
]
