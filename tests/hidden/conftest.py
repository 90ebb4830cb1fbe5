"""Fixtures shared by the tests of ``equivlib.hidden``."""
import pytest
import torch

from equivlib import hidden as ts


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run on one torch thread: the batched kernels here are tiny and extra threads only
    contend (a 2-thread run on a busy 2-core machine is 10-20x slower), as chapter 6 does."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def prob():
    """The default slice problem: ``S_4``, input and hidden ``P + 2 * 1``, ReLU, seed 0."""
    return ts.make_problem(4, seed=0)
