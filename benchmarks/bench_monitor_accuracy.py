"""Benchmark: how far the mixed-precision monitor reads from the exact one, across chapter 2's checkpoints.

For every checkpoint of chapter 2's main runs (``forces``, ``flow``, ``voxels``; the
profile's plan, trained and cached in ``--cache`` if missing, as the book does) the
checkpointed model is measured twice by the run's own monitor configuration, once
with ``precision="mixed"`` (float32 forward, float64 sums: the library default) and
once with ``precision="exact"`` (float64 throughout), on the same held-out samples
and the same group elements (both monitors start from the same seed).  Reported per
task, over all checkpoints (flow: every time too):

* the largest relative difference of ``L_equiv`` and of ``L``;
* the largest absolute difference of the percent ``100 L_equiv / L``;
* the largest ratio of that difference to the percent's standard error
  (``se_percent``, the sampling error the monitor reports): well below 1 means
  the precision is invisible next to the estimate's own noise;
* the seconds per evaluation of each mode.

    python benchmarks/bench_monitor_accuracy.py [--profile quick] [--seed 0] [--threads 2]
                                                [--cache _build/runs]

Writes ``benchmarks/results/monitor-accuracy.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import write_results  # noqa: E402
from equivlib.config import set_deterministic  # noqa: E402
from equivlib.plans import chapter2_runs  # noqa: E402
from equivlib.runs import get_run  # noqa: E402
from equivlib.training import PRECISIONS  # noqa: E402

#: the largest |Δ percent| / SE accepted as "invisible next to the sampling error"
TARGET_SE_FRACTION = 0.01


def measure(task, model, step, kw, precision):
    """One evaluation of ``model`` by the run's monitor in ``precision``: (records, seconds)."""
    mon = task.monitor(model, every=1, precision=precision, **kw)
    t0 = time.perf_counter()
    recs = mon.measure(step)
    return (recs if isinstance(recs, list) else [recs]), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=["quick", "full"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=str(ROOT / "_build" / "runs"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "monitor-accuracy.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    set_deterministic()
    plan = chapter2_runs(a.profile, a.seed)
    rows, verdicts = [], []
    for name, cfg in plan.main.items():
        run = get_run(cfg, cache_dir=a.cache, progress=True)
        task = cfg.make_task()
        kw = {k: v for k, v in cfg.monitor_kwargs().items() if k != "at"}
        worst = {"rel_L_equiv": 0.0, "rel_L": 0.0, "abs_percent": 0.0, "se_fraction": 0.0}
        secs = {p: [] for p in PRECISIONS}
        n = 0
        for step in run.checkpoint_steps:
            model = run.load_model(step)
            got = {}
            for p in PRECISIONS:
                got[p], s = measure(task, model, step, kw, p)
                secs[p].append(s)
            for mx, ex in zip(got["mixed"], got["exact"]):
                n += 1
                d_pct = abs(mx["percent"] - ex["percent"])
                worst["rel_L_equiv"] = max(worst["rel_L_equiv"], abs(mx["L_equiv"] / ex["L_equiv"] - 1))
                worst["rel_L"] = max(worst["rel_L"], abs(mx["L"] / ex["L"] - 1))
                worst["abs_percent"] = max(worst["abs_percent"], d_pct)
                worst["se_fraction"] = max(worst["se_fraction"], d_pct / ex["se_percent"])
        med = {p: sorted(v)[len(v) // 2] for p, v in secs.items()}
        rows.append({"task": name, "run": cfg.key, "n_checkpoints": len(run.checkpoint_steps), "n_rows": n,
                     **worst, "s_per_eval": med, "speed-up": med["exact"] / med["mixed"]})
        verdicts.append((f"{name}: mixed within {TARGET_SE_FRACTION:g} SE of exact at every checkpoint",
                         worst["se_fraction"] <= TARGET_SE_FRACTION, f"{worst['se_fraction']:.1e} SE"))

    print(f"\nmixed vs exact monitor — chapter 2's {a.profile} runs, seed {a.seed}, threads {torch.get_num_threads()}")
    hdr = (f"{'task':<7} | {'rows':>4} | {'max rel dL_equiv':>16} | {'max rel dL':>10} | {'max d%':>8} | "
           f"{'max d%/SE':>9} | {'s/eval exact':>12} | {'s/eval mixed':>12} | {'speed-up':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['task']:<7} | {r['n_rows']:>4} | {r['rel_L_equiv']:>16.1e} | {r['rel_L']:>10.1e} | "
              f"{r['abs_percent']:>8.1e} | {r['se_fraction']:>9.1e} | {r['s_per_eval']['exact']:>12.3f} | "
              f"{r['s_per_eval']['mixed']:>12.3f} | {r['speed-up']:>7.1f}x")
    print()
    for n, ok, v in verdicts:
        print(f"[{'PASS' if ok else 'FAIL'}] {n}: {v}")
    write_results(a.out, {"profile": a.profile, "seed": a.seed}, rows, verdicts)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
