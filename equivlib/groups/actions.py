"""Group actions on data, batched over all elements: vectors per atom, cube voxel grids, e3nn irreps
(float64-accurate Wigner-D matrices) and permutations."""
from __future__ import annotations

from functools import lru_cache

import torch

from .so3 import GroupError, check_rotations

__all__ = ["Action", "VectorAction", "VoxelAction", "IrrepsAction", "PermutationAction", "wigner_D"]


class Action:
    """How group elements act on a data tensor.

    Subclasses implement :meth:`apply` and :meth:`apply_inverse`, both batched
    over group elements: ``g`` has shape ``(M, B, *element_shape)``.
    """

    element_shape: tuple[int, ...] = ()

    def apply(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x (B, ...)`` → ``(M, B, ...)``: every sample transformed by its elements."""
        raise NotImplementedError

    def apply_inverse(self, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y (M, B, ...)`` → ``(M, B, ...)``: undo the action of ``g`` on each slice."""
        raise NotImplementedError

    def check_elements(self, g: torch.Tensor) -> None:
        if tuple(g.shape[2:]) != tuple(self.element_shape):
            raise GroupError(
                f"{type(self).__name__} expects group elements of shape {self.element_shape}, "
                f"got {tuple(g.shape[2:])}"
            )


class VectorAction(Action):
    """Rotations acting on per-atom vectors ``(B, atoms, 3)`` (positions, forces, velocities)."""

    element_shape = (3, 3)

    def check_elements(self, g):
        super().check_elements(g)
        check_rotations(g, name="group elements")

    def _check_data(self, x, lead):
        if x.ndim != lead + 2 or x.shape[-1] != 3:
            want = "(B, atoms, 3)" if lead == 1 else "(M, B, atoms, 3)"
            raise GroupError(f"VectorAction expects data of shape {want}, got {tuple(x.shape)}")

    def apply(self, g, x):
        self._check_data(x, 1)
        return torch.matmul(x.unsqueeze(0), g.to(x.dtype).transpose(-1, -2))  # x_a -> R x_a, as rows: x Rᵀ

    def apply_inverse(self, g, y):
        self._check_data(y, 2)
        return torch.matmul(y, g.to(y.dtype))  # y_a -> Rᵀ y_a, as rows: y R


class VoxelAction(Action):
    """The cube group acting on cubic voxel grids ``(B, C, S, S, S)``.

    A rotation ``R`` moves a density ``ρ`` to ``ρ'(p) = ρ(Rᵀ p)``, with voxel
    centres at ``(i - (S-1)/2)`` along each axis, so that rotating the atoms by
    ``R`` and voxelizing equals voxelizing and applying this action.  Only the
    24 signed-permutation rotations map the grid onto itself; any other element
    is rejected.  Implemented as one gather per call.
    """

    element_shape = (3, 3)

    def __init__(self):
        self._cache: dict[tuple[int, bytes], torch.Tensor] = {}

    def _index(self, R: torch.Tensor, S: int) -> torch.Tensor:
        """Source flat index for every target voxel, ``(S³,)``."""
        key = (S, R.to(torch.int8).cpu().numpy().tobytes())
        if key not in self._cache:
            c = torch.arange(S, dtype=torch.float64) - (S - 1) / 2
            P = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)
            Q = P @ R.to(torch.float64)  # rows: Rᵀ p
            idx = torch.round(Q + (S - 1) / 2).to(torch.long)
            self._cache[key] = (idx[:, 0] * S + idx[:, 1]) * S + idx[:, 2]
        return self._cache[key]

    def check_elements(self, g):
        super().check_elements(g)
        check_rotations(g, name="group elements")
        if (g - g.round()).abs().amax() > 1e-6:
            raise GroupError("VoxelAction only supports the 24 rotations of the cube (signed permutations)")

    def _indices(self, g: torch.Tensor, S: int, device) -> torch.Tensor:
        flat = g.reshape(-1, 3, 3).round()
        uniq, inv = torch.unique(flat.cpu(), dim=0, return_inverse=True)
        table = torch.stack([self._index(R, S) for R in uniq]).to(device)  # (U, S³) — at most 24 rows
        return table[inv.to(device)].reshape(*g.shape[:2], S**3)

    def _check_data(self, x, lead):
        if x.ndim != lead + 4 or not (x.shape[-1] == x.shape[-2] == x.shape[-3]):
            want = "(B, C, S, S, S)" if lead == 1 else "(M, B, C, S, S, S)"
            raise GroupError(f"VoxelAction expects a cubic grid {want}, got {tuple(x.shape)}")

    def apply(self, g, x):
        self._check_data(x, 1)
        M, B = g.shape[:2]
        S, C = x.shape[-1], x.shape[1]
        idx = self._indices(g, S, x.device)  # (M, B, S³)
        src = x.reshape(1, B, C, S**3).expand(M, B, C, S**3)
        out = torch.gather(src, 3, idx[:, :, None, :].expand(M, B, C, S**3))
        return out.reshape(M, B, C, S, S, S)

    def apply_inverse(self, g, y):
        self._check_data(y, 2)
        M, B, C, S = y.shape[0], y.shape[1], y.shape[2], y.shape[-1]
        idx = self._indices(g, S, y.device)
        out = torch.empty_like(y).reshape(M, B, C, S**3)
        out.scatter_(3, idx[:, :, None, :].expand(M, B, C, S**3), y.reshape(M, B, C, S**3))
        return out.reshape(y.shape)


