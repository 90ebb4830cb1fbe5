"""Tests for equivlib.models._common: the helpers every model shares."""
import math

import pytest
import torch

from equivlib.models._common import (check_positions_mask, check_species, key_padding_mask, smooth_cutoff,
                                     zero_padded)

F64 = torch.float64


def test_check_positions_mask_defaults_and_messages():
    x = torch.zeros(2, 5, 3, dtype=F64)
    m = check_positions_mask(x, None)
    assert m.dtype == torch.bool and m.shape == (2, 5) and m.all()
    given = torch.tensor([[True] * 5, [True, False, False, False, False]])
    assert torch.equal(check_positions_mask(x, given), given)
    with pytest.raises(ValueError, match=r"positions must have shape \(B, A, 3\)"):
        check_positions_mask(x[..., :2], None)
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, L, 3\)"):  # names for residues
        check_positions_mask(x[..., :2], None, name="x_t", length="L")
    with pytest.raises(ValueError, match="floating point"):
        check_positions_mask(x.long(), None)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, A\) = \(2, 5\)"):
        check_positions_mask(x, given[:, :3])
    with pytest.raises(ValueError, match="bool"):
        check_positions_mask(x, given.long())
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_positions_mask([[0.0, 0.0, 0.0]], None)


def test_check_species():
    mask = torch.tensor([[True, True, False]])
    assert torch.equal(check_species(None, mask, 3), torch.zeros(1, 3, dtype=torch.long))
    out = check_species(torch.tensor([[2, 0, 99]], dtype=torch.int32), mask, 3)  # 99 is at a padded atom
    assert out.dtype == torch.long and out.tolist() == [[2, 0, 0]]
    with pytest.raises(ValueError, match=r"\[0, n_species=3\)"):
        check_species(torch.tensor([[3, 0, 0]]), mask, 3)
    with pytest.raises(ValueError, match="integer tensor"):
        check_species(torch.zeros(1, 3), mask, 3)


def test_zero_padded_blocks_nan_and_its_gradient():
    x = torch.tensor([[[1.0, 2.0], [float("nan"), float("inf")]]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, False]])
    y = zero_padded(x, mask)
    assert y.tolist() == [[[1.0, 2.0], [0.0, 0.0]]]
    y.sum().backward()
    assert x.grad.tolist() == [[[1.0, 1.0], [0.0, 0.0]]]


def test_smooth_cutoff_is_one_zero_and_flat_at_the_ends():
    r = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64, requires_grad=True)
    f = smooth_cutoff(r, 2.0)
    assert f.tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0], abs=1e-15)
    (grad,) = torch.autograd.grad(f.sum(), r)
    assert grad[0] == 0 and abs(grad[2]) < 1e-15 and grad[3] == 0  # C^1 at 0 and r_max
    assert grad[1] == pytest.approx(-math.pi / 4)


def test_key_padding_mask_lets_empty_samples_attend_to_padding():
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert key_padding_mask(mask).tolist() == [[False, True, False], [False, False, False]]
