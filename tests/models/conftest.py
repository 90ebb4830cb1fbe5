"""Fixtures shared by the model tests."""
import pytest
import torch

B, A = 4, 8  # the shape of the ``atoms`` fixture


@pytest.fixture
def atoms():
    """``(positions (B, A, 3) float64, mask (B, A), species (B, A))`` of B=4 molecules with A=8 atom slots.

    Molecule 1 has 5 real atoms, molecule 2 has 7, molecule 3 a single atom (no edges);
    species in [1, 10), zero (like the positions) at padding.
    """
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(B, A, 3, generator=g, dtype=torch.float64) * 1.2
    mask = torch.ones(B, A, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 7:] = False
    mask[3, 1:] = False  # a single atom: no edges at all
    species = torch.randint(1, 10, (B, A), generator=g)
    pos = pos * mask[..., None]
    species = species * mask
    return pos, mask, species
