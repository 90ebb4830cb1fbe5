"""Benchmark: batched twirl (equivlib.twirl) vs a Python loop over rotations.

Small transformer over atoms (nn.TransformerEncoder, d_model 64, 2 layers, 4 heads),
16 atoms, N = 16 Haar rotations per sample, float32, eval mode, no_grad, at
batch sizes B = 1, 4, 32.  Variants:

* ``baseline``: the model's own forward pass on the B·N already-rotated inputs;
* ``batched``:  ``twisted_predictions`` + ``decompose`` (library defaults);
* ``loop``:     for each of the N rotations: rotate the B inputs, forward, un-rotate;
                then the same decomposition.

Times are medians of ``--repeats`` runs (time.perf_counter) after warm-up; peak
memory is measured per variant in a fresh subprocess (CPU: ru_maxrss minus the
RSS after importing and building the model; CUDA: max_memory_allocated minus the
allocation before the variant).

    python benchmarks/bench_twirl.py [--device cpu|cuda] [--repeats 9] [--threads 2]

Writes ``benchmarks/results/twirl.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _cli import device_from_args  # noqa: E402
from equivlib.config import set_threads  # noqa: E402
from equivlib.groups import VectorAction, sample_haar  # noqa: E402
from equivlib.twirl import decompose, twisted_predictions  # noqa: E402

ATOMS, N_ROT, BATCHES = 16, 16, (1, 4, 32)
VARIANTS = ("baseline", "batched", "loop")
TARGET_OVERHEAD, TARGET_SPEEDUP_B1_CPU, TARGET_SPEEDUP_GPU = 0.10, 2.0, 5.0


class AtomTransformer(nn.Module):
    def __init__(self, d_model=64, layers=2, heads=4):
        super().__init__()
        self.inp = nn.Linear(3, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=4 * d_model, dropout=0.0,
                                           batch_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, 3)

    def forward(self, x):
        return self.out(self.enc(self.inp(x)))


def setup(B: int, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    model = AtomTransformer().to(device).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, ATOMS, 3, generator=g).to(device)
    y = torch.randn(B, ATOMS, 3, generator=g).to(device)
    sample = sample_haar(N_ROT, batch=B, generator=g, dtype=torch.float32, device=device)
    R = sample.flat(B)  # (N, B, 3, 3)
    x_rot = torch.einsum("nbij,baj->nbai", R, x).reshape(N_ROT * B, ATOMS, 3)
    return model, x, y, sample, R, x_rot


def make_variant(name, model, x, y, sample, R, x_rot):
    act = VectorAction()

    def baseline():
        return model(x_rot)

    def batched():
        Z = twisted_predictions(model, x, sample, act)
        return decompose(Z, y, sample)

    def loop():
        outs = []
        for n in range(N_ROT):
            xr = torch.einsum("bij,baj->bai", R[n], x)
            out = model(xr)
            outs.append(torch.einsum("bji,baj->bai", R[n], out))
        Z = torch.stack(outs)[:, None]  # (N, 1, B, A, 3)
        return decompose(Z, y, sample)

    return {"baseline": baseline, "batched": batched, "loop": loop}[name]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_variants(fns: dict, device, repeats, warmup):
    """First-call time and ``repeats`` timings per variant, interleaved round-robin so that
    load from other processes on a shared machine hits every variant alike."""
    first, times = {}, {k: [] for k in fns}
    with torch.no_grad():
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            first[k] = time.perf_counter() - t0
            for _ in range(warmup):
                fn()
            sync(device)
        for _ in range(repeats):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[k].append(time.perf_counter() - t0)
    return first, times


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so that it counts from now on (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(variant: str, B: int, device: torch.device, threads: int) -> None:
    """Run one variant once in this (fresh) process; print its peak memory and cold-call time.

    ``batched_warm`` runs the library's memory probe (estimate_bytes_per_input) first, so
    that the one-time cost of the probe is excluded.
    """
    if device.type == "cpu":
        set_threads(threads)
    args = setup(B, device)
    fn = make_variant("batched" if variant == "batched_warm" else variant, *args)
    if variant == "batched_warm":
        from equivlib.twirl import estimate_bytes_per_input

        model, x, _, sample, R, _ = args
        estimate_bytes_per_input(model, VectorAction().apply(R[:1, :1], x[:1])[0], {})
    t0 = time.perf_counter()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        with torch.no_grad():
            fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        # without the reset, ru_maxrss would still hold the peak reached while importing
        reset_peak_rss()
        before = rss_bytes()
        with torch.no_grad():
            fn()
        peak = peak_rss_bytes() - before
    cold = time.perf_counter() - t0
    print(json.dumps({"peak_bytes": max(int(peak), 0), "cold_call_s": cold}))


def peak_memory(variant, B, device, threads) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--batch", str(B), "--device", device.type,
           "--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        print(f"  memory worker failed for {variant} B={B}: {res.stderr.strip()[-500:]}", file=sys.stderr)
        return {"peak_bytes": None, "cold_call_s": None}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurements")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "twirl.json"))
    ap.add_argument("--worker", choices=VARIANTS + ("batched_warm",), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.repeats < 7:
        ap.error("--repeats must be at least 7")
    device = device_from_args(ap, a, threads=False)
    if a.worker:
        worker(a.worker, a.batch, device, a.threads)
        return
    if device.type == "cpu":
        set_threads(a.threads)

    rows = []
    for B in BATCHES:
        args = setup(B, device)
        row = {"B": B, "N": N_ROT}
        # the three variants compute the same thing
        with torch.no_grad():
            d_b = make_variant("batched", *args)()
            d_l = make_variant("loop", *args)()
        row["max_abs_diff_L_equiv"] = float((d_b.L_equiv - d_l.L_equiv).abs().max())
        first, times = time_variants({v: make_variant(v, *args) for v in VARIANTS}, device, a.repeats, a.warmup)
        for v in VARIANTS:
            first_v, times_v = first[v], times[v]
            row[v] = {"median_s": statistics.median(times_v), "min_s": min(times_v), "max_s": max(times_v),
                      "first_call_s": first_v, "times_s": times_v}
        for v in VARIANTS + ("batched_warm",):
            m = {"peak_bytes": None, "cold_call_s": None} if a.no_memory else peak_memory(v, B, device, a.threads)
            row.setdefault(v, {})
            row[v]["peak_mem_bytes"], row[v]["cold_call_s"] = m["peak_bytes"], m["cold_call_s"]
        med = {v: row[v]["median_s"] for v in VARIANTS}
        row["overhead"] = med["batched"] / med["baseline"] - 1
        row["speedup"] = med["loop"] / med["batched"]
        # spread: ratio computed from the fastest runs as well (less sensitive to a shared machine)
        row["overhead_min"] = row["batched"]["min_s"] / row["baseline"]["min_s"] - 1
        row["speedup_min"] = row["loop"]["min_s"] / row["batched"]["min_s"]
        rows.append(row)

    def mb(b):
        return "n/a" if b is None else f"{b / 2**20:.1f}"

    def ms(t):
        return "n/a" if t is None else f"{1e3 * t:.0f}"

    print(f"\nbatched twirl vs loop — device {device.type}, threads {torch.get_num_threads()}, "
          f"N = {N_ROT}, {ATOMS} atoms, float32, median of {a.repeats} (min–max)")
    hdr = (f"{'B':>3} | {'baseline ms':>20} | {'batched ms':>20} | {'loop ms':>20} | {'overhead':>8} | "
           f"{'speed-up':>8} | peak MB base/batch/batch_warm/loop | cold 1st call ms base/batch/batch_warm/loop")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        cell = lambda v: f"{1e3 * r[v]['median_s']:7.2f} ({1e3 * r[v]['min_s']:.2f}–{1e3 * r[v]['max_s']:.2f})"  # noqa: E731
        print(f"{r['B']:>3} | {cell('baseline'):>20} | {cell('batched'):>20} | {cell('loop'):>20} | "
              f"{100 * r['overhead']:7.1f}% | {r['speedup']:7.2f}x | "
              + "/".join(mb(r[v]["peak_mem_bytes"]) for v in VARIANTS[:2] + ("batched_warm", "loop")) + " | "
              + "/".join(ms(r[v]["cold_call_s"]) for v in VARIANTS[:2] + ("batched_warm", "loop")))

    verdicts = []
    for r in rows:
        verdicts.append((f"overhead <= {100 * TARGET_OVERHEAD:.0f}% at B={r['B']}", r["overhead"] <= TARGET_OVERHEAD,
                         f"{100 * r['overhead']:.1f}% (from min times: {100 * r['overhead_min']:.1f}%)"))
    for r in rows:
        verdicts.append((f"speed-up >= 1 at B={r['B']}", r["speedup"] >= 1, f"{r['speedup']:.2f}x"))
    if device.type == "cpu":
        r1 = rows[0]
        verdicts.append((f"speed-up >= {TARGET_SPEEDUP_B1_CPU:g}x at B=1 (CPU)", r1["speedup"] >= TARGET_SPEEDUP_B1_CPU,
                         f"{r1['speedup']:.2f}x"))
    else:
        for r in rows:
            verdicts.append((f"speed-up >= {TARGET_SPEEDUP_GPU:g}x at B={r['B']} (GPU)",
                             r["speedup"] >= TARGET_SPEEDUP_GPU, f"{r['speedup']:.2f}x"))
    print()
    for name, ok, val in verdicts:
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {val}")

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "repeats": a.repeats,
            "warmup": a.warmup, "load_avg": os.getloadavg()}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    out.write_text(json.dumps({"meta": meta, "rows": rows,
                               "verdicts": [{"target": n, "pass": ok, "value": v} for n, ok, v in verdicts]},
                              indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
