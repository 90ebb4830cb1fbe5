"""Time the exact teacher-student landscape and batched gradient descent from a grid.

Run with ``python benchmarks/bench_landscape.py [--device cpu|cuda] [--repeats 3] [--threads 1]``.
Prints one row per measurement: the 201x201 exact-loss grid (target: < 1 s on a CPU),
the same grid through the generic (non-orbit) loss, and 100 steps of gradient descent
from every point of grids of several sizes.  Not a test.
"""
from __future__ import annotations

import argparse
import time

import torch

from equivlib import hidden as ts
from equivlib.config import resolve_device, set_threads


def best_of(fn, repeats: int, sync, warmup: bool = True) -> float:
    if warmup:
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--gd-grids", type=int, nargs="+", default=[41, 101, 201])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    set_threads(args.threads or None)
    dev = resolve_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    prob = ts.make_problem(args.n, seed=0, device=dev)
    rows = []

    ab = torch.linspace(-3, 3, 201, dtype=torch.float64, device=dev)
    t = best_of(lambda: ts.slice_landscape(prob, ab, ab), args.repeats, sync)
    rows.append(("landscape 201x201 (orbit loss)", 201 * 201, t))
    B, A = torch.meshgrid(ab, ab, indexing="ij")

    def generic():
        with torch.no_grad():
            prob.loss_W(prob.W(A, B))

    rows.append(("landscape 201x201 (generic loss)", 201 * 201, best_of(generic, args.repeats, sync)))
    for g in args.gd_grids:
        v = torch.linspace(-3, 3, g, dtype=torch.float64, device=dev)
        Bg, Ag = torch.meshgrid(v, v, indexing="ij")
        for name, scale in (("direct", 1.0), ("rescaled", prob.rescale_a)):
            big = g > 101  # one timed run, no warm-up, for the large grids
            t = best_of(lambda: ts.gd_slice(prob, Ag, Bg, steps=100, lr=0.05, scale_a=scale),
                        1 if big else args.repeats, sync, warmup=not big)
            rows.append((f"GD 100 steps {g}x{g} ({name})", g * g, t))

    print(f"device={dev}  torch threads={torch.get_num_threads()}  n={args.n}  float64")
    print(f"{'measurement':<38}{'points':>9}{'seconds':>10}{'us/point':>10}")
    for name, pts, t in rows:
        print(f"{name:<38}{pts:>9d}{t:>10.3f}{1e6 * t / pts:>10.2f}")


if __name__ == "__main__":
    main()
