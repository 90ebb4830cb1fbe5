"""The force fields of chapter 7: an ASE calculator around an equivlib force model (plain, twirled,
randomly rotated, or its non-equivariant part alone), the GFN2-xTB reference, and named, keyed fields."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version as _version
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from ..config import ParameterError
from ..groups import VectorAction, sample_design, sample_haar, tetrahedral_group
from ..training import float64_copy
from ..twirl import TwirledModel

__all__ = ["MODES", "ModelForceCalculator", "reference_calculator", "ForceField", "model_digest", "force_fields"]


#: What :class:`ModelForceCalculator` predicts: the model's forces, their twirl, or one randomly rotated evaluation.
MODES = ("plain", "twirl", "random", "residual")


class ModelForceCalculator(Calculator):
    """An ASE calculator (forces only) around an equivlib force model.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(positions (1, A, 3), mask=(1, A), species=(1, A))`` with atomic
        numbers as species, returning forces in units of ``force_scale``.
    force_scale : float
        eV/Å per model unit (the force task's ``info["force_scale"]``).
    elements : iterable of int
        Atomic numbers the model was trained on; any other element is refused.
    mode : ``"plain"``, ``"twirl"``, ``"random"`` or ``"residual"`` (module docstring).
    group, n_copies : the finite group (default tetrahedral) and its turned copies of the twirl.
    seed : int
        Seeds the rotations of ``"twirl"``, ``"random"`` and ``"residual"``.
    dtype : torch.dtype
        The model runs in a copy of this precision (default float64).

    Positions are centred before the call (the models see relative positions only).
    Non-finite positions or predictions raise :class:`ValueError` naming the atoms.
    """

    implemented_properties = ["forces"]

    def __init__(self, model: torch.nn.Module, *, force_scale: float, elements: Iterable[int], mode: str = "plain",
                 group: torch.Tensor | None = None, n_copies: int = 2, seed: int = 0,
                 dtype: torch.dtype = torch.float64, **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ParameterError(f"mode must be one of {MODES}, got {mode!r}")
        if not (isinstance(force_scale, (int, float)) and np.isfinite(force_scale) and force_scale > 0):
            raise ParameterError(f"force_scale must be a positive number, got {force_scale!r}")
        self.elements = frozenset(int(z) for z in elements)
        if not self.elements:
            raise ParameterError("elements is empty: name the atomic numbers the model was trained on")
        self.mode, self.force_scale, self.dtype = mode, float(force_scale), dtype
        self.model = float64_copy(model) if dtype == torch.float64 else model.eval()
        gen = torch.Generator().manual_seed(int(seed))
        group = tetrahedral_group() if group is None else group
        if mode in ("twirl", "residual"):
            twirled = TwirledModel(self.model, lambda b, dev: sample_design(
                group, n_copies, batch=b, generator=gen, dtype=dtype, device=dev), VectorAction())
            self._forward = twirled if mode == "twirl" else _Residual(self.model, twirled)
        elif mode == "random":
            self._forward = TwirledModel(self.model, lambda b, dev: sample_haar(
                1, batch=b, generator=gen, dtype=dtype, device=dev), VectorAction())
        else:
            self._forward = self.model
        self.n_calls = 0

    def predict(self, positions: np.ndarray, numbers: Sequence[int]) -> np.ndarray:
        """Forces (eV/Å) at ``positions`` (Å, ``(A, 3)``, or ``(N, A, 3)`` for N configurations at once)."""
        pos = np.asarray(positions, dtype=np.float64)
        numbers = np.asarray(numbers, dtype=np.int64)
        if pos.ndim not in (2, 3) or pos.shape[-1] != 3 or pos.shape[-2] != numbers.shape[0]:
            raise ValueError(f"positions must have shape (atoms, 3) or (configurations, atoms, 3) matching "
                             f"{numbers.shape[0]} atomic numbers, got {pos.shape}")
        single = pos.ndim == 2
        pos = pos[None] if single else pos
        bad = np.flatnonzero(~np.isfinite(pos).all(axis=(0, 2)))
        if bad.size:
            raise ValueError(f"{bad.size} atom position(s) are not finite (NaN or inf): atoms {bad[:10].tolist()}")
        unknown = sorted(set(numbers.tolist()) - self.elements)
        if unknown:
            raise ValueError(f"the model never saw element(s) {[chemical_symbols[z] for z in unknown]}; it was trained "
                             f"on {[chemical_symbols[z] for z in sorted(self.elements)]}")
        device = next(self.model.parameters()).device
        x = torch.as_tensor(pos - pos.mean(axis=1, keepdims=True), dtype=self.dtype, device=device)
        species = torch.as_tensor(numbers, device=device)[None].expand(x.shape[0], -1)
        mask = torch.ones_like(species, dtype=torch.bool)
        with torch.no_grad():
            f = self._forward(x, mask=mask, species=species)
        out = f.detach().to(torch.float64).cpu().numpy() * self.force_scale
        bad = np.flatnonzero(~np.isfinite(out).all(axis=(0, 2)))
        if bad.size:
            raise ValueError(f"the model predicted non-finite forces on {bad.size} atom(s): {bad[:10].tolist()}")
        self.n_calls += 1
        return out[0] if single else out

    def calculate(self, atoms: Atoms | None = None, properties=("forces",), system_changes=all_changes):
        """ASE's entry point: store :meth:`predict`'s forces for ``atoms`` in ``self.results``."""
        super().calculate(atoms, properties, system_changes)
        self.results["forces"] = self.predict(self.atoms.positions, self.atoms.numbers)


class _Residual(torch.nn.Module):
    """``model(x) - twirled(x)``: the non-equivariant part of a model's prediction."""

    def __init__(self, model: torch.nn.Module, twirled: torch.nn.Module):
        super().__init__()
        self.model, self.twirled = model, twirled

    def forward(self, x, **extras):
        return self.model(x, **extras) - self.twirled(x, **extras)


def reference_calculator(method: str = "GFN2-xTB"):
    """tblite's ASE calculator (GFN2-xTB by default), the reference of chapter 2's force data."""
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0)


