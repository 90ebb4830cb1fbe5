"""Benchmark: molecular dynamics with chapter 2's force models, per force field (the ground work of chapter 7).

For held-out molecules of chapter 2's force data, and for each force field

* ``augmented``: chapter 2's EScAIP-style force model trained with augmentation (its main run),
* ``twirled``: the same model twirled over two turned tetrahedral copies at every step (exact for this head),
* ``random``: the same model with one Haar-random rotation per step,
* ``e3nn``: the exactly equivariant e3nn model of chapter 2's efficiency gap (first seed),
* ``gfn2``: GFN2-xTB (tblite), the reference the models were trained on,

this runs NVE from one state and from the same state turned by a random rotation, and reads

* seconds per MD step (force call and integration),
* the orientation divergence ``RMS |R x_t - x'_t|`` at the end, its onset (first time above
  ``--threshold`` Å) and the onset predicted from the initial force discrepancy
  (:func:`equivlib.md.early_divergence`),
* the drift of total momentum and of angular momentum, and the mean net force and net torque.

    python benchmarks/bench_md.py [--profile quick] [--molecules 2] [--steps 200] [--device cpu]

Trains chapter 2's two runs if they are not cached (``_build/runs``).  Writes
``benchmarks/results/md-<profile>-<device>.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args, write_results  # noqa: E402
from equivlib.config import set_deterministic  # noqa: E402
from equivlib.data.forces import load_forces  # noqa: E402
from equivlib.groups import haar_so3  # noqa: E402
from equivlib.md import (ModelForceCalculator, early_divergence, force_discrepancy, initial_velocities,  # noqa: E402
                         momenta, net_force_torque, onset_time, orientation_divergence, reference_calculator,
                         rotate_state, run_md)
from equivlib.plans import chapter2_runs  # noqa: E402
from equivlib.runs import get_run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=["quick", "full"])
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--molecules", type=int, default=2, help="held-out molecules")
    ap.add_argument("--steps", type=int, default=200, help="NVE steps of 0.5 fs")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--threshold", type=float, default=1e-3, help="divergence onset threshold (Å)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    device = device_from_args(ap, args)
    set_deterministic()
    plan = chapter2_runs(args.profile, args.seed)
    aug = get_run(plan.main["forces"], device=device, progress=True)
    e3 = get_run(plan.gap["e3nn"][0], device=device, progress=True)
    scale = float(aug.config.make_task().info["force_scale"])  # eV/Å per model unit
    test = load_forces(args.profile, args.seed, "test", dtype=torch.float64)
    elements = sorted(set(load_forces(args.profile, args.seed, "train").species.unique().tolist()) - {0})
    fields = {
        "augmented": lambda: ModelForceCalculator(aug.load_model(), force_scale=scale, elements=elements),
        "twirled": lambda: ModelForceCalculator(aug.load_model(), force_scale=scale, elements=elements, mode="twirl",
                                                seed=args.seed),
        "random": lambda: ModelForceCalculator(aug.load_model(), force_scale=scale, elements=elements, mode="random",
                                               seed=args.seed),
        "e3nn": lambda: ModelForceCalculator(e3.load_model(), force_scale=scale, elements=elements),
        "gfn2": reference_calculator,
    }
    first = np.unique(test.molecule.numpy(), return_index=True)[1][:args.molecules]  # one conformer per molecule
    rows = []
    for k, i in enumerate(first):
        m = test.mask[i].numpy()
        numbers, x0 = test.species[i].numpy()[m], test.positions[i].numpy()[m]
        v0 = initial_velocities(numbers, x0, args.temperature, seed=args.seed + k)
        R = haar_so3(generator=torch.Generator().manual_seed(1000 + k)).numpy()
        x1, v1 = rotate_state(x0, v0, R)
        for name, make in fields.items():
            a = run_md(numbers, x0, v0, make(), steps=args.steps, dt_fs=0.5, desc=f"{name} {k}")
            b = run_md(numbers, x1, v1, make(), steps=args.steps, dt_fs=0.5, desc=f"{name} {k} turned")
            d = orientation_divergence(a, b, R)
            calc = make()
            if isinstance(calc, ModelForceCalculator):
                pred = early_divergence(force_discrepancy(calc, numbers, x0, R), a.masses, a.times)
                pred_onset = onset_time(a.times, pred, args.threshold)
            else:
                pred_onset = None
            mom, net = momenta(a), net_force_torque(a.positions, a.forces, a.masses)
            rows.append({
                "molecule": int(test.molecule[i]), "smiles": test.smiles[i], "atoms": int(m.sum()), "field": name,
                "s_per_step": (a.seconds_per_step + b.seconds_per_step) / 2, "divergence_end_A": float(d[-1]),
                "onset_fs": onset_time(a.times, d, args.threshold), "onset_predicted_fs": pred_onset,
                "P_drift": float(np.linalg.norm(mom["P"][-1] - mom["P"][0])),
                "L_drift": float(np.linalg.norm(mom["L"][-1] - mom["L"][0])),
                "net_force_eV_A": float(np.linalg.norm(net["force"], axis=-1).mean()),
                "net_torque_eV": float(np.linalg.norm(net["torque"], axis=-1).mean()),
                "max_speed_A_fs": float(np.linalg.norm(a.velocities[-1], axis=-1).max()),
            })
            r = rows[-1]
            print(f"{r['field']:9s} mol {r['molecule']:3d} ({r['atoms']} atoms) {1e3 * r['s_per_step']:7.2f} ms/step "
                  f"div_end {r['divergence_end_A']:.2e} A onset {r['onset_fs']} fs (pred {r['onset_predicted_fs']}) "
                  f"|dP| {r['P_drift']:.2e} |dL| {r['L_drift']:.2e} |F_net| {r['net_force_eV_A']:.2e} "
                  f"|tau| {r['net_torque_eV']:.2e} vmax {r['max_speed_A_fs']:.3f}", flush=True)
    out = ROOT / "benchmarks" / "results" / f"md-{args.profile}-{device.type}.json"
    write_results(out, vars(args), rows, [])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
