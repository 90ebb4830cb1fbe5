"""Small force-field models over padded batches of atoms.

All models map ``positions (B, A, 3)`` and an optional ``mask (B, A)`` (``True`` =
real atom) to per-atom vectors ``(B, A, 3)`` (forces), exactly zero at padded
atoms; :class:`E3ForceField` built with ``n_species`` also takes ``species (B, A)``
(integer indices, e.g. atomic numbers).  They differ in which symmetries they respect by construction:

============================  ===========  ============  ===========
model                         permutation  translation   rotation
============================  ===========  ============  ===========
:class:`MLPForceField`        no           no            no
:class:`AtomTransformer`      yes          no            no
:class:`E3ForceField`         yes          yes           exact (e3nn)
============================  ===========  ============  ===========

Every constructor takes ``dtype`` and ``device`` keywords; parameters are drawn
from torch's global generator (seed it with
:func:`equivlib.config.seed_everything` for reproducible initialisations).
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ._common import lazy_module

# e3nn (and through it torch._dynamo, ~2 s) is imported on first use, not with equivlib:
# only the E3ForceField needs it.
o3 = lazy_module("e3nn.o3")
_e3nn_math, _e3nn_nn = lazy_module("e3nn.math"), lazy_module("e3nn.nn")


def soft_one_hot_linspace(*args, **kwargs):
    return _e3nn_math.soft_one_hot_linspace(*args, **kwargs)


def FullyConnectedNet(*args, **kwargs):  # noqa: N802 - e3nn's class, constructed lazily
    return _e3nn_nn.FullyConnectedNet(*args, **kwargs)


def Gate(*args, **kwargs):  # noqa: N802
    return _e3nn_nn.Gate(*args, **kwargs)


from ._common import check_positions_mask, check_species, key_padding_mask, smooth_cutoff, zero_padded

__all__ = ["MLPForceField", "AtomTransformer", "E3ForceField"]


class MLPForceField(nn.Module):
    """Multilayer perceptron on the flattened coordinates of a whole cluster.

    Neither permutation- nor rotation-equivariant: a baseline that must *learn*
    every symmetry from data.

    Parameters
    ----------
    max_atoms : int
        Largest number of atoms A_max; inputs with ``A < max_atoms`` are
        zero-padded internally.
    hidden : int
        Width of the hidden layers.
    depth : int
        Number of hidden layers (each ``Linear`` + ``SiLU``), >= 1.
    dtype, device
        Dtype and device of the parameters.

    Notes
    -----
    Input: ``positions (B, A, 3)``, coordinates of padded atoms set to zero
    before flattening to ``(B, A_max * 3)``.  Output: ``(B, A, 3)``.
    """

    def __init__(self, max_atoms: int, hidden: int = 128, depth: int = 3, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        if max_atoms < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"max_atoms, hidden and depth must be >= 1, got {max_atoms}, {hidden}, {depth}")
        self.max_atoms = int(max_atoms)
        layers: list[nn.Module] = []
        width = 3 * self.max_atoms
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=dtype, device=device), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 3 * self.max_atoms, dtype=dtype, device=device))
        self.net = nn.Sequential(*layers)

    def forward(self, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict per-atom vectors.

        Parameters
        ----------
        positions : torch.Tensor, shape (B, A, 3)
        mask : torch.Tensor, shape (B, A), bool, optional

        Returns
        -------
        torch.Tensor, shape (B, A, 3)
            Zero at padded atoms.
        """
        mask = check_positions_mask(positions, mask)
        B, A, _ = positions.shape
        if A > self.max_atoms:
            raise ValueError(f"positions has A={A} atoms but the model was built for max_atoms={self.max_atoms}")
        x = zero_padded(positions, mask)
        if A < self.max_atoms:
            x = torch.nn.functional.pad(x, (0, 0, 0, self.max_atoms - A))
        out = self.net(x.reshape(B, 3 * self.max_atoms)).reshape(B, self.max_atoms, 3)[:, :A]
        return zero_padded(out, mask)


