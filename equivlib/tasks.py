"""The three tasks of chapter 2 as data + model + loss + augmentation + monitor set-ups.

A :class:`Task` bundles everything :func:`equivlib.training.train` and
:class:`equivlib.training.EquivarianceMonitor` need::

    task = forces_task("quick", seed=0)
    model = task.make_model("small")
    monitor = task.monitor(model, every=20)
    log = train(model, task.data, steps=200, batch_size=8, forward=task.forward, loss=task.loss,
                augment=task.batch_transform(augment=True), monitor=monitor)

Every training step goes through ``prepare`` (e.g. voxelize), then the random
group element (``augment``, only when augmenting), then ``corrupt`` (noise for
flow matching and denoising).  The noise laws are isotropic, so augmenting the
clean data before noising is the same as augmenting the model's input/target pair.

Tasks
-----
* ``forces`` — :class:`~equivlib.models.EScAIPForceField` on GFN2-xTB forces
  (forces divided by their training standard deviation, ``task.info["force_scale"]``);
  one Haar rotation per conformer; monitor: 16 Haar rotations per held-out conformer.
  ``arch="e3nn"`` swaps in the exactly equivariant baseline
  :class:`~equivlib.models.E3ForceField` (species embedding, ``r_max`` 5 Å).
* ``flow`` — :class:`~equivlib.models.FlowTransformer` flow matching on C-alpha
  traces in nm; the monitor evaluates fixed times ``t`` (default
  ``equivlib.models.FLOW_TIMES``) with seeded noise, one table row per
  ``(step, t)``.
* ``voxels`` — :class:`~equivlib.models.UNet3D` denoiser of Gaussian atom-type
  densities; augmentation is a random rotation of the cube group; monitor: the
  24 elements exhaustively (or ``scheme="finite"`` random subsets).

Architectures
-------------
:func:`make_model` (and ``Task.make_model``) take ``arch``, one of
``ARCHS[task]``: ``"default"`` is the model named above; the forces task also has
``"e3nn"``, an :class:`~equivlib.models.E3ForceField` with ``n_species=36``,
``r_max=5`` Å and ``avg_neighbors=18`` (mean number of neighbours within 5 Å in
the quick training conformers: 18.1).  Its sizes roughly match EScAIP's in
parameter count (small: 4.3k vs 4.6k, base: 153k vs 154k); both take
``(positions, mask=, species=)``, so ``task.forward`` is the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .config import ParameterError, check_profile, derived_generator, derived_seed, resolve_device, smoke_steps
from .data.forces import FORCE_PROFILES, load_forces
from .data.proteins import PROTEIN_PROFILES, load_backbones
from .data.voxels import VOXEL_PROFILES, load_voxel_molecules, voxelize
from .groups import Action, VectorAction, VoxelAction, cube_group
from .models import (FLOW_TIMES, E3ForceField, EScAIPForceField, FlowTransformer, UNet3D, flow_matching_batch,
                     noisy_voxels)
from .training import EquivarianceMonitor, make_sampler, masked_mse, rotation_augment

__all__ = ["TASKS", "MODEL_SIZES", "ARCHS", "TASK_PROFILES", "task_profile", "check_arch", "HeldOut", "Task", "FixedBatch",
           "make_model", "make_task", "forces_task", "flow_task", "voxel_task"]

TASKS = ("forces", "flow", "voxels")
#: The one profile table of each task: ``TASK_PROFILES[task][profile]`` holds ``"data"`` (generation
#: parameters) and ``"task"`` (what the task builder uses); the tables live beside their data sets
#: (``equivlib.data.FORCE_PROFILES``, ...), which never import this module.
TASK_PROFILES = {"forces": FORCE_PROFILES, "flow": PROTEIN_PROFILES, "voxels": VOXEL_PROFILES}
MODEL_SIZES = ("small", "medium", "base")

_MODEL_KWARGS = {
    "forces": {"small": dict(d_model=16, n_layers=1, n_heads=2, n_rbf=8),
               "medium": dict(d_model=32, n_layers=2, n_heads=4, n_rbf=12),
               "base": dict(d_model=64, n_layers=3, n_heads=4, n_rbf=16)},
    "flow": {"small": dict(d_model=32, n_heads=4, n_layers=2),
             "medium": dict(d_model=64, n_heads=4, n_layers=3),
             "base": dict(d_model=128, n_heads=8, n_layers=4)},
    "voxels": {"small": dict(base_channels=4, levels=2),
               "medium": dict(base_channels=8, levels=2),
               "base": dict(base_channels=16, levels=3)},
}
FLOW_MAX_LEN = 512

ARCHS = {"forces": ("default", "e3nn"), "flow": ("default",), "voxels": ("default",)}

# arch="e3nn" for the forces task (E3ForceField), by size.  Parameters are mostly
# in the radial MLPs: small 4,284 (EScAIP small 4,592), base 152,808 (EScAIP base 153,536).
_E3NN_KWARGS = {
    "small": dict(irreps_hidden="8x0e+4x1o+2x2e", lmax=2, n_layers=1, n_basis=8, radial_hidden=20),
    "medium": dict(irreps_hidden="12x0e+6x1o+3x2e", lmax=2, n_layers=2, n_basis=12, radial_hidden=32),
    "base": dict(irreps_hidden="16x0e+8x1o+4x2e", lmax=2, n_layers=3, n_basis=16, radial_hidden=48),
}
_E3NN_COMMON = dict(r_max=5.0, n_species=36, avg_neighbors=18.0)


def check_task(name: str) -> str:
    if name not in TASKS:
        raise ParameterError(f"unknown task {name!r}; use one of {TASKS}")
    return name


def task_profile(name: str, profile: str) -> dict[str, Any]:
    """A copy of the task-level values of ``TASK_PROFILES[name][profile]["task"]``.

    In the smoke mode (:func:`~equivlib.config.smoke_steps`) the full profile's
    ``["smoke"]["task"]`` entries (smaller held-out sets) replace them.
    """
    table = TASK_PROFILES[check_task(name)][check_profile(profile)]
    out = dict(table["task"])
    if profile == "full" and smoke_steps() is not None:
        out.update(table.get("smoke", {}).get("task", {}))
    return out


def check_size(size: str) -> str:
    if size not in MODEL_SIZES:
        raise ParameterError(f"unknown model size {size!r}; use one of {MODEL_SIZES}")
    return size


def check_arch(task: str, arch: str) -> str:
    """``arch`` if it is one of ``ARCHS[task]``, else :class:`ParameterError`."""
    allowed = ARCHS[check_task(task)]
    if arch not in allowed:
        raise ParameterError(f"unknown architecture {arch!r} for task {task!r}; use one of {allowed}")
    return arch


def make_model(task: str, size: str = "small", dtype: torch.dtype = torch.float32, device=None,
               arch: str = "default") -> torch.nn.Module:
    """A fresh model for ``task`` (parameters from torch's global generator: seed it first).

    ``arch`` picks the architecture among ``ARCHS[task]`` (see the module docstring).
    """
    check_arch(task, arch)
    check_size(size)
    if arch == "e3nn":
        return E3ForceField(**_E3NN_KWARGS[size], **_E3NN_COMMON, dtype=dtype, device=device)
    kw = dict(_MODEL_KWARGS[task][size], dtype=dtype, device=device)
    if task == "forces":
        return EScAIPForceField(**kw)
    if task == "flow":
        return FlowTransformer(max_len=FLOW_MAX_LEN, **kw)
    return UNet3D(in_channels=6, **kw)


@dataclass
class HeldOut:
    """Held-out inputs ``x``, targets ``y`` (float64), output ``mask`` and extra model inputs."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


def _identity(batch, generator):
    return batch


@dataclass
class Task:
    """One learning task; see the module docstring.

    ``data`` is a dict of tensors with a common leading size (what
    :func:`~equivlib.training.train` samples minibatches from); ``heldout`` the monitor's set;
    ``monitor_spec`` the default keyword arguments of the monitor.
    """

    name: str
    profile: str
    seed: int
    data: dict
    heldout: HeldOut
    action: Action
    forward: Callable
    loss: Callable
    augment: Callable
    prepare: Callable = _identity
    corrupt: Callable = _identity
    monitor_spec: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    heldout_at: Callable | None = None  # flow only: t -> HeldOut
    times: tuple = ()

    def make_model(self, size: str = "small", dtype: torch.dtype = torch.float32, device=None,
                   arch: str = "default") -> torch.nn.Module:
        device = self.info.get("device") if device is None else device
        return make_model(self.name, size, dtype, device, arch=arch)

    def batch_transform(self, augment: bool = True) -> Callable:
        """``(batch, generator) -> batch``  for :func:`~equivlib.training.train`: prepare, (augment), corrupt."""
        def transform(batch, generator):
            batch = self.prepare(batch, generator)
            if augment:
                batch = self.augment(batch, generator)
            return self.corrupt(batch, generator)
        return transform

    def flow_heldout(self, t: float) -> HeldOut:
        if self.heldout_at is None:
            raise ParameterError(f"task {self.name!r} has no flow times")
        return self.heldout_at(float(t))

    def _one_monitor(self, model, every, held: HeldOut, tag=None, **kw) -> EquivarianceMonitor:
        spec = {**self.monitor_spec, **kw}
        if spec.get("scheme") in ("finite", "exhaustive", "design") and spec.get("group") is None:
            spec["group"] = cube_group(device=held.x.device) if self.name == "voxels" else None
        spec.setdefault("seed", derived_seed(self.seed, "monitor"))
        return EquivarianceMonitor(model, held.x, held.y, self.action, every=every, extras=held.extras,
                                   mask=held.mask, tag=tag, **spec)

    def fixed_batch(self, n_samples: int, n_elements: int, *, index: int = 0, t: float | None = None,
                    dtype: torch.dtype = torch.float64) -> "FixedBatch":
        """Held-out minibatch ``index`` with its own fixed group elements: the loss as a function of parameters.

        The held-out set (flow: the block at time ``t``, default every time) is split
        by a seeded permutation into disjoint minibatches of ``n_samples``; each
        sample gets ``n_elements`` group elements drawn the monitor's way (Haar
        rotations; for voxels uniform draws from the 24 cube rotations), seeded by
        the task's seed and ``index``.  Curvature and gradients (chapters 3 and 4)
        are taken of this fixed function, so it does not change between calls.
        """
        for name, v, lo in (("n_samples", n_samples, 1), ("n_elements", n_elements, 2), ("index", index, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParameterError(f"{name} must be an integer >= {lo}, got {v!r}")
        held = self.heldout if t is None else self.flow_heldout(t)
        B = held.x.shape[0]
        if (index + 1) * n_samples > B:
            raise ParameterError(f"minibatch {index} of {n_samples} samples needs {(index + 1) * n_samples} held-out "
                                 f"samples; task {self.name!r} ({self.profile}) has {B}")
        perm = torch.randperm(B, generator=derived_generator(self.seed, "fixed-batch-order"))
        idx = perm[index * n_samples:(index + 1) * n_samples].sort().values.to(held.x.device)
        sampler = (make_sampler("finite", n_elements, cube_group()) if self.name == "voxels"
                   else make_sampler("haar", n_elements))
        sample = sampler(n_samples, derived_generator(self.seed, "fixed-batch", index, "" if t is None else f"t={t:g}"),
                         dtype, held.x.device)
        return FixedBatch(held.x[idx].to(dtype), held.y[idx].to(dtype), None if held.mask is None else held.mask[idx],
                          {k: (v[idx].to(dtype) if v.is_floating_point() else v[idx]) for k, v in held.extras.items()},
                          sample, self.action)

    def monitor(self, model, every: int, *, times: Sequence[float] | None = None, **kw) -> EquivarianceMonitor:
        """The held-out monitor.

        Flow: all ``times`` (default ``self.times``) are evaluated in one batched
        pass and reported as one row per ``(step, t)`` (``split=("t", ...)``).
        """
        if self.name == "flow":
            times = self.times if times is None else tuple(float(t) for t in times)
            held = self.heldout if times == self.times else stack_heldout([self.flow_heldout(t) for t in times])
            # each block of the stacked set holds the same chains and noise: a chain is the unit of the pooled percent
            chains = torch.arange(held.x.shape[0] // len(times), device=held.x.device).repeat(len(times))
            return self._one_monitor(model, every, held, split=("t", held.extras["t"]), pool_units=chains, **kw)
        if times is not None:
            raise ParameterError(f"times only apply to the flow task, not {self.name!r}")
        return self._one_monitor(model, every, self.heldout, **kw)


@dataclass
class FixedBatch:
    """Inputs, targets and group elements fixed once: the decomposition as a deterministic function of a model.

    ``loss(term)`` is :func:`equivlib.twirl.decomposition_loss` of this batch (for
    :func:`equivlib.hessian.subset_loss`); ``terms(model)`` the three mean terms as floats.
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor | None
    extras: dict
    sample: Any
    action: Action

    def loss(self, term: str) -> Callable:
        from .twirl import decomposition_loss
        return decomposition_loss(term, self.x, self.y, self.sample, self.action, mask=self.mask, extras=self.extras,
                                  dtype=self.x.dtype)

    def decompose(self, model: Callable):
        """Plug-in :class:`~equivlib.twirl.Decomposition` of ``model`` (``L = L_mean + L_equiv`` exactly)."""
        from .twirl import decompose_model
        return decompose_model(model, self.x, self.y, self.sample, self.action, mask=self.mask, extras=self.extras,
                               estimator="plugin")

    def terms(self, model: Callable) -> dict[str, float]:
        """``{"L", "L_mean", "L_equiv"}``: the means over the batch."""
        with torch.no_grad():
            d = self.decompose(model)
        return {k: float(getattr(d, k).mean()) for k in ("L", "L_mean", "L_equiv")}


def stack_heldout(parts: Sequence[HeldOut]) -> HeldOut:
    """Concatenate held-out sets along the sample axis (same extras keys in each)."""
    keys = list(parts[0].extras)
    return HeldOut(torch.cat([h.x for h in parts]), torch.cat([h.y for h in parts]),
                   None if parts[0].mask is None else torch.cat([h.mask for h in parts]),
                   {k: torch.cat([h.extras[k] for h in parts]) for k in keys})


def _device(device) -> torch.device:
    """``device``, or the CPU when it is None, through :func:`~equivlib.config.resolve_device`."""
    return resolve_device("cpu" if device is None else device)


def _subset(n: int, limit: int | None, seed: int) -> torch.Tensor:  # seed: the task's own; derived here
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=derived_generator(seed, "heldout-subset"))[:limit].sort().values


# --------------------------------------------------------------------------- forces
def forces_task(profile: str = "quick", seed: int = 0, method: str = "gfn2", device=None, *,
                n_heldout: int | None = None) -> Task:
    """Force-field regression (see module docstring).  ``n_heldout`` caps the monitor's conformers.

    ``n_heldout=None`` takes the profile's value (:data:`TASK_PROFILES`).
    """
    spec = task_profile("forces", profile)
    dev = _device(device)
    train_b = load_forces(profile, seed, "train", method=method)
    test_b = load_forces(profile, seed, "test", method=method)
    scale = float(train_b.forces[train_b.mask].std())
    data = {"positions": train_b.positions.to(dev), "forces": (train_b.forces / scale).to(dev),
            "mask": train_b.mask.to(dev), "species": train_b.species.to(dev)}
    n_heldout = n_heldout if n_heldout is not None else spec["n_heldout"]
    idx = _subset(len(test_b), n_heldout, seed)
    t = test_b[idx].to(device=dev, dtype=torch.float64)
    held = HeldOut(t.positions, t.forces / scale, t.mask, {"mask": t.mask, "species": t.species})

    def forward(model, batch):
        return model(batch["positions"], mask=batch["mask"], species=batch["species"])

    def loss(pred, batch):
        return masked_mse(pred, batch["forces"], batch["mask"])

    return Task("forces", profile, seed, data, held, VectorAction(), forward, loss,
                augment=rotation_augment("positions", ("forces",)),
                monitor_spec={"scheme": "haar", "n_elements": 16},
                info={"force_scale": scale, "method": method, "units": "forces / force_scale (eV/Å)",
                      "n_train": len(train_b), "n_heldout": len(idx), "device": dev})


# --------------------------------------------------------------------------- flow matching
def _crop_chains(positions: torch.Tensor, mask: torch.Tensor, max_residues: int | None):
    """First ``max_residues`` residues of each chain, recentred on their centroid."""
    if max_residues is None or positions.shape[1] <= max_residues:
        return positions, mask
    p, m = positions[:, :max_residues].clone(), mask[:, :max_residues].clone()
    w = m[..., None].to(p.dtype)
    p = (p - (p * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1)) * w
    return p, m


def flow_task(profile: str = "quick", seed: int = 0, t: Sequence[float] | None = None, device=None, *,
              max_residues: int | None = None, n_heldout: int | None = None) -> Task:
    """Flow matching on C-alpha traces (nm).  ``t``: the monitor's fixed times (default FLOW_TIMES).

    ``max_residues`` crops chains to their first residues (quick default 64)
    to keep CPU runs short; ``max_residues=None`` and ``n_heldout=None`` take the
    profile's values (:data:`TASK_PROFILES`).
    """
    spec = task_profile("flow", profile)
    dev = _device(device)
    times = tuple(float(x) for x in (FLOW_TIMES if t is None else t))
    if not times or any(not 0.0 <= x <= 1.0 for x in times):
        raise ParameterError(f"flow times must be a non-empty list in [0, 1], got {t!r}")
    max_residues = max_residues if max_residues is not None else spec["max_residues"]
    n_heldout = n_heldout if n_heldout is not None else spec["n_heldout"]
    tr = load_backbones(profile, seed, "train", max_length=FLOW_MAX_LEN)
    te = load_backbones(profile, seed, "test", max_length=FLOW_MAX_LEN)
    x1, m1 = _crop_chains(tr.positions / 10.0, tr.mask, max_residues)
    data = {"x1": x1.to(dev), "mask": m1.to(dev)}
    idx = _subset(len(te), n_heldout, seed)
    hx1, hm = _crop_chains(te.positions[idx].to(torch.float64) / 10.0, te.mask[idx], max_residues)
    hx1, hm = hx1.to(dev), hm.to(dev)
    noise_seed = derived_seed(seed, "flow-heldout-noise")

    def heldout_at(time: float) -> HeldOut:
        gen = torch.Generator().manual_seed(noise_seed)  # the same noise at every t
        x_t, tt, v = flow_matching_batch(hx1, hm, gen, t=time)
        return HeldOut(x_t, v, hm, {"t": tt, "mask": hm})

    held = stack_heldout([heldout_at(x) for x in times])

    def corrupt(batch, generator):
        x_t, tt, v = flow_matching_batch(batch["x1"], batch["mask"], generator)
        return {**batch, "x_t": x_t, "t": tt, "v": v}

    def forward(model, batch):
        return model(batch["x_t"], batch["t"], batch["mask"])

    def loss(pred, batch):
        return masked_mse(pred, batch["v"], batch["mask"])

    return Task("flow", profile, seed, data, held, VectorAction(), forward, loss,
                augment=rotation_augment("x1", ()), corrupt=corrupt,
                monitor_spec={"scheme": "haar", "n_elements": 16},
                info={"units": "nm", "max_residues": max_residues, "n_train": len(tr), "n_heldout": len(idx),
                      "noise_seed": noise_seed, "device": dev},
                heldout_at=heldout_at, times=times)


# --------------------------------------------------------------------------- voxels
def voxel_task(profile: str = "quick", seed: int = 0, grid_size: int | None = None, device=None, *,
               resolution: float | None = None, density_sigma: float | None = None, noise: float = 0.5,
               n_heldout: int | None = None) -> Task:
    """Denoising Gaussian atom-type densities with a 3D U-Net (see module docstring).

    Quick: 16³ grids at 1 Å (molecules reach ~7.2 Å); full: 48³ at 0.5 Å.
    Training grids are voxelized per minibatch; the held-out grids and their
    noise (seeded) are fixed.  ``grid_size`` and ``n_heldout`` default to the
    profile's values (:data:`TASK_PROFILES`), ``resolution`` to the profile's
    box (16 Å quick, 24 Å full) divided by ``grid_size``.
    """
    spec = task_profile("voxels", profile)
    dev = _device(device)
    grid_size = grid_size if grid_size is not None else spec["grid_size"]
    resolution = resolution if resolution is not None else spec["box"] / grid_size
    density_sigma = density_sigma if density_sigma is not None else max(0.5, resolution)
    tr = load_voxel_molecules(profile, seed, "train")
    te = load_voxel_molecules(profile, seed, "test")
    vox = dict(grid_size=grid_size, resolution=resolution, sigma=density_sigma)
    data = {"positions": tr.positions.to(dev), "species": tr.species.to(dev), "mask": tr.mask.to(dev)}
    n_heldout = n_heldout if n_heldout is not None else spec["n_heldout"]
    te = te[_subset(len(te), n_heldout, seed)].to(device=dev, dtype=torch.float64)
    clean = voxelize(te.positions, te.species, mask=te.mask, **vox)
    noisy = noisy_voxels(clean, noise, derived_generator(seed, "voxel-heldout-noise"))
    held = HeldOut(noisy, clean)
    group = cube_group()
    action = VoxelAction()

    def prepare(batch, generator):
        return {**batch, "clean": voxelize(batch["positions"], batch["species"], mask=batch["mask"], **vox)}

    def augment(batch, generator):
        c = batch["clean"]
        g = group[torch.randint(len(group), (c.shape[0],), generator=generator)].to(dtype=c.dtype, device=c.device)
        return {**batch, "clean": action.apply(g[None], c)[0]}

    def corrupt(batch, generator):
        return {**batch, "noisy": noisy_voxels(batch["clean"], noise, generator)}

    def forward(model, batch):
        return model(batch["noisy"])

    def loss(pred, batch):
        return masked_mse(pred, batch["clean"])

    return Task("voxels", profile, seed, data, held, action, forward, loss, augment=augment,
                prepare=prepare, corrupt=corrupt, monitor_spec={"scheme": "exhaustive", "n_elements": 24},
                info={**vox, "noise": noise, "n_train": len(tr), "n_heldout": len(te), "device": dev})


_BUILDERS = {"forces": forces_task, "flow": flow_task, "voxels": voxel_task}


def make_task(name: str, profile: str = "quick", seed: int = 0, device=None, **kwargs) -> Task:
    """Build task ``name`` (one of ``TASKS``); ``kwargs`` go to its constructor."""
    check_task(name)
    check_profile(profile)
    return _BUILDERS[name](profile, seed, device=device, **kwargs)
