"""Benchmark: what chapter 2's training runs cost in a profile, from a short smoke of each.

For every configuration chapter 2 trains (:func:`equivlib.plans.chapter2_runs`: one run
per task, the force-task sweep and the efficiency-gap pair) this trains the same
configuration for ``--steps`` steps only (same model, batch, optimiser, data, monitor
group sample), through :func:`equivlib.runs.get_run` into a temporary cache, and reads

* the wall time of the call (task set-up, data loading, held-out voxelization, checkpoints
  and training together),
* seconds per training step (``train``'s clock, monitor excluded), the first steps
  (``--warmup``) left out, with the median and 90th percentile of single steps,
* seconds per monitor evaluation (``monitor.seconds`` / evaluations; the first
  evaluation's warm-up included, so this errs high).

It then estimates the full run: ``steps x step + evaluations x evaluation`` with the
configuration's own steps and evaluation schedule, and adds them up.  Chapter 1 and 6's
work, and chapter 2's analyses of the trained checkpoints, are not in the estimate.

    python benchmarks/bench_profile.py --profile full --device cuda [--steps 60] [--only forces flow]

Writes ``benchmarks/results/profile-<profile>-<device>.json`` (summary) and ``.csv``
(every step's time).  Not a test.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args  # noqa: E402
from equivlib.config import set_deterministic  # noqa: E402
from equivlib.plans import chapter2_runs  # noqa: E402
from equivlib.runs import get_run  # noqa: E402


def smoke(cfg, steps, warmup, device, cache):
    """Train ``cfg`` for ``steps`` steps; return the summary row and the per-step times."""
    short = cfg.replace(steps=steps, eval_every=steps, monitor={"at": [steps]},
                        extra={**cfg.extra, "checkpoints": [0, steps]})
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = get_run(short, cache_dir=cache, device=device, progress=False)
    wall = time.perf_counter() - t0
    info = json.loads((run.path / "config.json").read_text())
    clock = run.log["seconds"].to_numpy()
    per_step = np.diff(np.concatenate([[0.0], clock]))
    steady = per_step[warmup:]
    n_eval = int(run.monitor["step"].nunique())
    step_s = float(steady.mean())
    eval_s = float(info["monitor_seconds"]) / max(n_eval, 1)
    n_eval_full = len(cfg.eval_steps())
    row = {"key": cfg.key, "task": cfg.task, "arch": cfg.arch, "size": cfg.model_size, "batch": cfg.batch_size,
           "n_train": cfg.n_train, "optimizer": cfg.optimizer, "n_parameters": run.n_parameters,
           "smoke_steps": steps, "smoke_wall_s": wall, "first_step_s": float(per_step[0]),
           "step_s": step_s, "step_median_s": float(np.median(steady)), "step_p90_s": float(np.quantile(steady, 0.9)),
           "eval_s": eval_s, "smoke_evals": n_eval, "full_steps": cfg.steps, "full_evals": n_eval_full,
           "est_train_s": cfg.steps * step_s, "est_monitor_s": n_eval_full * eval_s,
           "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda" else None}
    row["est_total_s"] = row["est_train_s"] + row["est_monitor_s"]
    return row, pd.DataFrame({"key": cfg.key, "step": np.arange(1, len(per_step) + 1), "seconds": per_step})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="full", choices=["quick", "full"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=60, help="training steps of each smoke run")
    ap.add_argument("--warmup", type=int, default=10, help="first steps left out of the step time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", choices=["forces", "flow", "voxels"],
                    help="only the configurations of these tasks")
    ap.add_argument("--out", default=None, help="summary JSON (default benchmarks/results/profile-<profile>-<device>.json)")
    a = ap.parse_args()
    if a.steps < 4 or not 0 <= a.warmup < a.steps - 1:
        ap.error("--steps must be >= 4 and --warmup in [0, steps - 1)")
    device = device_from_args(ap, a)
    set_deterministic()  # as the chapters run (chapter_setup); on CUDA it changes the convolution algorithms
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"profile-{a.profile}-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    order = {"forces": 0, "flow": 1, "voxels": 2}  # the costliest evaluations last: a time limit keeps the rest
    configs = sorted((c for c in chapter2_runs(a.profile, a.seed).configs() if not a.only or c.task in a.only),
                     key=lambda c: order[c.task])
    meta = {"profile": a.profile, "device": device.type, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "steps": a.steps, "warmup": a.warmup,
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None}
    rows, steps = [], []
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as cache:
        for i, cfg in enumerate(configs, 1):
            row, per_step = smoke(cfg, a.steps, a.warmup, device, cache)
            rows.append(row)
            steps.append(per_step)
            # written after every run, so that a time limit keeps what was measured
            out.write_text(json.dumps({**meta, "complete": i == len(configs), "runs": rows}, indent=1, default=str))
            pd.concat(steps).to_csv(out.with_suffix(".csv"), index=False)
            print(f"[{i}/{len(configs)}] {cfg.task:7s} {cfg.arch:8s} {cfg.model_size:6s} batch {cfg.batch_size:3d} "
                  f"n_train {cfg.n_train!s:5s} {cfg.optimizer:4s}: {row['n_parameters']:>9,} params, "
                  f"step {1e3 * row['step_s']:7.2f} ms (p90 {1e3 * row['step_p90_s']:.2f}), "
                  f"eval {row['eval_s']:6.2f} s, smoke {row['smoke_wall_s']:6.1f} s "
                  f"-> full run {row['est_total_s'] / 60:6.1f} min "
                  f"({cfg.steps} steps, {row['full_evals']} evaluations)", flush=True)
    table = pd.DataFrame(rows)
    total = float(table["est_total_s"].sum())
    print(f"chapter 2, profile {a.profile}, {device.type}: estimated training {table['est_train_s'].sum() / 60:.1f} min"
          f" + monitor {table['est_monitor_s'].sum() / 60:.1f} min = {total / 60:.1f} min over {len(table)} runs"
          " (analyses of the checkpoints, chapters 1 and 6 not included)")
    out.write_text(json.dumps({**meta, "complete": True, "estimated_total_s": total, "runs": rows}, indent=1,
                              default=str))
    print(f"wrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