@lru_cache(maxsize=None)
def _so3_generators64(l: int) -> torch.Tensor:
    """Real-basis so(3) generators of degree ``l`` in float64 (e3nn's basis; e3nn builds them in float32)."""
    from e3nn.o3 import change_basis_real_to_complex

    j = l
    m = torch.arange(-j, j, dtype=torch.float64)
    raising = torch.diag(-torch.sqrt(j * (j + 1) - m * (m + 1)), diagonal=-1).to(torch.complex128)
    m = torch.arange(-j + 1, j + 1, dtype=torch.float64)
    lowering = torch.diag(torch.sqrt(j * (j + 1) - m * (m - 1)), diagonal=1).to(torch.complex128)
    m = torch.arange(-j, j + 1, dtype=torch.float64)
    X = torch.stack([0.5 * (raising + lowering), torch.diag(1j * m), -0.5j * (raising - lowering)])
    Q = change_basis_real_to_complex(l, dtype=torch.float64)
    X = Q.conj().T @ X @ Q
    if X.imag.abs().max() > 1e-12:
        raise RuntimeError(f"so(3) generators of degree {l} are not real")
    return X.real.contiguous()


def wigner_D(irreps, R: torch.Tensor) -> torch.Tensor:
    """Block-diagonal Wigner-D matrices of e3nn ``irreps`` for rotations ``R (..., 3, 3)``, in float64.

    Same basis and convention as ``e3nn.o3.Irreps.D_from_matrix`` (for ``1o``
    it equals ``R``), but accurate to ~1e-15 instead of ~1e-7: e3nn builds its
    generators in float32.
    """
    from e3nn import o3

    irreps = o3.Irreps(irreps)
    R = R.to(torch.float64)
    check_rotations(R, name="R")
    alpha, beta, gamma = o3.matrix_to_angles(R)
    blocks = []
    for mul, ir in irreps:
        X = _so3_generators64(ir.l).to(R.device)
        a, b, c = (t[..., None, None] for t in (alpha, beta, gamma))
        D = torch.matrix_exp(a * X[1]) @ torch.matrix_exp(b * X[0]) @ torch.matrix_exp(c * X[1])
        blocks += [D] * mul
    out = torch.zeros(*R.shape[:-2], irreps.dim, irreps.dim, dtype=torch.float64, device=R.device)
    i = 0
    for D in blocks:
        k = D.shape[-1]
        out[..., i:i + k, i:i + k] = D
        i += k
    return out


class IrrepsAction(Action):
    """Rotations acting on e3nn irreps features ``(B, ..., irreps.dim)`` through Wigner-D matrices."""

    element_shape = (3, 3)

    def __init__(self, irreps):
        from e3nn import o3

        self.irreps = o3.Irreps(irreps)

    def check_elements(self, g):
        super().check_elements(g)
        check_rotations(g, name="group elements")

    def _D(self, g, dtype):
        # float64-accurate Wigner-D (e3nn's own builds its generators in float32: ~1e-7)
        D = wigner_D(self.irreps, g.reshape(-1, 3, 3))
        return D.reshape(*g.shape[:2], self.irreps.dim, self.irreps.dim).to(dtype=dtype)

    def _check_data(self, x, lead):
        if x.ndim < lead + 1 or x.shape[-1] != self.irreps.dim:
            raise GroupError(
                f"IrrepsAction({self.irreps}) expects a last dimension of {self.irreps.dim}, got {tuple(x.shape)}"
            )

    def apply(self, g, x):
        self._check_data(x, 1)
        D = self._D(g, x.dtype)
        xb = x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.einsum("mbij,bkj->mbki", D, xb)
        return out.reshape(*g.shape[:2], *x.shape[1:])

    def apply_inverse(self, g, y):
        self._check_data(y, 2)
        D = self._D(g, y.dtype)
        yb = y.reshape(*y.shape[:2], -1, y.shape[-1])
        out = torch.einsum("mbji,mbkj->mbki", D, yb)
        return out.reshape(y.shape)


class PermutationAction(Action):
    """S_n permuting axis ``dim`` (default 1, e.g. atoms) of ``(B, n, ...)`` data.

    Elements are index tensors ``(n,)``: ``(g·x)[:, i] = x[:, g[i]]``.
    """

    def __init__(self, n: int, dim: int = 1):
        self.n, self.dim = n, dim
        self.element_shape = (n,)

    def check_elements(self, g):
        super().check_elements(g)
        if g.dtype != torch.long:
            raise GroupError("permutations must be integer index tensors")
        srt = g.sort(-1).values
        if not torch.equal(srt, torch.arange(self.n, device=g.device).expand_as(srt)):
            raise GroupError("group elements are not permutations of range(n)")

    def apply(self, g, x):
        M, B = g.shape[:2]
        if x.ndim < 2 or x.shape[self.dim] != self.n:
            raise GroupError(f"PermutationAction(n={self.n}) expects size {self.n} on axis {self.dim}, "
                             f"got shape {tuple(x.shape)}")
        src = x.unsqueeze(0).expand(M, *x.shape)
        return self._take(src, g, self.dim + 1)

    def apply_inverse(self, g, y):
        inv = torch.argsort(g, dim=-1)
        return self._take(y, inv, self.dim + 1)

    @staticmethod
    def _take(src, g, d):
        shape = [1] * src.ndim
        shape[0], shape[1], shape[d] = g.shape[0], g.shape[1], g.shape[-1]
        idx = g.reshape(shape).expand(src.shape)
        return torch.gather(src, d, idx)
