"""Benchmark: throughput of the data generation behind the three tasks.

Measured, single process (``n_jobs=1``, as the generators default to):

* ``forces``: ``--molecules`` MOSES molecules (``select_molecules``, quick filters),
  ``--conformers`` ETKDGv3 conformers each (``embed_conformers``), then labels
  (``energy_forces``) with ``mmff`` and ``gfn2`` (tblite, one OpenMP thread) on the
  same centred conformers: conformers/s for embedding, for each labelling method,
  and end to end (embedding + labels).
* ``proteins``: every structure file of the source packages (``protein_source_files``)
  parsed into C-alpha traces (``read_ca_traces``): files/s and chains/s; and the whole
  quick profile (``build_backbones("quick", regenerate=True)``: parse, deduplicate,
  group, split) end to end, into a temporary cache folder.
* ``voxels``: molecule embedding as ``generate_voxel_molecules`` does it (one ETKDGv3
  conformer + MMFF94 relaxation per molecule, ``embed_conformers(..., optimize=True)``):
  molecules/s; and ``voxelize`` of the quick training molecules, batched
  (``--voxel-batch`` molecules per call, grid 32, 0.5 Å, sigma 0.5, float32 and
  float64): grids/s, median of ``--repeats`` calls.

Rates are items / median seconds over ``--repeats`` passes (the RDKit / tblite work is
deterministic per seed, so each pass redoes the same work).  The SMILES selection
(reading the MOSES CSV once) is timed separately and not counted in the rates.
Nothing is written to the repository's ``data/cache``: every data-set build goes
to a temporary folder (``EQUIVLIB_DATA_CACHE`` is pointed there too).

    python benchmarks/bench_data.py [--threads 2] [--molecules 8] [--conformers 4] [--repeats 3]
                                    [--voxel-molecules 12] [--voxel-batch 32] [--device cpu|cuda|auto]

``--device`` only applies to ``voxelize`` (the rest is CPU-only).  Verdicts are
sanity checks (finite labels, rotation-equivariant labels, batched = one-by-one
voxelization), plus an estimate of the quick profiles' generation time with one
process.  Writes ``benchmarks/results/data.json``.  Not a test.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_TMP = tempfile.mkdtemp(prefix="equivlib-bench-data-")
os.environ["EQUIVLIB_DATA_CACHE"] = _TMP  # before importing equivlib: never the repository's data/cache

from _cli import device_from_args  # noqa: E402
from equivlib.config import derived_seed  # noqa: E402
from equivlib.data.forces import (FORCE_PROFILES, embed_conformers, energy_forces,  # noqa: E402
                                  rotation_check, select_molecules)
from equivlib.groups import haar_so3_numpy  # noqa: E402
from equivlib.data.proteins import PROTEIN_PROFILES, build_backbones, protein_source_files, read_ca_traces  # noqa: E402
from equivlib.data.voxels import VOXEL_PROFILES, load_voxel_molecules, voxelize  # noqa: E402

METHODS = ("mmff", "gfn2")
FORCE_TOL = 1e-6  # eV/Å, max |F(Rx) - R F(x)|


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats, device=None):
    """(result of the last call, list of seconds)."""
    times, out = [], None
    for _ in range(repeats):
        if device is not None:
            sync(device)
        t0 = time.perf_counter()
        out = fn()
        if device is not None:
            sync(device)
        times.append(time.perf_counter() - t0)
    return out, times


def stats(n_items, times):
    med = statistics.median(times)
    return {"items": n_items, "median_s": med, "min_s": min(times), "max_s": max(times), "times_s": times,
            "per_s": n_items / med if med > 0 else float("inf")}


def bench_forces(a):
    t0 = time.perf_counter()
    smiles = select_molecules(a.molecules, a.seed,
                              max_heavy_atoms=FORCE_PROFILES["quick"]["data"]["max_heavy_atoms"])
    select_s = time.perf_counter() - t0

    def embed():
        out = []
        for i, smi in enumerate(smiles):
            mol, confs = embed_conformers(smi, a.conformers, derived_seed(a.seed, "bench-forces", i))
            out.append((mol, [x - x.mean(axis=0) for x in confs]))
        return out

    embedded, t_embed = timed(embed, a.repeats)
    n_conf = sum(len(c) for _, c in embedded)
    n_atoms = [m.GetNumAtoms() for m, _ in embedded]
    res = {"smiles": smiles, "select_s": select_s, "atoms_per_molecule": n_atoms, "embed": stats(n_conf, t_embed)}
    rng = np.random.default_rng(derived_seed(a.seed, "bench-rotation"))
    for method in METHODS:
        def label():
            return [energy_forces(mol, x, method) for mol, confs in embedded for x in confs]

        labels, t = timed(label, a.repeats)
        finite = all(np.isfinite(e) and np.isfinite(f).all() for e, f in labels)
        mol0, confs0 = embedded[0]
        check = rotation_check(mol0, confs0[0], method, haar_so3_numpy(rng))
        r = stats(n_conf, t)
        r["end_to_end_per_s"] = n_conf / (statistics.median(t_embed) + r["median_s"])
        r.update(finite=bool(finite), rotation_check=check)
        res[method] = r
    return res


def bench_proteins(a):
    files = protein_source_files()
    if a.protein_files:
        files = files[:a.protein_files]

    def parse():
        n_chains, n_res, failed = 0, 0, 0
        for _, path in files:
            try:
                traces = read_ca_traces(path, min_length=PROTEIN_PROFILES["quick"]["data"]["min_length"])
            except Exception:  # noqa: BLE001 - some test files are unreadable, as in generate_backbones
                failed += 1
                continue
            n_chains += len(traces)
            n_res += sum(len(t[1]) for t in traces)
        return n_chains, n_res, failed

    (n_chains, n_res, failed), t = timed(parse, a.repeats)
    res = {"files": len(files), "unreadable_files": failed, "chains": n_chains, "residues": n_res,
           "parse": stats(n_chains, t), "files_per_s": len(files) / statistics.median(t),
           "residues_per_s": n_res / statistics.median(t)}
    if not a.no_profile_build:
        with tempfile.TemporaryDirectory(dir=_TMP) as tmp:
            t0 = time.perf_counter()
            arrays, meta = build_backbones("quick", a.seed, cache_dir=tmp, regenerate=True, progress=False)
            res["quick_profile"] = {"seconds": time.perf_counter() - t0, "chains_selected": int(len(arrays["lengths"])),
                                    "generator_seconds": meta.get("seconds_total")}
    return res


def bench_voxel_embedding(a):
    t0 = time.perf_counter()
    smiles = select_molecules(a.voxel_molecules, derived_seed(a.seed, "bench-voxel-molecules"),
                              max_heavy_atoms=VOXEL_PROFILES["quick"]["data"]["max_heavy_atoms"])
    select_s = time.perf_counter() - t0

    def embed():
        ok = 0
        for i, smi in enumerate(smiles):
            _, confs = embed_conformers(smi, 1, derived_seed(a.seed, "bench-voxels", i), optimize=True)
            ok += bool(confs)
        return ok

    ok, t = timed(embed, a.repeats)
    return {"smiles": smiles, "select_s": select_s, "embedded": ok, "embed": stats(len(smiles), t)}


def bench_voxelize(a, device):
    mols = load_voxel_molecules("quick", a.seed, "train", cache_dir=_TMP)
    B = min(a.voxel_batch, len(mols))
    batch = mols[torch.arange(B)]
    kw = dict(grid_size=a.grid, resolution=0.5, sigma=0.5)
    res = {"batch": B, "atoms_padded": int(batch.positions.shape[1]), **kw}
    for dtype in (torch.float32, torch.float64):
        pos = batch.positions.to(device=device, dtype=dtype)
        spc, msk = batch.species.to(device), batch.mask.to(device)

        def run():
            return voxelize(pos, spc, mask=msk, **kw)

        grids = run()  # warm-up
        grids, t = timed(run, max(a.repeats, 5), device)
        one = voxelize(pos[-1], spc[-1], mask=msk[-1], **kw)
        r = stats(B, t)
        r["max_abs_diff_batched_vs_single"] = float((grids[-1] - one).abs().max())
        r["mb_per_grid"] = grids[0].numel() * grids.element_size() / 2**20
        res[str(dtype).replace("torch.", "")] = r
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="for voxelize only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--molecules", type=int, default=8, help="force molecules")
    ap.add_argument("--conformers", type=int, default=4, help="conformers per force molecule (quick: 4)")
    ap.add_argument("--protein-files", type=int, default=0, help="parse only the first N files (0: all)")
    ap.add_argument("--no-profile-build", action="store_true", help="skip build_backbones('quick') end to end")
    ap.add_argument("--voxel-molecules", type=int, default=12)
    ap.add_argument("--voxel-batch", type=int, default=32)
    ap.add_argument("--grid", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data.json"))
    a = ap.parse_args()
    if a.repeats < 1 or a.molecules < 1 or a.conformers < 1 or a.voxel_molecules < 1 or a.voxel_batch < 1:
        ap.error("counts must be positive")
    device = device_from_args(ap, a)
    load_before = os.getloadavg()

    forces = bench_forces(a)
    proteins = bench_proteins(a)
    vox_embed = bench_voxel_embedding(a)
    vox = bench_voxelize(a, device)

    print(f"\ndata-generation throughput — threads {torch.get_num_threads()} (tblite: 1 OpenMP thread), "
          f"one process, median of {a.repeats} passes")
    hdr = f"{'what':<52} | {'items':>6} | {'median s':>9} | {'min–max s':>15} | {'rate':>16}"
    print(hdr)
    print("-" * len(hdr))

    def line(what, r, unit):
        print(f"{what:<52} | {r['items']:>6} | {r['median_s']:>9.3f} | "
              f"{r['min_s']:>7.3f}–{r['max_s']:<7.3f} | {r['per_s']:>9.1f} {unit}")

    nm = f"{a.molecules} mol x {a.conformers}"
    line(f"forces: ETKDG embedding ({nm} conf)", forces["embed"], "conf/s")
    for m in METHODS:
        line(f"forces: {m} labels", forces[m], "conf/s")
        print(f"{'  ' + m + ' end to end (embed + label)':<52} | {'':>6} | {'':>9} | {'':>15} | "
              f"{forces[m]['end_to_end_per_s']:>9.1f} conf/s")
    line(f"proteins: read_ca_traces ({proteins['files']} files)", proteins["parse"], "chain/s")
    print(f"{'  files / residues':<52} | {'':>6} | {'':>9} | {'':>15} | {proteins['files_per_s']:>9.1f} file/s"
          f"  {proteins['residues_per_s']:.0f} res/s")
    if "quick_profile" in proteins:
        q = proteins["quick_profile"]
        print(f"{'proteins: build_backbones(quick) end to end':<52} | {q['chains_selected']:>6} | "
              f"{q['seconds']:>9.3f} | {'(once)':>15} | {'':>16}")
    line("voxels: ETKDG + MMFF embedding (1 conf/mol)", vox_embed["embed"], "mol/s")
    for dt in ("float32", "float64"):
        line(f"voxels: voxelize B={vox['batch']}, {a.grid}^3, {dt} ({device.type})", vox[dt], "grid/s")

    # estimated one-process generation time of the quick profiles
    fq, vq = FORCE_PROFILES["quick"]["data"], VOXEL_PROFILES["quick"]["data"]
    est = {f"forces_quick_{m}_s": fq["n_molecules"] * fq["n_conformers"] / forces[m]["end_to_end_per_s"]
           for m in METHODS}
    est["voxels_quick_embedding_s"] = vq["n_molecules"] / vox_embed["embed"]["per_s"]
    print("\nestimated one-process generation of the quick profiles (from the rates above): "
          + ", ".join(f"{k} {v:.0f}" for k, v in est.items()))

    verdicts = []
    for m in METHODS:
        c = forces[m]["rotation_check"]
        verdicts.append((f"forces {m}: labels finite", forces[m]["finite"], str(forces[m]["finite"])))
        verdicts.append((f"forces {m}: max |F(Rx) - R F(x)| <= {FORCE_TOL:g} eV/Å",
                         c["force_max_abs_error"] <= FORCE_TOL, f"{c['force_max_abs_error']:.2e}"))
    verdicts.append(("proteins: chains parsed > 0", proteins["chains"] > 0, str(proteins["chains"])))
    verdicts.append(("voxels: every molecule embedded", vox_embed["embedded"] == len(vox_embed["smiles"]),
                     f"{vox_embed['embedded']}/{len(vox_embed['smiles'])}"))
    for dt, tol in (("float32", 1e-5), ("float64", 1e-12)):
        d = vox[dt]["max_abs_diff_batched_vs_single"]
        verdicts.append((f"voxels: batched = single voxelize ({dt}, <= {tol:g})", d <= tol, f"{d:.1e}"))
    print()
    for n, ok, v in verdicts:
        print(f"[{'PASS' if ok else 'FAIL'}] {n}: {v}")

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import rdkit

    meta = {"device": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "rdkit": rdkit.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "repeats": a.repeats, "seed": a.seed, "load_avg_before": load_before, "load_avg": os.getloadavg()}
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
    out.write_text(json.dumps({"meta": meta, "forces": forces, "proteins": proteins, "voxel_embedding": vox_embed,
                               "voxelize": vox, "estimates": est,
                               "verdicts": [{"target": n, "pass": ok, "value": v} for n, ok, v in verdicts]},
                              indent=2, default=str))
    print(f"\nwrote {out}  (load average {meta['load_avg'][0]:.2f}; the machine may be shared)")


if __name__ == "__main__":
    try:
        main()
    finally:
        import shutil

        shutil.rmtree(_TMP, ignore_errors=True)
