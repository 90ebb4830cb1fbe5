"""Benchmark: the equivariance monitor's overhead as a fraction of training time.

For each task of chapter 2 (``forces``, ``flow``, ``voxels``; quick data, ``small``
model, batch 8, Adam lr 1e-3, augmentation on) train ``--steps`` steps

* without a monitor, and
* with the task's monitor (``task.monitor``) at the default interval ``--every``
  (:class:`equivlib.runs.RunConfig`'s default ``eval_every``, 500 steps; chapter 2's
  quick runs evaluate far more densely, 12 log-spaced times in 300-600 steps, and
  pay for it),

and report the overhead at 2x and 4x that interval too: by default derived from
the 1x run (median monitor seconds per evaluation x the number of evaluations at
that interval, which is what ``monitor.seconds`` adds up); with
``--measure-multiples`` those runs are trained and timed as well (about twice as long).

The monitor uses chapter 2's quick group samples: 8 Haar rotations for forces and
flow (flow: one monitor per time in ``FLOW_TIMES``), 8 random cube rotations
(``scheme="finite"``) for voxels; ``--monitor-full`` uses the tasks' own defaults
(16 Haar; all 24 cube rotations) instead.

Every variant starts from the same seed (same model initialisation, minibatches,
augmentation and noise).  Reported per task and variant: the training time
(``train``'s own ``seconds``: the loop, the monitor calls inside it included, not the
step-0 evaluation), the monitor's own seconds (``monitor.seconds``, step 0
included), and

    overhead = (median seconds per evaluation) / (every x training seconds per step without a monitor)
                                                                          (target <= 10 %)

i.e. the monitor's steady-state share of training time at that interval (the step-0
evaluation happens before training and does not enter).

plus the difference of training times (with - without) / without as a check (measured
runs only).  An evaluation is one call of the monitor (flow: one per time in
``FLOW_TIMES``, all in one call).
Medians of ``--repeats`` runs, the variants interleaved round-robin so that load
from other processes on a shared machine hits all of them alike.

    python benchmarks/bench_monitor.py [--device cpu|cuda] [--threads 2] [--steps 100] [--repeats 3]
                                       [--every 20] [--measure-multiples] [--monitor-full]
                                       [--precision mixed|exact]

Also reported: the cost of one evaluation in training steps (median seconds per
evaluation / training seconds per step without a monitor; issue #14's target is
<= 5 on each task).  ``--precision`` picks the monitor's mode (default ``mixed``, the
library default: float32 forward, float64 sums; ``exact``: float64 throughout, the
mode before #14); run both for a before/after comparison.

Writes ``benchmarks/results/monitor-{precision}.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args, write_results  # noqa: E402
from equivlib.config import set_deterministic  # noqa: E402
from equivlib.runs import RunConfig  # noqa: E402
from equivlib.tasks import TASKS, make_task  # noqa: E402
from equivlib.training import train  # noqa: E402

TARGET_OVERHEAD = 0.10
TARGET_STEPS_PER_EVAL = 5.0
MULTIPLES = (1, 2, 4)
# chapter 2, quick profile: the monitor's group sample per task
CH2_MONITOR = {"forces": dict(n_elements=8), "flow": dict(n_elements=8),
               "voxels": dict(scheme="finite", n_elements=8)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def one_run(task, every, args, device, monitor_kw):
    """Train a fresh model from ``args.seed``; return (train seconds, monitor seconds, n evaluations)."""
    torch.manual_seed(args.seed)
    model = task.make_model(args.size, device=device)
    monitor = None if every is None else task.monitor(model, every, **monitor_kw)
    sync(device)
    t0 = time.perf_counter()
    log = train(model, task.data, steps=args.steps, batch_size=args.batch, forward=task.forward, loss=task.loss,
                lr=args.lr, augment=task.batch_transform(True), monitor=monitor,
                generator=torch.Generator().manual_seed(args.seed), progress=False)
    sync(device)
    wall = time.perf_counter() - t0
    n_eval = 0 if monitor is None else args.steps // every + 1  # monitor calls that evaluate (step 0 included)
    return {"train_s": float(log.attrs["seconds"]), "monitor_s": float(log.attrs["monitor_seconds"]),
            "wall_s": wall, "n_evals": n_eval, "final_loss": float(log["loss"].iloc[-1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=RunConfig.__dataclass_fields__["eval_every"].default,
                    help="the monitor interval (steps; default: RunConfig's default eval_every)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--size", default="small", choices=["small", "base"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--measure-multiples", action="store_true", help="also train and time the 2x and 4x intervals")
    ap.add_argument("--monitor-full", action="store_true",
                    help="the tasks' default group samples (16 Haar / 24 cube) instead of chapter 2's quick ones")
    ap.add_argument("--precision", default="mixed", choices=["mixed", "exact"],
                    help="the monitor's mode (EquivarianceMonitor's precision)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/monitor-{precision}.json")
    a = ap.parse_args()
    if a.repeats < 1 or a.steps < 1 or a.every < 1:
        ap.error("--repeats, --steps and --every must be positive")
    device = device_from_args(ap, a)
    set_deterministic()  # as the chapters run (chapter_setup); on CUDA it changes the convolution algorithms
    load_before = os.getloadavg()

    measured = MULTIPLES if a.measure_multiples else MULTIPLES[:1]
    variants = {"none": None, **{f"{m}x": m * a.every for m in measured}}
    rows = []
    for name in a.tasks:
        t0 = time.perf_counter()
        task = make_task(name, "quick", a.seed, device=device)
        setup_s = time.perf_counter() - t0
        mon_kw = {**({} if a.monitor_full else CH2_MONITOR[name]), "precision": a.precision}
        one_run(task, a.every, argparse.Namespace(**{**vars(a), "steps": min(a.steps, 10)}), device, mon_kw)  # warm-up
        runs = {v: [] for v in variants}
        for _ in range(a.repeats):
            for v, every in variants.items():
                runs[v].append(one_run(task, every, a, device, mon_kw))
        base = statistics.median(r["train_s"] for r in runs["none"])
        row = {"task": name, "setup_s": setup_s, "monitor_kwargs": mon_kw, "n_monitors":
               len(task.times) if name == "flow" else 1, "train_none_s": base,
               "train_none_all_s": [r["train_s"] for r in runs["none"]], "variants": {}}
        for v, every in variants.items():
            if every is None:
                continue
            rs = runs[v]
            tr = statistics.median(r["train_s"] for r in rs)
            ms = statistics.median(r["monitor_s"] for r in rs)
            row["variants"][v] = {
                "every": every, "n_evals": rs[0]["n_evals"], "train_s": tr, "monitor_s": ms,
                "monitor_s_per_eval": ms / max(rs[0]["n_evals"], 1),
                "overhead": ms / base, "overhead_from_diff": tr / base - 1,
                "train_all_s": [r["train_s"] for r in rs], "monitor_all_s": [r["monitor_s"] for r in rs],
                "same_final_loss": len({r["final_loss"] for r in rs} | {runs["none"][0]["final_loss"]}) == 1,
                "measured": True,
            }
        def overhead(per_eval, every):  # steady-state share of training time at this interval
            return per_eval / (every * base / a.steps)

        for d in row["variants"].values():
            d["overhead"] = overhead(d["monitor_s_per_eval"], d["every"])
        row["steps_per_eval"] = row["variants"]["1x"]["monitor_s_per_eval"] / (base / a.steps)
        per_eval = row["variants"]["1x"]["monitor_s_per_eval"]
        for m in MULTIPLES:
            if f"{m}x" in row["variants"]:
                continue
            every = m * a.every
            n = a.steps // every + 1
            row["variants"][f"{m}x"] = {"every": every, "n_evals": n, "train_s": None, "monitor_s": n * per_eval,
                                        "monitor_s_per_eval": per_eval,
                                        "overhead": overhead(per_eval, every),
                                        "overhead_from_diff": None, "measured": False}
        rows.append(row)

    print(f"\nmonitor overhead — precision {a.precision}, device {device.type}, threads {torch.get_num_threads()}, "
          f"{a.steps} steps, batch {a.batch}, model {a.size}, default interval {a.every}, median of {a.repeats}")
    hdr = (f"{'task':<7} | {'every':>5} | {'evals':>5} | {'train s (no mon)':>16} | {'train s (mon)':>13} | "
           f"{'monitor s':>9} | {'ms/eval':>8} | {'overhead':>8} | {'(train diff)':>12}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        for v in (f"{m}x" for m in MULTIPLES):
            d = r["variants"][v]
            tr = f"{d['train_s']:.2f}" if d["measured"] else "-"
            diff = f"{100 * d['overhead_from_diff']:.1f}%" if d["measured"] else "-"
            mark = "" if d["measured"] else "*"
            print(f"{r['task']:<7} | {d['every']:>5} | {d['n_evals']:>5} | {r['train_none_s']:>16.2f} | "
                  f"{tr:>13} | {d['monitor_s']:>8.3f}{mark:1} | {1e3 * d['monitor_s_per_eval']:>8.1f} | "
                  f"{100 * d['overhead']:>7.1f}% | {diff:>12}")
    if not a.measure_multiples:
        print("* derived from the 1x run: evaluations x median seconds per evaluation (--measure-multiples times them)")

    verdicts = []
    for r in rows:
        verdicts.append((f"{r['task']}: one evaluation <= {TARGET_STEPS_PER_EVAL:g} training steps",
                         r["steps_per_eval"] <= TARGET_STEPS_PER_EVAL, f"{r['steps_per_eval']:.1f} steps"))
    for r in rows:
        d = r["variants"]["1x"]
        verdicts.append((f"{r['task']}: overhead <= {100 * TARGET_OVERHEAD:.0f}% at every={d['every']}",
                         d["overhead"] <= TARGET_OVERHEAD,
                         f"{100 * d['overhead']:.1f}% (train-time difference: {100 * d['overhead_from_diff']:.1f}%)"))
    for r in rows:
        ok = all(d["same_final_loss"] for d in r["variants"].values() if d["measured"])
        verdicts.append((f"{r['task']}: monitor does not change training (same final loss)", ok, str(ok)))
    print()
    for n, ok, v in verdicts:
        print(f"[{'PASS' if ok else 'FAIL'}] {n}: {v}")

    out = Path(a.out or ROOT / "benchmarks" / "results" / f"monitor-{a.precision}.json")
    meta = {"device": device.type, "cpu_count": os.cpu_count(), "steps": a.steps, "every": a.every,
            "measure_multiples": a.measure_multiples, "monitor_full": a.monitor_full, "precision": a.precision,
            "repeats": a.repeats, "batch": a.batch, "size": a.size, "lr": a.lr, "seed": a.seed,
            "load_avg_before": load_before, "load_avg": os.getloadavg()}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    write_results(out, meta, rows, verdicts)
    print(f"\nwrote {out}  (load average {meta['load_avg'][0]:.2f}; the machine may be shared)")


if __name__ == "__main__":
    main()