class AtomTransformer(nn.Module):
    """Transformer encoder over atoms, embedding raw coordinates.

    Each atom's token is a linear embedding of its ``xyz`` coordinates, so the
    model is permutation-equivariant but not rotation- (or translation-)
    equivariant.  Padded atoms are excluded as attention keys
    (``src_key_padding_mask = ~mask``) and their inputs are zeroed, so real
    outputs do not depend on them.

    Parameters
    ----------
    d_model : int
        Token width.
    n_heads : int
        Attention heads (must divide ``d_model``).
    n_layers : int
        Encoder layers.
    dim_feedforward : int
        Hidden width of each layer's feed-forward block.
    dtype, device
        Dtype and device of the parameters.

    Notes
    -----
    Uses ``dropout=0`` and a SiLU feed-forward activation.  The SiLU activation
    (together with ``enable_nested_tensor=False``) keeps
    :class:`torch.nn.TransformerEncoderLayer` off its fused inference fast path,
    so eval and training mode compute the same function in the same way.
    """

    def __init__(self, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, dim_feedforward: int = 128, *,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.embed = nn.Linear(3, d_model, dtype=dtype, device=device)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, dim_feedforward=dim_feedforward, dropout=0.0,
            activation=torch.nn.functional.silu, batch_first=True, dtype=dtype, device=device,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, 3, dtype=dtype, device=device)

    def forward(self, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict per-atom vectors.

        Parameters
        ----------
        positions : torch.Tensor, shape (B, A, 3)
        mask : torch.Tensor, shape (B, A), bool, optional

        Returns
        -------
        torch.Tensor, shape (B, A, 3)
            Zero at padded atoms.
        """
        mask = check_positions_mask(positions, mask)
        h = self.embed(zero_padded(positions, mask))
        # a cluster without real atoms attends to its zeroed padding; its outputs are zeroed below
        h = self.encoder(h, src_key_padding_mask=key_padding_mask(mask))
        return zero_padded(self.head(h), mask)


class _Convolution(nn.Module):
    """One e3nn point convolution over the edges of each cluster.

    ``m_i = sum_j TP(h_j, Y(r_ij); w(|r_ij|)) / sqrt(avg_neighbors) + Linear(h_i)``
    with ``r_ij = x_j - x_i`` and per-edge tensor-product weights ``w`` from a
    radial MLP, multiplied by a smooth cutoff and the pair mask.
    """

    def __init__(self, irreps_in, irreps_sh, irreps_out, n_basis: int, radial_hidden: int,
                 avg_neighbors: float) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.tp = o3.FullyConnectedTensorProduct(
            self.irreps_in, irreps_sh, self.irreps_out, shared_weights=False, internal_weights=False
        )
        self.radial = FullyConnectedNet([n_basis, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu)
        self.self_interaction = o3.Linear(self.irreps_in, self.irreps_out)
        self.norm = 1.0 / math.sqrt(avg_neighbors)

    def forward(self, h: torch.Tensor, edge: torch.Tensor, sh: torch.Tensor, basis: torch.Tensor,
                edge_weight: torch.Tensor) -> torch.Tensor:
        # h (B, A, d_in); edge (B, A, A) bool [receiver i, sender j]; per-edge
        # sh (E, d_sh), basis (E, n_basis), edge_weight (E,) for the E True entries of edge.
        B, A, d = h.shape
        w = self.radial(basis) * edge_weight[:, None]  # (E, n_w)
        h_src = h[:, None, :, :].expand(B, A, A, d)[edge]  # (E, d_in): sender features
        msg = self.tp(h_src, sh, w)  # (E, d_out)
        # Scatter into a dense (B, A, A, d_out) array (unique indices) and sum over
        # senders: deterministic on every device, unlike index_add_ on CUDA.
        dense = msg.new_zeros(B, A, A, msg.shape[-1])
        dense[edge] = msg
        return dense.sum(dim=2) * self.norm + self.self_interaction(h)


class E3ForceField(nn.Module):
    """Exactly rotation-equivariant message-passing force field (e3nn).

    Initial node features are scalars: with ``n_species=None`` (the default,
    one species, e.g. Lennard-Jones clusters) the constant ``1x0e``; with
    ``n_species`` given, a learned embedding of each atom's species index into
    ``k x0e``, where ``k`` is the total multiplicity of ``0e`` in
    ``irreps_hidden`` (an :class:`torch.nn.Embedding` of shape
    ``(n_species, k)``).  Each layer is a point convolution (spherical
    harmonics of the edge direction up to ``lmax``, per-edge weights from a
    radial MLP over a smooth radial basis) followed by an
    :class:`e3nn.nn.Gate`; a final convolution maps to ``1x1o`` per atom, the
    predicted force.  Edges join every pair of distinct real atoms of a cluster
    closer than ``r_max``, weighted by a cosine cutoff that vanishes smoothly at
    ``r_max``.  Edges are selected from a dense ``(B, A, A)`` pair mask and
    messages summed over a dense array (deterministic on GPU too; meant for
    small clusters and molecules, A <= 64 or so).

    Parameters
    ----------
    irreps_hidden : str or e3nn.o3.Irreps
        Hidden node features; scalars must be even (``0e``).
    lmax : int
        Largest degree of the edge spherical harmonics.
    n_layers : int
        Number of gated convolution layers before the output convolution.
    r_max : float
        Cutoff radius (same length unit as the positions).
    n_basis : int
        Size of the radial basis (``soft_one_hot_linspace``, ``smooth_finite``).
    radial_hidden : int
        Hidden width of the radial MLPs.
    avg_neighbors : float
        Messages are summed and divided by ``sqrt(avg_neighbors)``.
    n_species : int, optional, keyword-only
        Number of species; species are integer indices in ``[0, n_species)``
        (e.g. atomic numbers with ``n_species=36``, H to Br).  ``None`` (default):
        a single species and :meth:`forward` takes no ``species``.
        ``irreps_hidden`` must then contain ``0e``.
    dtype, device
        Dtype and device of the parameters and buffers.

    Notes
    -----
    Equivariance: ``f(x R^T) = f(x) R^T`` for every rotation ``R`` (and also
    reflections, as forces are ``1o`` vectors), up to floating-point rounding;
    invariant to translations and equivariant to permutations of atoms (and
    their species).  The species embedding only sets invariant scalars, so it
    does not affect equivariance.
    In e3nn 0.6 the ``1o`` basis order is ``(x, y, z)``, so the output needs no
    reordering.
    """

    def __init__(self, irreps_hidden: str | o3.Irreps = "16x0e+8x1o+4x2e", lmax: int = 2, n_layers: int = 2,
                 r_max: float = 3.0, n_basis: int = 8, radial_hidden: int = 32, avg_neighbors: float = 8.0, *,
                 n_species: int | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        super().__init__()
        if n_layers < 0 or lmax < 0 or n_basis < 1 or not r_max > 0 or (n_species is not None and n_species < 1):
            raise ValueError(f"bad E3ForceField arguments: n_layers={n_layers}, lmax={lmax}, "
                             f"n_basis={n_basis}, r_max={r_max}, n_species={n_species}")
        self.r_max = float(r_max)
        self.n_basis = int(n_basis)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        irreps_hidden = o3.Irreps(irreps_hidden)
        self.n_species = None if n_species is None else int(n_species)
        if self.n_species is None:
            self.irreps_in = o3.Irreps("1x0e")
        else:
            k = sum(mul for mul, ir in irreps_hidden if ir == o3.Irrep("0e"))
            if k < 1:
                raise ValueError(f"n_species needs 0e scalars in irreps_hidden for the species embedding, "
                                 f"got {irreps_hidden}")
            self.irreps_in = o3.Irreps(f"{k}x0e")
        self.irreps_out = o3.Irreps("1x1o")

        irreps = self.irreps_in
        self.convs = nn.ModuleList()
        self.gates = nn.ModuleList()
        for _ in range(n_layers):
            scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden
                                 if ir.l == 0 and _tp_path_exists(irreps, self.irreps_sh, ir)])
            if any(ir.p != 1 for _, ir in scalars):
                raise ValueError(f"hidden scalars must be even (0e), got {scalars}")
            gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden
                               if ir.l > 0 and _tp_path_exists(irreps, self.irreps_sh, ir)])
            gates = o3.Irreps([(mul, "0e") for mul, _ in gated])
            gate = Gate(scalars, [torch.nn.functional.silu] * len(scalars),
                        gates, [torch.sigmoid] * len(gates), gated)
            self.convs.append(_Convolution(irreps, self.irreps_sh, gate.irreps_in, n_basis, radial_hidden,
                                           avg_neighbors))
            self.gates.append(gate)
            irreps = gate.irreps_out
        self.output = _Convolution(irreps, self.irreps_sh, self.irreps_out, n_basis, radial_hidden, avg_neighbors)
        # Created last, so that n_species=None models draw exactly the same parameters as before.
        self.species_embed = (None if self.n_species is None
                              else nn.Embedding(self.n_species, self.irreps_in.dim))
        self.to(dtype=dtype, device=device)

    def _apply(self, fn, *args, **kwargs):
        # e3nn builds its Wigner-3j buffers in the default dtype (float32); casting
        # them keeps float32 accuracy (~1e-7).  After every .to()/.double()/...,
        # recompute them in float64 and cast, so float64 models are equivariant to
        # float64 rounding (~1e-15) rather than ~1e-9.
        out = super()._apply(fn, *args, **kwargs)
        _refresh_wigner_3j(self)
        return out

    def forward(self, positions: torch.Tensor, mask: torch.Tensor | None = None,
                species: torch.Tensor | None = None) -> torch.Tensor:
        """Predict per-atom forces.

        Parameters
        ----------
        positions : torch.Tensor, shape (B, A, 3)
        mask : torch.Tensor, shape (B, A), bool, optional
            ``True`` for real atoms; all real if omitted.
        species : torch.Tensor, shape (B, A), integer, optional
            Species indices in ``[0, n_species)`` at real atoms (ignored at
            padded atoms).  Required if the model was built with ``n_species``,
            not allowed otherwise.

        Returns
        -------
        torch.Tensor, shape (B, A, 3)
            Zero at padded atoms.

        Raises
        ------
        ValueError
            Bad shapes, or ``species`` missing / given when not expected /
            not an integer ``(B, A)`` tensor / out of ``[0, n_species)``.
        """
        mask = check_positions_mask(positions, mask)
        h = self._initial_features(positions, mask, species)
        B, A, _ = positions.shape
        eye = torch.eye(A, dtype=torch.bool, device=positions.device)
        pair = mask[:, :, None] & mask[:, None, :] & ~eye  # (B, A, A): receiver i, sender j
        vec = positions[:, None, :, :] - positions[:, :, None, :]  # x_j - x_i
        with torch.no_grad():
            edge = pair & ((vec * vec).sum(-1) < self.r_max**2)
        vec = vec[edge]  # (E, 3)
        r = vec.norm(dim=-1)
        sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        basis = soft_one_hot_linspace(r, 0.0, self.r_max, self.n_basis, basis="smooth_finite", cutoff=True)
        basis = basis * math.sqrt(self.n_basis)
        edge_weight = smooth_cutoff(r, self.r_max)

        for conv, gate in zip(self.convs, self.gates):
            h = gate(conv(h, edge, sh, basis, edge_weight))
        out = self.output(h, edge, sh, basis, edge_weight)
        return zero_padded(out, mask)

    def _initial_features(self, positions: torch.Tensor, mask: torch.Tensor,
                          species: torch.Tensor | None) -> torch.Tensor:
        """Node scalars ``(B, A, irreps_in.dim)``: constant 1, or the species embedding."""
        B, A, _ = positions.shape
        if self.species_embed is None:
            if species is not None:
                raise ValueError("this E3ForceField has a single species (built with n_species=None), "
                                 "so species must not be passed; build it with n_species=... to use species")
            return torch.ones(B, A, 1, dtype=positions.dtype, device=positions.device)
        if species is None:
            raise ValueError(f"species (B, A) is required: this E3ForceField was built with "
                             f"n_species={self.n_species}")
        species = check_species(species, mask, self.n_species)  # 0 at padded atoms
        return self.species_embed(species).to(positions.dtype)


_W3J = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)$")


def _refresh_wigner_3j(module: nn.Module) -> None:
    """Recompute e3nn's ``_w3j_l1_l2_l3`` buffers in float64, cast to their dtype/device."""
    for owner in module.modules():
        for name, buf in list(owner._buffers.items()):
            match = _W3J.search(name) if buf is not None else None
            if match is None or not buf.is_floating_point():
                continue
            l1, l2, l3 = (int(v) for v in match.groups())
            exact = o3.wigner_3j(l1, l2, l3, dtype=torch.float64, device=buf.device)
            with torch.no_grad():
                owner._buffers[name] = exact.to(buf.dtype).reshape(buf.shape)


def _tp_path_exists(irreps_in1, irreps_in2, ir_out) -> bool:
    ir_out = o3.Irrep(ir_out)
    return any(ir_out in ir1 * ir2 for _, ir1 in o3.Irreps(irreps_in1) for _, ir2 in o3.Irreps(irreps_in2))
