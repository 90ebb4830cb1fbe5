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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args, write_results  # noqa: E402
from equivlib.config import set_deterministic  # noqa: E402
from equivlib.md import force_fields, heldout_molecules, orientation_study  # noqa: E402
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
    molecules, elements = heldout_molecules(args.profile, args.seed, args.molecules)
    fields = force_fields(aug.load_model(), e3.load_model(), force_scale=scale, elements=elements, seed=args.seed)
    study = orientation_study(fields, molecules, steps=args.steps, dt_fs=0.5, temperature_K=args.temperature,
                              threshold=args.threshold, seed=args.seed, cache=False)  # timed afresh
    print(study.table.drop(columns=["smiles"]).to_string(float_format=lambda v: f"{v:.3g}"))
    rows = study.table.to_dict("records")
    out = ROOT / "benchmarks" / "results" / f"md-{args.profile}-{device.type}.json"
    write_results(out, vars(args), rows, [])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
