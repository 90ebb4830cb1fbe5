"""Data sets for equivlib: synthetic physical tasks and molecular data.

Importing this package needs only numpy and torch; RDKit, tblite, gemmi and
pandas load when a molecular data set is first generated.
"""
from .lj import AtomsBatch, lennard_jones_clusters, lennard_jones_forces
from .cache import DataError, default_cache_dir, load_npz
from .forces import FORCE_PROFILES, UNITS, MoleculeBatch, build_forces, energy_forces, generate_forces, load_forces
from .proteins import PROTEIN_PROFILES, Backbones, build_backbones, load_backbones
from .voxels import VOXEL_CHANNELS, VOXEL_PROFILES, VoxelMolecules, build_voxel_molecules, load_voxel_molecules, voxel_centers, voxelize
