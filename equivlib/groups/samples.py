"""Group samples: the elements that estimate a twirl, with the way they were drawn (iid, design, exhaustive)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from .so3 import GroupError, check_rotations, haar_so3, quaternion_to_matrix

if TYPE_CHECKING:
    from .actions import Action

__all__ = ["GroupSample", "sample_haar", "sample_design", "sample_sobol", "sample_finite", "exhaustive"]


Scheme = Literal["iid", "design", "exhaustive"]


@dataclass(frozen=True)
class GroupSample:
    """Group elements for a finite-sample twirl, with how they were drawn.

    Attributes
    ----------
    elements : Tensor ``(K, m, B, *element_shape)``
        ``K`` independent blocks of ``m`` elements for each of ``B`` samples
        (``B = 1``: shared by all samples).
    scheme : ``"iid" | "design" | "exhaustive"``
        See the module docstring; it decides which estimator is unbiased.
    """

    elements: torch.Tensor
    scheme: Scheme

    def __post_init__(self):
        if self.scheme not in ("iid", "design", "exhaustive"):
            raise GroupError(f"unknown sampling scheme {self.scheme!r}")
        if self.elements.ndim < 3:
            raise GroupError(f"elements must have shape (K, m, B, ...), got {tuple(self.elements.shape)}")
        if self.scheme == "iid" and self.elements.shape[1] != 1:
            raise GroupError("an iid sample has blocks of size m = 1")
        if self.scheme == "exhaustive" and self.elements.shape[0] != 1:
            raise GroupError("an exhaustive sample is a single block (K = 1)")

    @property
    def n_blocks(self) -> int:
        return self.elements.shape[0]

    @property
    def block_size(self) -> int:
        return self.elements.shape[1]

    @property
    def n_elements(self) -> int:
        """Number of group elements per data sample, ``N = K m``."""
        return self.n_blocks * self.block_size

    @property
    def batch(self) -> int:
        return self.elements.shape[2]

    def flat(self, batch: int) -> torch.Tensor:
        """Elements as ``(N, batch, *element_shape)``, broadcasting a shared sample."""
        e = self.elements
        if e.shape[2] not in (1, batch):
            raise GroupError(f"group sample was drawn for {e.shape[2]} data samples, data has {batch}")
        e = e.expand(e.shape[0], e.shape[1], batch, *e.shape[3:])
        return e.reshape(self.n_elements, batch, *e.shape[3:])

    def to(self, device=None, dtype=None) -> "GroupSample":
        e = self.elements.to(device=device)
        if dtype is not None and e.is_floating_point():
            e = e.to(dtype)
        return GroupSample(e, self.scheme)

    def check_for(self, action: "Action") -> None:
        """Validate the elements for ``action`` once per sample (samples are immutable)."""
        key = (type(action), tuple(action.element_shape))
        checked = self.__dict__.setdefault("_checked", set())
        if key not in checked:
            e = self.elements
            action.check_elements(e.reshape(e.shape[0] * e.shape[1], *e.shape[2:]))
            checked.add(key)

    def subset(self, blocks: torch.Tensor) -> "GroupSample":
        """Keep blocks ``blocks`` (indices along K); used by bootstraps."""
        return GroupSample(self.elements[blocks], self.scheme)


def _batch_shape(batch: int | None) -> int:
    if batch is None:
        return 1
    if not isinstance(batch, int) or batch < 1:
        raise GroupError(f"batch must be a positive int, got {batch!r}")
    return batch


def sample_haar(n: int, *, batch: int | None = None, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float64, device=None) -> GroupSample:
    """``n`` independent Haar rotations (per data sample when ``batch`` is given)."""
    if not isinstance(n, int) or n < 1:
        raise GroupError(f"number of rotations must be a positive int, got {n!r}")
    B = _batch_shape(batch)
    R = haar_so3(n, 1, B, generator=generator, dtype=dtype, device=device)
    return GroupSample(R, "iid")


def sample_design(group: torch.Tensor, n_copies: int, *, batch: int | None = None,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                  device=None) -> GroupSample:
    """``n_copies`` randomly turned copies ``{R_k g : g ∈ group}`` of a finite rotation group.

    Each element is Haar distributed, and the average over one copy integrates
    exactly every component of the twisted prediction that transforms under an
    SO(3) irrep with no vector fixed by the group (for the tetrahedral group all
    degrees 1 and 2, octahedral 1-3, icosahedral 1-5), which is where the
    variance reduction comes from.  Use ``n_copies >= 2`` for unbiased estimates.
    """
    check_rotations(group, name="group")
    if not isinstance(n_copies, int) or n_copies < 1:
        raise GroupError(f"n_copies must be a positive int, got {n_copies!r}")
    B = _batch_shape(batch)
    turn = haar_so3(n_copies, 1, B, generator=generator, dtype=torch.float64)
    G = group.to(torch.float64)[None, :, None]
    return GroupSample((turn @ G).to(dtype=dtype, device=device), "design")


def sobol_rotations(m: int, n_scrambles: int, rng) -> torch.Tensor:
    """``n_scrambles`` independently scrambled Sobol' nets of ``m`` rotations: ``(n_scrambles, m, 3, 3)``, float64.

    Owen-scrambled Sobol' points in ``[0, 1)³`` (:class:`scipy.stats.qmc.Sobol`) go to unit
    quaternions by Shoemake's map
    ``(√(1-u₁) sin 2πu₂, √(1-u₁) cos 2πu₂, √u₁ sin 2πu₃, √u₁ cos 2πu₃)``, which carries the
    uniform measure on the cube to the uniform measure on S³, hence to Haar on SO(3).  Each
    scrambled point is uniform on the cube, so every rotation is Haar distributed; the points
    of one net are spread more evenly than independent ones (how much that helps depends on
    the integrand's smoothness on the cube; chapter 1 measures it).  ``m`` must be a power of
    two (a Sobol' net's balance holds only then); ``rng`` is a NumPy generator.
    """
    from scipy.stats import qmc

    if not isinstance(m, int) or m < 1 or m & (m - 1):
        raise GroupError(f"a Sobol' block needs a power of two of rotations, got {m!r}")
    u = np.stack([qmc.Sobol(3, scramble=True, seed=rng).random_base2(m.bit_length() - 1)
                  for _ in range(n_scrambles)])
    u1, a, b = u[..., 0], 2 * np.pi * u[..., 1], 2 * np.pi * u[..., 2]
    q = np.stack([np.sqrt(1 - u1) * np.sin(a), np.sqrt(1 - u1) * np.cos(a), np.sqrt(u1) * np.sin(b),
                  np.sqrt(u1) * np.cos(b)], -1)
    return quaternion_to_matrix(torch.from_numpy(q))


def sample_sobol(m: int, n_blocks: int = 2, *, batch: int | None = None, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float64, device=None) -> GroupSample:
    """``n_blocks`` independent randomised quasi-Monte Carlo blocks of ``m`` rotations each (``N = n_blocks·m``).

    Each block is an independently scrambled Sobol' net mapped to SO(3)
    (``sobol_rotations`` in this module): every element is Haar distributed and the blocks are
    independent, so the block estimators of :func:`~equivlib.twirl.decompose` stay
    unbiased (the sample's scheme is ``"design"``: independent blocks of dependent
    elements).  ``m`` must be a power of two; ``n_blocks >= 2`` for unbiased estimates.
    The scrambles are seeded from ``generator``, so a seed gives the same rotations.
    """
    if not isinstance(n_blocks, int) or n_blocks < 1:
        raise GroupError(f"n_blocks must be a positive int, got {n_blocks!r}")
    B = _batch_shape(batch)
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    R = sobol_rotations(m, n_blocks * B, np.random.default_rng(seed))  # (K*B, m, 3, 3)
    R = R.reshape(n_blocks, B, m, 3, 3).transpose(1, 2)
    return GroupSample(R.to(dtype=dtype, device=device).contiguous(), "design")


def sample_finite(group: torch.Tensor, n: int, *, batch: int | None = None,
                  generator: torch.Generator | None = None, device=None) -> GroupSample:
    """``n`` independent uniform draws (with replacement) from a finite group ``(|G|, ...)``."""
    if not isinstance(n, int) or n < 1:
        raise GroupError(f"number of elements must be a positive int, got {n!r}")
    B = _batch_shape(batch)
    idx = torch.randint(len(group), (n, 1, B), generator=generator)
    return GroupSample(group[idx].to(device=device), "iid")


def exhaustive(group: torch.Tensor, device=None) -> GroupSample:
    """Every element of a finite group once: the twirl over it is exact."""
    return GroupSample(group[None, :, None].to(device=device), "exhaustive")