def _digest(payload: Mapping) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ForceField:
    """A named force field: calling it builds a fresh calculator.

    ``key`` names what it computes (model weights, mode, seed; or the reference method
    and its version), so that :func:`trajectory` can cache its trajectories; None: never cached.
    """

    name: str
    make: Callable[[], Calculator]
    key: str | None = None

    def __call__(self) -> Calculator:
        return self.make()


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's class and its parameters and buffers, by name, in float64."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.is_floating_point():
            t = t.to(torch.float64)
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def force_fields(model: torch.nn.Module, equivariant_model: torch.nn.Module | None, *, force_scale: float,
                 elements: Iterable[int], seed: int = 0, reference: bool = True,
                 residual: bool = False) -> dict[str, ForceField]:
    """The force fields chapter 7 compares, by name (:class:`ForceField`, keyed for the trajectory cache).

    ``augmented``, ``twirled`` and ``random`` wrap ``model`` (:data:`MODES` ``plain``, ``twirl``,
    ``random``); ``e3nn`` wraps ``equivariant_model`` (if given); ``gfn2`` is
    :func:`reference_calculator` (if ``reference``); ``gfn2+residual`` (if ``residual``) is
    GFN2-xTB plus ``model``'s non-equivariant part (mode ``residual``, through ASE's
    ``SumCalculator``; forces only).  Each call of a field makes a fresh calculator (its own
    rotation stream, seeded by ``seed``).
    """
    elements = sorted(int(z) for z in elements)

    def field(name, net, mode, digest):
        return ForceField(name, lambda: ModelForceCalculator(net, force_scale=force_scale, elements=elements,
                                                             mode=mode, seed=seed),
                          _digest({"model": digest, "mode": mode, "force_scale": float(force_scale),
                                   "elements": elements, "seed": int(seed)}))

    digest = model_digest(model)
    out = {name: field(name, model, mode, digest)
           for name, mode in (("augmented", "plain"), ("twirled", "twirl"), ("random", "random"))}
    if equivariant_model is not None:
        out["e3nn"] = field("e3nn", equivariant_model, "plain", model_digest(equivariant_model))
    ref_key = f"tblite-{_version('tblite')}-GFN2-xTB"
    if reference:
        out["gfn2"] = ForceField("gfn2", reference_calculator, ref_key)
    if residual:
        from ase.calculators.mixing import SumCalculator

        part = field("residual", model, "residual", digest)
        out["gfn2+residual"] = ForceField("gfn2+residual", lambda: SumCalculator([reference_calculator(), part()]),
                                          _digest({"sum": [ref_key, part.key]}))
    return out
