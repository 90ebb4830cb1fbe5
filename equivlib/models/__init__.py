"""Models: small but real architectures, non-equivariant and exactly equivariant."""
from .atoms import AtomTransformer, E3ForceField, MLPForceField, check_inputs

__all__ = ["AtomTransformer", "E3ForceField", "MLPForceField", "check_inputs"]
