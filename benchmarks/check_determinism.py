"""Check: does the same seed give the same numbers on this device?

For each task of chapter 2 (quick data, ``small`` model, batch 8, Adam, augmentation)
train ``--steps`` steps from the same seed three times: twice without a monitor and once
with the task's monitor (which has its own generator and must not change training).
Reports the final training loss of each and the largest parameter difference from the
first run, once with PyTorch's defaults and once after
:func:`equivlib.config.set_deterministic` (deterministic algorithms; on CUDA also the
cuBLAS workspace setting).  On a CPU every pair should agree bit for bit; on a GPU
the defaults may not (atomic adds in convolution backward passes, cuBLAS split-K).

    python benchmarks/check_determinism.py [--device cuda] [--steps 30] [--tasks voxels]

Writes ``benchmarks/results/determinism-<device>.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args  # noqa: E402
from equivlib.config import set_deterministic  # noqa: E402
from equivlib.tasks import TASKS, make_task  # noqa: E402
from equivlib.training import train  # noqa: E402


def one_run(task, steps, seed, device, monitor: bool):
    torch.manual_seed(seed)
    model = task.make_model("small", device=device)
    mon = task.monitor(model, max(1, steps // 3)) if monitor else None
    log = train(model, task.data, steps=steps, batch_size=8, forward=task.forward, loss=task.loss, lr=1e-3,
                augment=task.batch_transform(True), monitor=mon, generator=torch.Generator().manual_seed(seed),
                progress=False)
    return float(log["loss"].iloc[-1]), torch.cat([p.detach().flatten().double().cpu() for p in model.parameters()])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--mode", default="both", choices=["defaults", "deterministic", "both"],
                    help="both: each mode in its own process (the cuBLAS setting must precede CUDA's first use)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    device = device_from_args(ap, a)
    if a.mode == "both":
        import subprocess
        rows = []
        for mode in ("defaults", "deterministic"):
            part = Path(a.out or ROOT / "benchmarks" / "results" / f"determinism-{device.type}.json").with_suffix(
                f".{mode}.json")
            subprocess.run([sys.executable, __file__, "--mode", mode, "--device", device.type, "--steps", str(a.steps),
                            "--seed", str(a.seed), "--threads", str(a.threads), "--tasks", *a.tasks,
                            "--out", str(part)], check=True)
            rows += json.loads(part.read_text())["rows"]
            part.unlink()
    else:
        rows = run_mode(a, device)
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"determinism-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device.type, "torch": torch.__version__, "steps": a.steps, "rows": rows},
                              indent=1))
    if a.mode == "both":
        print(f"wrote {out}")


def run_mode(a, device):
    """Train each task three times in this process (one mode); return the rows."""
    if a.mode == "deterministic":
        set_deterministic()
    rows = []
    for name in a.tasks:
        task = make_task(name, "quick", a.seed, device=device)
        (l1, p1), (l2, p2), (l3, p3) = (one_run(task, a.steps, a.seed, device, m) for m in (False, False, True))
        row = {"mode": a.mode, "task": name, "loss": [l1, l2, l3],
               "rerun max |dp|": float((p2 - p1).abs().max()), "monitored max |dp|": float((p3 - p1).abs().max())}
        row["reproducible"] = row["rerun max |dp|"] == 0.0 and row["monitored max |dp|"] == 0.0
        rows.append(row)
        print(f"{a.mode:13s} {name:7s} losses {l1:.9g} {l2:.9g} {l3:.9g}  rerun max|dp| {row['rerun max |dp|']:.2e}"
              f"  with monitor {row['monitored max |dp|']:.2e}  -> {'same' if row['reproducible'] else 'DIFFERENT'}",
              flush=True)
    return rows


if __name__ == "__main__":
    main()
