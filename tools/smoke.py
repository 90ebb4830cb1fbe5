#!/usr/bin/env python
"""The full profile's smoke: every chapter with the full configuration, every training loop capped.

    python tools/smoke.py [--steps 3] [--device auto|cpu|cuda] [--chapters 01 02] [--jobs N]

Each chapter and how-to page is executed by papermill with ``PROFILE=full`` and
``EQUIVLIB_SMOKE=<steps>`` (:func:`equivlib.config.smoke_steps`): the full profile's data
shapes (fewer molecules and held-out samples: ``"smoke"`` in the data sets' profile tables),
model sizes, group samples and monitors, with each training loop cut to
``--steps`` steps and the repetitions each chapter names shrunk (``by_profile(...,
smoke=...)``, :data:`equivlib.plans.SMOKE`).  A failure that only the full profile meets (an
allocation too large, a shape only the full data have, a fit that needs more points) fails
here, on the CPU, in minutes.  The notebooks, runs and ledger go to ``_build/smoke/``
(the book's ``book/generated`` and ``_build/runs`` are not touched); runs are trained
afresh every time, so the timings are measured.

Every training loop (:func:`equivlib.training.train`) writes its steps, its planned
steps, its steady seconds per step and per monitor evaluation to the ledger.  The
estimate of the full profile is

    sum over pages of the measured smoke time
    + sum over loops of (planned - run steps) x step time + (planned - run evaluations) x evaluation time,

on the device the smoke ran on: ``make smoke DEVICE=cuda SMOKE_STEPS=20`` on a GPU machine
gives the GPU estimate.  A loop's step time is its mean step after two warm-up steps; with
fewer than four steps (the default is three) it is the mean of all, warm-up included, so
the estimate errs high.  What is not a training loop (Hessian-vector products, grid searches,
repetitions) is counted at its smoke size, so the estimate is a lower bound for those parts.
Writes ``_build/smoke/estimate.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_book as bb  # noqa: E402

SMOKE = bb.ROOT / "_build" / "smoke"
#: the most one process of the smoke may hold: a full-profile shape that needs more fails the smoke (a smoke
#: peaks near 4 GiB; the voxel monitor's old single pass over its 48 grids would have asked for 9-18 GB)
MAX_RSS_GIB = 8.0


def loop_estimates(ledger: Path) -> list[dict]:
    """One row per training loop of the ledger, with its full-size estimate (``full_s``) and the smoke's own cost."""
    rows = []
    for line in ledger.read_text().splitlines() if ledger.exists() else []:
        e = json.loads(line)
        evals, planned_evals, eval_s = e.get("evals", 0), e.get("planned_evals", 0), e.get("eval_s", 0.0)
        smoke_s = e["train_s"] + evals * eval_s
        extra = (e["planned_steps"] - e["steps"]) * e["step_s"] + max(planned_evals - evals, 0) * eval_s
        rows.append({**e, "smoke_s": smoke_s, "full_s": smoke_s + extra, "extra_s": extra})
    return rows


def estimate(pages: dict[str, float], loops: list[dict]) -> dict:
    """The full profile's time: the pages' smoke times plus what the loops' missing steps and evaluations cost."""
    extra = sum(r["extra_s"] for r in loops)
    devices = sorted({r["device"] for r in loops}) or ["(no training loop)"]
    return {"pages_s": pages, "smoke_s": sum(pages.values()), "extra_s": extra,
            "full_s": sum(pages.values()) + extra, "devices": devices, "loops": loops}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="training steps of every loop (default 3: four checkpoints, the fewest the chapters' fits take)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--chapters", nargs="*", help="chapter numbers or stems (default: all); the how-to pages always run")
    ap.add_argument("--jobs", type=int, default=None, help="pages executed at once (default as make book)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        raise bb.BuildError(f"--steps must be >= 1, got {args.steps}")
    if SMOKE.exists():
        shutil.rmtree(SMOKE)
    SMOKE.mkdir(parents=True)
    bb.GENERATED, bb.CACHE, bb.SOURCES = SMOKE / "generated", SMOKE / "exec-cache", SMOKE / "sources"
    ledger = SMOKE / "ledger.jsonl"
    os.environ.update({"EQUIVLIB_SMOKE": str(args.steps), "EQUIVLIB_SMOKE_LEDGER": str(ledger),
                       "EQUIVLIB_RUNS": str(SMOKE / "runs")})
    jobs = bb.kernel_environment(args.jobs)
    params = {"PROFILE": "full", "SEED": args.seed, "DEVICE": args.device}
    lib_hash = bb.tree_hash()
    pages = [(p, params, lib_hash) for p in bb.chapter_files(args.chapters)]
    pages += [(p, params, lib_hash) for p in sorted(bb.CHAPTERS.glob(bb.GUIDES))]
    t0 = time.time()
    bb.execute_all(pages, force=True, jobs=jobs)
    wall = time.time() - t0
    times = {p.stem: json.loads((bb.CACHE / f"{p.stem}.json").read_text())["seconds"] for p, _, _ in pages}
    result = estimate(times, loop_estimates(ledger))
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB: the largest kernel or worker
    result.update(steps=args.steps, wall_s=wall, jobs=jobs, peak_rss_gib=rss)
    (SMOKE / "estimate.json").write_text(json.dumps(result, indent=1))
    print(f"\nsmoke of the full profile: {len(pages)} pages in {wall:.0f} s ({jobs} at once), every training "
          f"loop capped at {args.steps} steps; largest process {rss:.1f} GiB")
    print(f"{'training loop':58s} {'steps':>13s} {'s/step':>8s} {'evals':>9s} {'s/eval':>7s} {'full est.':>10s}")
    for r in result["loops"]:
        print(f"{r['desc'][:58]:58s} {r['steps']:>5d}/{r['planned_steps']:<7d} {r['step_s']:8.4f} "
              f"{r.get('evals', 0):>3d}/{r.get('planned_evals', 0):<5d} {r.get('eval_s', 0.0):7.3f} {r['full_s']:9.0f}s")
    for stem, s in times.items():
        print(f"  {stem:40s} smoke {s:6.0f} s")
    where = ", ".join(result["devices"])
    print(f"estimated full profile of {'these pages' if args.chapters else 'the book'} on {where}: "
          f"{result['full_s'] / 3600:.2f} h "
          f"({result['smoke_s']:.0f} s of pages as run here + {result['extra_s']:.0f} s of the loops' missing steps "
          f"and evaluations; repetitions, grids and Hessian work counted at their smoke size)")
    if "cuda" not in where:
        print("this is not a GPU estimate: run `make smoke DEVICE=cuda` on the GPU machine for one")
    if rss > MAX_RSS_GIB:
        raise bb.BuildError(f"a process of the smoke peaked at {rss:.1f} GiB (limit {MAX_RSS_GIB} GiB): "
                            f"a full-profile shape needs too much memory")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except bb.BuildError as e:
        print(f"SMOKE FAILED: {e}", file=sys.stderr)
        sys.exit(1)
