"""Shared fixtures of the equivlib.md tests: a small molecule, small models, a turned pair of runs."""
import numpy as np
import torch

from equivlib.groups import haar_so3
from equivlib.md import initial_velocities, rotate_state, run_md
from equivlib.tasks import make_model

ELEMENTS = (1, 6, 7, 8)
# a water-ethanol-like cluster of 7 atoms (Å); positions need not be a minimum
NUMBERS = np.array([8, 1, 1, 6, 6, 1, 1])
POSITIONS = np.array([[0.00, 0.00, 0.00], [0.96, 0.00, 0.00], [-0.24, 0.93, 0.00], [-0.80, -1.10, 0.30],
                      [-2.20, -0.90, -0.20], [-0.50, -2.00, -0.20], [-2.60, 0.05, 0.10]])


def _model(arch="default", seed=0):
    torch.manual_seed(seed)
    return make_model("forces", "small", arch=arch)


def _rotation(seed=1):
    return haar_so3(generator=torch.Generator().manual_seed(seed)).numpy()


def _turned_pair(make_calc, rotation_seed, velocity_seed, steps, dt_fs):
    """NVE from the test molecule's state and from the same state turned: ``(a, b, R)``."""
    R = _rotation(rotation_seed)
    v0 = initial_velocities(NUMBERS, POSITIONS, 300.0, seed=velocity_seed)
    x1, v1 = rotate_state(POSITIONS, v0, R)
    return (run_md(NUMBERS, POSITIONS, v0, make_calc(), steps=steps, dt_fs=dt_fs),
            run_md(NUMBERS, x1, v1, make_calc(), steps=steps, dt_fs=dt_fs), R)
