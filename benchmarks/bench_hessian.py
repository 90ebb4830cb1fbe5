"""Benchmark: extreme Hessian eigenvalues of parameter subsets of chapter 2's models by Lanczos.

A model of chapter 2 (``--task``, ``--size``, float64, fresh initialisation from ``--seed``)
on ``--molecules`` held-out samples of its quick task, each under ``--rotations`` group
elements (Haar rotations; cube rotations for voxels); the loss is one term of the plug-in
decomposition (``--term``, default the total ``L``).  For each subset:

* the largest and smallest eigenvalue by :func:`equivlib.hessian.lanczos_extremes`
  (ARPACK on Hessian-vector products): seconds, number of HVPs, seconds per HVP;
* where the subset is small enough (``--dense-max`` parameters) the dense spectrum by
  :func:`equivlib.hessian.dense_spectrum`, and the error of the Lanczos values relative to
  the largest eigenvalue (for the smallest: to the spectral radius, since it is often ~0).

Subsets (``--size base``), the kinds the first paper uses: forces ``attention`` (~29k: the
last layer's attention and message maps, non-linear; target: under 60 s on 2 CPU cores),
``head`` and ``ffn-out`` (~8k, which dense can check); flow ``head`` (its linear head);
voxels ``final`` (the last decoder convolution, ~6.9k).

    python benchmarks/bench_hessian.py [--task forces|flow|voxels] [--device cpu|cuda] [--threads 2] [--term L]

Writes ``benchmarks/results/hessian-<device>.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args  # noqa: E402
from equivlib.config import derived_generator, set_deterministic  # noqa: E402
from equivlib.groups import cube_group  # noqa: E402
from equivlib.hessian import dense_spectrum, lanczos_extremes, subset_loss  # noqa: E402
from equivlib.tasks import make_model, make_task  # noqa: E402
from equivlib.training import make_sampler  # noqa: E402
from equivlib.twirl import decomposition_loss  # noqa: E402

TARGET_S = 60.0
SUBSETS = {
    "forces": {"attention": ["layers.2.qkv", "layers.2.out", "layers.2.node", "layers.2.to_recv", "layers.2.to_send"],
               "ffn-out": ["layers.2.ffn.2"], "norms-biases": ["layers.2.norm_ffn", "layers.2.ffn.0.bias",
                                                                 "layers.2.ffn.2.bias"], "head": ["head"]},
    "flow": {"head": ["head"]},
    "voxels": {"final": ["dec.1.net.3"]},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="base", choices=["small", "medium", "base"])
    ap.add_argument("--molecules", type=int, default=2)
    ap.add_argument("--rotations", type=int, default=2)
    ap.add_argument("--term", default="L", choices=["L", "L_mean", "L_equiv"])
    ap.add_argument("--task", default="forces", choices=list(SUBSETS))
    ap.add_argument("--subsets", nargs="+", default=None, help="names from SUBSETS[task] (default: all)")
    ap.add_argument("--dense-max", type=int, default=None,
                    help="largest subset whose dense spectrum is formed (default 1000 on a CPU, 9000 on a GPU)")
    ap.add_argument("--lanczos-min", type=int, default=250,
                    help="smallest subset given to Lanczos (below it dense is cheaper, and a linear head's large "
                         "null space makes ARPACK take thousands of products)")
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = device_from_args(ap, a)
    set_deterministic()
    dense_max = a.dense_max if a.dense_max is not None else (9000 if device.type == "cuda" else 1000)
    subsets = SUBSETS[a.task] if a.subsets is None else {k: SUBSETS[a.task][k] for k in a.subsets}
    task = make_task(a.task, "quick", a.seed, device=device)
    held = task.heldout
    n = min(a.molecules, held.x.shape[0])
    x, y = held.x[:n].double(), held.y[:n].double()
    mask = None if held.mask is None else held.mask[:n]
    extras = {k: v[:n] for k, v in held.extras.items()}
    torch.manual_seed(a.seed)
    model = make_model(a.task, a.size, dtype=torch.float64, device=device).eval()
    sampler = (make_sampler("finite", a.rotations, cube_group()) if a.task == "voxels"
               else make_sampler("haar", a.rotations))
    sample = sampler(n, derived_generator(a.seed, "bench-hessian"), torch.float64, device)
    loss = decomposition_loss(a.term, x, y, sample, task.action, mask=mask, extras=extras)
    rows = []
    print(f"{a.task} model '{a.size}' ({sum(p.numel() for p in model.parameters()):,} parameters), {n} samples x "
          f"{a.rotations} group elements, term {a.term}, {device.type}, {torch.get_num_threads()} threads")
    for name, spec in subsets.items():
        f, flat = subset_loss(model, spec, loss)
        row = {"subset": name, "n_params": flat.n}
        if flat.n >= a.lanczos_min:
            res = lanczos_extremes(f, flat.theta0, k=1, tol=a.tol)
            row.update({"lanczos_s": res["seconds"], "n_hvp": res["n_hvp"], "s_per_hvp": res["seconds"] / res["n_hvp"],
                        "lambda_max": float(res["largest"][0]), "lambda_min": float(res["smallest"][0])})
        if flat.n <= dense_max:
            t0 = time.perf_counter()
            vals, _ = dense_spectrum(f, flat.theta0)
            row["dense_s"] = time.perf_counter() - t0
            row["dense_max"], row["dense_min"] = float(vals[-1]), float(vals[0])
            if "lambda_max" in row:
                row["rel_err_max"] = abs(row["lambda_max"] - float(vals[-1])) / abs(float(vals[-1]))
                # relative to the spectral radius: the smallest eigenvalue is often ~0
                row["rel_err_min"] = abs(row["lambda_min"] - float(vals[0])) / float(vals.abs().max())
        rows.append(row)
        lz = (f"Lanczos {row['lanczos_s']:6.1f} s, {row['n_hvp']} HVPs ({1e3 * row['s_per_hvp']:.1f} ms each), "
              f"lambda_max {row['lambda_max']:.4e}, lambda_min {row['lambda_min']:.4e}" if "n_hvp" in row
              else "Lanczos not run (small subset)")
        dense = (f"dense {row['dense_s']:.1f} s (max {row['dense_max']:.4e}, min {row['dense_min']:.4e})"
                 + (f", rel. error max {row['rel_err_max']:.1e} / min {row['rel_err_min']:.1e}" if "rel_err_max" in row
                    else "") if "dense_s" in row else "dense not formed")
        print(f"{name:12s} {flat.n:>7,} params: {lz}; {dense}", flush=True)
    big = [r for r in rows if r["subset"] == "attention"]
    if big and device.type == "cpu":
        ok = big[0]["lanczos_s"] <= TARGET_S
        print(f"[{'PASS' if ok else 'FAIL'}] extreme eigenvalues of the {big[0]['n_params']:,}-parameter subset in "
              f"<= {TARGET_S:.0f} s: {big[0]['lanczos_s']:.1f} s")
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"hessian-{a.task}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"task": a.task, "device": device.type, "threads": torch.get_num_threads(), "size": a.size,
                               "molecules": n, "rotations": a.rotations, "term": a.term, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
